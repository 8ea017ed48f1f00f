"""The reductions that gained an ``axis_name`` in the scale-out audit, checked inside ``shard_map``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import gradtx


def _mesh():
  return jax.make_mesh((8,), ("x",), axis_types=(AxisType.Auto,))


def _orthogonal_case():
  """A (16, 4) kernel and a gradient orthogonal to each of its columns (output channels): projection on."""
  rng = np.random.default_rng(0)
  w = rng.normal(size=(16, 4)).astype(np.float32)
  g = rng.normal(size=(16, 4)).astype(np.float32)
  g -= w * (np.sum(g * w, axis=0) / np.sum(w * w, axis=0))  # remove each column's radial part
  return {"w": jnp.asarray(w)}, {"w": jnp.asarray(g + 1e-3 * w)}


@pytest.mark.parametrize("factory", [gradtx.scale_by_adamp, gradtx.scale_by_sgdp, gradtx.adamp, gradtx.sgdp])
def test_radial_projection_inside_shard_map(factory):
  kwargs = {"learning_rate": 0.1, "weight_decay": 0.1} if factory in (gradtx.adamp, gradtx.sgdp) else {}
  params, grads = _orthogonal_case()
  plain = factory(**kwargs)
  expected, _ = plain.update(grads, plain.init(params), params)
  # the projection is on: the update differs from the inner direction without it
  no_projection, _ = factory(delta=1e-9, **kwargs).update(grads, plain.init(params), params)
  assert not np.allclose(expected["w"], no_projection["w"], atol=1e-4)

  def sharded(axis_name):
    tx = factory(axis_name=axis_name, **kwargs)
    specs = {"w": P("x", None)}
    fn = jax.shard_map(
        lambda g, p: tx.update(g, tx.init(p), p)[0], mesh=_mesh(), in_specs=(specs, specs), out_specs=specs
    )
    return jax.jit(fn)(grads, params)

  np.testing.assert_allclose(sharded("x")["w"], expected["w"], rtol=1e-5, atol=1e-6)
  assert not np.allclose(sharded(None)["w"], expected["w"], atol=1e-4)  # per-shard statistics are wrong


def test_gradient_noise_differs_across_shards_with_axis_name():
  tx_shared = gradtx.add_gradient_noise(eta=1.0, seed=0)
  tx_split = gradtx.add_gradient_noise(eta=1.0, seed=0, axis_name="x")
  zeros = jnp.zeros((16,))

  def run(tx):
    fn = jax.shard_map(lambda u: tx.update(u, tx.init(u))[0], mesh=_mesh(), in_specs=P("x"), out_specs=P("x"))
    return np.asarray(jax.jit(fn)(zeros)).reshape(8, 2)

  shared, split = run(tx_shared), run(tx_split)
  assert np.all(shared == shared[0])  # every shard drew the same block
  assert len({tuple(row) for row in split}) == 8  # each shard its own block
  again = run(tx_split)
  np.testing.assert_array_equal(split, again)


@pytest.mark.parametrize("axis_name", [None, "x"])
def test_kth_largest_inside_shard_map(axis_name):
  """A per-device threshold (no axis: data parallelism) and a whole-array one (axis: FSDP) both trace."""
  from gradtx.core import topk

  x = jnp.asarray(np.random.default_rng(5).normal(size=(8, 6)), jnp.float32)
  out = P("x") if axis_name is None else P()
  fn = jax.shard_map(
      lambda b: topk.kth_largest_magnitude(b, 2, axis_name=axis_name).reshape((1,) if axis_name is None else ()),
      mesh=_mesh(),
      in_specs=P("x"),
      out_specs=out,
  )
  got = np.asarray(jax.jit(fn)(x))
  if axis_name is None:
    np.testing.assert_array_equal(got, np.sort(np.abs(np.asarray(x)), axis=1)[:, -3])
  else:
    assert got == np.sort(np.abs(np.asarray(x)).ravel())[-3]
