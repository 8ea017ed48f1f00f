"""Optimizer-state memory, counted from shapes alone.

:func:`memory_report` runs ``tx.init`` under ``jax.eval_shape``, so it allocates nothing and works on
``jax.ShapeDtypeStruct`` params of any size (a 7B-parameter tree costs microseconds). Bytes are counted
from each leaf's shape and dtype: sub-byte dtypes (``int4``) count their bits, typed PRNG keys count their
key data. ``None`` leaves and ``optax.MaskedNode`` count zero.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import optax


def _shape_dtype(leaf: Any) -> tuple[tuple[int, ...], Any]:
  if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
    return tuple(leaf.shape), leaf.dtype
  array = jax.numpy.asarray(leaf)  # a Python scalar: counted as JAX would store it
  return tuple(array.shape), array.dtype


def _leaf_nbytes(leaf: Any) -> int:
  shape, dtype = _shape_dtype(leaf)
  if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(shape, dtype))
    shape, dtype = data.shape, data.dtype
  return math.ceil(math.prod(shape) * jax.dtypes.itemsize_bits(dtype) / 8)


def state_nbytes(state: Any) -> int:
  """Total bytes of the array leaves of ``state`` (arrays, ``ShapeDtypeStruct`` or Python scalars).

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> params = {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)}
    >>> gradtx.state_nbytes(params)  # 16 float32 numbers
    64
    >>> gradtx.state_nbytes(optax.adam(1e-3).init(params))  # mu, nu and an int32 count
    132
  """
  return sum(_leaf_nbytes(leaf) for leaf in jax.tree.leaves(state))


@dataclasses.dataclass(frozen=True)
class LeafMemory:
  """One array of the optimizer state: its path in the state tree, shape, dtype name and bytes."""

  path: str
  shape: tuple[int, ...]
  dtype: str
  nbytes: int


@dataclasses.dataclass(frozen=True)
class MemoryReport:
  """What :func:`memory_report` found.

  Attributes:
    leaves: every array of the optimizer state, in tree order.
    state_bytes: total bytes of the optimizer state.
    param_bytes: total bytes of the params.
    num_params: number of parameter elements.
  """

  leaves: tuple[LeafMemory, ...]
  state_bytes: int
  param_bytes: int
  num_params: int

  @property
  def bytes_per_param(self) -> float:
    """Optimizer-state bytes per parameter element (fp32 AdamW: 8)."""
    return self.state_bytes / max(self.num_params, 1)


def memory_report(tx: optax.GradientTransformation, params: Any) -> MemoryReport:
  """Optimizer-state bytes of ``tx`` for ``params``, per leaf and in total, without allocating.

  Args:
    tx: any optax transformation.
    params: a tree of arrays or ``jax.ShapeDtypeStruct`` (only shapes and dtypes are read).

  Returns:
    A :class:`MemoryReport`.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> params = {"w": jax.ShapeDtypeStruct((1024, 1024), jnp.float32)}
    >>> report = gradtx.memory_report(optax.adamw(1e-3), params)
    >>> report.state_bytes, report.bytes_per_param
    (8388612, 8.000003814697266)
    >>> [(leaf.path, leaf.dtype, leaf.nbytes) for leaf in report.leaves]  # doctest: +NORMALIZE_WHITESPACE
    [('[0].count', 'int32', 4), ("[0].mu['w']", 'float32', 4194304), ("[0].nu['w']", 'float32', 4194304)]
  """
  abstract_params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(*_shape_dtype(p)), params)
  abstract_state = jax.eval_shape(tx.init, abstract_params)
  leaves = tuple(
      LeafMemory(
          path=jax.tree_util.keystr(path),
          shape=tuple(leaf.shape),
          dtype=str(leaf.dtype),
          nbytes=_leaf_nbytes(leaf),
      )
      for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_state)
  )
  return MemoryReport(
      leaves=leaves,
      state_bytes=sum(leaf.nbytes for leaf in leaves),
      param_bytes=state_nbytes(abstract_params),
      num_params=sum(math.prod(p.shape) for p in jax.tree.leaves(abstract_params)),
  )
