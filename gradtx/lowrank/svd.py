"""GaLore's projector: the top-r singular vectors of the current gradient, with canonical signs.

Reference: jiaweizzhao/GaLore ``galore_torch/galore_projector.py`` (``get_orthogonal_matrix``): a reduced SVD
of the gradient in float32, ``U[:, :r]`` for a left projector and ``Vh[:r, :]`` for a right one, cast back to
the gradient's dtype. gradtx stores both sides as ``(d, r)`` (the right projector transposed) and computes
the SVD in at least float32 (float64 stays float64).

Signs. A singular vector is defined only up to its sign, and the sign matters wherever a state outlives the
basis it was expressed in: GaLore carries its Adam moments across refreshes (a flipped vector turns the
carried first moment of that direction against the new gradient), Q-GaLore's min-max INT4 codes are not
sign-symmetric, and its adaptive gap compares successive top vectors with a signed cosine. The official code
takes whatever signs its ``torch.linalg.svd`` returns: its LAPACK's on CPU, cuSOLVER's or MAGMA's on GPU. Its
trajectories therefore depend on the machine, and no JAX SVD reproduces them in general (JAX's CPU, GPU and
TPU SVDs differ from each other and from PyTorch's; on one CPU, JAX's and PyTorch 2.13's signs agreed for
small random matrices but differed for 43% of the top vectors of 32x64 ones). gradtx makes the signs canonical
instead (:func:`canonical_signs`): each stored vector has its largest-magnitude entry positive, where entries
within ``SIGN_TIE_RTOL`` (1%) of the largest count as tied and the first of them (lowest index) decides. A run
thus follows the same trajectory, up to rounding, on CPU, GPU and TPU, after a checkpoint restart, and
whatever signs the SVD routine returns; it equals the official trajectory exactly when the official SVD's
signs happen to be canonical (the fidelity tests canonicalize the oracle's SVD the same way). Vectors of
repeated singular values (including the zero singular values of a rank-deficient gradient) are defined only up
to a rotation within their eigenspace; canonical signs do not fix that rotation, and no cheap rule can.
Measured with JAX 0.11.2 on an H200 against its host CPU (100 random matrices of each of six shapes from
8x6 to 512x256, leading 8 vectors of ``U``): the raw signs disagreed for 38% to 62% of the vectors, the
canonical ones for 1 of 4,400 (a 512-entry vector: an entry at the band's edge or a near-repeated singular
value, where no sign rule can help). A GaLore-style run (60 steps, refresh every 5, carried Adam moments)
ended 54% (of the largest weight) apart between GPU and CPU with raw signs, 0.1% with canonical signs.

Cost: one max, one comparison, one argmax and one gather over each stored vector and a multiply of the
``(d, r)`` basis, negligible next to the SVD; it is batched over stacked ``(L, m, n)`` leaves and traceable.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.core import numerics
from gradtx.lowrank.projector import Geometry, Projector, basis_zeros

#: Entries whose magnitude is within this fraction of a vector's largest magnitude are tied for deciding its
#: sign; the first of them wins. An exact or rounding-level tie (e.g. the ``±a`` entries of a gradient with a
#: mirror symmetry, or two entries that differ by float32 noise from another SVD routine) is thus resolved
#: by position, not by which of two nearly equal numbers came out larger on this machine. 1% is far above
#: float32 SVD noise (rounding moves a singular vector by about 6e-8 / δ, δ the relative gap between its
#: singular value and the next) and above the drift of gradients between machines along a trajectory.
SIGN_TIE_RTOL = 1e-2


class SVDState(NamedTuple):
  """The stored basis, ``batch + (d, r)`` in the parameter's dtype (or ``dtype`` given to the projector)."""

  basis: jax.Array


def canonical_signs(vectors: jax.Array, tie_rtol: float = SIGN_TIE_RTOL) -> jax.Array:
  """``vectors`` (``batch + (d, r)``, one vector per column) with each column's sign made canonical.

  The pivot of a column is its first entry whose magnitude is at least ``(1 - tie_rtol)`` times the
  column's largest magnitude; the column is negated when its pivot is negative. So the result does not
  depend on the signs of the input columns (``canonical_signs(v * s) == canonical_signs(v)`` exactly for
  any ``s`` of ±1 per column: the pivot is chosen from magnitudes only and negation is exact). An all-zero
  column is left as it is.

  Args:
    vectors: a float array ``batch + (d, r)``.
    tie_rtol: relative band within which entries count as tied for the largest magnitude.

  Returns:
    An array of the same shape and dtype.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gradtx.lowrank.svd import canonical_signs
    >>> canonical_signs(jnp.array([[0.6, -0.1], [-0.8, 0.7], [0.0, -0.7]]))  # 2nd column: a tie, first wins
    Array([[-0.6, -0.1],
           [ 0.8,  0.7],
           [-0. , -0.7]], dtype=float32)
  """
  magnitude = jnp.abs(vectors)
  top = jnp.max(magnitude, axis=-2, keepdims=True)
  pivot_index = jnp.argmax(magnitude >= (1 - tie_rtol) * top, axis=-2, keepdims=True)  # first True
  pivot = jnp.take_along_axis(vectors, pivot_index, axis=-2)
  return vectors * jnp.where(pivot < 0, -1, 1).astype(vectors.dtype)


def top_singular_vectors(g: jax.Array, geo: Geometry) -> jax.Array:
  """The top-r singular vectors of ``g`` (``rows x cols``) spanning the compressed dimension, ``(d, r)``.

  The SVD is taken of the ``(out, in)`` orientation, as the official code does on a PyTorch weight:
  input-side vectors are rows of ``Vh``, output-side vectors columns of ``U``. Their signs are made
  canonical (:func:`canonical_signs`, see the module docstring), whatever the SVD routine returned.
  """
  u, _, vh = jnp.linalg.svd(jnp.swapaxes(numerics.upcast(g), -1, -2), full_matrices=False)
  if geo.left:
    vectors = jnp.swapaxes(vh[..., : geo.rank, :], -1, -2)
  else:
    vectors = u[..., :, : geo.rank]
  return canonical_signs(vectors)


@dataclasses.dataclass(frozen=True)
class SVDProjector(Projector):
  """Top-r singular vectors of the gradient at each refresh (GaLore), with canonical signs.

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
