"""Layer sampling for stacked layers: optimizer state only for the few active layers (LISA, OwLore, FRUGAL
block subspaces).

Every ``every`` steps (step 0 included) ``num_active`` of the ``L`` layers of the stacked leaves
``(L, ...)`` are chosen: sampled without replacement with probabilities ``probabilities`` (OwLore: layer
outlier ratios, see :func:`gradtx.lowrank.outlier_ratios`; ``None``: uniform, LISA) or in cyclic
``'ascending'`` / ``'descending'`` windows (FRUGAL's block orders). The active layers of every stacked leaf
are gathered into ``(num_active, ...)`` arrays and ``inner`` runs on those, so its state exists for
``num_active`` slots only and the saving is real under ``jit``; updates are scattered back. Inactive layers
are frozen (OwLore, LISA) or take a state-free step (``'sign'``: FRUGAL's signSGD, ``'sgd'``). Leaves that
are not stacked go through ``full_rank`` (default ``inner``) at full size, like OwLore's embeddings and head.

When the active set is redrawn the slots hold other layers, so ``inner``'s state is re-initialised (OwLore's
code instead keeps every layer's AdamW state alive, so its memory grows towards that of all sampled layers;
FRUGAL clears the state of deactivated blocks, as here). On an Explicit mesh the layer axis of a gradient
is gathered (replicated) before the active layers are taken, and slots are unsharded along it.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx.core import layout, tree, validation
from gradtx.core.matrix import leaf_mask

Inactive = Literal["freeze", "sign", "sgd"]
Order = Literal["sample", "ascending", "descending"]


class SampleLayersState(NamedTuple):
  """State of :func:`sample_layers`.

  Attributes:
    count: steps taken.
    key: PRNG key data made from ``seed`` (folded with the step of each draw).
    active: indices of the active layers, ``(num_active,)`` int32, sorted.
    inner: ``inner``'s state on the gathered active layers (stacked leaves; others are ``MaskedNode``).
    full_rank: state of the transformation of the leaves that are not stacked.
  """

  count: jax.Array
  key: jax.Array
  active: jax.Array
  inner: Any
  full_rank: Any


def _draw(order, probabilities, num_layers, num_active, key, count, every):
  if order == "sample":
    p = None if probabilities is None else jnp.asarray(probabilities, jnp.float32)
    return jax.random.choice(key, num_layers, (num_active,), replace=False, p=p)
  window = count // every
  offsets = jnp.arange(num_active)
  if order == "ascending":
    return (window * num_active + offsets) % num_layers
  return (num_layers - 1 - window * num_active - offsets) % num_layers


def sample_layers(
    inner: optax.GradientTransformation,
    *,
    num_active: int,
    every: int = 50,
    probabilities: Any = None,
    order: Order = "sample",
    stacked: Any = None,
    inactive: Inactive = "freeze",
    inactive_scale: float = 1.0,
    full_rank: optax.GradientTransformation | None = None,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""Runs ``inner`` only on ``num_active`` sampled layers of stacked ``(L, ...)`` leaves.

  .. math::

    \mathcal{A}_k \sim \mathrm{Choice}(L, \gamma, p) \text{ every } K \text{ steps}, \qquad
    u_l = \begin{cases} \mathrm{inner}(g_{\mathcal{A}})_l & l \in \mathcal{A} \\ 0 \ (\text{or } c\,
    \mathrm{sign}(g_l)) & \text{otherwise} \end{cases}

  Args:
    inner: transformation of the active layers (e.g. :func:`gradtx.project_low_rank` for OwLore's GaLore).
    num_active: γ, active layers per window (OwLore: 5 of 32).
    every: K, steps between draws (OwLore: 50).
    probabilities: ``(L,)`` sampling probabilities (normalised here), or ``None`` for uniform (LISA).
    order: ``'sample'`` (random draws), ``'ascending'`` or ``'descending'`` (cyclic windows, FRUGAL blocks).
    stacked: which leaves are stacked along axis 0 (prefix tree of booleans or a callable); ``None``: every
      leaf of rank >= 3. All stacked leaves must share ``L``.
    inactive: ``'freeze'`` (zero update; OwLore, LISA), ``'sign'`` (``c sign(g)``; FRUGAL) or ``'sgd'``.
    inactive_scale: c.
    full_rank: transformation of the leaves that are not stacked; ``None`` uses ``inner``.
    seed: seed of the draws.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`SampleLayersState`.

  Examples:
    >>> import jax.numpy as jnp, optax, gradtx
    >>> tx = gradtx.lowrank.sample_layers(optax.adam(1e-3), num_active=2)
    >>> state = tx.init({"layers": jnp.zeros((8, 16, 16)), "head": jnp.zeros((16, 4))})
    >>> state.inner[0].mu["layers"].shape  # Adam's state for 2 of the 8 layers
    (2, 16, 16)

  References:
    Li et al., `OwLore: Outlier-weighed Layerwise Sampled Low-Rank Projection for Memory-Efficient LLM
    Fine-tuning <https://arxiv.org/abs/2405.18380>`_, 2024.
    Pan et al., `LISA: Layerwise Importance Sampling for Memory-Efficient Large Language Model Fine-Tuning
    <https://arxiv.org/abs/2403.17919>`_, 2024.
  """
  validation.check_transformation("inner", inner)
  validation.check_transformation("full_rank", full_rank, allow_none=True)
  validation.check_int("num_active", num_active, low=1)
  validation.check_int("every", every, low=1)
  validation.check_choice("order", order, ("sample", "ascending", "descending"))
  validation.check_choice("inactive", inactive, ("freeze", "sign", "sgd"))
  validation.check_nonnegative("inactive_scale", inactive_scale)
  validation.check_int("seed", seed)
  if probabilities is not None and order != "sample":
    raise ValueError(f"`probabilities` need order='sample', got order={order!r}.")
  inner = optax.with_extra_args_support(inner)
  full_tx = optax.with_extra_args_support(full_rank if full_rank is not None else inner)

  def plan(unboxed):
    leaves = jax.tree.leaves(unboxed)
    mask = [len(x.shape) >= 3 for x in leaves] if stacked is None else leaf_mask(stacked, unboxed)
    sizes = {x.shape[0] for x, m in zip(leaves, mask) if m}
    if len(sizes) > 1:
      raise ValueError(f"`stacked` leaves must share their number of layers, got leading sizes {sorted(sizes)}.")
    num_layers = sizes.pop() if sizes else num_active
    if num_active > num_layers:
      raise ValueError(f"`num_active` must be <= the number of layers {num_layers}, got {num_active}.")
    if probabilities is not None and jnp.shape(probabilities) != (num_layers,):
      raise ValueError(f"`probabilities` must have shape ({num_layers},), got {jnp.shape(probabilities)}.")
    return mask, num_layers

  def split(unboxed, mask, take):
    leaves, treedef = jax.tree.flatten(unboxed)
    active = treedef.unflatten([take(x) if m else optax.MaskedNode() for x, m in zip(leaves, mask)])
    rest = treedef.unflatten([optax.MaskedNode() if m else x for x, m in zip(leaves, mask)])
    return active, rest

  def slot_spec(x):
    spec = layout.spec_of(x)
    return None if spec is None else (None,) + tuple(spec)[1:]

  def slots_zeros(x):
    spec = slot_spec(x) or (None,) * len(x.shape)
    return layout.zeros((num_active,) + tuple(x.shape[1:]), x.dtype, x, spec)

  def gather(x, active):
    return jnp.take(layout.constrain(x, x, slot_spec(x)), active, axis=0)

  def init_fn(params):
    unboxed = tree.unboxed_map(lambda x: x, params)
    mask, num_layers = plan(unboxed)
    active_tree, rest = split(unboxed, mask, slots_zeros)
    return SampleLayersState(
        count=jnp.zeros([], jnp.int32),
        key=jax.random.PRNGKey(seed),
        active=jnp.zeros((num_active,), jnp.int32),
        inner=inner.init(active_tree),
        full_rank=full_tx.init(rest),
    )

  def update_fn(updates, state, params=None, **extra_args):
    with jax.named_scope("gradtx/sample_layers"):
      g_leaves, g_treedef = jax.tree.flatten(updates)
      unboxed = tree.unboxed_map(lambda x: x, updates)
      mask, num_layers = plan(unboxed)

      def redraw(s):
        draw = _draw(order, probabilities, num_layers, num_active, jax.random.fold_in(s.key, s.count), s.count,
                     every)
        zeros = split(unboxed, mask, slots_zeros)[0]
        return s._replace(active=jnp.sort(draw).astype(jnp.int32), inner=layout.match(inner.init(zeros), s.inner))

      state = jax.lax.cond(state.count % every == 0, redraw, lambda s: s, state)
      g_active, g_rest = split(unboxed, mask, lambda x: gather(x, state.active))
      p_active = p_rest = None
      if params is not None:
        p_unboxed = tree.unboxed_map(lambda x: x, params)
        p_active, p_rest = split(p_unboxed, mask, lambda x: gather(x, state.active))
      u_active, inner_state = inner.update(g_active, state.inner, p_active, **extra_args)
      u_rest, full_state = full_tx.update(g_rest, state.full_rank, p_rest, **extra_args)
      u_active, u_rest = iter(jax.tree.leaves(u_active)), iter(jax.tree.leaves(u_rest))

      def scatter(g):
        base = jnp.zeros_like(g) if inactive == "freeze" else (
            inactive_scale * (jnp.sign(g) if inactive == "sign" else g)).astype(g.dtype)
        base = layout.constrain(base, g, slot_spec(g))
        return layout.constrain(base.at[state.active].set(next(u_active).astype(g.dtype)), g, layout.spec_of(g))

      out = [scatter(g) if m else next(u_rest) for g, m in zip(g_leaves, mask)]
      new_state = state._replace(count=tree.safe_increment(state.count), inner=inner_state, full_rank=full_state)
      return g_treedef.unflatten(out), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
