"""The AdamP / SGDP radial projection as a wrapper around any optax direction.

Paper: Heo, Chun, Oh, Han, Yun, Kim, Uh, Ha. "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
Scale-invariant Weights", ICLR 2021. https://arxiv.org/abs/2006.08217

Reference implementation: clovaai/AdamP@146287bf ``adamp/adamp.py`` and ``adamp/sgdp.py`` (the
``_projection`` method both share). gradtx follows it step for step, for every leaf with ``ndim > 1``:

  1. channel view (one row per output channel), then layer view (one row): the cosine between the RAW
     gradient and the weights per row, ``|cos_r| = |⟨g_r, θ_r⟩| / (max(‖g_r‖, ε) max(‖θ_r‖, ε))``
     (``F.cosine_similarity(..., eps).abs()``; the absolute value is missing from the paper's eq. (11) and
     confirmed by the authors in clovaai/AdamP#6);
  2. the first view with ``max_r |cos_r| < δ / √(row length)`` removes the radial component of the inner
     update, ``u_r ← u_r − θ̂_r ⟨θ̂_r, u_r⟩`` with ``θ̂_r = θ_r / (‖θ_r‖ + ε)``, and scales the weight decay
     by ``wd_ratio``; if neither view passes, the update and the decay are left alone.

The projection acts on the inner update and leaves the inner state alone, as in AdamP, where the projected
``perturb = exp_avg / denom`` is a new tensor. Where the official update IS a state tensor (SGDP without
nesterov: ``d_p = buf``), the in-place projection also rewrites that state: :func:`project_radial_aliased`
(package-internal, used by :func:`gradtx.sgdp`) projects the state tree and stores the result back.

Where gradtx differs from the reference:
  * The channel axis is configurable (``channel_axis``): PyTorch puts output channels first (0); Flax
    ``Dense`` / ``Conv`` kernels put them last (-1, the default here).
  * Rows are reduced in place (sums over every axis but ``channel_axis``, with ``keepdims``) rather than
    reshaped to ``(C, -1)``: same numbers, and under ``jit`` a leaf sharded on any axis (auto or explicit
    mesh) is neither gathered nor resharded. Inside ``shard_map`` the statistics are those of the block the
    update sees unless ``axis_name`` is given: then every ``ndim > 1`` leaf is taken to be split across that
    axis along a non-channel dimension (FSDP over a Flax kernel's input dimension), and the row sums are
    summed across it. A leaf split along its channel axis is not supported inside ``shard_map`` (its rows
    are whole but the maximum over channels and the layer view would need the other shards): project
    under ``jit`` on global arrays instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx.core import numerics, reduce, tree, validation
from gradtx.geometry import masks


#: ``(get, put)`` for :func:`project_radial_aliased`: the state tree an inner update is a cast of, and how to
#: store its projection back into the state.
StateAlias = tuple[Callable[[optax.OptState], optax.Updates], Callable[[optax.OptState, optax.Updates], optax.OptState]]


class ProjectRadialState(NamedTuple):
  """State of :func:`project_radial`: step count (for a weight-decay schedule) and the inner state."""

  count: jax.Array
  inner_state: optax.OptState


def _abs_cosine(dot, g_norm, p_norm, eps):
  return jnp.abs(dot) / (jnp.maximum(g_norm, eps) * jnp.maximum(p_norm, eps))


def _remove_radial(u, p, p_norm, eps, axes, axis_name):
  """``u − θ̂ Σ_row(θ̂ u)`` with ``θ̂ = θ / (‖θ_row‖ + ε)``; a row spans ``axes`` (all of them: the layer)."""
  p_hat = p / (p_norm + eps)
  return u - p_hat * reduce.psum(jnp.sum(p_hat * u, axis=axes, keepdims=True), axis_name)


def _project_leaf(g, p, u, *, delta, wd_ratio, eps, channel_axis, axis_name=None):
  """The projected update of one ``ndim > 1`` leaf and the factor its weight decay is multiplied by.

  Rows are reduced in place (``keepdims``) instead of reshaping to the reference's ``(C, -1)`` view, so a
  leaf sharded on any axis needs no resharding (explicit meshes reject reshapes that merge sharded axes).
  """
  if not -p.ndim <= channel_axis < p.ndim:
    raise ValueError(
        f"`channel_axis` must index a dimension of every leaf with ndim > 1, got {channel_axis} for a leaf "
        f"of shape {p.shape}."
    )
  axis = channel_axis % p.ndim
  others = tuple(i for i in range(p.ndim) if i != axis)
  every = tuple(range(p.ndim))
  compute = jnp.promote_types(u.dtype, jnp.float32)
  g, p, u = g.astype(compute), p.astype(compute), u.astype(compute)
  row_len = p.size // p.shape[axis] * (1 if axis_name is None else jax.lax.axis_size(axis_name))

  row_sums = lambda x: reduce.psum(jnp.sum(x, axis=others, keepdims=True), axis_name)
  dot, g_sq, p_sq = row_sums(g * p), row_sums(g * g), row_sums(p * p)
  p_norm = jnp.sqrt(p_sq)

  cos_channel = jnp.max(_abs_cosine(dot, jnp.sqrt(g_sq), p_norm, eps))
  use_channel = cos_channel < delta / jnp.sqrt(jnp.asarray(row_len, compute))
  layer_p_norm = jnp.sqrt(jnp.sum(p_sq))
  cos_layer = _abs_cosine(jnp.sum(dot), jnp.sqrt(jnp.sum(g_sq)), layer_p_norm, eps)
  layer_size = row_len * p.shape[axis]
  use_layer = jnp.logical_and(~use_channel, cos_layer < delta / jnp.sqrt(jnp.asarray(layer_size, compute)))

  by_channel = _remove_radial(u, p, p_norm, eps, others, axis_name)
  by_layer = _remove_radial(u, p, layer_p_norm, eps, every, axis_name)
  projected = jnp.where(use_channel, by_channel, jnp.where(use_layer, by_layer, u))
  wd_scale = jnp.where(jnp.logical_or(use_channel, use_layer), jnp.asarray(wd_ratio, compute), 1.0)
  return projected, wd_scale


def project_radial(
    inner: optax.GradientTransformation,
    *,
    delta: Any = 0.1,
    wd_ratio: Any = 0.1,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    eps: Any = 1e-8,
    channel_axis: int = -1,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Removes the radial component of ``inner``'s update on scale-invariant weights (AdamP / SGDP).

  Weights followed by a normalization layer are scale-invariant: only their direction matters, and the
  radial part of a momentum update only grows ‖θ‖, which shrinks the effective step. When the raw gradient
  is nearly orthogonal to the weights (the signature of scale invariance) the block projects the radial
  part out of ``inner``'s update and weakens the weight decay by ``wd_ratio``.

  For each leaf θ with ``ndim > 1``, view ``v`` in (channel, layer), rows ``r`` of that view:

  .. math::

    c_v &= \max_r \frac{|\langle g_r, \theta_r \rangle|}{\max(\|g_r\|, \epsilon)\max(\|\theta_r\|, \epsilon)},
    \qquad \hat\theta_r = \frac{\theta_r}{\|\theta_r\| + \epsilon} \\
    u_r &\leftarrow u_r - \hat\theta_r \langle \hat\theta_r, u_r \rangle, \quad s = \texttt{wd\_ratio}
    \qquad \text{for the first } v \text{ with } c_v < \delta / \sqrt{\text{row length}} \\
    \text{out} &= u + \lambda_t \, s \, m \, \theta \qquad (s = 1 \text{ if no view passed};
    \ m = \texttt{mask})

  where ``g`` is the update given to this block (the raw gradient) and ``u`` is ``inner``'s update. The
  block owns the decoupled weight decay because its factor ``s`` depends on the projection; leave the
  decay out of ``inner`` and scale by the learning rate after this block:
  ``optax.chain(project_radial(inner, weight_decay=λ), optax.scale_by_learning_rate(lr))`` gives
  ``θ ← θ − lr (u + λ s θ)``, the official ``θ ← θ (1 − lr λ s) − lr u``.

  Args:
    inner: the direction to project (e.g. ``optax.scale_by_adam()``, ``optax.trace(0.9)``); it receives
      the same updates, params and extra arguments.
    delta: δ, the cosine threshold factor (> 0).
    wd_ratio: factor of the weight decay on projected leaves, in [0, 1].
    weight_decay: λ, decoupled, a float or an optax schedule of the step count.
    eps: ε of the cosine and of the normalized weights (> 0).
    channel_axis: the output-channel axis of every ``ndim > 1`` leaf: -1 for Flax kernels, 0 for PyTorch
      layouts.
    mask: tree of booleans (or a function of the params giving one; a prefix tree is broadcast) selecting
      the leaves that decay. The projection applies to every ``ndim > 1`` leaf, as in the reference.
    axis_name: inside ``shard_map``, the mesh axis across which every ``ndim > 1`` leaf is split along a
      non-channel dimension; the per-row statistics are then summed across it (see the module docstring).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``params``.

  Examples:
    >>> import jax.numpy as jnp, optax, gradtx
    >>> tx = gradtx.project_radial(optax.scale_by_sign())
    >>> params = {"w": jnp.eye(2)}
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.array([[0.001, 1.0], [1.0, -0.002]])}  # nearly orthogonal to each row of w
    >>> updates, state = tx.update(grads, state, params)
    >>> updates["w"]  # sign(g) = [[1, 1], [1, -1]] loses its radial (diagonal) part
    Array([[0., 1.],
           [1., 0.]], dtype=float32)

  References:
    Heo et al., `AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights
    <https://arxiv.org/abs/2006.08217>`_, 2021.
  """
  return project_radial_aliased(
      inner, None, delta=delta, wd_ratio=wd_ratio, weight_decay=weight_decay, eps=eps,
      channel_axis=channel_axis, mask=mask, axis_name=axis_name,
  )


def project_radial_aliased(
    inner: optax.GradientTransformation,
    alias: StateAlias | None,
    *,
    delta: Any = 0.1,
    wd_ratio: Any = 0.1,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    eps: Any = 1e-8,
    channel_axis: int = -1,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  """:func:`project_radial` of an ``inner`` whose update is (a cast of) a tree held in its state (package-internal).

  With ``alias = (get, put)``, ``get(inner_state)`` is the tree that ``inner``'s update is a cast of (SGDP's
  momentum buffer without nesterov: the official ``d_p = buf`` is the buffer itself, not a copy). That tree
  is projected instead of the update, the update is the projected tree cast to the update's dtype, and
  ``put(inner_state, projected)`` stores the projected tree back, as the official in-place ``perturb -= ...``
  does to the buffer. ``alias=None`` is :func:`project_radial`.
  """
  validation.check_transformation("inner", inner)
  validation.check_positive("delta", delta)
  validation.check_range("wd_ratio", wd_ratio, low=0.0, high=1.0)
  validation.check_schedule("weight_decay", weight_decay)
  # ε keeps the cosine and the normalized weights finite for zero gradients and zero weights.
  validation.check_eps("eps", eps)
  validation.check_int("channel_axis", channel_axis)
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return ProjectRadialState(count=jnp.zeros([], jnp.int32), inner_state=inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError("project_radial needs `params`: call update(updates, state, params).")
    with jax.named_scope("gradtx/project_radial"):
      directions, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
      perturbs = directions if alias is None else alias[0](inner_state)
      decay = numerics.schedule_value(weight_decay, state.count)
      decays = masks.resolve_mask(mask, params)

      def one(g, p, d, u, decays_leaf):
        """(the update, in the dtype of the inner direction ``d``; the projected ``u`` before the decay)."""
        if p.ndim > 1:
          projected, wd_scale = _project_leaf(
              g, p, u, delta=delta, wd_ratio=wd_ratio, eps=eps, channel_axis=channel_axis, axis_name=axis_name
          )
        else:
          projected, wd_scale = u.astype(jnp.promote_types(u.dtype, jnp.float32)), 1.0
        u_new = projected + (decay * wd_scale) * p.astype(projected.dtype) if decays_leaf else projected
        return u_new.astype(d.dtype), projected

      pairs = jax.tree.map(one, updates, params, directions, perturbs, decays)
      new_updates = jax.tree.map(lambda _, pair: pair[0], updates, pairs)
      if alias is not None:
        inner_state = alias[1](inner_state, jax.tree.map(lambda _, pair: pair[1], updates, pairs))
      return new_updates, ProjectRadialState(count=tree.safe_increment(state.count), inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
