"""StableEmbedding (bitsandbytes nn/modules.py::StableEmbedding) in Flax nnx."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

nnx = pytest.importorskip("flax.nnx")

import gradtx  # noqa: E402
from gradtx.quantization.embedding import StableEmbedding, StableEmbeddingParam  # noqa: E402


def test_exported_lazily():
  assert gradtx.StableEmbedding is StableEmbedding
  with pytest.raises(AttributeError, match="no_such_name"):
    getattr(gradtx, "no_such_name")


def test_xavier_uniform_initialization():
  emb = StableEmbedding(1000, 300, rngs=nnx.Rngs(0))
  w = np.asarray(emb.embedding[...])
  bound = np.sqrt(6.0 / (1000 + 300))  # torch.nn.init.xavier_uniform_, gain 1
  assert w.shape == (1000, 300) and w.dtype == np.float32
  assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
  assert abs(w.std() - bound / np.sqrt(3)) < 0.01 * bound  # uniform on [-b, b]
  assert isinstance(emb.embedding, StableEmbeddingParam) and isinstance(emb.embedding, nnx.Param)


def test_layer_norm_of_the_lookup_in_float32():
  emb = StableEmbedding(50, 16, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(1))
  ids = jnp.array([[3, 7, 3], [0, 49, 1]])
  out = emb(ids)
  assert out.shape == (2, 3, 16) and out.dtype == jnp.bfloat16  # cast back to the weight's dtype
  w = np.asarray(emb.embedding[...], np.float32)[np.asarray(ids)]
  expected = (w - w.mean(-1, keepdims=True)) / np.sqrt(w.var(-1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(np.asarray(out, np.float32), expected, rtol=2e-2, atol=2e-2)
  wide = StableEmbedding(50, 16, dtype=jnp.float32, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(1))
  assert wide(ids).dtype == jnp.float32


def test_padding_index_starts_at_zero_and_gets_no_gradient():
  emb = StableEmbedding(10, 8, padding_idx=-1, rngs=nnx.Rngs(2))
  assert emb.padding_idx == 9
  np.testing.assert_array_equal(np.asarray(emb.embedding[...])[9], 0.0)
  ids = jnp.array([[9, 1, 9, 2]])
  grads = nnx.grad(lambda m: jnp.sum(m(ids) * jnp.arange(8.0)))(emb)
  g = np.asarray(grads["embedding"][...])
  assert np.all(g[9] == 0.0) and np.any(g[1] != 0.0)


def test_attend_ties_the_output_layer():
  emb = StableEmbedding(20, 8, rngs=nnx.Rngs(3))
  q = jnp.ones((2, 8))
  np.testing.assert_allclose(emb.attend(q), q @ emb.embedding[...].T, rtol=1e-6)


def test_quantize_mask_keeps_the_embedding_state_in_float32():
  class Model(nnx.Module):
    def __init__(self, rngs):
      self.tok = StableEmbedding(64, 128, rngs=rngs)
      self.head = nnx.Linear(128, 64, rngs=rngs)

    def __call__(self, ids):
      return self.head(self.tok(ids))

  model = Model(nnx.Rngs(0))
  tx = gradtx.adamw_8bit(1e-3, quantize_mask=StableEmbedding.quantize_mask)
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  adam = opt.opt_state[0].inner_state
  assert adam.mu["tok"]["embedding"].dtype == jnp.float32  # 8192 elements, but masked: 32-bit
  assert adam.mu["head"]["kernel"].dtype == jnp.uint8
  ids = jnp.arange(16).reshape(2, 8)

  @nnx.jit
  def step(model, opt):
    xent = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(ids), ids).mean()  # noqa: E731
    loss, grads = nnx.value_and_grad(xent)(model)
    opt.update(model, grads)
    return loss

  losses = [float(step(model, opt)) for _ in range(5)]
  assert losses[-1] < losses[0]
  assert opt.opt_state[0].inner_state.mu["tok"]["embedding"].dtype == jnp.float32


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_embeddings": 0}, "num_embeddings"),
        ({"features": 2.0}, "features"),
        ({"padding_idx": 10}, "padding_idx"),
        ({"padding_idx": -11}, "padding_idx"),
        ({"epsilon": 0.0}, "epsilon"),
    ],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    StableEmbedding(**{"num_embeddings": 10, "features": 4, "rngs": nnx.Rngs(0), **kwargs})


def test_float_inputs_are_rejected():
  with pytest.raises(ValueError, match="inputs"):
    StableEmbedding(10, 4, rngs=nnx.Rngs(0))(jnp.ones(3))


def test_jit_and_vmap():
  emb = StableEmbedding(10, 4, rngs=nnx.Rngs(0))
  out = nnx.jit(lambda m, x: m(x))(emb, jnp.array([1, 2]))
  np.testing.assert_allclose(out, emb(jnp.array([1, 2])), rtol=1e-6)
  assert jax.vmap(lambda i: emb(i))(jnp.array([[1], [2]])).shape == (2, 1, 4)
