"""``StableEmbedding``: the embedding layer the 8-bit optimizer paper trains language models with (Flax nnx).

Paper: Dettmers, Lewis, Shleifer, Zettlemoyer. "8-bit Optimizers via Block-wise Quantization", ICLR 2022,
section 2.3. https://arxiv.org/abs/2110.02861

Reference implementation: bitsandbytes-foundation/bitsandbytes@95f9af30
``nn/modules.py::StableEmbedding``: Xavier-uniform
initialization, layer normalization of the looked-up vectors computed in full precision (before positional
embeddings are added), and 32-bit optimizer state for the embedding weight (bitsandbytes registers an
``optim_bits=32`` override for it). The paper reports that this layer, not the quantization, is what keeps
8-bit training of language models as stable as 32-bit training.

In gradtx the weight is a :class:`StableEmbeddingParam` (an ``nnx.Param``), and
:meth:`StableEmbedding.quantize_mask` gives :func:`gradtx.quantize_state` (and ``adamw_8bit``,
``lion_8bit``) the mask that keeps its state in full precision.

Where gradtx differs: the layer norm's epsilon is PyTorch's default 1e-5, as in bitsandbytes (nnx's default
is 1e-6); ``max_norm``, ``scale_grad_by_freq`` and sparse gradients of ``torch.nn.Embedding`` are not offered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gradtx.core import validation


class StableEmbeddingParam(nnx.Param):
  """The weight of a :class:`StableEmbedding`; 8-bit optimizers keep its state in full precision."""


class StableEmbedding(nnx.Module):
  """Embedding lookup followed by a float32 layer norm, with Xavier-uniform initialization.

  Args:
    num_embeddings: vocabulary size.
    features: embedding width.
    padding_idx: an index whose row starts at zero and receives no gradient (``torch.nn.Embedding``'s
      ``padding_idx``); ``None`` for none.
    epsilon: the layer norm's epsilon.
    dtype: dtype of the output; ``None`` gives the weight's dtype (bitsandbytes casts back to it).
    param_dtype: dtype of the weight.
    rngs: ``nnx.Rngs`` with a ``params`` stream.
    embedding_metadata: metadata of the weight variable (e.g. ``sharding_names``).

  Examples:
    >>> import jax.numpy as jnp, optax, gradtx
    >>> from flax import nnx
    >>> emb = gradtx.StableEmbedding(100, 16, rngs=nnx.Rngs(0))
    >>> y = emb(jnp.array([[1, 2, 3]]))
    >>> y.shape, bool(jnp.allclose(y.mean(-1), 0.0, atol=1e-5))
    ((1, 3, 16), True)
    >>> tx = gradtx.adamw_8bit(1e-3, min_size=0, quantize_mask=gradtx.StableEmbedding.quantize_mask)
    >>> opt = nnx.Optimizer(emb, tx, wrt=nnx.Param)
    >>> opt.opt_state[0].inner_state.mu["embedding"].dtype  # kept in float32
    dtype('float32')
  """

  def __init__(
      self,
      num_embeddings: int,
      features: int,
      *,
      padding_idx: int | None = None,
      epsilon: float = 1e-5,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
      embedding_metadata: Mapping[str, Any] = {},  # noqa: B006 (read-only, as in nnx.Embed)
  ):
    validation.check_int("num_embeddings", num_embeddings, low=1)
    validation.check_int("features", features, low=1)
    if padding_idx is not None:
      validation.check_int("padding_idx", padding_idx)
      if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(f"`padding_idx` must index one of {num_embeddings} rows, got {padding_idx!r}.")
      padding_idx %= num_embeddings
    validation.check_positive("epsilon", epsilon)
    weight = nnx.initializers.xavier_uniform()(rngs.params(), (num_embeddings, features), param_dtype)
    if padding_idx is not None:
      weight = weight.at[padding_idx].set(0)
    self.embedding = StableEmbeddingParam(weight, **embedding_metadata)
    self.norm = nnx.LayerNorm(features, epsilon=epsilon, dtype=jnp.float32, rngs=rngs)
    self.padding_idx = padding_idx
    self.dtype = dtype

  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Layer-normalized embeddings of the integer ``inputs``, shape ``inputs.shape + (features,)``."""
    if not jnp.issubdtype(inputs.dtype, jnp.integer):
      raise ValueError(f"`inputs` must be integer token ids, got dtype {inputs.dtype}.")
    weight = self.embedding[...]
    vectors = jnp.take(weight, inputs, axis=0)
    if self.padding_idx is not None:
      vectors = jnp.where((inputs == self.padding_idx)[..., None], jax.lax.stop_gradient(vectors), vectors)
    out = self.norm(vectors.astype(jnp.float32))
    return out.astype(self.dtype or weight.dtype)

  def attend(self, query: jax.Array) -> jax.Array:
    """``query @ embedding.T``: logits over the vocabulary for a tied output layer."""
    return jnp.dot(query, self.embedding[...].T.astype(query.dtype))

  @staticmethod
  def quantize_mask(params: Any) -> Any:
    """``False`` for every :class:`StableEmbeddingParam` of an nnx param state, ``True`` elsewhere.

    Pass it as ``quantize_mask`` so that 8-bit optimizers keep these weights' state in full precision (the
    param tree must hold nnx variables, as the one ``nnx.Optimizer`` and ``nnx.state(model)`` give).
    """
    return jax.tree.map(
        lambda v: not isinstance(v, StableEmbeddingParam),
        params,
        is_leaf=lambda v: isinstance(v, nnx.Variable),
    )
