"""GaLore, GaLore with the SVD-free DCT projector, and Q-GaLore: AdamW in a low-rank gradient subspace.

Papers:
  * Zhao, Zhang, Chen, Wang, Anandkumar, Tian. "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank
    Projection", ICML 2024. https://arxiv.org/abs/2403.03507
  * Modoranu, Safaryan, Schultheis, Ryabinin, Alistarh. "SVD-Free Low-Rank Adaptive Gradient Optimization for
    Large Language Models", 2025. https://arxiv.org/abs/2505.17967
  * Zhang, Jaiswal, Yin, Liu, Zhao, Tian, Wang. "Q-GaLore: Quantized GaLore with INT4 Projection and
    Layer-Adaptive Low-Rank Gradients", 2024. https://arxiv.org/abs/2407.08296

Reference implementations: jiaweizzhao/GaLore@2cc66f8 ``galore_torch/adamw.py`` (HF-form AdamW in the
subspace, α = ``scale``, decoupled decay after the step); IST-DASLab/ISTA-DASLab-Optimizers@4c98e6e
``fft_low_rank/dct_adamw.py`` (standard Adam bias correction, ε = 1e-8, re-selection every step, decay
before the step); VITA-Group/Q-GaLore@dd09cd3 ``q_galore_torch/{q_galore_projector,q_galore_adamw8bit}.py``.

Weight decay follows each official code: GaLore and Q-GaLore decay the *already updated* weights,
``θ ← (θ − η_t α P N)(1 − ηλ)`` (``gradtx.core.alias.decoupled_after_step``); DCT-AdamW decays first,
``θ ← θ(1 − ηλ) − η_t P u`` (``gradtx.core.alias.decoupled``).

Deviations:
  * SVD signs (GaLore, Q-GaLore): the official code uses the signs its ``torch.linalg.svd`` returns, which
    depend on the LAPACK build (CPU) or cuSOLVER (GPU). The moments are carried across refreshes, so its
    trajectory depends on them from the first refresh after step 0; Q-GaLore's stored INT4 codes depend on
    them from step 1 and its signed cosines (adaptive gaps) from its second refresh. gradtx makes each
    singular vector's sign canonical (largest-magnitude entry positive, :mod:`gradtx.lowrank.svd`), so its
    trajectory is the same on every backend and after a restart, and equals the official one wherever the
    official SVD's signs happen to be canonical.
  * Q-GaLore's Adam is bitsandbytes' 8-bit blockwise Adam (standard ε placement, ε = 1e-8); gradtx keeps the
    moments in the parameter dtype. Its INT8 *weights* (a model-side reparametrisation) are not part of an
    optimizer. Q-GaLore staggers refreshes across leaves by default (the official code does not).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax

from gradtx import registry
from gradtx.core import alias, reduce
from gradtx.lowrank.adam import scale_by_adam_hf
from gradtx.lowrank.dct import DCTProjector
from gradtx.lowrank.project import OnSwitch, project_low_rank, quantized
from gradtx.lowrank.projector import Side
from gradtx.lowrank.refresh import AdaptiveRefresh

_STATIC = ("rank", "update_every", "side", "on_switch", "dimension_numbers", "projection_mask", "stagger", "seed",
           "axis_name", "mask")
_TEST = {"learning_rate": 0.1, "rank": 3, "update_every": 10, "scale": 1.0}


def galore(
    learning_rate: optax.ScalarOrSchedule,
    rank: int = 128,
    update_every: int = 200,
    scale: float = 0.25,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    projector: str | Any = "svd",
    side: Side = "official",
    on_switch: OnSwitch = "carry",
    dimension_numbers: Any = None,
    projection_mask: Any = None,
    stagger: bool = False,
    seed: int = 0,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""GaLore: AdamW whose moments live in the top-r singular subspace of each matrix's gradient.

  .. math::

    R_t = P_t^\top G_t, \quad N_t = \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\frac{M_t}{\sqrt{V_t}+\epsilon},
    \quad \theta_t = \left(\theta_{t-1} - \eta_t \alpha P_t N_t\right)(1 - \eta_t \lambda)

  with ``P`` the top-r singular vectors of the gradient, recomputed every ``update_every`` steps (see
  :func:`gradtx.project_low_rank`). Leaves that are not matrices get the same Adam at full size.

  Args:
    learning_rate: η, a float or an optax schedule (scripts: 0.01, 7B: 0.005).
    rank: r (scripts: 128 for 60M, 256 for 130M/350M, 512 for 1B, 1024 for 7B).
    update_every: T (official 200).
    scale: α (official scripts 0.25).
    b1: first-moment decay.
    b2: second-moment decay.
    eps: ε added to ``sqrt(V)`` (official 1e-6, HF AdamW form).
    weight_decay: λ, decoupled.
    mask: which params decay (tree of booleans or a callable).
    projector: ``'svd'`` (GaLore), ``'dct'``, ``'random'`` or a Projector.
    side: see :func:`gradtx.project_low_rank` (``'official'``: GaLore's "std" rule).
    on_switch: ``'carry'`` (official), ``'reset'`` or ``'rotate'``.
    dimension_numbers: matrix views of the leaves (see :func:`gradtx.project_low_rank`).
    projection_mask: which leaves may be projected (official scripts: attention and MLP kernels only).
    stagger: spread the leaves' refreshes over different steps.
    seed: PRNG seed (random projectors).
    axis_name: data-parallel axis over which projector choices agree.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> target = jnp.arange(48.0).reshape(8, 6) / 48
    >>> f = lambda p: jnp.sum((p["w"] - target) ** 2)
    >>> tx = gradtx.galore(learning_rate=0.05, rank=2, update_every=10, scale=1.0)
    >>> params = {"w": jnp.zeros((8, 6))}
    >>> state = tx.init(params)
    >>> step = jax.jit(lambda p, s: tx.update(jax.grad(f)(p), s, p))
    >>> for _ in range(200):
    ...   updates, state = step(params, state)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(f(params) < 1e-2 * f({"w": jnp.zeros((8, 6))}))
    True

  References:
    Zhao et al., `GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection
    <https://arxiv.org/abs/2403.03507>`_, 2024.
  """
  direction = project_low_rank(
      scale_by_adam_hf(b1, b2, eps), rank=rank, projector=projector, update_every=update_every, side=side,
      on_switch=on_switch, scale=scale, dimension_numbers=dimension_numbers, projection_mask=projection_mask,
      stagger=stagger, seed=seed, axis_name=axis_name,
  )
  return alias.decoupled_after_step(direction, learning_rate, weight_decay, mask)


def galore_dct(
    learning_rate: optax.ScalarOrSchedule,
    rank: int = 128,
    update_every: int = 1,
    scale: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    ell_norm: float = 1.0,
    side: Side = "official",
    on_switch: OnSwitch = "carry",
    dimension_numbers: Any = None,
    projection_mask: Any = None,
    stagger: bool = False,
    seed: int = 0,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""DCT-AdamW: Adam in the span of r DCT columns chosen by the gradient's energy; no SVD.

  .. math::

    S = G Q, \quad \mathrm{idx} = \operatorname{top}_r \|S_{:,k}\|_1, \quad R = G Q_{:,\mathrm{idx}}, \quad
    \theta_t = \theta_{t-1} - \eta_t\left(Q_{:,\mathrm{idx}}\, \widehat{m}_t / (\sqrt{\widehat{v}_t}+\epsilon)
    + \lambda\theta_{t-1}\right)

  with ``Q`` the orthonormal DCT-II basis of the compressed dimension (left side: ``Qᵀ G`` and row norms).
  Official defaults: re-selection every step (``update_every=1``), ε = 1e-8, standard Adam bias correction
  (``eps_corrected=True``), no α, decay before the step (which is gradtx's order).

  Args:
    learning_rate: η, a float or an optax schedule.
    rank: r.
    update_every: steps between re-selections (official 1).
    scale: multiplies the back-projected update (official: none, 1.0).
    b1: first-moment decay.
    b2: second-moment decay.
    eps: ε of standard Adam (added to the bias-corrected root).
    weight_decay: λ, decoupled.
    mask: which params decay.
    ell_norm: p of the column scores (official 1).
    side: see :func:`gradtx.project_low_rank`.
    on_switch: ``'carry'`` (official default) or ``'rotate'`` (official ``rotate_subspace=True``) or
      ``'reset'``.
    dimension_numbers: matrix views (see :func:`gradtx.project_low_rank`); the official optimizer gives full
      AdamW to matrices with a dimension >= 32000 (embeddings, lm_head): exclude them with
      ``projection_mask``.
    projection_mask: which leaves may be projected.
    stagger: spread re-selections over steps (with ``update_every > 1``).
    seed: PRNG seed (unused by the DCT projector; kept for a uniform signature).
    axis_name: data-parallel axis over which selections agree.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> tx = gradtx.galore_dct(learning_rate=0.05, rank=2)
    >>> params = {"w": jnp.zeros((8, 6))}
    >>> state = tx.init(params)
    >>> state[0].leaves["w"].projector.indices  # two DCT columns of the 6 outputs per matrix
    Array([0, 0], dtype=int32)

  References:
    Modoranu et al., `SVD-Free Low-Rank Adaptive Gradient Optimization for Large Language Models
    <https://arxiv.org/abs/2505.17967>`_, 2025.
  """
  direction = project_low_rank(
      scale_by_adam_hf(b1, b2, eps, eps_corrected=True), rank=rank, projector=DCTProjector(ell_norm=ell_norm),
      update_every=update_every, side=side, on_switch=on_switch, scale=scale, dimension_numbers=dimension_numbers,
      projection_mask=projection_mask, stagger=stagger, seed=seed, axis_name=axis_name,
  )
  return alias.decoupled(direction, learning_rate, weight_decay, mask)


def q_galore(
    learning_rate: optax.ScalarOrSchedule,
    rank: int = 128,
    update_every: int = 200,
    scale: float = 0.25,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    bits: int = 4,
    block_size: int = 256,
    adaptive_refresh: AdaptiveRefresh | None = AdaptiveRefresh(),
    side: Side = "official",
    on_switch: OnSwitch = "carry",
    dimension_numbers: Any = None,
    projection_mask: Any = None,
    stagger: bool = True,
    seed: int = 0,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Q-GaLore: GaLore with INT4 projectors and per-leaf adaptive refresh gaps.

  The SVD projector is stored block-wise quantized (``bits``, ``block_size``; packed two per byte for 4
  bits). Each leaf's gap starts at ``update_every`` and doubles whenever the mean cosine similarity of its
  last 5 successive first singular vectors reaches 0.4 (:class:`~gradtx.lowrank.AdaptiveRefresh`), so
  stable layers stop paying for SVDs. Adam as bitsandbytes' (standard ε placement, ε = 1e-8) in the
  parameter dtype.

  Args:
    learning_rate: η (scripts: 0.015 for 60M/130M, 0.004 for 7B).
    rank: r (scripts: 128 for 60M, 256 for 130M, 1024 for 7B).
    update_every: initial gap T0 (official 200).
    scale: α (official 0.25).
    b1: first-moment decay.
    b2: second-moment decay.
    eps: ε of standard Adam (added to the bias-corrected root).
    weight_decay: λ, decoupled.
    mask: which params decay.
    bits: bits per projector element (official 4).
    block_size: quantization block (official 256).
    adaptive_refresh: the adaptive-gap rule; ``None`` refreshes every ``update_every`` steps.
    side: see :func:`gradtx.project_low_rank`.
    on_switch: ``'carry'`` (official), ``'reset'`` or ``'rotate'``.
    dimension_numbers: matrix views (see :func:`gradtx.project_low_rank`).
    projection_mask: which leaves may be projected.
    stagger: spread the leaves' refreshes over different steps (default on).
    seed: PRNG seed.
    axis_name: data-parallel axis over which projector choices agree.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, jax.numpy as jnp, gradtx
    >>> tx = gradtx.q_galore(learning_rate=0.01, rank=64)
    >>> state = tx.init({"w": jnp.zeros((512, 256))})
    >>> leaf = state[0].leaves["w"]
    >>> leaf.projector.codes.shape, leaf.projector.codes.dtype  # 256 x 64 INT4 values, two per byte
    ((64, 128), dtype('uint8'))

  References:
    Zhang et al., `Q-GaLore: Quantized GaLore with INT4 Projection and Layer-Adaptive Low-Rank Gradients
    <https://arxiv.org/abs/2407.08296>`_, 2024.
  """
  direction = project_low_rank(
      scale_by_adam_hf(b1, b2, eps, eps_corrected=True), rank=rank,
      projector=quantized("svd", bits=bits, block_size=block_size),
      update_every=update_every, side=side, on_switch=on_switch, scale=scale, dimension_numbers=dimension_numbers,
      projection_mask=projection_mask, adaptive_refresh=adaptive_refresh, stagger=stagger, seed=seed,
      axis_name=axis_name,
  )
  return alias.decoupled_after_step(direction, learning_rate, weight_decay, mask)


registry.register(
    registry.OptimizerSpec(
        name="galore",
        rank_arg="rank",
        factory=galore,
        test_kwargs=_TEST,
        family="lowrank",
        data_axis_arg="axis_name",
        paper="Zhao et al., GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection, ICML 2024, arXiv:2403.03507",
        reference="jiaweizzhao/GaLore@2cc66f8 galore_torch/{galore_projector,adamw}.py; pytorch-optimizer 4.1.0 GaLore",
        static_args=_STATIC + ("projector",),
        state_per_param="r·min(m,n) + 2r·max(m,n) per matrix",
        elementwise=False,
    )
)
registry.register(
    registry.OptimizerSpec(
        name="galore_dct",
        rank_arg="rank",
        factory=galore_dct,
        test_kwargs={**_TEST, "update_every": 5},
        family="lowrank",
        data_axis_arg="axis_name",
        paper="Modoranu et al., SVD-Free Low-Rank Adaptive Gradient Optimization for LLMs, 2025, arXiv:2505.17967",
        reference="IST-DASLab/ISTA-DASLab-Optimizers@4c98e6e fft_low_rank/{dct_adamw,fft_projector}.py",
        static_args=_STATIC + ("ell_norm",),
        state_per_param="2r·max(m,n) + r int32 per matrix",
        elementwise=False,
    )
)
registry.register(
    registry.OptimizerSpec(
        name="q_galore",
        rank_arg="rank",
        factory=q_galore,
        test_kwargs={**_TEST, "update_every": 5, "block_size": 16},
        family="lowrank",
        data_axis_arg="axis_name",
        paper="Zhang et al., Q-GaLore: Quantized GaLore with INT4 Projection and Layer-Adaptive Low-Rank Gradients, 2024, arXiv:2407.08296",
        reference="VITA-Group/Q-GaLore@dd09cd3 q_galore_torch/q_galore_projector.py",
        static_args=_STATIC + ("bits", "block_size", "adaptive_refresh"),
        state_per_param="r·min(m,n)/2 bytes + 2r·max(m,n) per matrix",
        elementwise=False,
    )
)
