"""APOLLO / APOLLO-Mini against a NumPy transcription of zhuhanqing/APOLLO's apollo_torch/apollo.py."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.core.matrix import MatrixView
from gradtx.lowrank import RandomProjector, RandomState
from gradtx.lowrank.projector import Geometry
from tests.lowrank import _reference as ref
from tests.lowrank._helpers import assert_trajectory, gradients

TORCH_LAYOUT = gradtx.MatrixDims(reduction_axes=1, output_axes=0)


def _random_projections(shape, rank, gap, steps, seed=0):
  """The Gaussian projections gradtx regenerates (leaf 0, key folded with the refresh step), in the official
  layout: (r, n) when the official code projects on the right, (m, r) on the left."""
  geo = Geometry.of(MatrixView.of(shape, TORCH_LAYOUT), "official", rank)
  key = jax.random.fold_in(jax.random.PRNGKey(seed), 0)
  out = []
  for t in range(steps):
    basis = np.asarray(RandomProjector().basis(RandomState(), geo, jax.random.fold_in(key, (t // gap) * gap),
                                               jnp.float32), np.float64)
    out.append(basis.T if geo.left else basis)
  return out


@pytest.mark.parametrize("shape", [(8, 6), (6, 8)])
@pytest.mark.parametrize("scale_type", ["channel", "tensor"])
def test_apollo_random_matches_official(shape, scale_type):
  grads = gradients(shape, steps=10, seed=1)
  w0 = np.random.default_rng(2).normal(size=shape)
  projections = _random_projections(shape, rank=2, gap=4, steps=10)
  traj = ref.apollo(w0, grads, projections, lr=0.01, scale=2.0, scale_type=scale_type, wd=0.1)
  tx = gradtx.apollo(learning_rate=0.01, rank=2, update_every=4, scale=2.0, scale_type=scale_type,
                     weight_decay=0.1, dimension_numbers=TORCH_LAYOUT)
  assert_trajectory(tx, traj, grads)


@pytest.mark.parametrize("scale_front,limiter", [(True, True), (False, False)])
def test_apollo_limiter_options_match_official(scale_front, limiter):
  grads = gradients((8, 6), steps=10, seed=3)
  grads[5] = grads[5] * 20  # a spike the limiter must cut
  w0 = np.random.default_rng(4).normal(size=(8, 6))
  projections = _random_projections((8, 6), rank=3, gap=3, steps=10)
  traj = ref.apollo(w0, grads, projections, lr=0.01, scale=4.0, scale_front=scale_front, limiter=limiter)
  tx = gradtx.apollo(learning_rate=0.01, rank=3, update_every=3, scale=4.0, scale_front=scale_front,
                     norm_growth_limit=1.01 if limiter else None, dimension_numbers=TORCH_LAYOUT)
  assert_trajectory(tx, traj, grads)


def test_apollo_svd_projector_matches_official_svd_option():
  grads = gradients((8, 6), steps=9, seed=5)
  w0 = np.random.default_rng(6).normal(size=(8, 6))
  projections = [ref.svd_projector(grads[(t // 4) * 4], 2, "right") for t in range(9)]
  traj = ref.apollo(w0, grads, projections, lr=0.01)
  tx = gradtx.apollo(learning_rate=0.01, rank=2, update_every=4, projector="svd", dimension_numbers=TORCH_LAYOUT)
  assert_trajectory(tx, traj, grads)


def test_apollo_mini_matches_official_rank1_tensor_scale128():
  grads = gradients((6, 8), steps=8, seed=7)
  w0 = np.random.default_rng(8).normal(size=(6, 8))
  projections = _random_projections((6, 8), rank=1, gap=200, steps=8)
  traj = ref.apollo(w0, grads, projections, lr=0.01, scale=128.0, scale_type="tensor", wd=0.05)
  tx = gradtx.apollo_mini(learning_rate=0.01, weight_decay=0.05, dimension_numbers=TORCH_LAYOUT)
  assert_trajectory(tx, traj, grads)


def test_apollo_non_matrix_leaves_get_hf_adamw():
  g = np.random.default_rng(9).normal(size=(5, 5))
  tx = gradtx.scale_by_apollo(rank=2)
  ref_tx = gradtx.lowrank.scale_by_adam_hf(eps=1e-6)
  params = {"b": jnp.zeros(5)}
  s, s_ref = tx.init(params), ref_tx.init(params["b"])
  for t in range(4):
    u, s = tx.update({"b": jnp.asarray(g[t], jnp.float32)}, s)
    u_ref, s_ref = ref_tx.update(jnp.asarray(g[t], jnp.float32), s_ref)
    # The same elementwise transformation on the same leaf: equal up to ~1 ulp of fused operations.
    np.testing.assert_allclose(u["b"], u_ref, rtol=1e-6)


def test_random_projection_is_regenerated_not_stored_and_has_variance_one_over_r():
  tx = gradtx.scale_by_apollo(rank=64, update_every=2)
  params = {"w": jnp.zeros((512, 256))}
  state = tx.init(params)
  assert state.leaves["w"].projector == RandomState()  # nothing stored
  geo = Geometry.of(MatrixView.of((512, 256), gradtx.MatrixDims(0, 1)), "official", 64)
  key = jax.random.fold_in(jax.random.PRNGKey(0), 0)
  p0 = RandomProjector().basis(RandomState(), geo, jax.random.fold_in(key, 0), jnp.float32)
  p2 = RandomProjector().basis(RandomState(), geo, jax.random.fold_in(key, 2), jnp.float32)
  assert p0.shape == (256, 64)
  np.testing.assert_allclose(float(jnp.var(p0)), 1 / 64, rtol=0.05)  # sample variance of 16384 draws: ±1.1% (1σ)
  assert float(jnp.abs(p0 - p2).max()) > 0.1  # a refresh draws a new matrix
  ortho = RandomProjector(orthogonal=True).basis(RandomState(), geo, key, jnp.float32)
  np.testing.assert_allclose(ortho.T @ ortho, np.eye(64), atol=1e-5)  # float32 QR of 256 rows: ~1e-6


@pytest.mark.parametrize(
    "kwargs,match",
    [({"rank": 0}, "rank"), ({"update_every": 0}, "update_every"), ({"scale_type": "row"}, "scale_type"),
     ({"norm_growth_limit": 0.5}, "norm_growth_limit"), ({"scale": -1.0}, "scale"),
     ({"projector": "qr"}, "projector"), ({"side": "std"}, "side"), ({"learning_rate": "x"}, "learning_rate")],
)
def test_invalid_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    gradtx.apollo(**{"learning_rate": 0.01, **kwargs})


def test_apollo_nan_gradient_is_caught_by_apply_if_finite():
  """A NaN gradient makes the update and the state NaN (as any Adam); optax.apply_if_finite skips the step."""
  tx = optax.apply_if_finite(gradtx.apollo(learning_rate=0.01, rank=2), max_consecutive_errors=3)
  params = {"w": jnp.ones((8, 6))}
  state = tx.init(params)
  bad = {"w": jnp.full((8, 6), jnp.nan)}
  updates, new_state = tx.update(bad, state, params)
  assert float(jnp.abs(updates["w"]).max()) == 0.0
  for a, b in zip(jax.tree.leaves(new_state.inner_state), jax.tree.leaves(state.inner_state)):
    np.testing.assert_array_equal(a, b)
