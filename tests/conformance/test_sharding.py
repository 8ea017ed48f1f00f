"""Sharding contract (DESIGN.md item 7) on 8 simulated CPU devices, for every registered optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import gradtx
from tests import tolerances
from tests.conformance import problems

NAMES = problems.all_names()
_RNG = np.random.default_rng(1)
_X = _RNG.normal(size=(64, 16)).astype(np.float32)
_Y = _RNG.normal(size=(64, 8)).astype(np.float32)
_SPECS = {"kernel": P("x", None), "bias": P("x")}
_KERNEL = (0.1 * _RNG.normal(size=(16, 8))).astype(np.float32)


def _loss(p):
  return jnp.mean(jnp.square(_X @ p["kernel"] + p["bias"] - _Y))


def _params():
  return {"kernel": jnp.asarray(_KERNEL), "bias": jnp.zeros((8,), jnp.float32)}


def _mesh(axis_type):
  if len(jax.devices()) < 8:
    pytest.fail("the conformance suite needs 8 devices: XLA_FLAGS is set in the repo-root conftest.py")
  return jax.make_mesh((8,), ("x",), axis_types=(axis_type,))


def _shardings(tree):
  return [x.sharding for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("name", problems.sampled_names())
def test_state_sharding_stable_on_explicit_mesh(name):
  spec = gradtx.OPTIMIZERS[name]
  tx = spec.build()
  mesh = _mesh(AxisType.Explicit)
  with jax.set_mesh(mesh):
    params = jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), _params(), _SPECS)
    s_eager = tx.init(params)
    s_jit = jax.jit(tx.init)(params)
    step = jax.jit(lambda p, s: tx.update(jax.grad(_loss)(p), s, p, **problems.extra_args(spec, _loss, p)))
    updates, s_next = step(params, s_jit)
    for a, b, c in zip(jax.tree.leaves(s_eager), jax.tree.leaves(s_jit), jax.tree.leaves(s_next)):
      assert a.sharding.is_equivalent_to(b.sharding, a.ndim), (name, a.sharding, b.sharding)
      assert b.sharding.is_equivalent_to(c.sharding, b.ndim), (name, b.sharding, c.sharding)
    for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
      assert u.sharding.is_equivalent_to(p.sharding, p.ndim), (name, u.sharding, p.sharding)


@pytest.mark.parametrize("name", problems.sampled_names())
def test_sharded_step_equals_unsharded(name):
  spec = gradtx.OPTIMIZERS[name]
  tx = spec.build()

  def run(params):
    @jax.jit
    def step(p, s):
      u, s = tx.update(jax.grad(_loss)(p), s, p, **problems.extra_args(spec, _loss, p))
      return optax.apply_updates(p, u), s

    state = jax.jit(tx.init)(params)
    for _ in range(3):
      params, state = step(params, state)
    return params

  reference = run(_params())
  mesh = _mesh(AxisType.Auto)
  sharded = run(jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), _params(), _SPECS))
  # 3 steps; the sharded run reduces the 64-row batch mean and every per-leaf statistic across 8 shards.
  for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(sharded)):
    tolerances.assert_close_normwise(b, a, rtol=tolerances.reordered_trajectory_rtol(3, 64))
