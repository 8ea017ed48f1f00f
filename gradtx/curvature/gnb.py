"""Sophia-G's Gauss-Newton-Bartlett (GNB) estimator of the Hessian diagonal.

Paper: Liu, Li, Hall, Liang, Ma. "Sophia: A Scalable Stochastic Second-order Optimizer for Language Model
Pre-training", ICLR 2024. https://arxiv.org/abs/2305.14342 (Algorithm 2)

Reference implementation: Liuhong99/Sophia@a7e1572 ``train_sophiag.py`` (the Hessian block of the training
loop) and ``sophia.py`` (``SophiaG.update_hessian`` / ``step(bs=...)``). The script samples
``y ~ Categorical(logits)``, back-propagates the *mean* cross-entropy over the batch's ``B`` label positions, clips
that gradient to global norm ``grad_clip = 1.0``, stores ``ĝ ⊙ ĝ`` in the EMA and multiplies by
``bs = total_bs * block_size`` (the step's tokens) inside ``step``. gradtx returns ``B · ĝ ⊙ ĝ`` (the paper's
``ĥ``), which is the same quantity because the EMA is linear.

Where gradtx differs:
  * ``B`` is the number of label positions of the global batch (``prod(logits.shape[:-1])`` times the axis size)
    unless ``batch_tokens`` gives it explicitly (the official code's ``bs``, which need not match the logits).
  * The official script's clipping of ``ĝ`` is an option (``clip_norm``; ``None`` by default).
  * Labels are sampled per position from ``fold_in(fold_in(key, count), global_position)``, so the estimate is
    the same whatever the batch's split across devices (``axis_name``), and ``ĝ`` is averaged across the axis.
  * optax 0.2.8 has no GNB estimator; levanter's ``sophia_g`` raises ``NotImplementedError``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx.core import reduce, validation


class GaussNewtonBartlettState(NamedTuple):
  """State of :func:`estimate_hessian_diag_gnb`: estimates made so far and the base PRNG key."""

  count: jax.Array
  key: jax.Array


def _positions(n_local: int, axis_name: reduce.AxisName) -> tuple[jax.Array, Any]:
  """Global indices of this replica's label positions, and the global number of positions."""
  local = jnp.arange(n_local, dtype=jnp.uint32)
  if axis_name is None:
    return local, n_local
  index = jax.lax.axis_index(axis_name).astype(jnp.uint32)
  return index * n_local + local, jax.lax.psum(n_local, axis_name)


def sampled_label_gradient(logits_fn: Any, params: Any, key: jax.Array, axis_name: reduce.AxisName):
  """ĝ, the gradient of the mean cross-entropy against labels sampled from the model; and B (global).

  Returns ``(ĝ in float32 or wider, B)``.
  """
  logits, pullback = jax.vjp(logits_fn, reduce.as_varying(params, axis_name))
  n_classes = logits.shape[-1]
  wide = jnp.promote_types(logits.dtype, jnp.float32)
  flat = jax.lax.stop_gradient(logits).reshape(-1, n_classes).astype(wide)
  positions, n_global = _positions(flat.shape[0], axis_name)
  # Gumbel-max sampling (what jax.random.categorical does) with one key per position; the noise is made apart
  # from the logits so sharded logits (explicit meshes) need no vmap over mixed shardings.
  noise = jax.vmap(lambda i: jax.random.gumbel(jax.random.fold_in(key, i), (n_classes,), jnp.float32))(positions)
  labels = jnp.argmax(flat + noise.astype(wide), axis=-1)
  # d mean_b CE(logits_b, y_b) / d logits = (softmax - onehot(y)) / B_local.
  cotangent = (jax.nn.softmax(flat, axis=-1) - jax.nn.one_hot(labels, n_classes, dtype=wide)) / flat.shape[0]
  (g,) = pullback(cotangent.reshape(logits.shape).astype(logits.dtype))
  g = jax.tree.map(lambda x: x.astype(jnp.promote_types(x.dtype, jnp.float32)), g)
  return reduce.pmean(g, axis_name), n_global


def estimate_hessian_diag_gnb(
    *,
    seed: int,
    batch_tokens: float | None = None,
    clip_norm: float | None = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Replaces the updates by the Gauss-Newton-Bartlett estimate ``B · ĝ ⊙ ĝ`` of the Hessian diagonal.

  Labels are sampled from the model's own softmax, ``ŷ_b ~ softmax(f(θ, x_b))``; ``ĝ`` is the gradient of the
  mean cross-entropy of the logits against them. Its expectation is the diagonal of the Gauss-Newton matrix of
  the cross-entropy loss (Bartlett's identity), which is positive.

  .. math::

    \hat y_b \sim \operatorname{softmax}(f(\theta, x_b)), \quad
    \hat g = \nabla_\theta \frac{1}{B} \sum_{b=1}^{B} \ell(f(\theta, x_b), \hat y_b), \quad
    \hat h = B \cdot \hat g \odot \hat g

  ``update(updates, state, params, *, logits_fn)`` ignores ``updates``; ``logits_fn`` maps params to the logits
  of the current batch, shape ``(..., num_classes)`` (every leading position is one sampled label, e.g. batch ×
  sequence for a language model).

  Args:
    seed: seed of the PRNG key kept in the state.
    batch_tokens: ``B``; ``None`` counts the label positions of the global batch. Give the official code's ``bs``
      (``total_bs * block_size``) to reproduce its scaling exactly.
    clip_norm: clip ``ĝ`` to this global L2 norm before squaring (the official GPT-2 script uses 1.0); ``None``
      does not clip.
    axis_name: average ``ĝ`` across this axis and count ``B`` over it (data parallelism). Required inside named
      axes: ``update`` raises inside ``pmap`` / ``shard_map`` / ``vmap(axis_name=...)`` with ``None``;
      :data:`gradtx.NO_DATA_AXIS` keeps per-device estimates on purpose.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires the keyword argument ``logits_fn``.

  Examples:
    >>> import jax, jax.numpy as jnp, gradtx
    >>> x = jax.random.normal(jax.random.key(0), (64, 3))
    >>> params = {"w": jnp.zeros((3, 4))}
    >>> est = gradtx.estimate_hessian_diag_gnb(seed=0)
    >>> h, _ = est.update(params, est.init(params), params, logits_fn=lambda p: x @ p["w"])
    >>> h["w"].shape, bool(jnp.all(h["w"] >= 0))
    ((3, 4), True)

  References:
    Liu et al., `Sophia <https://arxiv.org/abs/2305.14342>`_, 2024 (Algorithm 2).
  """
  validation.check_int("seed", seed)
  if batch_tokens is not None:
    validation.check_positive("batch_tokens", batch_tokens)
  if clip_norm is not None:
    validation.check_positive("clip_norm", clip_norm)
  requested_axis, axis_name = axis_name, reduce.resolve_data_axis(axis_name)

  def init_fn(params):
    del params
    return GaussNewtonBartlettState(count=jnp.zeros([], jnp.int32), key=jax.random.PRNGKey(seed))

  def update_fn(updates, state, params=None, *, logits_fn, **extra_args):
    del updates, extra_args
    if params is None:
      raise ValueError("`params` must be given to the GNB estimator's update.")
    reduce.check_data_axis(requested_axis, owner="estimate_hessian_diag_gnb", uses="logits_fn")
    with jax.named_scope("gradtx/gnb"):
      g, n_global = sampled_label_gradient(logits_fn, params, jax.random.fold_in(state.key, state.count), axis_name)
      if clip_norm is not None:
        norm = reduce.global_norm(g)
        # torch.nn.utils.clip_grad_norm_'s coefficient, as in the official script.
        g = jax.tree.map(lambda x: x * jnp.minimum(1.0, clip_norm / (norm + 1e-6)), g)
      b = jnp.asarray(n_global if batch_tokens is None else batch_tokens, jnp.float32)
      est = jax.tree.map(lambda x, p: (b.astype(x.dtype) * x * x).astype(p.dtype), g, params)
      return est, GaussNewtonBartlettState(count=optax.safe_increment(state.count), key=state.key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
