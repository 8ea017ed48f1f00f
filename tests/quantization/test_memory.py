"""Optimizer-state bytes at LLaMA-7B shapes, from shapes alone (jax.eval_shape: nothing is allocated)."""

import math

import jax
import jax.numpy as jnp
import optax
import pytest

import gradtx


def llama_7b_params():
  """LLaMA-7B (Touvron et al. 2023): d=4096, 32 layers, SwiGLU hidden 11008, vocabulary 32000, untied."""
  d, hidden, vocab = 4096, 11008, 32000
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)  # noqa: E731
  layer = {
      "wq": f32(d, d), "wk": f32(d, d), "wv": f32(d, d), "wo": f32(d, d),
      "w1": f32(d, hidden), "w3": f32(d, hidden), "w2": f32(hidden, d),
      "attention_norm": f32(d), "ffn_norm": f32(d),
  }
  params = {f"layer_{i}": dict(layer) for i in range(32)}
  params.update(tok_embeddings=f32(vocab, d), norm=f32(d), output=f32(d, vocab))
  return params


def state_bytes(tx, params):
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(jax.eval_shape(tx.init, params)))


def test_llama_7b_parameter_count():
  n = sum(math.prod(x.shape) for x in jax.tree.leaves(llama_7b_params()))
  assert 6.7e9 < n < 6.8e9


# Every LLaMA-7B tensor has >= 4096 elements and a multiple of the block size, so each moment costs one
# byte per element plus 4 bytes per block: (1 + 4 / block) / 4 of float32.
@pytest.mark.parametrize(
    "factory, reference, expected",
    [
        (lambda: gradtx.adamw_8bit(1e-3), lambda: optax.adamw(1e-3), (1 + 4 / 256) / 4),
        (lambda: gradtx.adamw_8bit(1e-3, block_size=2048), lambda: optax.adamw(1e-3), (1 + 4 / 2048) / 4),
        (lambda: gradtx.lion_8bit(1e-4), lambda: optax.lion(1e-4), (1 + 4 / 256) / 4),
        (lambda: gradtx.adabelief_8bit(1e-3), lambda: optax.adabelief(1e-3), (1 + 4 / 256) / 4),
    ],
)
def test_state_bytes_at_llama_7b_shapes(factory, reference, expected):
  params = llama_7b_params()
  ratio = state_bytes(factory(), params) / state_bytes(reference(), params)
  assert ratio <= 0.27
  assert ratio == pytest.approx(expected, rel=1e-6)
