"""Matrix views of n-D leaves: which axes are the rows, which the columns, which are batched.

A leaf of any rank is viewed as a batch of matrices ``batch_shape + (rows, cols)``: the *reduction* axes
(inputs of a layer, contracted with the activations) are merged into the rows, the *output* axes into the
columns, and every other axis is a batch axis whose matrices are treated independently. Flax kernels are
``(in, out)``, so a 2-D kernel is ``MatrixDims(0, 1)``; an attention kernel ``(d, heads, head_dim)`` is
``MatrixDims(0, (1, 2))``; stacked layers ``(L, m, n)`` are ``MatrixDims(1, 2)`` (axis 0 is a batch axis);
a PyTorch-layout ``(out, in)`` weight is ``MatrixDims(1, 0)``.

This is the one place gradtx reshapes leaves into matrices (optax 0.2.8 writes the same helper twice, for
GaLore and for Muon); optax's ``GaLoreDimensionNumbers`` / ``MuonDimensionNumbers`` are accepted as well.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from gradtx.core import layout

Axes = int | Sequence[int]


class MatrixDims(NamedTuple):
  """Which axes of a leaf are the rows (``reduction_axes``) and the columns (``output_axes``) of its matrices.

  Axes not named are batch axes. Negative axes count from the end.
  """

  reduction_axes: Axes = 0
  output_axes: Axes = 1


def _as_tuple(axes: Axes) -> tuple[int, ...]:
  return (int(axes),) if isinstance(axes, int) else tuple(int(a) for a in axes)


def as_dims(dims: Any) -> MatrixDims | None:
  """``dims`` as :class:`MatrixDims` (optax's ``*DimensionNumbers`` with ``reduction_axis`` /
  ``output_axis`` are converted), or ``None`` for "not a matrix"."""
  if dims is None or isinstance(dims, MatrixDims):
    return dims
  if hasattr(dims, "reduction_axis") and hasattr(dims, "output_axis"):
    return MatrixDims(dims.reduction_axis, dims.output_axis)
  raise ValueError(f"`dimension_numbers` entries must be MatrixDims or None, got {dims!r}.")


def is_dims(x: Any) -> bool:
  return isinstance(x, MatrixDims) or (hasattr(x, "reduction_axis") and hasattr(x, "output_axis"))


@dataclasses.dataclass(frozen=True)
class MatrixView:
  """A leaf of shape ``shape`` seen as ``batch_shape + (rows, cols)``. Static (hashable) metadata only."""

  shape: tuple[int, ...]
  batch_axes: tuple[int, ...]
  reduction_axes: tuple[int, ...]
  output_axes: tuple[int, ...]

  @classmethod
  def of(cls, shape: Sequence[int], dims: MatrixDims) -> MatrixView:
    """The view of a leaf of ``shape`` under ``dims``; a ``ValueError`` if the axes do not fit the shape."""
    shape, ndim = tuple(int(s) for s in shape), len(shape)
    red_in, out_in = _as_tuple(dims.reduction_axes), _as_tuple(dims.output_axes)
    red = tuple(a % ndim for a in red_in if -ndim <= a < ndim)
    out = tuple(a % ndim for a in out_in if -ndim <= a < ndim)
    ok = (ndim >= 2 and red and out and len(red) == len(red_in) and len(out) == len(out_in)
          and len(set(red + out)) == len(red + out))
    if not ok:
      raise ValueError(
          f"`dimension_numbers` {dims!r} do not fit a leaf of shape {shape}: reduction and output axes must be"
          " non-empty, distinct and within the leaf's rank (>= 2)."
      )
    batch = tuple(a for a in range(ndim) if a not in red + out)
    return cls(shape, batch, red, out)

  @property
  def perm(self) -> tuple[int, ...]:
    return self.batch_axes + self.reduction_axes + self.output_axes

  @property
  def batch_shape(self) -> tuple[int, ...]:
    return tuple(self.shape[a] for a in self.batch_axes)

  @property
  def rows(self) -> int:
    return math.prod(self.shape[a] for a in self.reduction_axes)

  @property
  def cols(self) -> int:
    return math.prod(self.shape[a] for a in self.output_axes)

  @property
  def matrix_shape(self) -> tuple[int, ...]:
    return self.batch_shape + (self.rows, self.cols)

  def to_matrix(self, x: jax.Array) -> jax.Array:
    """``x`` (of ``shape``) as a batch of matrices ``batch_shape + (rows, cols)``.

    On an Explicit mesh a merged group keeps only its major axis's sharding (the others are gathered first),
    which is the layout :meth:`matrix_spec` describes.
    """
    y = jnp.transpose(x, self.perm)
    spec = layout.spec_of(x)
    if spec is None:
      return jnp.reshape(y, self.matrix_shape)
    target = self.matrix_spec(spec)
    y = layout.constrain(y, y, self._split_spec(target))
    return jnp.reshape(y, self.matrix_shape, out_sharding=PartitionSpec(*target))

  def from_matrix(self, m: jax.Array) -> jax.Array:
    """Inverse of :meth:`to_matrix`."""
    permuted = tuple(self.shape[a] for a in self.perm)
    inverse = tuple(sorted(range(len(self.perm)), key=lambda i: self.perm[i]))
    spec = layout.spec_of(m)
    if spec is None:
      return jnp.transpose(jnp.reshape(m, permuted), inverse)
    entries = tuple(spec) + (None,) * (m.ndim - len(tuple(spec)))
    return jnp.transpose(jnp.reshape(m, permuted, out_sharding=PartitionSpec(*self._split_spec(entries))), inverse)

  def _split_spec(self, entries: tuple[Any, ...]) -> tuple[Any, ...]:
    """Matrix-view entries spread over the permuted leaf axes: each group's entry on its major axis."""
    batch, rows, cols = entries[:-2], entries[-2], entries[-1]
    spread = lambda e, n: (e,) + (None,) * (n - 1)
    return tuple(batch) + spread(rows, len(self.reduction_axes)) + spread(cols, len(self.output_axes))

  def matrix_spec(self, spec: PartitionSpec | None) -> tuple[Any, ...]:
    """The entries of a leaf's ``PartitionSpec`` carried over to its matrix view ``batch + (rows, cols)``.

    A merged group of axes keeps the mesh axis of its first (major) axis when the others are unsharded,
    which a reshape preserves; otherwise the merged dimension is unsharded.
    """
    entries = tuple(spec or ()) + (None,) * (len(self.shape) - len(tuple(spec or ())))

    def merged(axes):
      first, rest = entries[axes[0]], [entries[a] for a in axes[1:]]
      return first if all(r is None for r in rest) else None

    return tuple(entries[a] for a in self.batch_axes) + (merged(self.reduction_axes), merged(self.output_axes))


def _broadcast_prefix(prefix: Any, tree: Any, is_leaf: Callable[[Any], bool]) -> list[Any]:
  """The entry of ``prefix`` (a prefix tree of ``tree``) that covers each leaf of ``tree``, in leaf order."""

  class _Box(NamedTuple):
    value: Any

  boxed = jax.tree.map(
      lambda p, sub: jax.tree.map(lambda _: _Box(p), sub), prefix, tree, is_leaf=lambda x: x is None or is_leaf(x)
  )
  return [b.value for b in jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, _Box))]


def leaf_dims(dimension_numbers: Any, tree: Any) -> list[MatrixDims | None]:
  """Per leaf of ``tree`` (in ``jax.tree.leaves`` order): its :class:`MatrixDims`, or ``None``.

  ``dimension_numbers`` is ``None`` (2-D leaves are ``MatrixDims(0, 1)``, other leaves are not matrices),
  one ``MatrixDims`` for every leaf of rank >= 2, a prefix tree of ``MatrixDims`` / ``None``, or a
  callable of the tree returning one of these.
  """
  if callable(dimension_numbers) and not is_dims(dimension_numbers):
    dimension_numbers = dimension_numbers(tree)
  leaves = jax.tree.leaves(tree)
  if dimension_numbers is None:
    return [MatrixDims(0, 1) if len(x.shape) == 2 else None for x in leaves]
  if is_dims(dimension_numbers):
    dims = as_dims(dimension_numbers)
    return [dims if len(x.shape) >= 2 else None for x in leaves]
  try:
    entries = _broadcast_prefix(dimension_numbers, tree, is_dims)
  except ValueError as e:
    raise ValueError(f"`dimension_numbers` must be a prefix tree of the params: {e}") from None
  return [as_dims(d) for d in entries]


def leaf_mask(mask: Any, tree: Any) -> list[bool]:
  """Per leaf of ``tree``: the boolean of ``mask`` (``None`` = all True, a prefix tree, or a callable)."""
  if mask is None:
    return [True] * len(jax.tree.leaves(tree))
  if callable(mask):
    mask = mask(tree)
  if isinstance(mask, bool):
    return [mask] * len(jax.tree.leaves(tree))
  return [bool(m) for m in _broadcast_prefix(mask, tree, lambda x: isinstance(x, bool))]
