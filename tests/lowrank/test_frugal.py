"""FRUGAL against a NumPy transcription of the authors' supplementary code."""

import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from tests.lowrank import _reference as ref
from tests.lowrank._helpers import assert_trajectory, gradients

TORCH_LAYOUT = gradtx.MatrixDims(reduction_axes=1, output_axes=0)


def _residual_sign_margin(grads, rho, gap):
  """How far the residual ``G − P Pᵀ G`` of every step stays from zero, in units of what a float32 SVD can
  move it: ``2 θ ||G||₂`` with ``θ = 6e-8 σ₁ / (σ_k − σ_{k+1})`` the angle by which float32 rounding turns
  the rank-k subspace. Above 1, signSGD's ``sign(residual)`` is the same on every CPU as in float64."""
  worst = np.inf
  for t, g in enumerate(grads):
    source = grads[(t // gap) * gap]
    side = ref.std_side(source)
    k = round((source.shape[1] if side == "right" else source.shape[0]) * rho)
    s = np.linalg.svd(source, compute_uv=False)
    p = ref.svd_projector(source, k, side)
    residual = g - (ref.project(g, p, side) @ p if side == "right" else p @ ref.project(g, p, side))
    worst = min(worst, np.abs(residual).min() / (2 * 6e-8 * s[0] / (s[k - 1] - s[k]) * np.linalg.norm(g, 2)))
  return worst


@pytest.mark.parametrize("shape", [(8, 6), (6, 8)])
@pytest.mark.parametrize("rule", ["sign", "sgd", "none"])
def test_frugal_svd_matches_official(shape, rule):
  # A rank-3 signal, so the rank-3 (ρ = 0.5 of 6) subspace is well separated from the noise: with a rank-2
  # signal the cut fell between two noise singular values and one residual entry sat within the float32
  # SVD's error of zero, where its sign (and so the signSGD step) could differ between CPUs.
  grads = gradients(shape, steps=10, seed=7, rank_signal=3)
  assert _residual_sign_margin(grads, rho=0.5, gap=4) > 10
  w0 = np.random.default_rng(2).normal(size=shape)
  official_rule = {"sign": "sign_sgd", "sgd": "sgd", "none": "no"}[rule]
  traj = ref.frugal(w0, grads, rho=0.5, gap=4, lr=0.01, wd=0.1, rule=official_rule, inactive_scale=0.5,
                    proj_scale=2.0)
  tx = gradtx.frugal(learning_rate=0.01, rho=0.5, update_every=4, weight_decay=0.1, state_free=rule,
                     state_free_scale=0.5, projected_scale=2.0, dimension_numbers=TORCH_LAYOUT)
  assert_trajectory(tx, traj, grads)


def test_frugal_without_reset_carries_statistics():
  grads = gradients((8, 6), steps=10, seed=3)
  w0 = np.random.default_rng(4).normal(size=(8, 6))
  traj = ref.frugal(w0, grads, rho=0.25, gap=3, lr=0.01, reset=False)
  tx = gradtx.frugal(learning_rate=0.01, rho=0.25, update_every=3, reset=False, dimension_numbers=TORCH_LAYOUT)
  assert _residual_sign_margin(grads, rho=0.25, gap=3) > 10
  assert_trajectory(tx, traj, grads)


def test_frugal_columns_match_official_with_the_drawn_columns():
  grads = gradients((6, 10), steps=9, seed=5)
  w0 = np.random.default_rng(6).normal(size=(6, 10))
  tx = gradtx.frugal(learning_rate=0.01, rho=0.3, update_every=3, subspace="columns",
                     dimension_numbers=TORCH_LAYOUT)
  params = {"w": jnp.asarray(w0, jnp.float32)}
  state, columns = tx.init(params), []
  for g in grads:  # record the columns gradtx draws at each step
    _, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
    columns.append(np.asarray(state[0].leaves["w"].projector.indices))
  assert all(len(c) == 3 for c in columns) and not np.array_equal(columns[0], columns[3])
  traj = ref.frugal(w0, grads, rho=0.3, gap=3, lr=0.01, columns=columns)
  # Column selection: no SVD, and the residual is G itself outside the drawn columns (sign exact).
  assert_trajectory(tx, traj, grads)


def test_rho_zero_is_sign_sgd_on_matrices_and_adam_elsewhere():
  g = {"w": jnp.asarray(np.random.default_rng(7).normal(size=(8, 6)), jnp.float32), "b": jnp.ones(6)}
  tx = gradtx.scale_by_frugal(rho=0.0)
  u, state = tx.update(g, tx.init(g))
  np.testing.assert_allclose(u["w"], jnp.sign(g["w"]), atol=1e-6)
  np.testing.assert_allclose(u["b"], jnp.ones(6), rtol=1e-4)  # Adam's first step: sign(g)
  assert state.leaves["w"].inner.mu.shape == (8, 0)


def test_frugal_random_subspace_is_orthonormal_and_redrawn():
  tx = gradtx.scale_by_frugal(rho=0.5, update_every=2, subspace="random")
  g = {"w": jnp.asarray(np.random.default_rng(8).normal(size=(8, 6)), jnp.float32)}
  state = tx.init(g)
  u0, state = tx.update(g, state)
  u1, state = tx.update(g, state)
  u2, state = tx.update(g, state)
  assert float(jnp.abs(u0["w"] - u2["w"]).max()) > 1e-3  # a new subspace at step 2


@pytest.mark.parametrize(
    "kwargs,match",
    [({"rho": 1.5}, "rho"), ({"rho": -0.1}, "rho"), ({"subspace": "block"}, "subspace"),
     ({"state_free": "adam"}, "state_free"), ({"update_every": 0}, "update_every"), ({"reset": "yes"}, "reset"),
     ({"state_full": "adam"}, "state_full"), ({"state_free_scale": -1.0}, "state_free_scale")],
)
def test_invalid_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    gradtx.frugal(**{"learning_rate": 0.01, **kwargs})
