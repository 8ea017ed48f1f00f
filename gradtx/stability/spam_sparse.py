"""SPAM's sparse-momentum mode (``density < 1``): moments for a random subset of each matrix's coordinates.

Reference implementation: TianjinYellow/SPAM-Optimizer@e8185fbe ``galore_torch/SPAM.py`` (class ``AdamW``,
param groups with a ``density`` key; its training script puts the attention and MLP linear weights there).
For a matrix of ``N`` entries the official code keeps ``exp_avg`` / ``exp_avg_sq`` only for the coordinates
of a boolean mask (``grad[mask]``, in row-major order), clips spikes and runs Adam on those, writes
``lr · s_t · m / (sqrt(v) + ε)`` (bias-corrected by the per-param step, which is never reset) into the
masked coordinates and leaves the others unchanged (zero update). The mask is redrawn right before every
reset step (after step ``t`` with ``(t + 1) % ΔT == 0``), and the reset then zeroes the new moments, so the
copy of the overlap that ``update_mask_random`` makes is always discarded.

gradtx keeps ``k = int(density · N)`` coordinates per sampled leaf as sorted ``int32`` indices in the state
(the official row-major order), gathers the gradient there, runs the inner transformation on the ``(k,)``
vectors and scatters its update back (zeros elsewhere). So the moments really take ``k`` slots under
``jit``, plus ``k`` indices. The indices are drawn at ``init`` and redrawn at every step ``t`` with
``t % every == 0`` from ``fold_in(fold_in(PRNGKey(seed), t), leaf)``: the same on every replica.

Where gradtx differs:
  * The official first mask has exactly ``int(density · N)`` entries (``randperm``), but every redraw is
    ``torch.rand(shape) < density``, a Bernoulli mask whose size varies (binomial, mean ``density · N``).
    A jitted state has a fixed shape: gradtx redraws a uniform subset of exactly ``k`` each time.
  * The official code asserts 2-D params at a redraw; gradtx samples the flattened coordinates of any leaf
    it is given (the same as the official layout for matrices).
  * Without resets (``every=None``) the subset is drawn once; the official code cannot run with
    ``DeltaT = 0`` (a modulo by zero).
  * Sharding: the ``(k,)`` moments and indices are replicated by default. To split them, give the indices
    and the moments of a leaf the same spec (e.g. ``gradtx.state_shardings(tx, params, specs, rule=...)``
    with ``P('x')`` for ``(k,)`` leaves, ``k`` divisible by the axis) when placing the state; the gathered
    coordinates follow the indices' layout. The gradient of a sampled leaf is replicated before its
    coordinates are taken. Inside ``shard_map`` with leaves split across devices, each shard samples
    ``int(density · local size)`` of its own block.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from gradtx.core import layout, tree
from gradtx.core.matrix import leaf_mask

_MAX_SIZE = 2**31 - 1  # the indices are int32


class SampleCoordinatesState(NamedTuple):
  """State of :func:`sample_coordinates`.

  Attributes:
    count: number of updates so far.
    key: PRNG key data made from ``seed`` (folded with the step of each draw and the leaf's position).
    indices: per sampled leaf, the sorted ``(k,)`` int32 flat indices of its coordinates; ``MaskedNode``
      for the leaves that are not sampled.
    inner_state: state of ``inner`` on the gathered ``(k,)`` vectors (and the other leaves at full size).
  """

  count: jax.Array
  key: jax.Array
  indices: Any
  inner_state: optax.OptState


def num_sampled(density: float, size: int) -> int:
  """The official count of kept coordinates, ``int(density · size)`` (at most ``size``)."""
  return min(int(density * size), size)


def sampled_leaves(mask: Any | Callable[[Any], Any] | None, unboxed: Any) -> list[bool]:
  """Per leaf of ``unboxed``: whether it gets sparse moments (``mask``; ``None``: every 2-D leaf)."""
  if mask is None:
    return [len(x.shape) == 2 for x in jax.tree.leaves(unboxed)]
  return leaf_mask(mask, unboxed)


def sample_coordinates(
    inner: optax.GradientTransformation,
    density: float,
    *,
    mask: Any | Callable[[Any], Any] | None = None,
    every: int | None = None,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  """Runs ``inner`` on ``k = int(density · size)`` random coordinates of each sampled leaf, redrawn every
  ``every`` steps; the other coordinates get a zero update.

  ``inner``'s state is not touched at a redraw: its moments must be zeroed at the same steps, which
  :func:`gradtx.scale_by_spam` does by wrapping this in :func:`gradtx.reset_state_every` with the same
  period (the official SPAM order: new mask, then reset, bias-correction step kept).

  Args:
    inner: elementwise transformation of the gathered coordinates (SPAM: spike clipping around Adam).
    density: fraction of coordinates kept, in (0, 1] (validated by the caller).
    mask: which leaves are sampled (prefix tree of booleans or a callable of the params); ``None``: every
      2-D leaf. The others go through ``inner`` at full size.
    every: redraw period (SPAM's ΔT); ``None`` keeps the first draw.
    seed: seed of the draws.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`SampleCoordinatesState`.
  """
  inner = optax.with_extra_args_support(inner)

  def plan(unboxed):
    counts = []
    for x, s in zip(jax.tree.leaves(unboxed), sampled_leaves(mask, unboxed)):
      size = math.prod(x.shape)
      if s and size > _MAX_SIZE:
        raise ValueError(f"sparse moments index leaves of at most {_MAX_SIZE} entries (int32), got shape {x.shape}.")
      counts.append(num_sampled(density, size) if s else None)
    return counts

  def draw(key, unboxed, counts):
    leaves, treedef = jax.tree.flatten(unboxed)
    out = []
    for i, (x, k) in enumerate(zip(leaves, counts)):
      if k is None:
        out.append(optax.MaskedNode())
        continue
      idx = jax.random.choice(jax.random.fold_in(key, i), math.prod(x.shape), (k,), replace=False)
      out.append(layout.constrain(jnp.sort(idx.astype(jnp.int32)), x, P()))
    return treedef.unflatten(out)

  def split(unboxed, counts, take):
    leaves, treedef = jax.tree.flatten(unboxed)
    return treedef.unflatten([x if k is None else take(x, i) for i, (x, k) in enumerate(zip(leaves, counts))])

  def gather(x, idx):
    """``x``'s coordinates at ``idx``, laid out as ``idx`` (so moments sharded like their indices line up)."""
    flat = layout.constrain(x, x, (None,) * x.ndim).reshape(-1)
    out = layout.explicit_sharding(idx) if layout.explicit_sharding(x) is not None else None
    return flat.at[idx].get(unique_indices=True, indices_are_sorted=True, out_sharding=out)

  def scatter(g, idx, u):
    flat = layout.zeros((math.prod(g.shape),), g.dtype, g, (None,))
    idx, u = layout.constrain(idx, g, P()), layout.constrain(u.astype(g.dtype), g, P())
    full = flat.at[idx].set(u, unique_indices=True, indices_are_sorted=True).reshape(g.shape)
    return layout.constrain(full, g, layout.spec_of(g))

  def init_fn(params):
    unboxed = tree.unboxed_map(lambda x: x, params)
    counts = plan(unboxed)
    key = jax.random.PRNGKey(seed)
    slots = split(unboxed, counts, lambda x, i: layout.zeros((counts[i],), x.dtype, x, (None,)))
    return SampleCoordinatesState(
        count=jnp.zeros([], jnp.int32),
        key=key,
        indices=draw(jax.random.fold_in(key, 0), unboxed, counts),
        inner_state=inner.init(slots),
    )

  def update_fn(updates, state, params=None, **extra_args):
    with jax.named_scope("gradtx/sample_coordinates"):
      g_leaves, g_treedef = jax.tree.flatten(updates)
      unboxed = tree.unboxed_map(lambda x: x, updates)
      counts = plan(unboxed)
      count = tree.safe_increment(state.count)
      indices = state.indices
      if every is not None:
        indices = jax.lax.cond(
            count % every == 0,
            lambda: layout.match(draw(jax.random.fold_in(state.key, count), unboxed, counts), state.indices),
            lambda: state.indices,
        )
      idx = [i for i in jax.tree.leaves(indices)]
      position = {leaf: n for n, leaf in enumerate(i for i, k in enumerate(counts) if k is not None)}
      take = lambda x, i: gather(x, idx[position[i]])  # noqa: E731
      p_in = None if params is None else split(tree.unboxed_map(lambda x: x, params), counts, take)
      u_in, inner_state = inner.update(split(unboxed, counts, take), state.inner_state, p_in, **extra_args)
      u_leaves = jax.tree.leaves(u_in)
      out = [u if k is None else scatter(g, idx[position[i]], u)
             for i, (g, u, k) in enumerate(zip(g_leaves, u_leaves, counts))]
      return g_treedef.unflatten(out), SampleCoordinatesState(count, state.key, indices, inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
