"""Layer sampling: optimizer state only for the few active layers (LISA, OwLore, FRUGAL block subspaces).

Every ``every`` steps (step 0 included) ``num_active`` of the ``L`` layers are chosen: sampled without
replacement with probabilities ``probabilities`` (OwLore: layer outlier ratios, see
:func:`gradtx.lowrank.outlier_ratios`; ``None``: uniform, LISA) or in cyclic ``'ascending'`` /
``'descending'`` windows (FRUGAL's block orders). The draw uses a key in the state, so every replica makes
the same one. Layers are stacked leaves ``(L, ...)`` or one module per layer found by parameter path
(``layers_3``, ``blocks/3``, see :mod:`gradtx.lowrank.layer_groups`); all leaves of a layer are active or
inactive together. The active layers of every stacked leaf are gathered into ``(num_active, ...)`` slots;
for per-module layers, the ``k`` same-shaped leaves of one kind (``layers_{l}/mlp/kernel`` for every ``l``)
form a virtual stack from which the active layers' leaves are gathered into ``(min(num_active, k), ...)``
slots. ``inner`` runs on the slots, so its state exists for ``num_active`` layers only and the saving is
real under ``jit``; updates are scattered back. Inactive layers are frozen (OwLore, LISA) or take a
state-free step (``'sign'``: FRUGAL's signSGD, ``'sgd'``). Leaves outside the layers go through
``full_rank`` (default ``inner``) at full size, like OwLore's embeddings and head.

When the active set is redrawn the slots hold other layers, so ``inner``'s state is re-initialised (OwLore's
code instead keeps every layer's AdamW state alive, so its memory grows towards that of all sampled layers;
FRUGAL clears the state of deactivated blocks, as here). On an Explicit mesh the layer axis of a stacked
gradient is gathered (replicated) before the active layers are taken; slots are unsharded along their
first axis and otherwise sharded like their leaf.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradtx.core import layout, tree, validation
from gradtx.lowrank import layer_groups as groups

Inactive = Literal["freeze", "sign", "sgd"]
Order = Literal["sample", "ascending", "descending"]


class SampleLayersState(NamedTuple):
  """State of :func:`sample_layers`.

  Attributes:
    count: steps taken.
    key: PRNG key data made from ``seed`` (folded with the step of each draw).
    active: indices of the active layers, ``(num_active,)`` int32, sorted.
    inner: ``inner``'s state on the slots of the active layers (a kind's slots at the place of its first
      leaf; other leaves are ``MaskedNode``).
    full_rank: state of the transformation of the leaves outside the layers.
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
    layer_groups: groups.LayerGroups = "auto",
    stacked: Any = None,
    inactive: Inactive = "freeze",
    inactive_scale: float = 1.0,
    full_rank: optax.GradientTransformation | None = None,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""Runs ``inner`` only on ``num_active`` sampled layers (stacked ``(L, ...)`` leaves or one module each).

  .. math::

    \mathcal{A}_k \sim \mathrm{Choice}(L, \gamma, p) \text{ every } K \text{ steps}, \qquad
    u_l = \begin{cases} \mathrm{inner}(g_{\mathcal{A}})_l & l \in \mathcal{A} \\ 0 \ (\text{or } c\,
    \mathrm{sign}(g_l)) & \text{otherwise} \end{cases}

  Args:
    inner: transformation of the active layers (e.g. :func:`gradtx.project_low_rank` for OwLore's GaLore).
    num_active: γ, active layers per window (OwLore: 5 of 32).
    every: K, steps between draws (OwLore: 50).
    probabilities: ``(L,)`` sampling probabilities (normalised here; at least γ positive), or ``None`` for
      uniform (LISA). Layers are in :mod:`~gradtx.lowrank.layer_groups` order, as
      :func:`gradtx.lowrank.outlier_ratios` returns them.
    order: ``'sample'`` (random draws), ``'ascending'`` or ``'descending'`` (cyclic windows, FRUGAL blocks).
    layer_groups: how a parameter path names its layer (one module per layer): ``'auto'`` (``layers_3``,
      ``layers/3``, ``blocks.3``, ``Block_3``, ``h/3``, ...), a regular expression with one capture group
      (the index), a callable ``path -> int | None`` (path: keys joined by ``/``, e.g.
      ``'params/layers_3/Dense_0/kernel'``) or ``None`` (stacked leaves only). See
      :mod:`gradtx.lowrank.layer_groups`.
    stacked: which leaves are stacked along axis 0 (prefix tree of booleans or a callable); ``None``: every
      leaf of rank >= 3 if no per-module layer is found, else none. All stacked leaves must share ``L``.
    inactive: ``'freeze'`` (zero update; OwLore, LISA), ``'sign'`` (``c sign(g)``; FRUGAL) or ``'sgd'``.
    inactive_scale: c.
    full_rank: transformation of the leaves outside the layers; ``None`` uses ``inner``.
    seed: seed of the draws.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`SampleLayersState`.

  Examples:
    >>> import jax.numpy as jnp, optax, gradtx
    >>> tx = gradtx.lowrank.sample_layers(optax.adam(1e-3), num_active=2)
    >>> state = tx.init({"layers": jnp.zeros((8, 16, 16)), "head": jnp.zeros((16, 4))})
    >>> state.inner[0].mu["layers"].shape  # Adam's state for 2 of the 8 layers
    (2, 16, 16)
    >>> per_module = {f"layers_{l}": {"kernel": jnp.zeros((16, 16))} for l in range(8)}
    >>> state = tx.init(per_module)
    >>> state.inner[0].mu["layers_0"]["kernel"].shape  # one module per layer: the same 2 slots
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
  groups.check_layer_groups(layer_groups)
  if probabilities is not None and order != "sample":
    raise ValueError(f"`probabilities` need order='sample', got order={order!r}.")
  _check_probabilities(probabilities, num_active)
  inner = optax.with_extra_args_support(inner)
  full_tx = optax.with_extra_args_support(full_rank if full_rank is not None else inner)

  def make_plan(unboxed):
    p = groups.plan(unboxed, layer_groups, stacked)
    num_layers = p.num_layers or num_active
    if num_active > num_layers:
      raise ValueError(f"`num_active` must be <= the number of layers {num_layers}, got {num_active}.")
    if probabilities is not None and p.num_layers is None:
      raise ValueError(f"`probabilities` were given but the params have no layers: no stacked leaf and no path "
                       f"matched by `layer_groups`={layer_groups!r}.")
    if probabilities is not None and jnp.shape(probabilities) != (num_layers,):
      raise ValueError(f"`probabilities` must have shape ({num_layers},), one entry per layer "
                       f"({', '.join(p.names[:2])}, ...), got {jnp.shape(probabilities)}.")
    return p, num_layers

  def slot_spec(x):
    spec = layout.spec_of(x)
    return None if spec is None else (None,) + tuple(spec)

  def stacked_spec(x):
    spec = layout.spec_of(x)
    return None if spec is None else (None,) + tuple(spec)[1:]

  def split(leaves, treedef, p, stacked_fn, kind_fn):
    """(tree for ``inner``, tree for ``full_rank``): a kind's slots sit at the place of its first leaf."""
    active = [optax.MaskedNode()] * len(leaves)
    for i in p.stacked:
      active[i] = stacked_fn(leaves[i])
    for kind in p.kinds:
      active[kind.leaves[0]] = kind_fn(kind, [leaves[i] for i in kind.leaves])
    in_layers = p.in_layers()
    rest = [optax.MaskedNode() if i in in_layers else x for i, x in enumerate(leaves)]
    return treedef.unflatten(active), treedef.unflatten(rest)

  def zeros_split(leaves, treedef, p):
    def stacked_zeros(x):
      return layout.zeros((num_active,) + tuple(x.shape[1:]), x.dtype, x, stacked_spec(x) or (None,) * len(x.shape))

    def kind_zeros(kind, xs):
      x = xs[0]
      shape = (min(num_active, len(xs)),) + tuple(x.shape)
      return layout.zeros(shape, x.dtype, x, slot_spec(x) or (None,) * len(shape))

    return split(leaves, treedef, p, stacked_zeros, kind_zeros)

  def select(kind, active, num_layers):
    """Per slot of ``kind``: the member it holds and whether that member's layer is active."""
    if len(kind.layers) == num_layers:  # every layer has this kind: member l is layer l
      return active, None
    member = active[:, None] == jnp.asarray(kind.layers, jnp.int32)[None, :]
    is_member = jnp.any(member, axis=1)
    order = jnp.argsort(~is_member, stable=True)[:min(num_active, len(kind.layers))]
    return jnp.argmax(member[order], axis=1), is_member[order]

  def gather_kind(xs, rows, valid):
    spec = layout.spec_of(xs[0])
    branches = [lambda *a, j=j: layout.constrain(a[j], a[0], spec) for j in range(len(xs))]
    slots = jnp.stack([jax.lax.switch(r, branches, *xs) for r in rows])
    if valid is not None:
      slots = jnp.where(valid.reshape((-1,) + (1,) * len(xs[0].shape)), slots, jnp.zeros_like(slots))
    return layout.constrain(slots, xs[0], slot_spec(xs[0]))

  def gather_split(leaves, treedef, p, active, selections):
    def stacked_take(x):
      return jnp.take(layout.constrain(x, x, stacked_spec(x)), active, axis=0)

    def kind_take(kind, xs):
      return gather_kind(xs, *selections[kind])

    return split(leaves, treedef, p, stacked_take, kind_take)

  def init_fn(params):
    unboxed = tree.unboxed_map(lambda x: x, params)
    p, _ = make_plan(unboxed)
    active_tree, rest = zeros_split(*jax.tree.flatten(unboxed), p)
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
      u_leaves, u_treedef = jax.tree.flatten(tree.unboxed_map(lambda x: x, updates))
      p, num_layers = make_plan(u_treedef.unflatten(u_leaves))

      def redraw(s):
        draw = _draw(order, probabilities, num_layers, num_active, jax.random.fold_in(s.key, s.count), s.count,
                     every)
        zeros = zeros_split(u_leaves, u_treedef, p)[0]
        return s._replace(active=jnp.sort(draw).astype(jnp.int32), inner=layout.match(inner.init(zeros), s.inner))

      state = jax.lax.cond(state.count % every == 0, redraw, lambda s: s, state)
      selections = {kind: select(kind, state.active, num_layers) for kind in p.kinds}
      g_active, g_rest = gather_split(u_leaves, u_treedef, p, state.active, selections)
      p_active = p_rest = None
      if params is not None:
        p_active, p_rest = gather_split(*jax.tree.flatten(tree.unboxed_map(lambda x: x, params)), p, state.active,
                                        selections)
      u_active, inner_state = inner.update(g_active, state.inner, p_active, **extra_args)
      u_rest, full_state = full_tx.update(g_rest, state.full_rank, p_rest, **extra_args)
      u_active_leaves, u_rest_leaves = u_treedef.flatten_up_to(u_active), u_treedef.flatten_up_to(u_rest)

      def base(g):
        if inactive == "freeze":
          return jnp.zeros_like(g)
        return (inactive_scale * (jnp.sign(g) if inactive == "sign" else g)).astype(g.dtype)

      out = list(u_rest_leaves)
      for i in p.stacked:
        g = g_leaves[i]
        frozen = layout.constrain(base(g), g, stacked_spec(g))
        out[i] = layout.constrain(frozen.at[state.active].set(u_active_leaves[i].astype(g.dtype)), g,
                                  layout.spec_of(g))
      for kind in p.kinds:
        rows, valid = selections[kind]
        slots = u_active_leaves[kind.leaves[0]]
        for m, i in enumerate(kind.leaves):
          g = g_leaves[i]
          hit = (rows == m) if valid is None else (rows == m) & valid
          row = slots[jnp.argmax(hit)].astype(g.dtype)
          out[i] = layout.constrain(jnp.where(jnp.any(hit), row, base(g)), g, layout.spec_of(g))
      new_state = state._replace(count=tree.safe_increment(state.count), inner=inner_state, full_rank=full_state)
      return g_treedef.unflatten(out), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_probabilities(probabilities, num_active):
  """Concrete probabilities must allow ``num_active`` draws without replacement (as ``np.random.choice``)."""
  if probabilities is None or isinstance(probabilities, jax.core.Tracer):
    return
  p = np.asarray(probabilities)
  if p.ndim != 1 or not np.issubdtype(p.dtype, np.number):
    raise ValueError(f"`probabilities` must be a 1-D array of layer scores, got {probabilities!r}.")
  if not np.all(np.isfinite(p)) or np.any(p < 0) or np.count_nonzero(p) < num_active:
    raise ValueError(f"`probabilities` must be finite, >= 0 and have at least `num_active`={num_active} positive "
                     f"entries, got {p!r}.")
