"""Cross-device reductions for statistics that reduce across elements (DESIGN.md, contract item 8).

With ``axis_name=None`` these are plain local reductions; given an axis name (inside ``pmap`` or
``shard_map``) the partial results are combined with ``lax.psum`` / ``lax.pmax`` so the statistic equals the
single-device statistic on the full (concatenated) data.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

AxisName = Hashable | Sequence[Hashable] | None


def psum(x: Any, axis_name: AxisName) -> Any:
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def pmax(x: Any, axis_name: AxisName) -> Any:
  return x if axis_name is None else jax.lax.pmax(x, axis_name)


def pmean(x: Any, axis_name: AxisName) -> Any:
  return x if axis_name is None else jax.lax.pmean(x, axis_name)


def sum_of_squares(x: jax.Array, axis_name: AxisName = None) -> jax.Array:
  """Sum of squares of one array in float32, summed across ``axis_name`` when given."""
  x = x.astype(jnp.float32)
  return psum(jnp.sum(x * x), axis_name)


def norm(x: jax.Array, axis_name: AxisName = None) -> jax.Array:
  """L2 (Frobenius) norm of one array, over its shards on ``axis_name`` when given."""
  return jnp.sqrt(sum_of_squares(x, axis_name))


def global_norm(tree: Any, axis_name: AxisName = None) -> jax.Array:
  """L2 norm of a whole tree, reduced across ``axis_name`` when given."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.zeros((), jnp.float32)
  total = sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves)
  return jnp.sqrt(psum(total, axis_name))


def as_varying(tree: Any, axis_name: AxisName) -> Any:
  """Marks replicated (axis-invariant) leaves as varying over ``axis_name``; identity when ``axis_name`` is None.

  Inside ``shard_map`` (with ``check_vma``), differentiating a per-replica loss with respect to replicated params
  sums the gradient over the axis implicitly. Differentiating at ``as_varying(params)`` gives each replica its
  own gradient instead, so a following ``pmean`` yields the full-batch mean under ``shard_map`` and ``pmap``
  alike.
  """
  if axis_name is None:
    return tree
  axes = tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)

  def one(x):
    missing = tuple(a for a in axes if a not in getattr(jax.typeof(x), "vma", frozenset()))
    return jax.lax.pcast(x, missing, to="varying") if missing else x

  return jax.tree.map(one, tree)
