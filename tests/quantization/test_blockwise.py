"""Block-wise quantize / dequantize: exactness against the reference, error bounds, zeros, rounding modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from gradtx.quantization import blockwise, maps
from tests.quantization import reference

SIGNED, UNSIGNED = maps.signed_map(), maps.unsigned_map()


def moment_like(shape, seed=0, positive=False):
  """Values spanning ~7 decades, like optimizer moments."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(shape) * np.exp(rng.uniform(-16, 0, shape))
  return np.abs(x).astype(np.float32) if positive else x.astype(np.float32)


@pytest.mark.parametrize("shape", [(1000,), (4096,), (16, 300), (8, 512), (3, 5, 7), (2, 2048)])
@pytest.mark.parametrize("block_size", [256, 2048])
@pytest.mark.parametrize("signed", [True, False])
def test_codes_equal_reference_argmin(shape, block_size, signed):
  code = SIGNED if signed else UNSIGNED
  x = moment_like(shape, positive=not signed)
  q = blockwise.quantize_blockwise(jnp.asarray(x), code, block_size)
  ref_codes, ref_absmax = reference.quantize(x, code, block_size)
  assert q.codes.dtype == jnp.uint8 and q.codes.shape == shape
  assert q.absmax.dtype == jnp.float32
  assert q.absmax.shape == blockwise.absmax_shape(shape, block_size)
  np.testing.assert_array_equal(np.asarray(q.codes), ref_codes)
  np.testing.assert_array_equal(np.asarray(q.absmax).reshape(-1), ref_absmax)
  y = blockwise.dequantize_blockwise(q, code, block_size)
  np.testing.assert_array_equal(np.asarray(y), reference.dequantize(ref_codes, ref_absmax, code, block_size))


@pytest.mark.parametrize(
    "shape, block_size, expected",
    [
        ((4096, 4096), 256, (4096, 16)),
        ((4096, 128), 256, (2048,)),
        ((16, 300), 256, (19,)),
        ((8, 2048), 2048, (8, 1)),
        ((7,), 256, (1,)),
        ((), 256, (1,)),
        ((2, 3, 512), 256, (2, 3, 2)),
    ],
)
def test_absmax_layout(shape, block_size, expected):
  assert blockwise.absmax_shape(shape, block_size) == expected


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("block_size", [256, 2048])
def test_error_bound_per_block(signed, block_size):
  code = SIGNED if signed else UNSIGNED
  x = moment_like((8, 4096), seed=1, positive=not signed)
  q = blockwise.quantize_blockwise(jnp.asarray(x), code, block_size)
  y = np.asarray(blockwise.dequantize_blockwise(q, code, block_size))
  blocks = lambda a: a.reshape(-1, block_size)  # noqa: E731  (shape is a multiple of the block)
  err = np.abs(blocks(y) - blocks(x))
  absmax = np.abs(blocks(x)).max(axis=1)
  # Nearest code: error at most half the largest gap of the map, times the block's scale.
  half_gap = 0.5 * np.max(np.diff(code))
  assert np.all(err.max(axis=1) <= absmax * half_gap * (1 + 1e-4))
  # Elementwise: at most half the gap around the element's own normalized value.
  normed = blocks(x) / absmax[:, None]
  hi = np.clip(np.searchsorted(code, normed), 1, 255)
  local_half_gap = 0.5 * (code[hi] - code[hi - 1])
  assert np.all(err <= absmax[:, None] * local_half_gap * (1 + 1e-4) + 1e-12)
  # And the block's largest magnitude maps to 1.0 or, signed and negative, to -0.99297.
  assert np.all(np.abs(blocks(y)).max(axis=1) >= absmax * 0.99296)


def test_zeros_stay_exactly_zero():
  x = np.zeros((3, 256), np.float32)
  x[1, 5] = 3.0  # block 1 non-zero, blocks 0 and 2 all zero
  x[1, 7] = -1e-9  # below the smallest code relative to 3.0: rounds to zero, not to a small non-zero
  for code in (SIGNED, UNSIGNED):
    q = blockwise.quantize_blockwise(jnp.asarray(x), code, 256)
    assert float(q.absmax[0, 0]) == 0.0 and float(q.absmax[2, 0]) == 0.0
    y = np.asarray(blockwise.dequantize_blockwise(q, code, 256))
    assert np.all(y[x == 0] == 0.0)
    assert y[1, 7] == 0.0
    assert np.all(np.isfinite(y))
  y = np.asarray(blockwise.dequantize_blockwise(blockwise.quantize_blockwise(jnp.asarray(x), SIGNED, 256), SIGNED))
  assert y[1, 5] == 3.0


def test_stochastic_rounding_is_unbiased_and_picks_neighbours():
  x = jnp.asarray(moment_like((512,), seed=2))
  quant = jax.jit(jax.vmap(lambda k: blockwise.quantize_blockwise(x, SIGNED, 256, key=k)))
  q = quant(jax.random.split(jax.random.key(0), 2000))
  y = np.asarray(jax.vmap(lambda q: blockwise.dequantize_blockwise(q, SIGNED, 256))(q))
  absmax = np.asarray(q.absmax[0]).repeat(256)
  normed = np.asarray(x) / absmax
  lo = np.clip(np.searchsorted(SIGNED, normed, side="right") - 1, 0, 254)
  codes = np.asarray(q.codes)
  assert np.all((codes == lo) | (codes == lo + 1))
  # Mean of 2000 draws is within 5 standard errors of x, except below the signed map's smallest value
  # (-0.99297, where the block's negative absmax -1.0 lands), which is clamped.
  gap = (SIGNED[lo + 1] - SIGNED[lo]) * absmax
  inside = normed >= SIGNED[0]
  assert np.sum(~inside) == 2
  dev = np.abs(y.mean(axis=0) - np.asarray(x))
  assert np.all(dev[inside] <= 5 * 0.5 * gap[inside] / np.sqrt(2000) + 1e-12)
  # Not always the nearest code: the rounding is random.
  nearest = np.asarray(blockwise.quantize_blockwise(x, SIGNED, 256).codes)
  assert 0.05 < np.mean(codes != nearest) < 0.95


def test_stochastic_rounding_keeps_exact_codes():
  x = jnp.asarray(np.concatenate([SIGNED, np.zeros(256, np.float32)]))
  q = blockwise.quantize_blockwise(x, SIGNED, 256, key=jax.random.key(3))
  np.testing.assert_array_equal(np.asarray(blockwise.dequantize_blockwise(q, SIGNED)), np.asarray(x))


def test_nan_poisons_its_block_only():
  x = np.ones((2, 256), np.float32)
  x[0, 3] = np.nan
  q = blockwise.quantize_blockwise(jnp.asarray(x), SIGNED, 256)
  y = np.asarray(blockwise.dequantize_blockwise(q, SIGNED, 256))
  assert np.all(np.isnan(y[0]))
  np.testing.assert_array_equal(y[1], 1.0)


@pytest.mark.parametrize("code", ["signed", "unsigned"])
def test_inf_keeps_its_place_and_its_block_stays_finite_elsewhere(code):
  """An overflowed statistic (inf) dequantizes to inf again, as optax keeps it, so that m/sqrt(v) = 0; the
  other elements of its block dequantize to exactly 0 (x / inf), never NaN; other blocks are untouched."""
  table = maps.signed_map() if code == "signed" else maps.unsigned_map()
  x = np.ones((2, 256), np.float32)
  x[0, 3], x[0, 4] = np.inf, 5.0
  q = blockwise.quantize_blockwise(jnp.asarray(x), table, 256)
  y = np.asarray(blockwise.dequantize_blockwise(q, table, 256))
  assert y[0, 3] == np.inf and np.all(np.delete(y[0], 3) == 0.0)
  np.testing.assert_array_equal(y[1], 1.0)
  again = blockwise.requantize_blockwise(jnp.asarray(y), q, table, 256)  # unchanged: same codes and scales
  np.testing.assert_array_equal(again.codes, q.codes)
  np.testing.assert_array_equal(again.absmax, q.absmax)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_input_and_output_dtypes(dtype):
  x = jnp.asarray(moment_like((300,)), dtype)
  q = blockwise.quantize_blockwise(x, SIGNED, 256)
  assert q.codes.dtype == jnp.uint8 and q.absmax.dtype == jnp.float32
  assert blockwise.dequantize_blockwise(q, SIGNED, 256, dtype=dtype).dtype == dtype


def test_jit_traces_once_for_same_shapes():
  traces = []

  @jax.jit
  def roundtrip(x):
    traces.append(None)
    return blockwise.dequantize_blockwise(blockwise.quantize_blockwise(x, SIGNED), SIGNED)

  roundtrip(jnp.ones(1000))
  roundtrip(2.0 * jnp.ones(1000))
  assert len(traces) == 1


@pytest.mark.parametrize(
    "shape, spec, absmax_spec",
    [
        ((64, 512), P("x", None), P("x", None)),  # rows sharded: absmax follows the rows
        ((16, 4096), P(None, "x"), P(None, "x")),  # 512 columns per shard = 2 whole blocks
        ((64, 128), P("x", None), P("x")),  # 2 rows per block: flat blocks, 4 per shard
        ((16, 300), P("x", None), P(None)),  # padded: gathered, absmax replicated
        ((8, 1024), P(None, "x"), P(None, None)),  # 128 columns per shard split blocks: gathered
    ],
)
def test_explicit_mesh_sharding(shape, spec, absmax_spec):
  mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Explicit,))
  x = np.asarray(moment_like(shape, seed=4))
  with jax.set_mesh(mesh):
    xs = jax.device_put(jnp.asarray(x), NamedSharding(mesh, spec))
    q = jax.jit(lambda a: blockwise.quantize_blockwise(a, SIGNED, 256))(xs)
    y = jax.jit(lambda q: blockwise.dequantize_blockwise(q, SIGNED, 256))(q)
    q_eager = blockwise.quantize_blockwise(xs, SIGNED, 256)
  assert q.codes.sharding.is_equivalent_to(xs.sharding, len(shape))
  assert y.sharding.is_equivalent_to(xs.sharding, len(shape))
  assert q.absmax.sharding.is_equivalent_to(NamedSharding(mesh, absmax_spec), q.absmax.ndim)
  assert q_eager.absmax.sharding.is_equivalent_to(q.absmax.sharding, q.absmax.ndim)
  ref_codes, _ = reference.quantize(x, SIGNED, 256)
  np.testing.assert_array_equal(np.asarray(q.codes), ref_codes)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(blockwise.dequantize_blockwise(
      blockwise.quantize_blockwise(jnp.asarray(x), SIGNED, 256), SIGNED, 256)))


@pytest.mark.parametrize("block_size", [0, -256, 256.0, True])
def test_invalid_block_size(block_size):
  with pytest.raises(ValueError, match="block_size"):
    blockwise.quantize_blockwise(jnp.ones(8), SIGNED, block_size)


@pytest.mark.parametrize(
    "code", [np.linspace(-1, 1, 256).reshape(2, 128), np.linspace(-1, 1, 300), np.zeros(1), np.zeros(256)]
)
def test_invalid_code(code):
  with pytest.raises(ValueError, match="code"):
    blockwise.quantize_blockwise(jnp.ones(8), code)


def test_requantize_keeps_unchanged_blocks_exactly():
  x = jnp.asarray(-np.abs(moment_like((4, 256), seed=5)))  # every block's largest magnitude is negative
  q = blockwise.quantize_blockwise(x, SIGNED, 256)
  y = blockwise.dequantize_blockwise(q, SIGNED, 256)
  # Plain requantization of the dequantized values is not idempotent: the block shrinks by 0.99297.
  again = blockwise.quantize_blockwise(y, SIGNED, 256)
  np.testing.assert_allclose(again.absmax, 0.99296875 * q.absmax, rtol=1e-6)
  # requantize_blockwise keeps blocks equal to the dequantized previous, and redoes the others.
  changed = y.at[2, 7].add(1e-3)
  for key in (None, jax.random.key(0)):
    r = blockwise.requantize_blockwise(changed, q, SIGNED, 256, key=key)
    np.testing.assert_array_equal(np.asarray(r.absmax)[[0, 1, 3]], np.asarray(q.absmax)[[0, 1, 3]])
    np.testing.assert_array_equal(np.asarray(r.codes)[[0, 1, 3]], np.asarray(q.codes)[[0, 1, 3]])
  fresh = blockwise.quantize_blockwise(changed, SIGNED, 256)
  r = blockwise.requantize_blockwise(changed, q, SIGNED, 256)
  np.testing.assert_array_equal(r.codes[2], fresh.codes[2])
  np.testing.assert_array_equal(r.absmax[2], fresh.absmax[2])


def test_binary_search_fallback_matches_buckets(monkeypatch):
  x = jnp.asarray(moment_like((4096,), seed=6))
  fast = blockwise.quantize_blockwise(x, SIGNED, 256)
  monkeypatch.setattr(blockwise, "_bucket_plan", lambda table: None)
  jax.clear_caches()
  slow = blockwise.quantize_blockwise(x, SIGNED, 256)
  np.testing.assert_array_equal(fast.codes, slow.codes)
  jax.clear_caches()


def test_maps_that_buckets_cannot_separate_use_the_binary_search():
  # 254 values 2**-22 apart near 0.5: no bucketing of the float bits isolates them.
  dense = np.concatenate([[0.0], 0.5 + np.arange(254) * 2.0**-22, [1.0]]).astype(np.float32)
  assert blockwise._bucket_plan(blockwise._as_table(dense)) is None
  rng = np.random.default_rng(7)
  x = (0.5 + rng.uniform(-2.0**-20, 2.0**-16, (4, 256))).astype(np.float32)
  x[:, 0] = 1.0
  q = blockwise.quantize_blockwise(jnp.asarray(x), dense, 256)
  ref_codes, _ = reference.quantize(x, dense, 256)
  np.testing.assert_array_equal(np.asarray(q.codes), ref_codes)
