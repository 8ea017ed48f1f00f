"""Sharding contract (DESIGN.md item 7) on 8 simulated CPU devices, for every registered optimizer.

The explicit-mesh checks use a 2x4 mesh with the kernel sharded on both of its axes (rows over ``data``,
columns over ``model``) and the bias over ``model``: state whose shape differs from its parameter (norms
over one axis, projectors, low-rank moments, per-channel scales) then meets a sharded axis whichever axis it
keeps. A 1-D mesh sharding only the kernel's rows misses every per-output-channel state (gradnorm_lorp's
magnitudes took ``P(None, 'model')`` after the first update but were replicated at ``init``).
:func:`test_state_sharding_types_stable_on_2d_mesh` checks the sharding *types* of every registered
optimizer in the default suite by tracing only (no compilation, ~0.2 s each); the compiled check with real
arrays runs for the family representatives there and for all in ``make test-slow``.
"""

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
_SPECS = {"kernel": P("x", None), "bias": P("x")}  # Auto-mesh equivalence check (1-D mesh)
_SPECS_2D = {"kernel": P("data", "model"), "bias": P("model")}
_KERNEL = (0.1 * _RNG.normal(size=(16, 8))).astype(np.float32)


def _loss(p):
  return jnp.mean(jnp.square(_X @ p["kernel"] + p["bias"] - _Y))


def _params():
  return {"kernel": jnp.asarray(_KERNEL), "bias": jnp.zeros((8,), jnp.float32)}


def _mesh(axis_type):
  if len(jax.devices()) < 8:
    pytest.fail("the conformance suite needs 8 devices: XLA_FLAGS is set in the repo-root conftest.py")
  return jax.make_mesh((8,), ("x",), axis_types=(axis_type,))


def _mesh_2d():
  if len(jax.devices()) < 8:
    pytest.fail("the conformance suite needs 8 devices: XLA_FLAGS is set in the repo-root conftest.py")
  return jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)


def _spec_entries(aval):
  """The sharding type of an abstract value as one entry per dimension (``P('x')`` and ``P('x', None)`` alike)."""
  spec = tuple(aval.sharding.spec) if aval.sharding is not None else ()
  return spec + (None,) * (len(aval.shape) - len(spec))


@pytest.mark.parametrize("name", problems.all_names())
def test_state_sharding_types_stable_on_2d_mesh(name):
  """``jit(init)`` and ``jit(update)`` give every state leaf the same sharding type, and the updates the
  params' one, read from the traced types alone (Explicit axes make shardings part of the types)."""
  spec = gradtx.OPTIMIZERS[name]
  tx = spec.build()
  mesh = _mesh_2d()
  with jax.set_mesh(mesh):
    params = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=NamedSharding(mesh, _SPECS_2D[k]))
              for k, v in _params().items()}
    after_init = jax.jit(tx.init).trace(params).out_avals
    step = lambda p, s: tx.update(jax.grad(_loss)(p), s, p, **problems.extra_args(spec, _loss, p))
    updates, after_update = jax.jit(step).trace(params, jax.eval_shape(jax.jit(tx.init), params)).out_avals
  paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(after_init)]
  assert jax.tree.structure(after_init) == jax.tree.structure(after_update)
  for path, a, b in zip(paths, jax.tree.leaves(after_init), jax.tree.leaves(after_update)):
    assert _spec_entries(a) == _spec_entries(b), (name, path, a.sharding, b.sharding)
  for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
    assert _spec_entries(u) == _spec_entries(p), (name, u.sharding, p.sharding)


@pytest.mark.parametrize("name", problems.sampled_names())
def test_state_sharding_stable_on_explicit_mesh(name):
  spec = gradtx.OPTIMIZERS[name]
  tx = spec.build()
  mesh = _mesh_2d()
  with jax.set_mesh(mesh):
    params = jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), _params(), _SPECS_2D)
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
