"""GaLore's projector: the top-r singular vectors of the current gradient.

Reference: jiaweizzhao/GaLore ``galore_torch/galore_projector.py`` (``get_orthogonal_matrix``): a reduced SVD
of the gradient in float32, ``U[:, :r]`` for a left projector and ``Vh[:r, :]`` for a right one, cast back to
the gradient's dtype. gradtx stores both sides as ``(d, r)`` (the right projector transposed) and computes
the SVD in at least float32 (float64 stays float64).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.core import numerics
from gradtx.lowrank.projector import Geometry, Projector, basis_zeros


class SVDState(NamedTuple):
  """The stored basis, ``batch + (d, r)`` in the parameter's dtype (or ``dtype`` given to the projector)."""

  basis: jax.Array


def top_singular_vectors(g: jax.Array, geo: Geometry) -> jax.Array:
  """The top-r singular vectors of ``g`` (``rows x cols``) spanning the compressed dimension, ``(d, r)``.

  The SVD is taken of the ``(out, in)`` orientation, as the official code does on a PyTorch weight, so the
  signs of the vectors (which matter when moments are carried across refreshes) follow the same LAPACK
  convention: input-side vectors are rows of ``Vh``, output-side vectors columns of ``U``.
  """
  u, _, vh = jnp.linalg.svd(jnp.swapaxes(numerics.upcast(g), -1, -2), full_matrices=False)
  if geo.left:
    return jnp.swapaxes(vh[..., : geo.rank, :], -1, -2)
  return u[..., :, : geo.rank]


@dataclasses.dataclass(frozen=True)
class SVDProjector(Projector):
  """Top-r singular vectors of the gradient at each refresh (GaLore).

  Attributes:
    dtype: storage dtype of the basis; ``None`` stores it in the parameter's dtype (as the official code,
      which casts the float32 SVD back to the gradient's dtype).
  """

  dtype: Any = None
  name: str = "svd"
  stores_basis: bool = True

  def init(self, geo, dtype, like, spec):
    return SVDState(basis_zeros(geo, self.dtype or dtype, like, spec))

  def refresh(self, g, state, geo, key):
    del key
    return SVDState(top_singular_vectors(g, geo).astype(state.basis.dtype))

  def basis(self, state, geo, key, dtype):
    del geo, key
    return state.basis.astype(jnp.promote_types(dtype, state.basis.dtype))
