"""The k-th largest magnitude over every coordinate of a tree, exact or by histogram (top-k thresholds).

Both methods read the float32 bit pattern of ``|x|``: for non-negative floats the int32 bit patterns are
ordered like the values, so order statistics reduce to counting.

* ``'exact'``: bisection over bit patterns; 31 passes that each count ``|x| >= b`` (one scalar ``psum``
  per pass across ``axis_name``). The result is an element of the data, bit for bit the value a full sort
  would give, with no sort and no gather, whatever the sharding.
* ``'histogram'``: one pass that counts the top 16 bits of each pattern (sign, exponent, 7 mantissa bits)
  into 32,641 bins, one ``psum`` of the bins. The result is the exact value with its mantissa truncated to
  7 bits: ``t_hat <= t < t_hat * (1 + 2**-7)`` for normal floats (relative error under 0.79%), and
  ``count(|x| >= t_hat) >= index + 1`` always holds.

NaN magnitudes count as ``+inf``. Counts are int32: at most 2**31 - 1 coordinates in all.
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp

from gradtx.core import reduce

ThresholdMethod = Literal["exact", "histogram"]

_INF_BITS = 0x7F800000
_HIST_SHIFT = 16
_HIST_BINS = (_INF_BITS >> _HIST_SHIFT) + 1


def magnitude_bits(x: jax.Array) -> jax.Array:
  """int32 bit patterns of ``|x|`` in float32 (NaN mapped to +inf), ordered like the magnitudes."""
  a = jnp.abs(x.astype(jnp.float32))
  a = jnp.where(jnp.isnan(a), jnp.inf, a)
  return jax.lax.bitcast_convert_type(a, jnp.int32)


def size(tree: Any, axis_name: reduce.AxisName = None) -> int:
  """Number of coordinates in ``tree``, times the size of ``axis_name`` (shards have equal shapes)."""
  n = sum(int(x.size) for x in jax.tree.leaves(tree))
  return n if axis_name is None else n * int(jax.lax.axis_size(axis_name))


def count_at_least(tree: Any, bits: jax.Array, axis_name: reduce.AxisName = None) -> jax.Array:
  """Number of coordinates with ``magnitude_bits(x) >= bits`` (int32), across ``axis_name``."""
  total = jnp.zeros((), jnp.int32)
  for x in jax.tree.leaves(tree):
    total = total + jnp.sum(magnitude_bits(x) >= bits, dtype=jnp.int32)
  return reduce.psum(total, axis_name)


def _exact(tree: Any, rank: jax.Array, axis_name: reduce.AxisName) -> jax.Array:
  # Invariant: count(>= lo) >= rank and count(>= hi) < rank; 31 halvings close a range below 2**31.
  def body(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    ok = count_at_least(tree, mid, axis_name) >= rank
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  # Inside shard_map the loop carry must vary over the same mesh axes as the counts (the data's axes but
  # axis_name): a zero made from the data and reduced like the counts has exactly that type.
  zero = reduce.psum(jnp.zeros_like(jax.tree.leaves(tree)[0], dtype=jnp.int32, shape=()), axis_name)
  lo, _ = jax.lax.fori_loop(0, 31, body, (zero, zero + jnp.int32(_INF_BITS + 1)))
  return lo


def _histogram(tree: Any, rank: jax.Array, axis_name: reduce.AxisName) -> jax.Array:
  counts = jnp.zeros((_HIST_BINS,), jnp.int32)
  for x in jax.tree.leaves(tree):
    top = (magnitude_bits(x) >> _HIST_SHIFT).reshape(-1)
    counts = counts + jnp.bincount(top, length=_HIST_BINS).astype(jnp.int32)
  counts = reduce.psum(counts, axis_name)
  at_least = jnp.cumsum(counts[::-1])[::-1]  # at_least[b] = count of coordinates in bins >= b
  top_bin = jnp.sum(at_least >= rank, dtype=jnp.int32) - 1  # at_least is non-increasing
  return top_bin << _HIST_SHIFT


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
    A float32 scalar.
  """
  if not jax.tree.leaves(tree):
    return jnp.zeros((), jnp.float32)
  rank = jnp.asarray(index, jnp.int32) + 1
  bits = _exact(tree, rank, axis_name) if method == "exact" else _histogram(tree, rank, axis_name)
  return jax.lax.bitcast_convert_type(bits, jnp.float32)
