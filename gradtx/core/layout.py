"""Sharding of optimizer state whose shape differs from its parameter (DESIGN.md, contract item 7).

On a mesh with **Explicit** axes, shardings are part of array types: a state leaf must be created with the
sharding that ``update`` will give it, and ``lax.cond`` branches must agree on it. On **Auto** meshes and
without a mesh, GSPMD propagates shardings by itself and these helpers do nothing. Each helper takes a
``like`` array (the parameter or gradient the state belongs to) whose mesh is reused, so they work eagerly,
under ``jit`` and on ``jax.ShapeDtypeStruct`` leaves that carry a sharding.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec


def explicit_sharding(like: Any) -> NamedSharding | None:
  """The ``NamedSharding`` of ``like`` when it lives on a mesh with Explicit axes, else ``None``."""
  if isinstance(like, jax.core.Tracer):
    sharding = jax.typeof(like).sharding
  else:
    sharding = getattr(like, "sharding", None)
  if isinstance(sharding, NamedSharding) and AxisType.Explicit in tuple(sharding.mesh.axis_types):
    return sharding
  return None


def spec_of(like: Any) -> PartitionSpec | None:
  """The ``PartitionSpec`` of ``like`` on an Explicit mesh, else ``None``."""
  sharding = explicit_sharding(like)
  return None if sharding is None else sharding.spec


def zeros(shape: tuple[int, ...], dtype: Any, like: Any, spec: tuple[Any, ...]) -> jax.Array:
  """Zeros laid out as ``PartitionSpec(*spec)`` on ``like``'s Explicit mesh (plain zeros otherwise)."""
  sharding = explicit_sharding(like)
  if sharding is None:
    return jnp.zeros(shape, dtype)
  target = NamedSharding(sharding.mesh, PartitionSpec(*spec))
  if isinstance(like, jax.core.Tracer):
    return jnp.zeros(shape, dtype, out_sharding=target)
  return jax.device_put(jnp.zeros(shape, dtype), target)


def constrain(x: jax.Array, like: Any, spec: tuple[Any, ...] | PartitionSpec | None) -> jax.Array:
  """``x`` resharded to ``spec`` on ``like``'s Explicit mesh; unchanged on Auto meshes or without a mesh."""
  sharding = explicit_sharding(like)
  if sharding is None or spec is None:
    return x
  spec = spec if isinstance(spec, PartitionSpec) else PartitionSpec(*spec)
  target = NamedSharding(sharding.mesh, spec)
  if isinstance(x, jax.core.Tracer) or isinstance(like, jax.core.Tracer):
    return jax.sharding.reshard(x, target)
  return jax.device_put(x, target)


def match(new: Any, old: Any) -> Any:
  """Each leaf of ``new`` resharded to the Explicit-mesh sharding of the matching leaf of ``old``.

  ``lax.cond`` on an Explicit mesh needs both branches to return identical types, shardings included.
  """
  return jax.tree.map(lambda n, o: constrain(n, o, spec_of(o)), new, old)
