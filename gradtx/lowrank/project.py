"""``project_low_rank``: run any optax transformation in the low-rank projected space of each matrix.

Paper: Zhao, Zhang, Chen, Wang, Anandkumar, Tian, "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank
Projection", ICML 2024. https://arxiv.org/abs/2403.03507

Reference implementation: jiaweizzhao/GaLore@2cc66f8 ``galore_torch/{galore_projector,adamw}.py``. Per
matrix: the projector is recomputed when ``step % T == 0`` (step counted before its increment: steps
0, T, 2T, ...), the gradient is projected (``R = Pᵀ G`` or ``G P`` by the "std" side rule), the optimizer
runs on ``R``, and its output is projected back and multiplied by ``scale`` (α). Moments are carried across
a subspace switch (GaLore#54: no re-projection) and the step counter continues.

Where gradtx differs from peers:
  * optax 0.2.8 ``contrib.galore`` projects the *other* side (``use_left = m >= n`` compresses the larger
    dimension; ``side='min_state'`` here), its ``init`` fails on ``jax.ShapeDtypeStruct`` leaves, it has only
    the SVD projector, no reset/rotation, and its default α is 1 (the paper's is 0.25).
  * pytorch-optimizer 4.1.0 ``GaLore`` counts steps from 1, so its SVDs fall on steps 1, T, 2T, ... (0-based
    0, T−1, 2T−1); its default ``update_proj_gap`` is 50; its ``random`` projection is unseeded.
  * gradtx runs the inner transformation once per projected leaf, each with its own state and step count
    (as PyTorch keeps state per parameter), so a refresh can reset or rotate one leaf's state: statistics
    across leaves (global-norm clipping) belong outside the wrapper. ``on_switch='rotate'`` maps the inner
    state's moments to the new basis with ``R = P_newᵀ P_old`` (FLoRA / DCT-AdamW's ``rotate_subspace``);
    fields named ``nu`` (optax's second moments) rotate with ``R∘R`` so they stay non-negative.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import optax

from gradtx.core import reduce, validation
from gradtx.lowrank import engine
from gradtx.lowrank.dct import DCTProjector
from gradtx.lowrank.projector import SIDES, Projector, Side
from gradtx.lowrank.quantized import QuantizedProjector
from gradtx.lowrank.random_projector import RandomProjector
from gradtx.lowrank.refresh import AdaptiveRefresh
from gradtx.lowrank.svd import SVDProjector

OnSwitch = Literal["carry", "reset", "rotate"]
PROJECTORS: dict[str, Callable[[], Projector]] = {"svd": SVDProjector, "dct": DCTProjector, "random": RandomProjector}


def make_projector(projector: str | Projector) -> Projector:
  """A :class:`Projector` from a name (``'svd'``, ``'dct'``, ``'random'``) or an instance."""
  if isinstance(projector, Projector):
    return projector
  if projector not in PROJECTORS:
    raise ValueError(f"`projector` must be one of {tuple(PROJECTORS)!r} or a Projector, got {projector!r}.")
  return PROJECTORS[projector]()


def quantized(projector: str | Projector = "svd", *, bits: int = 4, block_size: int = 256) -> QuantizedProjector:
  """``projector`` with its basis stored in ``bits`` bits per element (Q-GaLore: INT4, blocks of 256)."""
  return QuantizedProjector(make_projector(projector), bits=bits, block_size=block_size)


def check_common(*, update_every, side, on_switch, seed, stagger, adaptive_refresh) -> None:
  validation.check_int("update_every", update_every, low=1)
  validation.check_choice("side", side, SIDES)
  validation.check_choice("on_switch", on_switch, ("carry", "reset", "rotate"))
  validation.check_int("seed", seed)
  validation.check_bool("stagger", stagger)
  if adaptive_refresh is not None and not isinstance(adaptive_refresh, AdaptiveRefresh):
    raise ValueError(f"`adaptive_refresh` must be an AdaptiveRefresh or None, got {adaptive_refresh!r}.")


def project_low_rank(
    inner: optax.GradientTransformation,
    *,
    rank: int,
    projector: str | Projector = "svd",
    update_every: int = 200,
    side: Side = "official",
    on_switch: OnSwitch = "carry",
    scale: float = 1.0,
    dimension_numbers: Any = None,
    projection_mask: Any = None,
    full_rank: optax.GradientTransformation | None = None,
    adaptive_refresh: AdaptiveRefresh | None = None,
    stagger: bool = False,
    seed: int = 0,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Runs ``inner`` on the low-rank projection of every matrix and maps its output back (GaLore).

  For each matrix leaf ``G`` (viewed through ``dimension_numbers``) with a projector basis ``P`` of rank r:

  .. math::

    R_t = P_t^\top G_t \ (\text{or } G_t P_t), \qquad N_t = \mathrm{inner}(R_t), \qquad
    u_t = \alpha \, P_t N_t \ (\text{or } N_t P_t^\top)

  and ``P`` is recomputed from the current gradient every ``update_every`` steps (or on Q-GaLore's adaptive
  schedule). Leaves that are not matrices, or are excluded by ``projection_mask`` / ``dimension_numbers``,
  go through ``inner`` at full size (or through ``full_rank`` when given).

  Args:
    inner: any optax transformation, applied in the projected space (once per projected leaf, each with its
      own state) and, unless ``full_rank`` is given, to the leaves that are not projected.
    rank: r >= 1, clipped per leaf to ``min(rows, cols)``; each leaf's state records the rank it uses
      (``LowRankLeafState.rank``, listed by :func:`gradtx.lowrank.effective_ranks`).
    projector: ``'svd'`` (GaLore: top-r singular vectors of the gradient), ``'dct'`` (top-r columns of a
      fixed DCT basis; r int32 indices per leaf), ``'random'`` (seeded Gaussian, regenerated, never stored),
      or a :class:`~gradtx.lowrank.Projector` (e.g. ``gradtx.lowrank.quantized('svd')``: INT4 storage).
    update_every: T, steps between refreshes (official 200).
    side: which dimension is compressed: ``'official'`` (the smaller; GaLore's "std" rule),
      ``'min_state'`` (the larger, as optax's contrib GaLore), ``'input'`` or ``'output'``.
    on_switch: what happens to the inner state when the subspace changes: ``'carry'`` (official GaLore,
      APOLLO, DCT-AdamW: kept as is), ``'reset'`` (FRUGAL: re-initialised, step count included) or
      ``'rotate'`` (re-expressed in the new basis).
    scale: α, multiplies the back-projected update (GaLore's scripts: 0.25).
    dimension_numbers: ``None`` (2-D leaves are matrices ``(in, out)``), a :class:`~gradtx.MatrixDims` for
      every leaf of rank >= 2, a prefix tree of ``MatrixDims`` / ``None`` (None: not projected), or a
      callable of the params returning one. Stacked layers ``(L, m, n)``: ``MatrixDims(1, 2)`` projects each
      layer (batched); attention kernels ``(d, heads, head_dim)``: ``MatrixDims(0, (1, 2))``.
    projection_mask: booleans (prefix tree or callable) selecting the leaves that may be projected.
    full_rank: transformation for the leaves that are not projected; ``None`` uses ``inner``.
    adaptive_refresh: :class:`~gradtx.lowrank.AdaptiveRefresh` for Q-GaLore's per-leaf adaptive gap.
    stagger: offset each leaf's refresh steps so SVDs of different leaves fall on different steps.
    seed: seed of the PRNG key kept in the state (random projectors).
    axis_name: data-parallel axis (``pmap`` / ``shard_map`` with whole leaves on each replica). Refreshes
      then use the replica-mean gradient and every replica adopts replica 0's projector, so choices agree.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`~gradtx.lowrank.ProjectLowRankState`.

  State and sharding: ``state.leaves`` mirrors the params' containers (nnx ``Variable`` / linen
  ``Partitioned`` boxes removed, so projectors never inherit a kernel's sharding annotation) with a
  :class:`~gradtx.lowrank.LowRankLeafState` at each projected leaf. On an Explicit mesh, low-rank arrays
  (``R``-shaped moments) keep the parameter's sharding on its batch axes and on the kept dimension with the
  rank dimension unsharded; projectors, DCT indices and refresh vectors keep only the batch sharding; the
  SVD gathers the gradient of one leaf (replicated over its matrix dimensions) at refresh steps. On Auto
  meshes, give ``jax.jit(tx.init, out_shardings=...)`` the layout you want (``jax.eval_shape(tx.init, p)``
  gives the shapes); updates always have the gradient's sharding.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> tx = gradtx.project_low_rank(optax.adam(1e-2), rank=2, update_every=10)
    >>> params = {"w": jnp.ones((8, 6)), "b": jnp.zeros(6)}
    >>> state = tx.init(params)
    >>> state.leaves["w"].inner[0].mu.shape  # Adam's moment lives in the (8, 2) projected space
    (8, 2)
    >>> updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    >>> jax.tree.map(jnp.shape, updates)
    {'b': (6,), 'w': (8, 6)}

  References:
    Zhao et al., `GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection
    <https://arxiv.org/abs/2403.03507>`_, 2024.
  """
  validation.check_transformation("inner", inner)
  validation.check_transformation("full_rank", full_rank, allow_none=True)
  validation.check_int("rank", rank, low=1)
  check_common(update_every=update_every, side=side, on_switch=on_switch, seed=seed, stagger=stagger,
               adaptive_refresh=adaptive_refresh)
  validation.check_nonnegative("scale", scale)
  return engine.lowrank_transformation(
      inner,
      rank=rank,
      projector=make_projector(projector),
      update_every=update_every,
      side=side,
      on_switch=on_switch,
      dimension_numbers=dimension_numbers,
      projection_mask=projection_mask,
      full_rank=full_rank,
      adaptive=adaptive_refresh,
      stagger=stagger,
      seed=seed,
      axis_name=axis_name,
      combine=engine.Combine(),
      hyper=scale,
      name="project_low_rank",
  )
