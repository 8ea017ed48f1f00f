"""The data axis of every registered optimizer that uses per-device data (DESIGN.md item 8, issue 13 §4).

Without its data axis, such an optimizer under ``pmap`` / ``shard_map`` / ``vmap(axis_name=...)`` would let
each replica keep its own estimate and the replicas drift apart with no message; its update raises instead.
With the axis the replicas agree bit for bit; with ``gradtx.NO_DATA_AXIS`` they run on their own data on
purpose. ``check_replicas_agree`` is tested here too.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import gradtx
from tests.conformance import problems
from tests.conformance.test_data_parallel import batch_extra_args

# Extra arguments computed from each device's own batch (the registry's required_extra_args name them).
PER_DEVICE = {"loss_fn", "logits_fn", "value", "per_example_grads", "layer_inputs"}
NAMES = [n for n in problems.all_names() if PER_DEVICE.intersection(gradtx.OPTIMIZERS[n].required_extra_args)]
N_DEVICES, AXIS = 2, "batch"
X = problems._X.reshape(N_DEVICES, -1, problems._X.shape[-1])
Y = problems._Y.reshape(N_DEVICES, -1, problems._Y.shape[-1])


def _replicated(tree):
  return jax.tree.map(lambda a: jnp.broadcast_to(a, (N_DEVICES, *a.shape)), tree)


def _step(spec, tx, axis):
  """One data-parallel step on the device's own examples (gradients pmean-ed over ``AXIS``)."""

  def step(p, s, x, y):
    g = jax.lax.pmean(jax.grad(lambda q: jnp.mean(problems.mixed_example_losses(q, x, y)))(p), axis)
    u, s = tx.update(g, s, p, **batch_extra_args(spec, p, x, y))
    return optax.apply_updates(p, u), s

  return step


def test_the_table_is_not_empty():
  assert {"sophia_h", "sophia_g", "adahessian", "mezo_adam", "regularized_newton", "adadagrad"} <= set(NAMES)
  for name in NAMES:
    assert gradtx.OPTIMIZERS[name].data_axis_arg, f"{name} takes per-device data but names no data_axis_arg"


@pytest.mark.parametrize("name", NAMES)
def test_missing_data_axis_raises_under_pmap(name):
  spec = gradtx.OPTIMIZERS[name]
  tx = spec.build()
  params = _replicated(problems.mixed_params())
  state = jax.pmap(tx.init)(params)
  with pytest.raises(ValueError, match=rf"(?s)^{name} uses per-device .*\('{AXIS}',\).*{spec.data_axis_arg}=.*NO_DATA_AXIS"):
    jax.pmap(_step(spec, tx, AXIS), axis_name=AXIS)(params, state, X, Y)


# The family representatives run in make test; the others in make test-slow (with the axis, every replica of
# every one of them is already compared with the full-batch step in make test by test_data_parallel.py, and
# the opt-out runs the single-device code path that the whole contract suite covers).
@pytest.mark.parametrize("name", [
    n if n in problems.representatives() else pytest.param(n, marks=pytest.mark.slow) for n in NAMES])
def test_data_axis_agrees_and_opt_out_runs(name):
  """With the axis every replica holds the same params and state, bit for bit (each reduction is one
  all-reduce whose result every replica receives). ``NO_DATA_AXIS`` runs, and its replicas (different data,
  per-device estimates) part: what the error above protects against."""
  spec = gradtx.OPTIMIZERS[name]
  shared, own = spec.build(**{spec.data_axis_arg: AXIS}), spec.build(**{spec.data_axis_arg: gradtx.NO_DATA_AXIS})
  params = _replicated(problems.mixed_params())

  @jax.pmap
  def init(p):
    return shared.init(p), own.init(p)

  def steps(p, s_shared, s_own, x, y):
    p_shared, s_shared = _step(spec, shared, AXIS)(p, s_shared, x, y)
    p_own, s_own = _step(spec, own, AXIS)(p, s_own, x, y)
    _, agree = gradtx.check_replicas_agree((p_shared, s_shared), AXIS)
    _, own_agree = gradtx.check_replicas_agree((p_own, s_own), AXIS)
    finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(p_own)]))
    return agree, own_agree, finite

  agree, own_agree, finite = jax.pmap(steps, axis_name=AXIS)(params, *init(params), X, Y)
  assert bool(agree[0]), f"{name}: replicas differ although the data axis was given"
  assert bool(finite[0]), f"{name}: NO_DATA_AXIS should run"
  assert not bool(own_agree[0]), f"{name}: NO_DATA_AXIS should keep per-device estimates (replicas part)"


def _sophia_step(tx):
  loss = problems.mixed_loss
  return lambda p, s: tx.update(jax.grad(loss)(p), s, p, loss_fn=loss)


@pytest.mark.parametrize("context", ["shard_map", "vmap_named", "jit_sharded", "vmap_unnamed"])
def test_named_axis_contexts(context):
  """shard_map and a named vmap bind named axes (refused without the data axis); plain jit on sharded arrays
  and an unnamed vmap do not (the estimate is then global, resp. nobody can average it) and run."""
  tx = gradtx.sophia_h(learning_rate=0.01)
  params = problems.mixed_params()
  state = tx.init(params)
  step = _sophia_step(tx)
  if context == "shard_map":
    mesh = jax.make_mesh((N_DEVICES,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    run = lambda: jax.shard_map(step, mesh=mesh, in_specs=P(), out_specs=P(), check_vma=False)(params, state)
  elif context == "vmap_named":
    run = lambda: jax.vmap(step, axis_name="data")(*_replicated((params, state)))
  elif context == "vmap_unnamed":
    run = lambda: jax.vmap(step)(*_replicated((params, state)))
  else:
    mesh = jax.make_mesh((N_DEVICES,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    with jax.set_mesh(mesh):
      sharded = jax.tree.map(lambda a: jax.device_put(a, P("data")), params)
      jax.eval_shape(step, sharded, jax.eval_shape(tx.init, sharded))
    return
  if context.endswith("unnamed"):
    jax.eval_shape(run)
  else:
    with pytest.raises(ValueError, match=r"sophia_h uses per-device `loss_fn`.*\('data',\)"):
      jax.eval_shape(run)


def test_check_replicas_agree():
  tree = {"same": jnp.ones(3), "key": jax.random.key(0), "count": jnp.zeros((), jnp.int32), "empty": None}
  check = jax.pmap(lambda i: (gradtx.check_replicas_agree(tree, "i"),
                              gradtx.check_replicas_agree({"x": i * jnp.ones(2), "n": i.astype(jnp.int32)}, "i"),
                              gradtx.check_replicas_agree({"x": i * jnp.nan}, "i"),
                              gradtx.check_replicas_agree({"x": i}, "i", atol=1.0)),
                   axis_name="i")
  (dev_same, same), (dev_own, own), (_, nan), (_, within) = check(jnp.arange(N_DEVICES, dtype=jnp.float32))
  assert bool(same[0]) and float(dev_same["same"][0]) == 0.0 and float(dev_same["key"][0]) == 0.0
  assert dev_same["empty"] is None
  assert not bool(own[0]) and float(dev_own["x"][0]) == N_DEVICES - 1 and float(dev_own["n"][0]) == N_DEVICES - 1
  assert not bool(nan[0])
  assert bool(within[0]) == (N_DEVICES - 1 <= 1.0)
  np.testing.assert_array_equal(np.asarray(same), True)  # the same answer on every replica
