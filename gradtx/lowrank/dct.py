"""SVD-free projector: r columns of a fixed orthonormal DCT basis, chosen by the gradient's energy in them.

Paper: Modoranu, Safaryan, Schultheis, Ryabinin, Alistarh, "SVD-Free Low-Rank Adaptive Gradient Optimization
for Large Language Models" (v3+: "FFT-based Dynamic Subspace Selection ..."), 2025.
https://arxiv.org/abs/2505.17967

Reference implementation: IST-DASLab/ISTA-DASLab-Optimizers@4c98e6e ``utils/dct.py`` (``dct3_matrix``) and
``fft_low_rank/fft_projector.py`` (``sim_type='matmul'``). The basis is the orthonormal DCT-II matrix
``Q[i, k] = sqrt(2/d) c_i cos(pi i (2k + 1) / (2d))`` (``c_0 = 1/sqrt(2)``, else 1), used column-wise: for a
right projector the scores are ``||(G Q)[:, k]||_p``, for a left one ``||(Qᵀ G)[k, :]||_p`` (p = ``ell_norm``,
official default 1), and the top-r columns ``Q[:, idx]`` form the basis.

gradtx differences:
  * Only the r int32 indices are stored per leaf; the basis is a function of the size ``d`` alone, computed
    when it is needed (all d columns at a refresh, the r selected columns otherwise) rather than kept as one
    shared ``d x d`` matrix in the state. The cosine phase is reduced exactly in integers, so the basis is
    accurate to float32 rounding for every ``d`` up to 46340.
  * The official code reuses ``S[:, idx]`` as the projected gradient on a refresh step; gradtx multiplies by
    the selected columns again (same value up to rounding).
  * The selected indices are kept in ascending order (``torch.topk(sorted=False)`` leaves the order
    unspecified); with ``on_switch='carry'`` an index that stays selected keeps its moments in place unless
    indices below it change.
  * One basis per compressed dimension (the official optimizer builds one ``Q`` from the first 2-D parameter
    it sees and special-cases GQA shapes); every size works.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradtx.core import layout, validation
from gradtx.lowrank.projector import Projector, project

_MAX_D = 46340  # 2 d^2 must fit uint32 for the exact phase reduction


class DCTState(NamedTuple):
  """The r selected DCT columns of each matrix, ``batch + (r,)`` int32."""

  indices: jax.Array


def dct_columns(d: int, columns: jax.Array, dtype=jnp.float32) -> jax.Array:
  """Columns ``columns`` (int array, shape ``batch + (r,)``) of the orthonormal ``d x d`` DCT-II matrix, as
  ``batch + (d, r)``: entry ``[i, j]`` is ``sqrt(2/d) c_i cos(pi i (2 columns[j] + 1) / (2d))``."""
  if d > _MAX_D:
    raise ValueError(f"The DCT projector supports compressed dimensions up to {_MAX_D}, got {d}.")
  i = jnp.arange(d, dtype=jnp.uint32)[:, None]
  k = columns.astype(jnp.uint32)[..., None, :]
  phase = (i * (2 * k + 1)) % jnp.uint32(4 * d)  # exact: cos(pi * phase / (2d)) has period 4d in phase
  angle = phase.astype(jnp.float32) * jnp.float32(jnp.pi / (2 * d))
  scale = jnp.where(i == 0, jnp.sqrt(1.0 / d), jnp.sqrt(2.0 / d)).astype(jnp.float32)
  return (scale * jnp.cos(angle)).astype(dtype)


def dct_matrix(d: int, dtype=jnp.float32) -> jax.Array:
  """The orthonormal ``d x d`` DCT-II matrix ``Q`` (rows are frequencies); its columns form the basis."""
  return dct_columns(d, jnp.arange(d), dtype)


@dataclasses.dataclass(frozen=True)
class DCTProjector(Projector):
  """Top-r DCT columns by the ``ell_norm``-norm of the gradient's coefficients (official default 1)."""

  ell_norm: float = 1.0
  name: str = "dct"

  def __post_init__(self):
    # The order p of the scores' p-norm: p <= 0 is no norm (0 counts nonzeros, p < 0 favours the smallest
    # coefficients); inf is the max norm.
    validation.check_positive("ell_norm", self.ell_norm, allow_inf=True)

  def init(self, geo, dtype, like, spec):
    del dtype
    return DCTState(layout.zeros(geo.batch + (geo.rank,), jnp.int32, like, geo.basis_spec(spec)[:-1]))

  def refresh(self, g, state, geo, key):
    del state, key
    q = jnp.broadcast_to(dct_matrix(geo.d, g.dtype), geo.batch + (geo.d, geo.d))
    coeffs = project(g, q, geo.left)  # batch + (d, cols) or (rows, d)
    scores = jnp.linalg.norm(coeffs, ord=self.ell_norm, axis=-1 if geo.left else -2)
    _, idx = jax.lax.top_k(scores, geo.rank)
    return DCTState(jnp.sort(idx, axis=-1).astype(jnp.int32))

  def basis(self, state, geo, key, dtype):
    del key
    return dct_columns(geo.d, state.indices, dtype)
