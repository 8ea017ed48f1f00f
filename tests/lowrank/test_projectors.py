"""Projectors: orthonormal bases, official DCT basis and selection, DCT vs SVD projection error, INT4 storage."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradtx.core.matrix import MatrixDims, MatrixView
from gradtx.lowrank import DCTProjector, QuantizedProjector, RandomProjector, SVDProjector, quantized
from gradtx.lowrank.dct import dct_columns, dct_matrix
from gradtx.lowrank.projector import Geometry, project, project_back
from gradtx.lowrank.quantized import dequantize, quantize
from tests.lowrank import _reference as ref


def _geo(shape, rank, side="official", dims=MatrixDims(0, 1)):
  return Geometry.of(MatrixView.of(shape, dims), side, rank)


def _basis(projector, g, geo, key=jax.random.PRNGKey(0)):
  spec = (None,) * (len(geo.batch) + 2)
  state = projector.refresh(g, projector.init(geo, jnp.float32, g, spec), geo, key)
  return projector.basis(state, geo, key, jnp.float32), state


@pytest.mark.parametrize("shape", [(12, 7), (7, 12), (9, 9), (3, 10, 6)])
@pytest.mark.parametrize("projector", [SVDProjector(), DCTProjector(), RandomProjector(orthogonal=True)])
def test_bases_are_orthonormal(shape, projector):
  dims = MatrixDims(1, 2) if len(shape) == 3 else MatrixDims(0, 1)
  geo = _geo(shape, 4, dims=dims)
  g = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
  basis, _ = _basis(projector, g, geo)
  assert basis.shape == geo.batch + (geo.d, 4)
  gram = jnp.einsum("...dr,...ds->...rs", basis, basis)
  np.testing.assert_allclose(gram, np.broadcast_to(np.eye(4), gram.shape), atol=2e-5)


def test_side_rules():
  assert _geo((12, 7), 3).left is False and _geo((12, 7), 3).d == 7  # compress the smaller (outputs)
  assert _geo((7, 12), 3).left is True and _geo((9, 9), 3).left is True  # tie: the input dimension
  assert _geo((12, 7), 3, "min_state").left is True  # optax's side: the larger
  assert _geo((12, 7), 3, "output").d == 7 and _geo((7, 12), 3, "input").d == 7
  assert _geo((12, 7), 100).rank == 7  # clipped per leaf


def test_svd_basis_spans_the_top_singular_vectors():
  g = np.random.default_rng(1).normal(size=(10, 6))
  geo = _geo((10, 6), 3)
  basis, _ = _basis(SVDProjector(), jnp.asarray(g, jnp.float32), geo)
  u, _, vh = np.linalg.svd(g.T)  # the (out, in) orientation the official code sees
  # Signs included (canonical on both sides). float32 against float64 SVD of a random 10x6 matrix: entries
  # differ by ~1e-6; atol 1e-5.
  np.testing.assert_allclose(np.asarray(basis), ref.canonical_signs(u[:, :3]), atol=1e-5)


def test_svd_batched_equals_per_layer():
  g = np.random.default_rng(2).normal(size=(3, 10, 6)).astype(np.float32)
  geo = _geo((3, 10, 6), 2, dims=MatrixDims(1, 2))
  batched, _ = _basis(SVDProjector(), jnp.asarray(g), geo)
  for i in range(3):
    single, _ = _basis(SVDProjector(), jnp.asarray(g[i]), _geo((10, 6), 2))
    # The same float32 SVD routine on the same matrix (equal in practice); atol 1e-6 allows for a batched
    # kernel that orders its sums differently (unit vectors: ~1e-7 per entry).
    np.testing.assert_allclose(batched[i], single, atol=1e-6)


@pytest.mark.parametrize("d", [1, 2, 7, 64, 1000])
def test_dct_basis_is_the_official_dct3_matrix(d):
  q = np.asarray(dct_matrix(d))
  np.testing.assert_allclose(q, ref.dct3_matrix(d), atol=2e-6)
  np.testing.assert_allclose(q @ q.T, np.eye(d), atol=5e-5)


def test_dct_columns_stay_accurate_for_large_sizes():
  d = 16384
  cols = jnp.array([0, 1, 5000, d - 1])
  i = np.arange(d, dtype=np.float64)[:, None]
  k = np.asarray(cols, np.float64)[None, :]
  expected = np.sqrt(2 / d) * np.cos(np.pi * i * (2 * k + 1) / (2 * d))
  expected[0] *= np.sqrt(0.5)
  np.testing.assert_allclose(np.asarray(dct_columns(d, cols)), expected, atol=1e-6)
  with pytest.raises(ValueError, match="46340"):
    dct_columns(50000, cols)


@pytest.mark.parametrize("shape", [(10, 6), (6, 10)])
def test_dct_selects_the_official_columns(shape):
  g = np.random.default_rng(3).normal(size=shape)
  torch_w = g.T  # gradtx's (in, out) leaf is the official code's (out, in) weight transposed
  q = ref.dct3_matrix(min(shape))
  right = torch_w.shape[0] >= torch_w.shape[1]
  s = torch_w @ q if right else q.T @ torch_w
  expected = np.sort(np.argsort(-np.abs(s).sum(axis=0 if right else 1))[:3])
  _, state = _basis(DCTProjector(), jnp.asarray(g, jnp.float32), _geo(shape, 3))
  # Exact indices: the 3rd and 4th scores are far apart next to float32 scores' ~1e-6 relative error.
  assert ref.selection_margin(np.abs(s).sum(axis=0 if right else 1), 3) > ref.SELECTION_MARGIN
  np.testing.assert_array_equal(state.indices, expected)
  assert state.indices.dtype == jnp.int32


def _low_rank_plus_noise(rng, m, n, k, smooth):
  if smooth:  # smooth (random-walk) factors: energy at low frequencies, as in structured gradients
    u, v = np.cumsum(rng.normal(size=(m, k)), 0), np.cumsum(rng.normal(size=(n, k)), 0)
  else:  # factors in a uniformly random subspace
    u, v = rng.normal(size=(m, k)), rng.normal(size=(n, k))
  u, v = u / np.linalg.norm(u, axis=0), v / np.linalg.norm(v, axis=0)
  signal = u @ np.diag(np.linspace(3, 1, k)) @ v.T
  return signal + 0.1 * np.linalg.norm(signal) / np.sqrt(m * n) * rng.normal(size=(m, n))


@pytest.mark.parametrize("smooth", [True, False])
def test_dct_projection_error_against_svd(smooth):
  """Stated factors: with smooth low-rank structure the DCT error is within 4x the SVD error (and far below a
  random subspace's); with a uniformly random subspace DCT still lies between SVD and random."""
  rng = np.random.default_rng(4)
  geo = _geo((128, 64), 16)
  for _ in range(3):
    g = jnp.asarray(_low_rank_plus_noise(rng, 128, 64, 6, smooth), jnp.float32)
    err = {}
    for name, p in [("svd", SVDProjector()), ("dct", DCTProjector()), ("random", RandomProjector(orthogonal=True))]:
      b, _ = _basis(p, g, geo)
      err[name] = float(jnp.linalg.norm(g - project_back(project(g, b, geo.left), b, geo.left)) / jnp.linalg.norm(g))
    # Measured margins are factors of 1.2 or more (svd 0.072, dct 0.17-0.74, random 0.85-0.91): rounding of
    # ~1e-6 cannot reorder them.
    assert err["svd"] <= err["dct"] <= err["random"], err
    if smooth:
      assert err["dct"] <= 4 * err["svd"] and err["dct"] <= err["random"] / 3, err


def test_int4_codes_are_packed_two_per_byte():
  geo = _geo((256, 512), 64)  # basis (256, 64): 16384 values
  state = quantized("svd").init(geo, jnp.float32, jnp.zeros((256, 512)), (None, None))
  assert state.codes.dtype == jnp.uint8 and state.codes.size == 16384 // 2
  assert state.scale.shape == state.zero.shape == (16384 // 256,)


def test_quantization_matches_official_on_blocks_that_contain_zero():
  x = np.random.default_rng(5).normal(size=(4, 64))  # every block of 16 has both signs
  # Same codes on both sides: every value is at least 1e-4 code steps from a rounding boundary (3.6e-4 here),
  # 100x the float32 rounding of x / s (|x / s| <= 15: ~1e-6 steps). The dequantized values then differ by
  # the rounding of s only (~1e-7 relative, times |q - z| <= 15 steps of ~0.5): atol 1e-6.
  assert ref.rounding_margin(x, 16, 4) > 1e-4
  state = quantize(jnp.asarray(x.ravel(), jnp.float32), bits=4, block_size=16)
  got = np.asarray(dequantize(state, 4, x.size)).reshape(x.shape)
  np.testing.assert_allclose(got, ref.quantize_official(x, 16, 4), atol=1e-6)


def test_quantization_keeps_single_sign_blocks_that_the_official_clip_collapses():
  x = np.linspace(0.5, 0.6, 16)  # one positive block
  official = ref.quantize_official(x, 16, 4)
  got = np.asarray(dequantize(quantize(jnp.asarray(x, jnp.float32), 4, 16), 4, 16))
  assert np.abs(official - x).max() > 0.3  # the clipped zero point maps everything near 0.1
  assert np.abs(got - x).max() <= (0.6 - 0.5) / 15 / 2 + 1e-6


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_basis_round_trip_error_is_half_a_step(bits):
  g = jnp.asarray(np.random.default_rng(6).normal(size=(40, 24)), jnp.float32)  # 24*4 = 96: padded blocks
  geo = _geo((40, 24), 4)
  exact, _ = _basis(SVDProjector(), g, geo)
  approx, state = _basis(quantized("svd", bits=bits, block_size=32), g, geo)
  step = float(jnp.max(state.scale))
  # Round to nearest: at most half a step, plus the float32 rounding of s (q - z) for |values| <= 1 (~1e-7).
  assert float(jnp.abs(exact - approx).max()) <= step / 2 + 1e-6


@pytest.mark.parametrize(
    "kwargs,match",
    [({"base": DCTProjector()}, "projector"), ({"base": RandomProjector()}, "projector"),
     ({"base": SVDProjector(), "bits": 3}, "bits"), ({"base": SVDProjector(), "block_size": 15}, "block_size")],
)
def test_invalid_quantized_projectors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    QuantizedProjector(**kwargs)
