"""The one interface every projector meets, and the side rule that fixes which dimension is compressed.

A projector keeps, per matrix leaf, what it needs to produce an orthonormal (or, for ``random``, Gaussian)
*basis* ``B`` of shape ``batch + (d, r)`` of the compressed dimension ``d``:

* ``left`` (compress the rows): ``R = Bᵀ G`` has shape ``batch + (r, cols)``; back-projection ``B N``.
* ``right`` (compress the columns): ``R = G B`` has shape ``batch + (rows, r)``; back-projection ``N Bᵀ``.

Side rules (``side=``), for a view with rows = reduction (input) axes and cols = output axes:

* ``'official'`` (GaLore, Q-GaLore, APOLLO, FRUGAL, DCT-AdamW): compress the *smaller* dimension; on a tie,
  the input dimension. On a PyTorch ``(out, in)`` weight this is the official "std" rule ("if m >= n project
  on the right"). Projector ``r·min(m, n)``, low-rank state ``r·max(m, n)`` per moment.
* ``'min_state'`` (optax 0.2.8 ``contrib.galore``): compress the *larger* dimension. Projector
  ``r·max``, state ``r·min``: less memory, but another subspace than the paper and the official code.
* ``'input'`` / ``'output'``: always compress that dimension.

The rank is clipped per leaf to ``min(rows, cols)`` (an SVD has no more singular vectors), so a rank larger
than a small leaf allows projects that leaf losslessly instead of failing. The clipped rank is recorded in
the leaf's state (``LowRankLeafState.rank``; :func:`gradtx.lowrank.effective_ranks` lists them).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp

from gradtx.core import layout
from gradtx.core.matrix import MatrixView

Side = Literal["official", "min_state", "input", "output"]
SIDES = ("official", "min_state", "input", "output")
_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Static shapes of one projected leaf: its matrix view, the side, and the (clipped) rank."""

  view: MatrixView
  left: bool
  rank: int

  @classmethod
  def of(cls, view: MatrixView, side: str, rank: int | Callable[[int], int]) -> Geometry:
    """``rank`` is an int, or a function of the compressed dimension's size (FRUGAL's density)."""
    rows, cols = view.rows, view.cols
    left = {"official": rows <= cols, "min_state": rows > cols, "input": True, "output": False}[side]
    r = rank(rows if left else cols) if callable(rank) else rank
    return cls(view, left, max(0, min(r, rows, cols)))

  @property
  def d(self) -> int:
    """Size of the compressed dimension."""
    return self.view.rows if self.left else self.view.cols

  @property
  def batch(self) -> tuple[int, ...]:
    return self.view.batch_shape

  @property
  def lowrank_shape(self) -> tuple[int, ...]:
    v = self.view
    return self.batch + ((self.rank, v.cols) if self.left else (v.rows, self.rank))

  @property
  def basis_shape(self) -> tuple[int, ...]:
    return self.batch + (self.d, self.rank)

  def lowrank_spec(self, matrix_spec: tuple[Any, ...]) -> tuple[Any, ...]:
    """Layout of low-rank arrays: the parameter's batch and kept-dimension sharding, rank unsharded."""
    batch, (rows, cols) = matrix_spec[:-2], matrix_spec[-2:]
    return batch + ((None, cols) if self.left else (rows, None))

  def basis_spec(self, matrix_spec: tuple[Any, ...]) -> tuple[Any, ...]:
    """Layout of projectors: the parameter's batch sharding, the basis itself replicated."""
    return matrix_spec[:-2] + (None, None)


def project(g: jax.Array, basis: jax.Array, left: bool) -> jax.Array:
  """``Bᵀ G`` (left) or ``G B`` (right), batched over leading axes."""
  if left:
    return jnp.einsum("...dr,...dc->...rc", basis, g, precision=_HIGHEST)
  return jnp.einsum("...md,...dr->...mr", g, basis, precision=_HIGHEST)


def project_back(n: jax.Array, basis: jax.Array, left: bool) -> jax.Array:
  """``B N`` (left) or ``N Bᵀ`` (right): the inverse map of :func:`project` on the subspace."""
  if left:
    return jnp.einsum("...dr,...rc->...dc", basis, n, precision=_HIGHEST)
  return jnp.einsum("...mr,...dr->...md", n, basis, precision=_HIGHEST)


class Projector(abc.ABC):
  """Base class of projectors: a frozen, hashable configuration with four methods.

  Subclasses define ``init`` (zero state from shapes), ``refresh`` (new state from the current gradient
  matrix), and ``basis`` (materialise ``B``); ``project`` / ``back`` default to matrix products with it.
  ``key`` is the leaf's PRNG key folded with the step of its last refresh (used by random projectors).
  ``stores_basis`` says whether the state is the basis itself (what :class:`QuantizedProjector` can store
  in fewer bits).
  """

  name: str = "projector"
  stores_basis: bool = False

  @abc.abstractmethod
  def init(self, geo: Geometry, dtype: Any, like: Any, spec: tuple[Any, ...]) -> Any:
    """Zero state of one leaf, from shapes only (``like`` carries an Explicit mesh's sharding, if any)."""

  @abc.abstractmethod
  def refresh(self, g: jax.Array, state: Any, geo: Geometry, key: jax.Array) -> Any:
    """New state from the current gradient matrix ``g``."""

  @abc.abstractmethod
  def basis(self, state: Any, geo: Geometry, key: jax.Array, dtype: Any) -> jax.Array:
    """The basis ``B`` that ``state`` stands for, in ``dtype``."""

  def refresh_with_basis(self, g: jax.Array, state: Any, geo: Geometry, key: jax.Array) -> tuple[Any, jax.Array]:
    """The refreshed state and its basis in float32 (before any lossy storage)."""
    new = self.refresh(g, state, geo, key)
    return new, self.basis(new, geo, key, jnp.float32)

  def project(self, g: jax.Array, state: Any, geo: Geometry, key: jax.Array) -> jax.Array:
    return project(g, self.basis(state, geo, key, g.dtype), geo.left)

  def back(self, n: jax.Array, state: Any, geo: Geometry, key: jax.Array) -> jax.Array:
    return project_back(n, self.basis(state, geo, key, n.dtype), geo.left)


def basis_zeros(geo: Geometry, dtype: Any, like: Any, spec: tuple[Any, ...]) -> jax.Array:
  """An all-zero basis with the projector layout (used before the first refresh)."""
  return layout.zeros(geo.basis_shape, dtype, like, geo.basis_spec(spec))
