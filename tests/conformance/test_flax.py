"""Every registered optimizer drives a Flax nnx model through ``nnx.Optimizer`` (extra args forwarded)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import gradtx
from tests import tolerances
from tests.conformance import problems

_RNG = np.random.default_rng(2)
_X = jnp.asarray(_RNG.normal(size=(32, 6)), jnp.float32)
_Y = jnp.asarray(_RNG.normal(size=(32, 3)), jnp.float32)


class _MLP(nnx.Module):
  def __init__(self, rngs):
    self.l1 = nnx.Linear(6, 16, rngs=rngs)
    self.l2 = nnx.Linear(16, 3, rngs=rngs)

  def __call__(self, x):
    return self.l2(nnx.relu(self.l1(x)))


def _loss(model):
  return jnp.mean(jnp.square(model(_X) - _Y))


@pytest.mark.parametrize("name", problems.sampled_names())
def test_nnx_optimizer_matches_plain_optax(name):
  spec = gradtx.OPTIMIZERS[name]
  model = _MLP(nnx.Rngs(0))
  opt = nnx.Optimizer(model, spec.build(), wrt=nnx.Param)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params = jax.tree.map(jnp.copy, nnx.to_pure_dict(params))

  def pure_loss(p):
    m = nnx.merge(graphdef, nnx.State(p) if not isinstance(p, nnx.State) else p, rest, copy=True)
    return _loss(m)

  @nnx.jit
  def train_step(model, opt):
    g_def, _, g_rest = nnx.split(model, nnx.Param, ...)
    loss_fn = lambda p: _loss(nnx.merge(g_def, p, g_rest, copy=True))
    loss, grads = nnx.value_and_grad(_loss)(model)
    extra = problems.extra_args(spec, loss_fn, nnx.state(model, nnx.Param))
    opt.update(model, grads, **extra)
    return loss

  tx = spec.build()
  state = tx.init(params)
  losses = []
  for _ in range(5):
    losses.append(float(train_step(model, opt)))
    grads = jax.grad(pure_loss)(params)
    updates, state = tx.update(grads, state, params, **problems.extra_args(spec, pure_loss, params))
    params = optax.apply_updates(params, updates)
  assert np.all(np.isfinite(losses))
  got = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  # The same 5 steps; nnx's jitted train step and the plain loop may fuse the 32-row loss differently.
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params)):
    tolerances.assert_close_normwise(a, b, rtol=tolerances.reordered_trajectory_rtol(5, 32))
