"""FSDP inside ``jax.shard_map`` (DESIGN.md item 8), for every registered optimizer.

Every param leaf is split over the 8 devices of mesh axis ``'x'`` (dimension 0), each device updates its
own block, and the optimizer gets the axis through ``OptimizerSpec.shard_axis_arg``: statistics over
elements (norms, thresholds, maxima) must then be those of the whole leaf, so the result equals the
unsharded step. An optimizer without ``shard_axis_arg`` must be elementwise; one that silently reduces over
its local block fails here (``check_vma`` also rejects a scalar state that differs from shard to shard).
The reference is the same step under plain ``jit`` on the same global arrays (whose reductions are global),
so both runs see bit-identical gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import gradtx
from tests.conformance import problems

NAMES = problems.all_names()
_RNG = np.random.default_rng(4)
# 2048 outputs: every device's block of each leaf holds whole blocks of 256 elements, so block-wise 8-bit
# state quantizes the same blocks as on one device (gradtx.quantization: pick block_size so shards hold whole
# blocks).
_WIDTH = 2048
_X = _RNG.normal(size=(64, 16)).astype(np.float32)
_Y = _RNG.normal(size=(64, _WIDTH)).astype(np.float32)
_KERNEL = (0.3 * _RNG.normal(size=(16, _WIDTH))).astype(np.float32)
_BIAS = (0.1 * _RNG.normal(size=(_WIDTH,))).astype(np.float32)
SPECS = {"bias": P("x"), "kernel": P("x", None)}
STEPS = 3


def _loss(p):
  return jnp.mean(jnp.square(_X @ p["kernel"] + p["bias"] - _Y))


def _params():
  return {"bias": jnp.asarray(_BIAS), "kernel": jnp.asarray(_KERNEL)}


def _mesh():
  return jax.make_mesh((8,), ("x",), axis_types=(AxisType.Explicit,))


def _sharded_params(mesh):
  return jax.device_put(_params(), jax.tree.map(lambda s: NamedSharding(mesh, s), SPECS))


def run_fsdp(tx, steps=STEPS):
  """``steps`` updates inside ``shard_map``; the gradients come from the global loss outside it."""
  mesh = _mesh()
  with jax.set_mesh(mesh):
    params = _sharded_params(mesh)
    # On an explicit mesh the state shardings are the types tx.init itself gives (quantized blocks, buffers).
    state_shardings = gradtx.state_shardings(tx, params)
    state_specs = jax.tree.map(lambda s: s.spec, state_shardings)
    update = jax.shard_map(
        lambda g, s, p: tx.update(g, s, p),
        mesh=mesh,
        in_specs=(SPECS, state_specs, SPECS),
        out_specs=(SPECS, state_specs),
        check_vma=True,
    )
    state = jax.jit(tx.init, out_shardings=state_shardings)(params)

    @jax.jit
    def step(p, s):
      u, s = update(jax.grad(_loss)(p), s, p)
      return optax.apply_updates(p, u), s

    for _ in range(steps):
      params, state = step(params, state)
  return params, state


def run_global(tx, steps=STEPS):
  """The same steps under plain ``jit`` on the same global arrays: reductions see whole leaves."""
  mesh = _mesh()
  with jax.set_mesh(mesh):
    params = _sharded_params(mesh)
    state = jax.jit(tx.init)(params)

    @jax.jit
    def step(p, s):
      u, s = tx.update(jax.grad(_loss)(p), s, p)
      return optax.apply_updates(p, u), s

    for _ in range(steps):
      params, state = step(params, state)
  return params, state


def assert_close(a, b, what):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=2e-5, atol=2e-6,
                               err_msg=what)


@pytest.mark.parametrize("name", NAMES)
def test_fsdp_shard_map_equals_unsharded(name):
  spec = gradtx.OPTIMIZERS[name]
  if spec.required_extra_args:
    pytest.skip(f"{name} needs {spec.required_extra_args}: per-device data, covered by test_data_parallel")
  if not spec.elementwise and not spec.shard_axis_arg:
    # The low-rank family: an SVD, a DCT column choice or a norm ratio per channel needs whole matrices.
    pytest.skip(f"{name} reduces over whole leaves and takes no shard axis: a leaf split inside shard_map would "
                "be treated block by block; FSDP runs through jit on sharded arrays (test_state_shardings)")
  axis = {spec.shard_axis_arg: "x"} if spec.shard_axis_arg else {}
  ref_params, ref_state = run_global(spec.build())
  params, state = run_fsdp(spec.build(**axis))
  assert_close(ref_params, params, f"{name}: params")
  assert_close(ref_state, state, f"{name}: state")
