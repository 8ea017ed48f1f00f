"""FRUGAL's coordinate subspace: a random subset of columns (or rows) of the gradient.

Reference: FRUGAL supplementary code (hungquangbui02022003/FRUGAL@b512f87) ``frugal/coordinate_projector.py``:
``randperm(d)[:int(d * density)]`` indices, redrawn at every refresh; projection is indexing, back-projection
writes into zeros. gradtx keeps the ``r`` int32 indices (sorted) and draws them from the leaf's key folded
with the refresh step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradtx.core import layout
from gradtx.lowrank.projector import Projector


class CoordinateState(NamedTuple):
  """The selected coordinates of the compressed dimension, ``batch + (r,)`` int32."""

  indices: jax.Array


@dataclasses.dataclass(frozen=True)
class CoordinateProjector(Projector):
  """A uniformly random subset of ``r`` coordinates of the compressed dimension (FRUGAL ``coord``)."""

  name: str = "coordinates"

  def init(self, geo, dtype, like, spec):
    del dtype
    return CoordinateState(layout.zeros(geo.batch + (geo.rank,), jnp.int32, like, geo.basis_spec(spec)[:-1]))

  def refresh(self, g, state, geo, key):
    del g, state
    keys = jax.random.split(key, math.prod(geo.batch))
    draw = jax.vmap(lambda k: jnp.sort(jax.random.permutation(k, geo.d)[: geo.rank]))(keys)
    return CoordinateState(draw.reshape(geo.batch + (geo.rank,)).astype(jnp.int32))

  def basis(self, state, geo, key, dtype):
    del key
    return jax.nn.one_hot(state.indices, geo.d, dtype=dtype, axis=-2)

  def project(self, g, state, geo, key):
    del key
    rows = _unshard_matrix(g if geo.left else jnp.swapaxes(g, -1, -2))  # batch + (d, kept)
    picked = _batched(lambda x, i: x[i], len(geo.batch))(rows, state.indices)
    return picked if geo.left else jnp.swapaxes(picked, -1, -2)

  def back(self, n, state, geo, key):
    del key
    rows = _unshard_matrix(n if geo.left else jnp.swapaxes(n, -1, -2))  # batch + (r, kept)
    put = lambda x, i: jnp.zeros((geo.d, x.shape[-1]), x.dtype).at[i].set(x)
    full = _batched(put, len(geo.batch))(rows, state.indices)
    return full if geo.left else jnp.swapaxes(full, -1, -2)


def _unshard_matrix(x):
  """``x`` with its two matrix axes unsharded on an Explicit mesh (indexing along a sharded axis is
  ambiguous there); batch axes keep their sharding."""
  spec = layout.spec_of(x)
  if spec is None:
    return x
  entries = tuple(spec) + (None,) * (x.ndim - len(tuple(spec)))
  return layout.constrain(x, x, entries[:-2] + (None, None))


def _batched(fn, depth):
  for _ in range(depth):
    fn = jax.vmap(fn)
  return fn
