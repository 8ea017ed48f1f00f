"""GaLore (and its DCT / Q-GaLore variants) against NumPy transcriptions of the official code."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.core.matrix import MatrixView
from gradtx.lowrank import quantized
from gradtx.lowrank.projector import Geometry
from tests.lowrank import _reference as ref
from tests.lowrank._helpers import assert_trajectory, gradients

TORCH_LAYOUT = gradtx.MatrixDims(reduction_axes=1, output_axes=0)  # W is (out, in), as in PyTorch


@pytest.mark.parametrize("shape", [(8, 6), (6, 8), (6, 6)])
def test_galore_matches_official_over_several_refreshes(shape):
  grads = gradients(shape, steps=12)
  w0 = np.random.default_rng(1).normal(size=shape)
  traj = ref.galore(w0, grads, rank=2, gap=4, scale=0.25, lr=0.01)
  tx = gradtx.galore(learning_rate=0.01, rank=2, update_every=4, dimension_numbers=TORCH_LAYOUT)
  assert_trajectory(tx, traj, grads)


def test_galore_flax_layout_is_the_transpose():
  """A Flax (in, out) kernel with the default view gets the same subspace as the PyTorch (out, in) weight."""
  grads = gradients((8, 6), steps=9)
  w0 = np.random.default_rng(2).normal(size=(8, 6))
  traj = ref.galore(w0, grads, rank=3, gap=3, scale=0.25, lr=0.01)
  tx = gradtx.galore(learning_rate=0.01, rank=3, update_every=3)
  assert_trajectory(tx, [w.T for w in traj], [g.T for g in grads])


def test_galore_weight_decay_acts_after_the_step_as_official():
  grads = gradients((8, 6), steps=8)
  w0 = np.random.default_rng(3).normal(size=(8, 6))
  traj = ref.galore(w0, grads, rank=2, gap=4, scale=0.25, lr=0.01, wd=0.1)
  tx = gradtx.galore(learning_rate=0.01, rank=2, update_every=4, weight_decay=0.1, dimension_numbers=TORCH_LAYOUT)
  assert_trajectory(tx, traj, grads)


@pytest.mark.parametrize("name", ["q_galore", "apollo", "apollo_mini", "owlore"])
def test_decay_acts_on_the_updated_weights(name):
  """Official GaLore-family code decays after the step: u_λ = u_0 − ηλ(θ + u_0)."""
  g = {"w": jnp.asarray(gradients((8, 6), steps=1)[0], jnp.float32)}
  params = {"w": jnp.asarray(np.random.default_rng(11).normal(size=(8, 6)), jnp.float32)}
  lr, wd = 0.01, 0.1
  plain = getattr(gradtx, name)(learning_rate=lr, rank=2)
  decayed = getattr(gradtx, name)(learning_rate=lr, rank=2, weight_decay=wd)
  u0, _ = plain.update(g, plain.init(params), params)
  u1, _ = decayed.update(g, decayed.init(params), params)
  np.testing.assert_allclose(u1["w"], u0["w"] - lr * wd * (params["w"] + u0["w"]), rtol=1e-6, atol=1e-7)


def test_galore_dct_matches_official_dct_adamw():
  grads = gradients((8, 6), steps=10, seed=4)
  w0 = np.random.default_rng(5).normal(size=(8, 6))
  traj = ref.dct_adamw(w0, grads, rank=3, lr=0.01, wd=0.1)
  tx = gradtx.galore_dct(learning_rate=0.01, rank=3, weight_decay=0.1, dimension_numbers=TORCH_LAYOUT)
  assert_trajectory(tx, traj, grads)


@pytest.mark.parametrize("shape", [(8, 6), (6, 8)])
def test_galore_dct_rotate_matches_official_rotate_subspace(shape):
  grads = gradients(shape, steps=10, seed=6, rank_signal=4)
  w0 = np.random.default_rng(7).normal(size=shape)
  traj = ref.dct_adamw(w0, grads, rank=3, lr=0.01, rotate=True)
  tx = gradtx.galore_dct(learning_rate=0.01, rank=3, on_switch="rotate", dimension_numbers=TORCH_LAYOUT)
  assert_trajectory(tx, traj, grads)


def _int4_tolerance(floats, group, bits):
  """Allowed |gradtx - official| per dequantized element: one code step ``s`` of its block where the float
  value sits within 1e-2 code steps of a rounding boundary ``(k + 1/2) s``, else 1e-2 s.

  The float32 SVD's vectors differ from the float64 reference's by up to ~1e-5 of a block's range here (the
  noise singular values are close together), i.e. ~2e-4 code steps (measured: at most 1.8e-4 over this
  test's 24 steps): far inside the 1e-2 window. So an element outside it has the same code on both sides
  and differs only through ``s`` (its relative error times ``|q - z| <= 15``); an element inside it may round
  either way, on any CPU, and then differs by one step.
  """
  x = floats.reshape(-1, group)
  s = np.maximum(x.max(axis=1, keepdims=True) - x.min(axis=1, keepdims=True), 1e-5) / (2**bits - 1)
  at_boundary = np.abs(np.mod(x / s, 1.0) - 0.5) < 1e-2
  return np.where(at_boundary, 1.01 * s, 1e-2 * s).reshape(floats.shape)


def test_q_galore_adaptive_gap_and_int4_projector_match_official():
  """Projector in use (dequantized INT4) and the per-leaf gap, step by step, against Q-GaLore's projector
  with the same canonical SVD signs (the official ones are its LAPACK's)."""
  rng = np.random.default_rng(8)
  u, v = np.abs(rng.normal(size=(16, 1))) + 0.5, rng.normal(size=(32, 1))
  grads = [10 * u @ v.T + 0.1 * rng.normal(size=(16, 32)) for _ in range(24)]
  used, floats, gaps, means = ref.q_galore_projector(grads, rank=4, gap=2, group=16, bits=4, queue_size=2)
  # The gaps are compared exactly: every queue mean is far from the threshold 0.4 next to float32 cosines' error.
  assert max(gaps) > 2 and min(abs(m - 0.4) for m in means) > 1e-3, "the test data must make the gap grow"
  # Every block holds both signs, so the official clipped zero point equals gradtx's unclipped one.
  assert all(f.reshape(-1, 16).min(axis=1).max() < 0 < f.reshape(-1, 16).max(axis=1).min() for f in floats)
  tx = gradtx.q_galore(learning_rate=0.01, rank=4, update_every=2, block_size=16, stagger=False,
                       adaptive_refresh=gradtx.lowrank.AdaptiveRefresh(queue_size=2),
                       dimension_numbers=TORCH_LAYOUT)
  projector = quantized("svd", block_size=16)
  geo = Geometry.of(MatrixView.of((16, 32), TORCH_LAYOUT), "official", 4)
  params = {"w": jnp.zeros((16, 32))}
  state = tx.init(params)
  step = jax.jit(tx.update)
  for t, g in enumerate(grads):
    _, state = step({"w": jnp.asarray(g, jnp.float32)}, state, params)
    leaf = state[0].leaves["w"]
    assert int(leaf.refresh.gap) == gaps[t], t
    basis = np.asarray(projector.basis(leaf.projector, geo, None, jnp.float32))
    assert np.all(np.abs(basis - used[t]) <= _int4_tolerance(floats[t], 16, 4)), t
