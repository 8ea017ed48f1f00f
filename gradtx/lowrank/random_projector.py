"""APOLLO's projector: a seeded Gaussian, regenerated from a key at each use and never stored.

Reference: zhuhanqing/APOLLO@76b3472 ``apollo_torch/random_projector.py``: entries ``N(0, 1/r)``
(``randn / sqrt(r)``), shape ``(m, r)`` on the left or ``(r, n)`` on the right, no orthogonalisation,
regenerated at every refresh from a per-parameter seed that is advanced with ``next_seed``.

gradtx differences: the basis is a pure function of the leaf's key folded with the step of its last refresh,
so nothing but the refresh step is stored (the official class keeps the ``r·min(m, n)`` matrix in its state)
and the same key gives the same matrix on every replica. ``orthogonal=True`` orthonormalises the columns
(QR; FRUGAL's ``random`` subspace uses ``torch.nn.init.orthogonal_``).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradtx.core import validation
from gradtx.lowrank.projector import Projector


class RandomState(NamedTuple):
  """Empty: the basis is regenerated from the key and the refresh step."""


@dataclasses.dataclass(frozen=True)
class RandomProjector(Projector):
  """Gaussian ``N(0, 1/r)`` basis (APOLLO), or its orthonormalised columns with ``orthogonal=True``."""

  orthogonal: bool = False
  name: str = "random"

  def __post_init__(self):
    validation.check_bool("orthogonal", self.orthogonal)

  def init(self, geo, dtype, like, spec):
    del geo, dtype, like, spec
    return RandomState()

  def refresh(self, g, state, geo, key):
    del g, geo, key
    return state

  def basis(self, state, geo, key, dtype):
    del state
    gaussian = jax.random.normal(key, geo.basis_shape, jnp.float32)
    if self.orthogonal:
      q, r = jnp.linalg.qr(gaussian)
      basis = q * jnp.where(jnp.diagonal(r, axis1=-2, axis2=-1) < 0, -1.0, 1.0)[..., None, :]
    else:
      basis = gaussian / jnp.sqrt(jnp.float32(max(geo.rank, 1)))
    return basis.astype(dtype)
