"""The k-th largest magnitude over every coordinate of a tree, exact or by histogram (top-k thresholds).

Both methods read the bit pattern of ``|x|`` in the tree's ranking dtype (:func:`ranking_dtype`: float64
if any leaf is float64, else float32; every leaf converts to it exactly): for non-negative floats the
integer bit patterns are ordered like the values, so order statistics reduce to counting.

* ``'exact'``: bisection over bit patterns; 31 passes (63 in float64) that each count ``|x| >= b`` (one
  scalar ``psum`` per pass across ``axis_name``). The result is an element of the data, bit for bit the
  value a full sort would give, with no sort and no gather, whatever the sharding.
* ``'histogram'``: one pass that counts the sign, exponent and top 7 mantissa bits of each pattern into
  32,641 bins (262,017 in float64), one ``psum`` of the bins. The result is the exact value with its
  mantissa truncated to 7 bits: ``t_hat <= t < t_hat * (1 + 2**-7)`` for normal floats (relative error
  under 0.79%), and ``count(|x| >= t_hat) >= index + 1`` always holds.

NaN magnitudes count as ``+inf``. Counts are int32: at most 2**31 - 1 coordinates in all.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.core import reduce

ThresholdMethod = Literal["exact", "histogram"]


class _Bits(NamedTuple):
  """Bit-pattern layout of a ranking dtype: its integer twin, ``+inf``'s pattern, bisection passes, and the
  shift that keeps sign, exponent and 7 mantissa bits for the histogram."""

  int_dtype: Any
  inf_bits: int
  passes: int
  hist_shift: int


_LAYOUT = {
    jnp.dtype(jnp.float32): _Bits(jnp.int32, 0x7F800000, 31, 23 - 7),
    jnp.dtype(jnp.float64): _Bits(jnp.int64, 0x7FF0000000000000, 63, 52 - 7),
}


def ranking_dtype(tree: Any) -> jnp.dtype:
  """float64 if any leaf of ``tree`` is float64 (and x64 is enabled), else float32: every leaf converts to it
  exactly."""
  wide = any(jnp.dtype(x.dtype) == jnp.float64 for x in jax.tree.leaves(tree))
  return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64) if wide else jnp.float32)


def magnitude_bits(x: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
  """Bit patterns of ``|x|`` in ``dtype`` (float32 -> int32, float64 -> int64; NaN mapped to +inf), ordered
  like the magnitudes."""
  dtype = jnp.dtype(dtype)
  a = jnp.abs(x.astype(dtype))
  a = jnp.where(jnp.isnan(a), jnp.inf, a)
  return jax.lax.bitcast_convert_type(a, _LAYOUT[dtype].int_dtype)


def size(tree: Any, axis_name: reduce.AxisName = None) -> int:
  """Number of coordinates in ``tree``, times the size of ``axis_name`` (shards have equal shapes)."""
  n = sum(int(x.size) for x in jax.tree.leaves(tree))
  return n if axis_name is None else n * int(jax.lax.axis_size(axis_name))


def count_at_least(tree: Any, bits: jax.Array, axis_name: reduce.AxisName = None) -> jax.Array:
  """Number of coordinates with ``magnitude_bits(x) >= bits`` (int32), across ``axis_name``.

  ``bits`` is int32 (float32 patterns) or int64 (float64 patterns).
  """
  dtype = jnp.float64 if jnp.dtype(bits.dtype) == jnp.int64 else jnp.float32
  total = jnp.zeros((), jnp.int32)
  for x in jax.tree.leaves(tree):
    total = total + jnp.sum(magnitude_bits(x, dtype) >= bits, dtype=jnp.int32)
  return reduce.psum(total, axis_name)


def _exact(tree: Any, rank: jax.Array, axis_name: reduce.AxisName, layout: _Bits) -> jax.Array:
  # Invariant: count(>= lo) >= rank and count(>= hi) < rank; `passes` halvings close the range
  # [0, inf_bits + 1) (below 2**31, resp. 2**63).
  def body(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    ok = count_at_least(tree, mid, axis_name) >= rank
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  # Inside shard_map the loop carry must vary over the same mesh axes as the counts (the data's axes but
  # axis_name): a zero made from the data and reduced like the counts has exactly that type.
  zero = reduce.psum(jnp.zeros_like(jax.tree.leaves(tree)[0], dtype=layout.int_dtype, shape=()), axis_name)
  top = jnp.asarray(layout.inf_bits + 1, layout.int_dtype)
  lo, _ = jax.lax.fori_loop(0, layout.passes, body, (zero, zero + top))
  return lo


def _histogram(tree: Any, rank: jax.Array, axis_name: reduce.AxisName, dtype: Any, layout: _Bits) -> jax.Array:
  bins = (layout.inf_bits >> layout.hist_shift) + 1
  counts = jnp.zeros((bins,), jnp.int32)
  for x in jax.tree.leaves(tree):
    top = (magnitude_bits(x, dtype) >> layout.hist_shift).reshape(-1)
    counts = counts + jnp.bincount(top, length=bins).astype(jnp.int32)
  counts = reduce.psum(counts, axis_name)
  at_least = jnp.cumsum(counts[::-1])[::-1]  # at_least[b] = count of coordinates in bins >= b
  top_bin = jnp.sum(at_least >= rank, dtype=jnp.int32) - 1  # at_least is non-increasing
  return top_bin.astype(layout.int_dtype) << layout.hist_shift


def kth_largest_magnitude(
    tree: Any,
    index: jax.Array | int,
    *,
    method: ThresholdMethod = "exact",
    axis_name: reduce.AxisName = None,
) -> jax.Array:
  """``|x|`` at 0-based position ``index`` of all magnitudes in ``tree`` sorted in descending order.

  Args:
    tree: arrays of any shapes and float dtypes; their coordinates are concatenated (and, given
      ``axis_name``, concatenated with the other shards on that axis).
    index: 0-based rank, ``0 <= index < size(tree)``; may be traced.
    method: ``'exact'`` or ``'histogram'`` (see the module docstring for cost and error).
    axis_name: mapped axis whose shards hold the rest of the coordinates.

  Returns:
    A scalar of :func:`ranking_dtype` (float64 when a leaf is float64, else float32).
  """
  dtype = ranking_dtype(tree)
  if not jax.tree.leaves(tree):
    return jnp.zeros((), dtype)
  layout = _LAYOUT[dtype]
  rank = jnp.asarray(index, jnp.int32) + 1
  if method == "exact":
    bits = _exact(tree, rank, axis_name, layout)
  else:
    bits = _histogram(tree, rank, axis_name, dtype, layout)
  return jax.lax.bitcast_convert_type(bits, dtype)
