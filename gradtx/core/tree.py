"""Tree helpers that accept what the gradtx contract requires of ``init``.

Params may hold ``jax.ShapeDtypeStruct`` leaves (abstract init), ``None`` leaves and ``optax.MaskedNode``
leaves (both are empty subtrees to ``jax.tree``). ``jnp.zeros_like`` keeps an array's sharding on explicit
meshes, so state made here has the sharding type of the param it mirrors.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def zeros_like(tree: Any, dtype: Any = None) -> Any:
  """Zeros with each leaf's shape (and sharding), in ``dtype`` or the leaf's own dtype."""
  return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype), tree)


def cast_like(tree: Any, reference: Any) -> Any:
  """Casts each leaf of ``tree`` to the dtype of the matching leaf of ``reference``."""
  return jax.tree.map(lambda x, r: x.astype(r.dtype), tree, reference)


def cast_tree(tree: Any, dtype: Any) -> Any:
  """Casts every leaf to ``dtype``; ``None`` keeps each leaf's dtype."""
  if dtype is None:
    return tree
  return jax.tree.map(lambda x: x.astype(dtype), tree)


def canonical_dtype(dtype: Any) -> Any:
  """``None`` or a canonical JAX dtype (so f64 requests become f32 when x64 is off)."""
  return None if dtype is None else jax.dtypes.canonicalize_dtype(dtype)


def safe_increment(count: jax.Array) -> jax.Array:
  """``count + 1`` that saturates at the dtype's maximum instead of wrapping."""
  return optax.safe_increment(count)


def leaf_count(tree: Any) -> int:
  return len(jax.tree.leaves(tree))


def _is_box(x: Any) -> bool:
  """A metadata box: a pytree node that is not a container and holds exactly one array (nnx ``Variable``,
  linen ``Partitioned``). Plain arrays also count, so ``jax.tree.map`` stops at either."""
  if x is None or isinstance(x, (list, tuple, dict)):
    return False
  return len(jax.tree.leaves(x)) == 1


def unboxed_map(fn: Any, tree: Any) -> Any:
  """``jax.tree.map(fn, tree)`` over the arrays of ``tree``, replacing metadata boxes by ``fn``'s result.

  nnx copies a parameter's metadata (its sharding annotation included) onto optimizer state built with a
  plain ``jax.tree.map`` over ``nnx.State``; state whose shape differs from the parameter (projectors,
  low-rank moments) must not inherit it. The result has the tree's containers but none of its boxes, which
  is also the structure nnx gives ``update`` (``nnx.as_pure`` gradients).
  """
  return jax.tree.map(lambda x: fn(jax.tree.leaves(x)[0]), tree, is_leaf=_is_box)
