"""Data parallelism (DESIGN.md item 8) for every registered optimizer: a ``pmap`` step over 8 devices equals
the single-device full-batch step.

Each device gets 4 of the mixed problem's 32 examples; gradients are ``pmean``-ed across the axis, and the
required extra arguments are computed on the device's own micro-batch (``loss_fn`` and ``value`` of the
local mean loss, ``per_example_grads`` of the local rows, ``logits_fn`` of the local examples). An optimizer whose update uses such per-device
data names its data-parallel axis keyword in ``OptimizerSpec.data_axis_arg``; the test passes the axis
there, and the update must then equal the full-batch one (params and every state leaf, on every replica).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from tests import tolerances
from tests.conformance import problems

NAMES = problems.all_names()
N_DEVICES, STEPS, AXIS = 8, 3, "batch"
X, Y = problems._X, problems._Y  # 32 examples
# Extra arguments computed from the device's own examples; optimizers using them need a data axis.
DATA_ARGS = {"loss_fn", "value", "per_example_grads", "logits_fn"}


def _example_loss(p, x, y):
  return problems.mixed_example_losses(p, x[None], y[None])[0]


def batch_extra_args(spec, params, x, y):
  """The required extra arguments of ``spec`` on the examples ``(x, y)`` (a device's micro-batch)."""
  loss_fn = lambda p: jnp.mean(problems.mixed_example_losses(p, x, y))
  out = {}
  for name in spec.required_extra_args:
    if name == "loss_fn":
      out[name] = loss_fn
    elif name == "value":
      out[name] = loss_fn(params)
    elif name == "per_example_grads":
      out[name] = jax.vmap(jax.grad(_example_loss), in_axes=(None, 0, 0))(params, x, y)
    elif name == "logits_fn":  # the mixed problem's 4 outputs as the logits of the device's examples
      out[name] = lambda p: x @ p["kernel"].astype(jnp.float32) + p["bias"].astype(jnp.float32)
    else:
      raise NotImplementedError(
          f"test_data_parallel has no per-device provider for extra argument {name!r} of {spec.name!r}."
      )
  return out


def _build(spec, axis_name):
  if spec.data_axis_arg is None:
    needs = DATA_ARGS.intersection(spec.required_extra_args)
    if needs:
      pytest.fail(
          f"{spec.name} uses per-device {sorted(needs)} but its OptimizerSpec names no data_axis_arg: under"
          " data parallelism its estimates would differ from replica to replica."
      )
    return spec.build()
  return spec.build(**{spec.data_axis_arg: axis_name})


def _full_batch(spec):
  tx = spec.build()
  params = problems.mixed_params()
  state = tx.init(params)

  @jax.jit
  def step(p, s):
    g = jax.grad(lambda q: jnp.mean(problems.mixed_example_losses(q, X, Y)))(p)
    u, s = tx.update(g, s, p, **batch_extra_args(spec, p, X, Y))
    return jax.tree.map(lambda a, b: (a + b).astype(a.dtype), p, u), s

  for _ in range(STEPS):
    params, state = step(params, state)
  return params, state


def _data_parallel(spec):
  tx = _build(spec, AXIS)
  xs = X.reshape(N_DEVICES, -1, X.shape[-1])
  ys = Y.reshape(N_DEVICES, -1, Y.shape[-1])
  replicate = lambda t: jax.tree.map(lambda a: jnp.broadcast_to(a, (N_DEVICES, *a.shape)), t)
  params = replicate(problems.mixed_params())
  state = jax.pmap(tx.init, axis_name=AXIS)(params)

  def step(p, s, x, y):
    local = lambda q: jnp.mean(problems.mixed_example_losses(q, x, y))
    g = jax.lax.pmean(jax.grad(local)(p), AXIS)
    u, s = tx.update(g, s, p, **batch_extra_args(spec, p, x, y))
    return jax.tree.map(lambda a, b: (a + b).astype(a.dtype), p, u), s

  step = jax.pmap(step, axis_name=AXIS)
  for _ in range(STEPS):
    params, state = step(params, state, xs, ys)
  return params, state


def test_enough_devices():
  assert jax.device_count() >= N_DEVICES, "XLA_FLAGS in the repo-root conftest.py gives 8 CPU devices"


def _per_device_data(name):
  spec = gradtx.OPTIMIZERS[name]
  return bool(spec.data_axis_arg or spec.required_extra_args)


# An optimizer that takes no per-device data (no data axis, no extra arguments) sees the same pmean-ed
# gradients on every replica: the check is then about pmap itself, so outside the family representatives it
# runs in make test-slow. Every optimizer with per-device data runs in make test.
@pytest.mark.parametrize("name", [
    n if _per_device_data(n) or n in problems.representatives() else pytest.param(n, marks=pytest.mark.slow)
    for n in NAMES])
def test_pmap_step_equals_full_batch_step(name):
  spec = gradtx.OPTIMIZERS[name]
  ref_params, ref_state = _full_batch(spec)
  dp_params, dp_state = _data_parallel(spec)
  assert jax.tree.structure(dp_state) == jax.tree.structure(ref_state)
  for what, ref, dp in (("params", ref_params, dp_params), ("state", ref_state, dp_state)):
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(dp)):
      b = np.asarray(b)
      for replica in range(N_DEVICES):
        # pmean of 8 per-device means of 4 rows against one mean of 32 rows, STEPS steps.
        tolerances.assert_close_normwise(
            b[replica].astype(np.float64),
            np.asarray(a).astype(np.float64),
            rtol=tolerances.reordered_trajectory_rtol(STEPS, 32),
            err_msg=f"{name}: {what} of replica {replica} differs from the full-batch step",
        )
