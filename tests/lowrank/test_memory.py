"""Optimizer-state bytes at LLaMA-7B shapes equal the papers' formulas (jax.eval_shape: nothing allocated).

LLaMA-7B: 32 layers of q, k, v, o (4096 x 4096), gate, up (4096 x 11008), down (11008 x 4096) kernels
(Flax ``(in, out)`` layout), two RMSNorm scales per layer, token embeddings and lm_head (32000 x 4096) and a
final norm. As in the official scripts, only the attention and MLP kernels are projected; the rest get the
optimizer's full-rank Adam.
"""

import math

import jax
import jax.numpy as jnp
import optax
import pytest

import gradtx

D, F, V, LAYERS = 4096, 11008, 32000, 32
MATRICES = {"q": (D, D), "k": (D, D), "v": (D, D), "o": (D, D), "gate": (D, F), "up": (D, F), "down": (F, D)}
F32 = jax.ShapeDtypeStruct


def _params():
  layer = {**{k: F32(s, jnp.float32) for k, s in MATRICES.items()},
           "norm1": F32((D,), jnp.float32), "norm2": F32((D,), jnp.float32)}
  return {"layers": [dict(layer) for _ in range(LAYERS)], "embed": F32((V, D), jnp.float32),
          "lm_head": F32((D, V), jnp.float32), "norm": F32((D,), jnp.float32)}


def _mask(params):
  return {"layers": [{k: k in MATRICES for k in layer} for layer in params["layers"]], "embed": False,
          "lm_head": False, "norm": False}


def _nbytes(tree):
  return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _state_bytes(tx):
  report = gradtx.memory_report(tx, _params())  # jax.eval_shape of tx.init: nothing allocated
  assert report.state_bytes == _nbytes(jax.eval_shape(tx.init, _params()))
  return report.state_bytes


N_MATRICES = LAYERS * len(MATRICES)
FULL_NUMEL = 2 * V * D + (2 * LAYERS + 1) * D  # embeddings, lm_head and norms: full-rank Adam (mu, nu)
FULL_BYTES = 2 * 4 * FULL_NUMEL + 4  # + the full-rank Adam's count
WRAPPER = 4 + 8  # wrapper count + PRNG key
AFTER_STEP = 4  # the step count of the decay-after-step chain (GaLore, Q-GaLore, APOLLO: official order)
PER_LEAF = 3 * 4 + 4 + 4  # refresh (last, gap, refreshes) + the leaf's inner count + its recorded rank


def _sum_over_matrices(per_matrix):
  return LAYERS * sum(per_matrix(min(s), max(s)) for s in MATRICES.values())


def test_galore_rank_1024_is_r_min_plus_2r_max():
  r = 1024
  tx = gradtx.galore(learning_rate=1e-3, rank=r, projection_mask=_mask)
  formula = 4 * _sum_over_matrices(lambda mn, mx: r * mn + 2 * r * mx)  # P + M + V, float32
  assert _state_bytes(tx) == formula + FULL_BYTES + WRAPPER + AFTER_STEP + N_MATRICES * PER_LEAF


def test_galore_min_state_side_swaps_the_roles():
  r = 1024
  tx = gradtx.galore(learning_rate=1e-3, rank=r, side="min_state", projection_mask=_mask)
  formula = 4 * _sum_over_matrices(lambda mn, mx: r * mx + 2 * r * mn)
  assert _state_bytes(tx) == formula + FULL_BYTES + WRAPPER + AFTER_STEP + N_MATRICES * PER_LEAF


def test_apollo_rank_256_is_2r_max_with_the_projection_regenerated():
  r = 256
  tx = gradtx.apollo(learning_rate=1e-3, rank=r, projection_mask=_mask)
  formula = 4 * _sum_over_matrices(lambda mn, mx: 2 * r * mx)  # M + V; P regenerated from the key
  limiter = 4  # one float32 norm per matrix
  assert _state_bytes(tx) == formula + FULL_BYTES + WRAPPER + AFTER_STEP + N_MATRICES * (PER_LEAF + limiter)


def test_apollo_mini_is_2_max_plus_1_per_matrix():
  tx = gradtx.apollo_mini(learning_rate=1e-3, projection_mask=_mask)
  formula = 4 * _sum_over_matrices(lambda mn, mx: 2 * mx + 1)
  assert _state_bytes(tx) == formula + FULL_BYTES + WRAPPER + AFTER_STEP + N_MATRICES * PER_LEAF
  adam = 2 * 4 * sum(math.prod(x.shape) for x in jax.tree.leaves(_params()))
  matrices_adam = 2 * 4 * _sum_over_matrices(lambda mn, mx: mn * mx)
  assert formula / matrices_adam < 1 / 1000  # "SGD-like": ~1/2000 of Adam's state on the projected matrices
  assert _state_bytes(tx) < adam


def test_q_galore_int4_projector_is_half_a_byte_per_value():
  r, block = 1024, 256
  tx = gradtx.q_galore(learning_rate=1e-3, rank=r, projection_mask=_mask)

  def per_matrix(mn, mx):
    codes, blocks = r * mn // 2, math.ceil(r * mn / block)
    adaptive = 5 * 4 + 4 + 4 * mn  # cosine queue, pushes, previous top vector
    return codes + 8 * blocks + 4 * 2 * r * mx + adaptive  # codes + (scale, zero) + M, V

  assert _state_bytes(tx) == _sum_over_matrices(per_matrix) + FULL_BYTES + WRAPPER + AFTER_STEP + N_MATRICES * PER_LEAF


@pytest.mark.parametrize("name", ["galore", "galore_dct", "apollo", "apollo_mini", "q_galore"])
def test_low_rank_optimizers_hold_less_state_than_adamw(name):
  tx = getattr(gradtx, name)(learning_rate=1e-3, projection_mask=_mask)
  assert _state_bytes(tx) < _nbytes(jax.eval_shape(optax.adamw(1e-3).init, _params()))


def test_galore_dct_stores_r_int32_indices_instead_of_a_projector():
  r = 1024
  tx = gradtx.galore_dct(learning_rate=1e-3, rank=r, projection_mask=_mask)
  formula = 4 * _sum_over_matrices(lambda mn, mx: r + 2 * r * mx)
  assert _state_bytes(tx) == formula + FULL_BYTES + WRAPPER + N_MATRICES * PER_LEAF
