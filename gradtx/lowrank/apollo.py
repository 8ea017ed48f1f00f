"""APOLLO and APOLLO-Mini: SGD-like memory, AdamW-like steps from a randomly projected auxiliary Adam.

Paper: Zhu, Zhang, Cong, Liu, Park, Chandra, Long, Pan, Wang, Lee. "APOLLO: SGD-like Memory, AdamW-level
Performance", MLSys 2025. https://arxiv.org/abs/2412.05270

Reference implementation: zhuhanqing/APOLLO@76b3472 ``apollo_torch/{apollo,random_projector}.py``. Per
matrix ``G``: ``R = Pᵀ G`` (or ``G P``) with a Gaussian ``P ~ N(0, 1/r)`` regenerated every ``T`` steps;
an auxiliary Adam on ``R`` gives ``N = M / (sqrt(V) + ε)`` (no bias correction here); the scaling factor is
the norm ratio ``s = ||N|| / (||R|| + 1e-8)`` per channel (the norms run over the rank axis, one factor per
row or column of the kept dimension) or per tensor (APOLLO-Mini); the update is the *raw full-rank*
gradient scaled, ``S = G ⊙ s``; Fira's norm-growth limiter caps ``||S||`` at 1.01 times its previous value;
``S`` is multiplied by ``sqrt(scale)`` (before the limiter with ``scale_front``, else after) and by the
Adam bias correction ``sqrt(1−β2^t)/(1−β1^t)``; decoupled decay acts on the updated weights,
``θ ← (θ − η_t S)(1 − ηλ)`` (``gradtx.core.alias.decoupled_after_step``). Non-matrix leaves get HF-form
AdamW.

Deviations:
  * The projection is regenerated from the state's key folded with the leaf index and the refresh step,
    never stored (the official class stores it and advances an integer seed with ``next_seed``), so the
    random matrices differ from PyTorch's but have the same distribution.
  * The ``'svd'`` option's singular vectors have canonical signs (:mod:`gradtx.lowrank.svd`); the official
    ones are LAPACK's.

pytorch-optimizer 4.1.0 ``APOLLO`` deviates from the official code (checked in ``optimizer/apollo.py``): it
scales the *projected* ``R`` and projects the result back with the Gaussian (a rank-r update instead of the
full-rank ``G ⊙ s``); its ``project_back`` multiplies by ``scale`` again after the code multiplied by
``sqrt(scale)`` (a total factor ``scale^1.5``); the channel axis is chosen from the low-rank matrix's shape
rather than the gradient's; decoupled decay uses the bias-corrected step size; its default ``scale_type`` is
``'tensor'``; and its random projection is drawn from the global, unseeded generator. gradtx follows the
official code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import alias, layout, reduce, validation
from gradtx.lowrank import engine
from gradtx.lowrank.adam import scale_by_adam_hf, step_factor
from gradtx.lowrank.project import check_common, make_projector
from gradtx.lowrank.projector import Side

ScaleType = Literal["channel", "tensor"]


@dataclasses.dataclass(frozen=True)
class _ApolloCombine(engine.Combine):
  scale_type: str
  scale_front: bool
  limit: bool

  def init(self, geo, like, spec):
    # The limiter's previous norm per matrix; negative until the first step.
    return layout.zeros(geo.batch, jnp.float32, like, spec[:-2]) - 1.0

  def __call__(self, ctx, phi, hyper):
    scale, b1, b2, growth = hyper
    rank_axis = -2 if ctx.geo.left else -1
    if self.scale_type == "channel":
      s = jnp.linalg.norm(ctx.n, axis=rank_axis, keepdims=True) / (
          jnp.linalg.norm(ctx.r, axis=rank_axis, keepdims=True) + 1e-8)
    else:
      s = jnp.linalg.norm(ctx.n, axis=(-2, -1), keepdims=True) / (
          jnp.linalg.norm(ctx.r, axis=(-2, -1), keepdims=True) + 1e-8)
    root = jnp.sqrt(jnp.asarray(scale, jnp.float32))
    update = ctx.g * s
    if self.scale_front:
      update = update * root
    if self.limit:
      norm = jnp.linalg.norm(update, axis=(-2, -1))
      growth = jnp.asarray(growth, jnp.float32)
      limiter = jnp.maximum(norm / (phi + 1e-8), growth) / growth
      limiter = jnp.where(phi < 0, 1.0, limiter)
      update = update / limiter[..., None, None]
      phi = (norm / limiter).astype(jnp.float32)
    if not self.scale_front:
      update = update * root
    return update * step_factor(b1, b2, ctx.count + 1), phi


def scale_by_apollo(
    rank: int = 256,
    update_every: int = 200,
    scale: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    *,
    scale_type: ScaleType = "channel",
    scale_front: bool = False,
    norm_growth_limit: float | None = 1.01,
    projector: str | Any = "random",
    side: Side = "official",
    dimension_numbers: Any = None,
    projection_mask: Any = None,
    seed: int = 0,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""APOLLO's direction: the raw gradient scaled by norm ratios from a low-rank auxiliary Adam.

  .. math::

    R = P^\top G, \quad N = \frac{M}{\sqrt{V}+\epsilon}, \quad s_j = \frac{\|N_{:,j}\|}{\|R_{:,j}\|+10^{-8}},
    \quad u = \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,\sqrt{\text{scale}}\;\mathrm{limit}(G \odot s)

  Args:
    rank: r of the auxiliary space (official APOLLO: 1/4 of the hidden size, 256 for 1B/7B; Mini: 1).
    update_every: T, steps between regenerations of the projection (official 200).
    scale: the heuristic ``scale``; the update is multiplied by ``sqrt(scale)`` (official: 1 for APOLLO, 128
      for APOLLO-Mini).
    b1: first-moment decay of the auxiliary Adam.
    b2: second-moment decay.
    eps: ε added to ``sqrt(V)``.
    scale_type: ``'channel'`` (one factor per row/column of the kept dimension; APOLLO) or ``'tensor'``
      (one per matrix; APOLLO-Mini).
    scale_front: apply ``sqrt(scale)`` before the limiter (official ``--scale_front``).
    norm_growth_limit: γ of the norm-growth limiter (1.01); ``None`` disables it (``--disable_nl``).
    projector: ``'random'`` (official), ``'svd'`` (official option) or any projector.
    side: see :func:`gradtx.project_low_rank`.
    dimension_numbers: matrix views (see :func:`gradtx.project_low_rank`).
    projection_mask: which leaves get APOLLO (official scripts: attention and MLP kernels); the others get
      AdamW.
    seed: seed of the projection key.
    axis_name: data-parallel axis; projections agree across replicas by construction (same key).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_apollo(rank=2)
    >>> state = tx.init({"w": jnp.zeros((8, 6))})
    >>> state.leaves["w"].inner.mu.shape  # Adam on the (8, 2) projection; the projection itself is not stored
    (8, 2)

  References:
    Zhu et al., `APOLLO: SGD-like Memory, AdamW-level Performance <https://arxiv.org/abs/2412.05270>`_, 2025.
  """
  validation.check_int("rank", rank, low=1)
  check_common(update_every=update_every, side=side, on_switch="carry", seed=seed, stagger=False,
               adaptive_refresh=None)
  validation.check_choice("scale_type", scale_type, ("channel", "tensor"))
  validation.check_bool("scale_front", scale_front)
  validation.check_nonnegative("scale", scale)
  if norm_growth_limit is not None:
    validation.check_range("norm_growth_limit", norm_growth_limit, low=1.0)
  return engine.lowrank_transformation(
      scale_by_adam_hf(b1, b2, eps, correct_bias=False),
      rank=rank,
      projector=make_projector(projector),
      update_every=update_every,
      side=side,
      on_switch="carry",
      dimension_numbers=dimension_numbers,
      projection_mask=projection_mask,
      full_rank=scale_by_adam_hf(b1, b2, eps),
      adaptive=None,
      stagger=False,
      seed=seed,
      axis_name=axis_name,
      combine=_ApolloCombine(scale_type, scale_front, norm_growth_limit is not None),
      hyper=(scale, b1, b2, 1.0 if norm_growth_limit is None else norm_growth_limit),
      name="apollo",
  )


def apollo(
    learning_rate: optax.ScalarOrSchedule,
    rank: int = 256,
    update_every: int = 200,
    scale: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    scale_type: ScaleType = "channel",
    scale_front: bool = False,
    norm_growth_limit: float | None = 1.01,
    projector: str | Any = "random",
    side: Side = "official",
    dimension_numbers: Any = None,
    projection_mask: Any = None,
    seed: int = 0,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""APOLLO: channel-wise scaled raw gradients, with AdamW's steps at SGD-like memory.

  ``θ ← (θ − η u)(1 − ηλ)`` with ``u`` from :func:`scale_by_apollo` (the official decay after the step). Official defaults: rank = hidden/4,
  T = 200, channel scaling, scale 1, η = 0.01, ε = 1e-6.

  Args:
    learning_rate: η, a float or an optax schedule.
    rank: see :func:`scale_by_apollo`.
    update_every: see :func:`scale_by_apollo`.
    scale: see :func:`scale_by_apollo`.
    b1: see :func:`scale_by_apollo`.
    b2: see :func:`scale_by_apollo`.
    eps: see :func:`scale_by_apollo`.
    weight_decay: λ, decoupled.
    mask: which params decay.
    scale_type: see :func:`scale_by_apollo`.
    scale_front: see :func:`scale_by_apollo`.
    norm_growth_limit: see :func:`scale_by_apollo`.
    projector: see :func:`scale_by_apollo`.
    side: see :func:`scale_by_apollo`.
    dimension_numbers: see :func:`scale_by_apollo`.
    projection_mask: see :func:`scale_by_apollo`.
    seed: see :func:`scale_by_apollo`.
    axis_name: see :func:`scale_by_apollo`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> target = jnp.arange(48.0).reshape(8, 6) / 48
    >>> f = lambda p: jnp.sum((p["w"] - target) ** 2)
    >>> tx = gradtx.apollo(learning_rate=optax.linear_schedule(0.05, 0.0, 300), rank=2, update_every=20)
    >>> params = {"w": jnp.zeros((8, 6))}
    >>> state = tx.init(params)
    >>> step = jax.jit(lambda p, s: tx.update(jax.grad(f)(p), s, p))
    >>> for _ in range(300):
    ...   updates, state = step(params, state)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(f(params) < 1e-2 * f({"w": jnp.zeros((8, 6))}))
    True

  References:
    Zhu et al., `APOLLO: SGD-like Memory, AdamW-level Performance <https://arxiv.org/abs/2412.05270>`_, 2025.
  """
  direction = scale_by_apollo(
      rank, update_every, scale, b1, b2, eps, scale_type=scale_type, scale_front=scale_front,
      norm_growth_limit=norm_growth_limit, projector=projector, side=side, dimension_numbers=dimension_numbers,
      projection_mask=projection_mask, seed=seed, axis_name=axis_name,
  )
  return alias.decoupled_after_step(direction, learning_rate, weight_decay, mask)


def apollo_mini(
    learning_rate: optax.ScalarOrSchedule,
    rank: int = 1,
    update_every: int = 200,
    scale: float = 128.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    scale_front: bool = False,
    norm_growth_limit: float | None = 1.01,
    side: Side = "official",
    dimension_numbers: Any = None,
    projection_mask: Any = None,
    seed: int = 0,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""APOLLO-Mini: tensor-wise scaling from a rank-1 auxiliary space, times ``sqrt(128)``.

  :func:`apollo` with ``rank=1``, ``scale_type='tensor'`` and ``scale=128`` (official README): per matrix one
  scalar ``||N||/||R||`` scales the raw gradient; the state is ``2·max(m, n) + 1`` numbers per matrix.

  Args:
    learning_rate: η, a float or an optax schedule.
    rank: r (official 1).
    update_every: T.
    scale: heuristic scale (official 128; the update is multiplied by its square root).
    b1: see :func:`scale_by_apollo`.
    b2: see :func:`scale_by_apollo`.
    eps: see :func:`scale_by_apollo`.
    weight_decay: λ, decoupled.
    mask: which params decay.
    scale_front: see :func:`scale_by_apollo` (official scripts set it for 60M/130M).
    norm_growth_limit: see :func:`scale_by_apollo`.
    side: see :func:`scale_by_apollo`.
    dimension_numbers: see :func:`scale_by_apollo`.
    projection_mask: see :func:`scale_by_apollo`.
    seed: see :func:`scale_by_apollo`.
    axis_name: see :func:`scale_by_apollo`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> state = gradtx.apollo_mini(learning_rate=1e-2).init({"w": jnp.zeros((4096, 1024))})
    >>> leaf = state[0].leaves["w"]  # rank-1 moments of the kept dimension, one limiter norm
    >>> leaf.inner.mu.shape, leaf.inner.nu.shape, leaf.extra.shape
    ((4096, 1), (4096, 1), ())

  References:
    Zhu et al., `APOLLO: SGD-like Memory, AdamW-level Performance <https://arxiv.org/abs/2412.05270>`_, 2025.
  """
  return apollo(
      learning_rate, rank, update_every, scale, b1, b2, eps, weight_decay, mask, scale_type="tensor",
      scale_front=scale_front, norm_growth_limit=norm_growth_limit, side=side,
      dimension_numbers=dimension_numbers, projection_mask=projection_mask, seed=seed, axis_name=axis_name,
  )


_STATIC = ("rank", "update_every", "scale_front", "norm_growth_limit", "side", "dimension_numbers",
           "projection_mask", "seed", "axis_name", "mask")

registry.register(
    registry.OptimizerSpec(
        name="apollo",
        rank_arg="rank",
        factory=apollo,
        test_kwargs={"learning_rate": 0.05, "rank": 2, "update_every": 20},
        family="lowrank",
        data_axis_arg="axis_name",
        paper="Zhu et al., APOLLO: SGD-like Memory, AdamW-level Performance, MLSys 2025, arXiv:2412.05270",
        reference="zhuhanqing/APOLLO@76b3472 apollo_torch/{apollo,random_projector}.py",
        static_args=_STATIC + ("scale_type", "projector"),
        state_per_param="2r·max(m,n) + 1 per matrix (projection regenerated)",
        elementwise=False,
    )
)
registry.register(
    registry.OptimizerSpec(
        name="apollo_mini",
        factory=apollo_mini,
        test_kwargs={"learning_rate": 0.05, "update_every": 20},
        family="lowrank",
        data_axis_arg="axis_name",
        paper="Zhu et al., APOLLO: SGD-like Memory, AdamW-level Performance, MLSys 2025, arXiv:2412.05270",
        reference="zhuhanqing/APOLLO@76b3472 apollo_torch/apollo.py (rank 1, tensor scaling, scale 128)",
        static_args=_STATIC,
        state_per_param="2·max(m,n) + 1 per matrix",
        elementwise=False,
    )
)
