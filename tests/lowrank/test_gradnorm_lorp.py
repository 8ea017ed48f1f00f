"""GradNormLoRP against a NumPy transcription of the official LowRankWeightNormAdamW."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from tests.lowrank import _reference as ref
from tests.lowrank._helpers import gradients

TORCH_LAYOUT = gradtx.MatrixDims(reduction_axes=1, output_axes=0)


def _run(tx, w0, grads):
  params = {"w": jnp.asarray(w0, jnp.float32)}
  state = tx.init(params)
  out = [np.asarray(params["w"])]
  for g in grads:
    u, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
    params = {"w": params["w"] + u["w"]}
    out.append(np.asarray(params["w"]))
  return out, state


@pytest.mark.parametrize("shape", [(8, 6), (6, 8)])
def test_matches_official_low_rank_weight_norm_adamw(shape):
  grads = gradients(shape, steps=9, seed=1)
  w0 = np.random.default_rng(2).normal(size=shape)
  official = ref.gradnorm_lorp(w0, grads, rank=2, gap=4, scale=0.5, lr=0.01, wd=0.1)
  tx = gradtx.gradnorm_lorp(learning_rate=0.01, rank=2, update_every=4, scale=0.5, weight_decay=0.1,
                            dimension_numbers=TORCH_LAYOUT)
  ours, _ = _run(tx, w0, grads)
  # Weights O(1) after 9 float32 steps of size ~1e-2, each within ~1e-6 of the float64 step (float32 SVD,
  # see assert_trajectory): measured 4e-7 relative at most; rtol 1e-5, atol 1e-6.
  for t, (a, b) in enumerate(zip(ours, official)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"step {t}")


def test_state_holds_a_full_copy_and_the_magnitudes():
  state = gradtx.gradnorm_lorp(learning_rate=0.01, rank=2).init({"w": jnp.ones((16, 8)), "b": jnp.ones(8)})
  assert state.v["w"].shape == (16, 8) and state.g["w"].shape == (1, 8)  # one magnitude per output channel
  assert state.v_state.leaves["w"].inner.mu.shape == (16, 2)


def test_options_change_the_update_and_need_params():
  g = {"w": jnp.asarray(np.random.default_rng(3).normal(size=(8, 6)), jnp.float32)}
  params = {"w": jnp.asarray(np.random.default_rng(4).normal(size=(8, 6)), jnp.float32)}
  updates = []
  for kwargs in [{}, {"radial": True}, {"reset_magnitude": False}]:
    tx = gradtx.gradnorm_lorp(learning_rate=0.01, rank=2, **kwargs)
    state = tx.init(params)
    for _ in range(2):
      u, state = tx.update(g, state, params)
    updates.append(u["w"])
  assert float(jnp.abs(updates[0] - updates[1]).max()) > 1e-6
  assert float(jnp.abs(updates[0] - updates[2]).max()) > 1e-6
  tx = gradtx.gradnorm_lorp(learning_rate=0.01)
  with pytest.raises(ValueError, match="params"):
    tx.update(g, tx.init(params))


def test_zero_columns_stay_finite():
  tx = gradtx.gradnorm_lorp(learning_rate=0.1, rank=2)
  params = {"w": jnp.zeros((8, 6))}
  state = tx.init(params)
  for _ in range(3):
    u, state = tx.update({"w": jnp.ones((8, 6))}, state, params)
    params = jax.tree.map(jnp.add, params, u)
  assert bool(jnp.all(jnp.isfinite(params["w"]))) and float(jnp.abs(params["w"]).max()) > 0


@pytest.mark.parametrize("kwargs,match", [({"radial": 1}, "radial"), ({"reset_magnitude": "no"}, "reset_magnitude"),
                                          ({"rank": 0}, "rank"), ({"learning_rate": "x"}, "learning_rate")])
def test_invalid_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    gradtx.gradnorm_lorp(**{"learning_rate": 0.01, **kwargs})
