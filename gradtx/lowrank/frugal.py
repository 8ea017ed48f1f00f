"""FRUGAL: a state-full optimizer on a low-dimensional subspace, a state-free one on the rest of the gradient.

Paper: Zmushko, Beznosikov, Takáč, Horváth, Gorbunov. "FRUGAL: Memory-Efficient Optimization by Reducing State
Overhead for Scalable Training", ICML 2025. https://arxiv.org/abs/2411.07837

Reference: the authors' supplementary code (``frugal/{proj_optimizer_templates,galore_projector,
coordinate_projector,adamw}.py``, mirrored in hungquangbui02022003/FRUGAL@b512f87). For each projected matrix, every
``update_gap`` steps a subspace of density ρ is chosen (``svd``: top singular vectors, ``random``: a random
semi-orthogonal matrix, rank ``round(ρ d)`` on the "std" side; ``columns``: ``int(ρ d)`` random input
columns) and the state-full optimizer's statistics are reset (moments and step count). Each step:
``U = P AdamW(Pᵀ G) + c · free(G − P Pᵀ G)`` with ``free`` = sign (signSGD, default), identity (SGD) or zero,
``c`` = ``inactive_lr_scale``, both parts multiplied by ``proj_params_lr_scale``; other parameters get the
state-full optimizer at full size; decoupled decay ``θ ← θ(1 − ηλ)`` is applied first, as in gradtx's chain.
The state-full AdamW uses standard bias correction (ε on the corrected root).

gradtx differences: subspaces are drawn from the state's key (the official code uses the global torch RNG);
``block`` subspaces (whole tensors) are :func:`gradtx.lowrank.sample_layers` with ``inactive='sign'`` over
stacked layers; ``svd`` subspaces have canonical signs (:mod:`gradtx.lowrank.svd`; the update depends on
the signs only with ``reset=False``, where moments outlive a refresh).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import alias, reduce, validation
from gradtx.lowrank import engine
from gradtx.lowrank.adam import scale_by_adam_hf
from gradtx.lowrank.coordinate import CoordinateProjector
from gradtx.lowrank.project import check_common
from gradtx.lowrank.projector import Side
from gradtx.lowrank.random_projector import RandomProjector
from gradtx.lowrank.svd import SVDProjector

Subspace = Literal["svd", "random", "columns"]
StateFree = Literal["sign", "sgd", "none"]


@dataclasses.dataclass(frozen=True)
class _FrugalCombine(engine.Combine):
  state_free: str

  def __call__(self, ctx, extra, hyper):
    projected_scale, free_scale = hyper
    update = ctx.back(ctx.n)
    if self.state_free != "none":
      residual = ctx.g - ctx.back(ctx.r)
      free = jnp.sign(residual) if self.state_free == "sign" else residual
      update = update + jnp.asarray(free_scale, jnp.float32) * free
    return jnp.asarray(projected_scale, jnp.float32) * update, extra


def scale_by_frugal(
    rho: float = 0.25,
    update_every: int = 200,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    subspace: Subspace = "svd",
    state_full: optax.GradientTransformation | None = None,
    state_free: StateFree = "sign",
    state_free_scale: float = 1.0,
    projected_scale: float = 1.0,
    reset: bool = True,
    side: Side = "official",
    dimension_numbers: Any = None,
    projection_mask: Any = None,
    seed: int = 0,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""FRUGAL's direction: state-full steps in a density-ρ subspace, state-free steps on the residual.

  .. math::

    u = s_p \left( P\, \mathrm{StateFull}(P^\top G) + c\, \mathrm{free}(G - P P^\top G) \right)

  Args:
    rho: density ρ in [0, 1] of the state-full subspace (0: signSGD on every projected matrix).
    update_every: steps between subspace refreshes (official 200).
    b1: first-moment decay of the default state-full AdamW.
    b2: second-moment decay.
    eps: ε of the default state-full AdamW (official 1e-8).
    subspace: ``'svd'``, ``'random'`` (random semi-orthogonal) or ``'columns'`` (random input columns).
    state_full: the state-full transformation (default: Adam with standard bias correction); also used at
      full size for leaves that are not projected.
    state_free: ``'sign'`` (signSGD, default), ``'sgd'`` or ``'none'`` for the residual.
    state_free_scale: c, the residual's step relative to the learning rate (official ``inactive_lr_scale``;
      1.0 for pre-training, 0.1 for fine-tuning).
    projected_scale: s_p, multiplies both parts on projected matrices (official ``proj_params_lr_scale``).
    reset: reset the state-full statistics at each refresh (official ``reset_statistics=True``).
    side: see :func:`gradtx.project_low_rank` (``'columns'`` always selects input columns).
    dimension_numbers: matrix views (see :func:`gradtx.project_low_rank`).
    projection_mask: which leaves are split (official: attention and MLP kernels).
    seed: seed of the subspace draws.
    axis_name: data-parallel axis over which subspace choices agree.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> state = gradtx.scale_by_frugal(rho=0.25).init({"w": jnp.zeros((16, 8))})
    >>> state.leaves["w"].inner.mu.shape  # Adam on round(0.25 * 8) = 2 directions; the rest is signSGD
    (16, 2)

  References:
    Zmushko et al., `FRUGAL: Memory-Efficient Optimization by Reducing State Overhead for Scalable Training
    <https://arxiv.org/abs/2411.07837>`_, 2025.
  """
  validation.check_range("rho", rho, low=0.0, high=1.0)
  validation.check_choice("subspace", subspace, ("svd", "random", "columns"))
  validation.check_choice("state_free", state_free, ("sign", "sgd", "none"))
  validation.check_bool("reset", reset)
  validation.check_nonnegative("state_free_scale", state_free_scale)
  validation.check_nonnegative("projected_scale", projected_scale)
  validation.check_transformation("state_full", state_full, allow_none=True)
  check_common(update_every=update_every, side=side, on_switch="carry", seed=seed, stagger=False,
               adaptive_refresh=None)
  if not isinstance(rho, (int, float)):
    raise ValueError(f"`rho` fixes the subspace's shape and must be a Python number, got {rho!r}.")
  state_full = state_full if state_full is not None else scale_by_adam_hf(b1, b2, eps, eps_corrected=True)
  if subspace == "columns":
    projector, side, rank = CoordinateProjector(), "input", lambda d: int(d * rho)
  else:
    projector = SVDProjector() if subspace == "svd" else RandomProjector(orthogonal=True)
    rank = lambda d: round(d * rho)
  return engine.lowrank_transformation(
      state_full,
      rank=rank,
      projector=projector,
      update_every=update_every,
      side=side,
      on_switch="reset" if reset else "carry",
      dimension_numbers=dimension_numbers,
      projection_mask=projection_mask,
      full_rank=None,
      adaptive=None,
      stagger=False,
      seed=seed,
      axis_name=axis_name,
      combine=_FrugalCombine(state_free),
      hyper=(projected_scale, state_free_scale),
      name="frugal",
  )


def frugal(
    learning_rate: optax.ScalarOrSchedule,
    rho: float = 0.25,
    update_every: int = 200,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    subspace: Subspace = "svd",
    state_full: optax.GradientTransformation | None = None,
    state_free: StateFree = "sign",
    state_free_scale: float = 1.0,
    projected_scale: float = 1.0,
    reset: bool = True,
    side: Side = "official",
    dimension_numbers: Any = None,
    projection_mask: Any = None,
    seed: int = 0,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""FRUGAL: AdamW on a density-ρ subspace of each matrix, signSGD on the rest, full-rank updates.

  ``θ ← θ − η (u + λθ)`` with ``u`` from :func:`scale_by_frugal` (official 130M defaults: ρ = 0.25,
  T = 200, η = 1e-3, signSGD residual at the same learning rate).

  Args:
    learning_rate: η, a float or an optax schedule.
    rho: see :func:`scale_by_frugal`.
    update_every: see :func:`scale_by_frugal`.
    b1: see :func:`scale_by_frugal`.
    b2: see :func:`scale_by_frugal`.
    eps: see :func:`scale_by_frugal`.
    weight_decay: λ, decoupled (applied to every parameter, as the official code).
    mask: which params decay.
    subspace: see :func:`scale_by_frugal`.
    state_full: see :func:`scale_by_frugal`.
    state_free: see :func:`scale_by_frugal`.
    state_free_scale: see :func:`scale_by_frugal`.
    projected_scale: see :func:`scale_by_frugal`.
    reset: see :func:`scale_by_frugal`.
    side: see :func:`scale_by_frugal`.
    dimension_numbers: see :func:`scale_by_frugal`.
    projection_mask: see :func:`scale_by_frugal`.
    seed: see :func:`scale_by_frugal`.
    axis_name: see :func:`scale_by_frugal`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> target = jnp.arange(48.0).reshape(8, 6) / 48
    >>> f = lambda p: jnp.sum((p["w"] - target) ** 2)
    >>> tx = gradtx.frugal(learning_rate=optax.linear_schedule(0.02, 0.0, 300), rho=0.5, update_every=10)
    >>> params = {"w": jnp.zeros((8, 6))}
    >>> state = tx.init(params)
    >>> step = jax.jit(lambda p, s: tx.update(jax.grad(f)(p), s, p))
    >>> for _ in range(300):
    ...   updates, state = step(params, state)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(f(params) < 1e-2 * f({"w": jnp.zeros((8, 6))}))
    True

  References:
    Zmushko et al., `FRUGAL: Memory-Efficient Optimization by Reducing State Overhead for Scalable Training
    <https://arxiv.org/abs/2411.07837>`_, 2025.
  """
  direction = scale_by_frugal(
      rho, update_every, b1, b2, eps, subspace=subspace, state_full=state_full, state_free=state_free,
      state_free_scale=state_free_scale, projected_scale=projected_scale, reset=reset, side=side,
      dimension_numbers=dimension_numbers, projection_mask=projection_mask, seed=seed, axis_name=axis_name,
  )
  return alias.decoupled(direction, learning_rate, weight_decay, mask)


registry.register(
    registry.OptimizerSpec(
        name="frugal",
        factory=frugal,
        test_kwargs={"learning_rate": 0.05, "rho": 0.5, "update_every": 10, "subspace": "columns"},
        family="lowrank",
        data_axis_arg="axis_name",
        paper="Zmushko et al., FRUGAL: Memory-Efficient Optimization by Reducing State Overhead for Scalable Training, ICML 2025, arXiv:2411.07837",
        reference="hungquangbui02022003/FRUGAL@b512f87 frugal/proj_optimizer_templates.py (the supplementary code)",
        static_args=("rho", "update_every", "subspace", "state_full", "state_free", "reset", "side",
                     "dimension_numbers", "projection_mask", "seed", "axis_name", "mask"),
        state_per_param="2ρ·mn + projector per matrix",
        elementwise=False,
    )
)
