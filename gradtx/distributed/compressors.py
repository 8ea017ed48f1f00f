"""Contractive compressors of a worker's message: top-k, random-k and scaled sign.

A compressor ``C`` is contractive with parameter δ ∈ (0, 1] when ``E‖C(x) − x‖² ≤ (1 − δ)‖x‖²``:

* top-k (Stich, Cordonnier, Jaggi 2018; Alistarh et al. 2018): keep the ``k`` largest magnitudes over the
  whole message tree, δ = k/d. The threshold is the exact k-th largest magnitude of
  :mod:`gradtx.core.topk` (bisection over float32 bit patterns, no sort); every coordinate whose magnitude
  equals the threshold is kept, so ties at the threshold keep more than ``k`` (with continuous data,
  exactly ``k``). NaN counts as the largest magnitude and is always kept.
* random-k: keep ``k`` coordinates chosen uniformly at random, δ = k/d in expectation (no rescaling: the
  contractive, not the unbiased, form). The choice comes from ``seed`` folded with the step count, the same
  on every worker: the mean of the messages is then itself ``k``-sparse, and the indices are never sent.
* scaled sign (Karimireddy et al. 2019, "Error Feedback Fixes SignSGD"): per leaf,
  ``C(x) = (‖x‖₁ / d) sign(x)``, δ = ‖x‖₁² / (d ‖x‖²), one bit per coordinate plus one float per leaf.

Compressors return the *decompressed* message (a dense tree with the shapes and dtypes of the input, zeros
where nothing is sent): what a worker's message means once received. ``message_bytes`` gives what the
encoding above would put on the wire for one worker and one message (values in the message dtype, int32
indices, packed sign bits), computed from shapes only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.core import reduce, topk, validation

_INDEX_BYTES = 4


class Compressor(NamedTuple):
  """A compressor of message trees.

  Attributes:
    name: a short label (``'top_k(0.01)'``).
    compress: ``(tree, count) -> tree``: the decompressed message; ``count`` (an int32 step counter) seeds
      randomized compressors.
    message_bytes: ``tree -> int``: bytes one worker sends for a message shaped like ``tree``.
    delta: ``tree -> float``: the compressor's contraction parameter δ for such a message (a lower bound
      where it depends on the values).
  """

  name: str
  compress: Callable[[Any, jax.Array], Any]
  message_bytes: Callable[[Any], int]
  delta: Callable[[Any], float]


def _count(tree: Any) -> int:
  return sum(int(math.prod(x.shape)) for x in jax.tree.leaves(tree))


def _k(ratio: float, d: int) -> int:
  return max(1, min(d, math.ceil(ratio * d)))


def dense_bytes(tree: Any) -> int:
  """Bytes of the uncompressed message: every coordinate in its dtype."""
  return sum(int(math.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _value_bytes(tree: Any) -> int:
  leaves = jax.tree.leaves(tree)
  return max((jnp.dtype(x.dtype).itemsize for x in leaves), default=4)


def _keep_top(tree: Any, scores: Any, k: int, axis_name: reduce.AxisName, method: topk.ThresholdMethod) -> Any:
  """``tree`` where the magnitude of ``scores`` is among the ``k`` largest (ties kept), zeros elsewhere."""
  threshold = topk.kth_largest_magnitude(scores, k - 1, method=method, axis_name=axis_name)
  bits = topk.magnitude_bits(threshold, threshold.dtype)
  keep = lambda x, s: jnp.where(topk.magnitude_bits(s, threshold.dtype) >= bits, x, jnp.zeros_like(x))
  return jax.tree.map(keep, tree, scores)


def top_k(ratio: float, *, method: topk.ThresholdMethod = "exact", axis_name: reduce.AxisName = None) -> Compressor:
  """Keeps the ``⌈ratio · d⌉`` largest magnitudes of the whole message tree (``d`` coordinates).

  Args:
    ratio: fraction of coordinates kept, in (0, 1] (at least one is kept).
    method: ``'exact'`` or ``'histogram'`` threshold of :func:`gradtx.core.topk.kth_largest_magnitude`
      (the histogram threshold may keep up to 0.79% smaller magnitudes, so a few more coordinates).
    axis_name: when the message itself is split across a mesh axis (FSDP inside ``shard_map``), that axis:
      ``k`` and the threshold are then those of the whole message.

  Returns:
    A :class:`Compressor`; each kept coordinate costs its value and an int32 index.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> c = gradtx.top_k(0.25)
    >>> c.compress({"a": jnp.array([0.1, -3.0, 0.2, 1.0]), "b": jnp.array([0.5, 2.0, 0.0, 0.3])}, 0)
    {'a': Array([ 0., -3.,  0.,  0.], dtype=float32), 'b': Array([0., 2., 0., 0.], dtype=float32)}
    >>> c.message_bytes({"a": jnp.zeros(4), "b": jnp.zeros(4)})  # 2 kept: (4 + 4) bytes each
    16
  """
  validation.check_range("ratio", ratio, low=0.0, high=1.0, low_inclusive=False)
  validation.check_choice("method", method, ("exact", "histogram"))

  def compress(tree, count):
    del count
    if not jax.tree.leaves(tree):
      return tree
    return _keep_top(tree, tree, _k(ratio, topk.size(tree, axis_name)), axis_name, method)

  return Compressor(
      name=f"top_k({ratio:g})",
      compress=compress,
      message_bytes=lambda tree: _k(ratio, _count(tree)) * (_value_bytes(tree) + _INDEX_BYTES),
      delta=lambda tree: _k(ratio, _count(tree)) / max(_count(tree), 1),
  )


def random_k(ratio: float, *, seed: int = 0, axis_name: reduce.AxisName = None) -> Compressor:
  """Keeps ``⌈ratio · d⌉`` coordinates drawn uniformly at random (the same on every worker).

  Args:
    ratio: fraction of coordinates kept, in (0, 1].
    seed: int seed; step ``t`` uses ``fold_in(PRNGKey(seed), t)``, so every worker keeps the same
      coordinates and only the values are sent.
    axis_name: when the message is split across a mesh axis (FSDP inside ``shard_map``), that axis; each
      shard then draws its own scores and ``k`` counts the whole message.

  Returns:
    A :class:`Compressor`; each kept coordinate costs its value (indices follow from the seed).

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> c = gradtx.random_k(0.5, seed=1)
    >>> kept = c.compress(jnp.arange(1.0, 9.0), 0)
    >>> int((kept != 0).sum()), c.message_bytes(jnp.zeros(8))
    (4, 16)
  """
  validation.check_range("ratio", ratio, low=0.0, high=1.0, low_inclusive=False)
  validation.check_int("seed", seed)

  def compress(tree, count):
    leaves, treedef = jax.tree.flatten(tree)
    if not leaves:
      return tree
    key = jax.random.fold_in(jax.random.PRNGKey(seed), count)
    if axis_name is not None:
      key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    keys = jax.random.split(key, len(leaves))
    scores = treedef.unflatten(
        [jax.random.uniform(k, x.shape, jnp.float32, minval=1.0, maxval=2.0) for k, x in zip(keys, leaves)]
    )
    return _keep_top(tree, scores, _k(ratio, topk.size(tree, axis_name)), axis_name, "exact")

  return Compressor(
      name=f"random_k({ratio:g})",
      compress=compress,
      message_bytes=lambda tree: _k(ratio, _count(tree)) * _value_bytes(tree),
      delta=lambda tree: _k(ratio, _count(tree)) / max(_count(tree), 1),
  )


def scaled_sign(*, axis_name: reduce.AxisName = None) -> Compressor:
  """Per leaf ``(‖x‖₁ / d) sign(x)``: one bit per coordinate and one float per leaf.

  Args:
    axis_name: when the leaves are split across a mesh axis (FSDP inside ``shard_map``), that axis: ``‖x‖₁``
      and ``d`` are then those of the whole leaf.

  Returns:
    A :class:`Compressor`. Its δ depends on the values (``‖x‖₁² / (d ‖x‖²) >= 1/d``); ``delta`` gives the
    worst case ``1/d`` of the largest leaf.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> gradtx.scaled_sign().compress(jnp.array([1.0, -3.0, 0.5, -0.5]), 0)
    Array([ 1.25, -1.25,  1.25, -1.25], dtype=float32)
  """

  def one(x):
    a = reduce.psum(jnp.sum(jnp.abs(x.astype(jnp.float32))), axis_name)
    d = x.size * (1 if axis_name is None else jax.lax.axis_size(axis_name))
    return (a / d * jnp.where(x >= 0, 1.0, -1.0)).astype(x.dtype)

  def message_bytes(tree):
    leaves = jax.tree.leaves(tree)
    return sum(math.ceil(int(math.prod(x.shape)) / 8) + 4 for x in leaves)

  return Compressor(
      name="scaled_sign",
      compress=lambda tree, count: jax.tree.map(one, tree),
      message_bytes=message_bytes,
      delta=lambda tree: 1.0 / max((int(math.prod(x.shape)) for x in jax.tree.leaves(tree)), default=1),
  )
