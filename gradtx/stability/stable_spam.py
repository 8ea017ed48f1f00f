"""Stable-SPAM: adaptive spike clipping (AdaClip), gradient-norm normalization (AdaGN) and momentum reset.

Paper: Huang, Hu, Jin, Li, Zhu, Liu, Wang, Liu, Xu. "Stable-SPAM: How to Train in 4-Bit More Stably
than 16-Bit Adam", 2025. https://arxiv.org/abs/2502.17055

Reference implementation: TianjinYellow/StableSPAM@6a66da1e ``galore_torch/stablespam.py``. Per tensor,
at global step ``T`` (1-based), with the official per-parameter step ``t``:

* decoupled weight decay first: ``θ ← θ (1 − η λ)``;
* AdaClip: ``M ← γ3 M + (1−γ3) max|g|``, ``M̂ = M / (1 − γ3^t)``; where ``|g| > M̂``: ``g ← g / max|g| · M̂``;
* AdaGN: ``n = ‖g‖``, ``a ← γ1 s a + (1 − γ1 s) n``, ``b ← γ2 b + (1−γ2) n²``,
  ``g ← g / n · (a / (1 − (γ1 s)^t)) / (sqrt(b / (1 − γ2^t)) + ε)`` when ``n > 0``;
* MoRet: if ``T % ΔT == 0``: ``m, v ← 0`` and ``t ← 1``;
* Adam with ``β1' = β1 s``: ``θ ← θ − η / (1 − β1'^t) · m / (sqrt(v) / sqrt(1 − β2^t) + ε)``;

``s = s_T = η_min + (1 − η_min)(1 + cos(π T / (T_tot + 1))) / 2`` when ``T_tot`` is given, else 1 (the
official closed form has no clamp: past ``T_tot`` the cosine turns back up; gradtx follows it).

The official per-parameter step ``t`` restarts at 1 on a reset step *after* AdaClip and AdaGN have used it,
so they see ``t = 2`` on the next step: ``1/(1 − 0.999²) ≈ 500`` inflates the AdaClip threshold right after
every reset and clipping is effectively off for hundreds of steps. ``bias_correction='per_reset'``
(default) reproduces that count; ``'global'`` debiases AdaClip and AdaGN with the global step ``T``, as
pytorch-optimizer 4.1.0 does, which keeps the threshold meaningful after resets.

Where gradtx differs:
  * AdaGN's ``‖g‖`` cannot overflow below float32's largest number (:func:`gradtx.core.reduce.
    norm_without_overflow`; a plain sum of squares overflows once an entry passes ~1e19). ``‖g‖²`` still may:
    the factor ``a / sqrt(b)`` is then 0, a zero step, where the overflowed norm gave inf / inf = NaN.
  * Official reset step: ``stablespam.py`` rebinds ``state['exp_avg']`` to fresh zeros *after* taking local
    references to the old moments, so the reset step still updates and uses the old moments (with
    ``t = 1`` bias correction, which scales that step by about ``sqrt(1−β2)/(1−β1) ≈ 0.32``), and the
    zeros only take effect from the next step, whose bias correction (``t = 2``) then under-corrects one
    moment update. gradtx resets before the update of the reset step (the intent, and pytorch-optimizer's
    behaviour); the steps before the first reset are identical.
  * pytorch-optimizer 4.1.0 ``StableSPAM``: global-step debiasing (``'global'`` here); its cosine ``s_T``
    is evaluated one step ahead and clamped to ``η_min`` after ``T_tot``; it skips the whole Adam step of
    a tensor whose (clipped) gradient is exactly zero, where the official code still decays its moments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import alias, numerics, reduce, topk, tree, validation
from gradtx.stability.reset import reset_state_every

BiasCorrection = Literal["per_reset", "global"]


class ClipByAdaptiveMaxState(NamedTuple):
  """State of :func:`clip_by_adaptive_max`: step count, per-tensor EMA of ``max|g|``, fraction clipped."""

  count: jax.Array
  max_ema: optax.Updates
  clip_fraction: jax.Array


class NormalizeByNormEmaState(NamedTuple):
  """State of :func:`normalize_by_norm_ema`: step count and per-tensor EMAs of ``‖g‖`` and ``‖g‖²``."""

  count: jax.Array
  norm_ema: optax.Updates
  norm_sq_ema: optax.Updates


class ScaleByStableSpamAdamState(NamedTuple):
  """Adam state whose ``count`` can be reset, with the global step for the β1 schedule."""

  count: jax.Array
  global_count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def _unzip(updates, out, n):
  """Splits a tree of n-tuples (mapped over ``updates``) into n trees."""
  treedef = jax.tree.structure(updates)
  rows = treedef.flatten_up_to(out)
  return tuple(treedef.unflatten([row[i] for row in rows]) for i in range(n))


def _scalars_like(params):
  return jax.tree.map(lambda _: jnp.zeros([], jnp.float32), params)


def _debias_count(count: jax.Array, mode: str, reset_period: int | None) -> jax.Array:
  """The step used in the bias corrections: global, or the official per-parameter step (see module)."""
  if mode == "global" or reset_period is None:
    return count
  return jnp.where(count <= reset_period, count, count - reset_period * ((count - 1) // reset_period) + 1)


def momentum_scale(count: jax.Array, total_steps: int | None, eta_min: Any) -> jax.Array:
  """Stable-SPAM's cosine factor ``s_T`` on β1 and γ1 (1 when ``total_steps`` is None)."""
  if total_steps is None:
    return jnp.ones([], jnp.float32)
  cos = jnp.cos(jnp.pi * count.astype(jnp.float32) / (total_steps + 1))
  eta = jnp.asarray(eta_min, jnp.float32)
  return eta + (1.0 - eta) * (1.0 + cos) / 2.0


def _check_modes(bias_correction, reset_period):
  validation.check_choice("bias_correction", bias_correction, ("per_reset", "global"))
  if reset_period is not None:
    validation.check_int("reset_period", reset_period, low=1)


def clip_by_adaptive_max(
    theta: float = 0.999,
    *,
    bias_correction: BiasCorrection = "per_reset",
    reset_period: int | None = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""AdaClip: rescales coordinates above the bias-corrected EMA of each tensor's ``max|g|``.

  .. math::

    M_t = \gamma_3 M_{t-1} + (1-\gamma_3) \max_j |g_j|, \quad \hat M = \frac{M_t}{1-\gamma_3^t}, \quad
    g_j \leftarrow \frac{g_j}{\max|g|} \hat M \text{ where } |g_j| > \hat M

  Args:
    theta: γ3, decay rate of the EMA, in [0, 1) (official 0.999).
    bias_correction: ``'per_reset'`` (official: the step restarts with the momentum resets every
      ``reset_period`` steps, see :mod:`gradtx.stability.stable_spam`) or ``'global'``.
    reset_period: ΔT of the momentum resets the debiasing follows (``None``: no resets).
    axis_name: mapped axis over which each tensor is sharded; ``max|g|`` is taken over all shards.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.clip_by_adaptive_max(theta=0.5)
    >>> state = tx.init(jnp.zeros(3))
    >>> _, state = tx.update(jnp.array([1.0, -1.0, 0.5]), state)
    >>> g, state = tx.update(jnp.array([9.0, -1.0, 0.5]), state)  # M̂ = (0.25 + 4.5) / 0.75
    >>> g.round(3)
    Array([ 6.333, -1.   ,  0.5  ], dtype=float32)
  """
  validation.check_beta("theta", theta)
  _check_modes(bias_correction, reset_period)

  def init_fn(params):
    return ClipByAdaptiveMaxState(jnp.zeros([], jnp.int32), _scalars_like(params), jnp.zeros([], jnp.float32))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    with jax.named_scope("gradtx/clip_by_adaptive_max"):
      count = tree.safe_increment(state.count)
      rate = jnp.asarray(theta, jnp.float32)  # rounds like the bias correction
      debias = numerics.bias_correction(rate, _debias_count(count, bias_correction, reset_period))

      def one(g, m):
        g32 = g.astype(jnp.float32)
        mx = reduce.pmax(jnp.max(jnp.abs(g32)), axis_name) if g.size else jnp.zeros([], jnp.float32)
        m = (rate * m + (1.0 - rate) * mx).astype(jnp.float32)
        m_hat = m / debias
        spike = jnp.abs(g32) > m_hat
        clipped = jnp.where(spike, g32 / jnp.where(mx > 0, mx, 1.0) * m_hat, g32).astype(g.dtype)
        return clipped, m, reduce.psum(jnp.sum(spike, dtype=jnp.int32), axis_name)

      out = jax.tree.map(one, updates, state.max_ema)
      clipped, max_ema, spikes = _unzip(updates, out, 3)
      total = topk.size(updates, axis_name)
      n = sum(jax.tree.leaves(spikes), jnp.zeros((), jnp.int32))
      return clipped, ClipByAdaptiveMaxState(count, max_ema, n.astype(jnp.float32) / max(total, 1))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def normalize_by_norm_ema(
    gamma1: float = 0.7,
    gamma2: float = 0.9,
    eps: float = 1e-8,
    *,
    bias_correction: BiasCorrection = "per_reset",
    reset_period: int | None = None,
    total_steps: int | None = None,
    eta_min: float = 0.5,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""AdaGN: rescales each tensor to the bias-corrected ratio of EMAs of its norm and squared norm.

  .. math::

    n = \|g\|,\ a_t = \gamma_1 s\, a_{t-1} + (1-\gamma_1 s) n,\ b_t = \gamma_2 b_{t-1} + (1-\gamma_2) n^2,
    \quad g \leftarrow \frac{g}{n} \cdot \frac{a_t / (1-(\gamma_1 s)^t)}{\sqrt{b_t/(1-\gamma_2^t)} + \epsilon}

  (``g`` unchanged when ``n = 0``; ``s`` is :func:`momentum_scale`).

  Args:
    gamma1: decay rate of the norm EMA, in [0, 1) (official 0.7).
    gamma2: decay rate of the squared-norm EMA, in [0, 1) (official 0.9).
    eps: ε > 0 of the ratio (the official code uses Adam's ε).
    bias_correction: see :func:`clip_by_adaptive_max`.
    reset_period: see :func:`clip_by_adaptive_max`.
    total_steps: T_tot of the cosine factor ``s`` on γ1 (``None``: s = 1).
    eta_min: the factor's minimum, in [0, 1].
    axis_name: mapped axis over which each tensor is sharded; norms are taken over all shards.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.normalize_by_norm_ema()
    >>> state = tx.init(jnp.zeros(2))
    >>> g, state = tx.update(jnp.array([3.0, 4.0]), state)  # first step: unit ratio, ‖g‖ -> 1
    >>> [round(float(x), 4) for x in g]
    [0.6, 0.8]
  """
  validation.check_beta("gamma1", gamma1)
  validation.check_beta("gamma2", gamma2)
  # AdaGN divides the EMA of the gradient norm by the root of the EMA of its square: 0/0 for a zero gradient.
  validation.check_eps("eps", eps)
  validation.check_range("eta_min", eta_min, low=0.0, high=1.0)
  _check_modes(bias_correction, reset_period)
  if total_steps is not None:
    validation.check_int("total_steps", total_steps, low=1)

  def init_fn(params):
    return NormalizeByNormEmaState(jnp.zeros([], jnp.int32), _scalars_like(params), _scalars_like(params))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    with jax.named_scope("gradtx/normalize_by_norm_ema"):
      count = tree.safe_increment(state.count)
      g1 = jnp.asarray(gamma1, jnp.float32) * momentum_scale(count, total_steps, eta_min)
      g2 = jnp.asarray(gamma2, jnp.float32)
      t = _debias_count(count, bias_correction, reset_period)
      bc1 = numerics.bias_correction(g1, t)
      bc2 = numerics.bias_correction(g2, t)

      def one(g, a, b):
        n = reduce.norm_without_overflow(g, axis_name)  # n² may overflow (b = inf, c = 0); n itself must not
        a = (g1 * a + (1.0 - g1) * n).astype(jnp.float32)
        b = (g2 * b + (1.0 - g2) * n * n).astype(jnp.float32)
        c = (a / bc1) / (jnp.sqrt(b / bc2) + eps)
        scaled = jnp.where(n > 0, g.astype(jnp.float32) / jnp.where(n > 0, n, 1.0) * c, g.astype(jnp.float32))
        return scaled.astype(g.dtype), a, b

      out = jax.tree.map(one, updates, state.norm_ema, state.norm_sq_ema)
      scaled, a, b = _unzip(updates, out, 3)
      return scaled, NormalizeByNormEmaState(count, a, b)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _scale_by_adam_scaled_b1(b1, b2, eps, total_steps, eta_min, nu_dtype=None) -> optax.GradientTransformationExtraArgs:
  """Adam with ``β1' = β1 s_T`` (s_T from the global step) and a resettable bias-correction ``count``."""

  def init_fn(params):
    zero = jnp.zeros([], jnp.int32)
    return ScaleByStableSpamAdamState(zero, zero, tree.zeros_like(params), numerics.stats_zeros_like(params, nu_dtype))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    global_count = tree.safe_increment(state.global_count)
    beta1 = jnp.asarray(b1, jnp.float32) * momentum_scale(global_count, total_steps, eta_min)
    beta2 = jnp.asarray(b2, jnp.float32)
    mu = numerics.ema(state.mu, updates, beta1)
    nu = numerics.ema(state.nu, updates, beta2, order=2)
    count = tree.safe_increment(state.count)
    bc1 = numerics.bias_correction(beta1, count)
    sqrt_bc2 = jnp.sqrt(numerics.bias_correction(beta2, count))

    def one(g, m, v):
      denom = jnp.sqrt(v.astype(jnp.float32)) / sqrt_bc2 + eps
      return (m.astype(jnp.float32) / bc1 / denom).astype(g.dtype)

    return jax.tree.map(one, updates, mu, nu), ScaleByStableSpamAdamState(count, global_count, mu, nu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_stable_spam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    gamma1: float = 0.7,
    gamma2: float = 0.9,
    theta: float = 0.999,
    *,
    reset_period: int | None = 1000,
    total_steps: int | None = None,
    eta_min: float = 0.5,
    bias_correction: BiasCorrection = "per_reset",
    axis_name: reduce.AxisName = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Stable-SPAM's direction: AdaClip, AdaGN, then Adam whose moments reset every ``reset_period`` steps.

  ``chain(clip_by_adaptive_max(theta), normalize_by_norm_ema(gamma1, gamma2, eps),
  reset_state_every(adam, reset_period, reset_count=True))`` with ``β1`` (and ``γ1``) scaled by the cosine
  factor :func:`momentum_scale` when ``total_steps`` is given.

  Args:
    b1: Adam's first-moment rate, in [0, 1).
    b2: Adam's second-moment rate, in [0, 1).
    eps: ε > 0 of Adam and of AdaGN (official 1e-8).
    gamma1: see :func:`normalize_by_norm_ema` (official 0.7; the paper's scripts also use 0.85).
    gamma2: see :func:`normalize_by_norm_ema` (official 0.9; scripts 0.999 / 0.99999).
    theta: γ3 of :func:`clip_by_adaptive_max` (official 0.999).
    reset_period: ΔT of the momentum reset (official ``update_proj_gap`` 1000); ``None`` never resets.
    total_steps: T_tot of the cosine factor (official ``total_T``, default None).
    eta_min: minimum of the cosine factor (official 0.5).
    bias_correction: ``'per_reset'`` (official) or ``'global'`` (pytorch-optimizer); see the module.
    axis_name: mapped axis over which tensors are sharded (AdaClip's max, AdaGN's norm).
    nu_dtype: dtype of Adam's ``v``; ``None``: at least float32 (pass the params' dtype to keep it).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_stable_spam()
    >>> state = tx.init(jnp.zeros(2))
    >>> u, state = tx.update(jnp.array([3.0, -4.0]), state)
    >>> u.round(3)
    Array([ 1., -1.], dtype=float32)

  References:
    Huang et al., `Stable-SPAM: How to Train in 4-Bit More Stably than 16-Bit Adam
    <https://arxiv.org/abs/2502.17055>`_, 2025.
  """
  validation.check_beta("b1", b1)
  validation.check_beta("b2", b2)
  _check_modes(bias_correction, reset_period)
  adam = _scale_by_adam_scaled_b1(b1, b2, eps, total_steps, eta_min, nu_dtype)
  if reset_period is not None:
    adam = reset_state_every(adam, reset_period, fields=("mu", "nu"), reset_count=True)
  common = {"bias_correction": bias_correction, "reset_period": reset_period, "axis_name": axis_name}
  return optax.chain(
      clip_by_adaptive_max(theta, **common),
      normalize_by_norm_ema(gamma1, gamma2, eps, total_steps=total_steps, eta_min=eta_min, **common),
      adam,
  )


def stable_spam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    gamma1: float = 0.7,
    gamma2: float = 0.9,
    theta: float = 0.999,
    reset_period: int | None = 1000,
    total_steps: int | None = None,
    eta_min: float = 0.5,
    bias_correction: BiasCorrection = "per_reset",
    axis_name: reduce.AxisName = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The Stable-SPAM optimizer (official defaults), with decoupled weight decay applied first.

  .. math::

    \theta \leftarrow \theta - \eta_t \left(\mathrm{StableSPAM}(g_t) + \lambda \theta\right)

  Args:
    learning_rate: η, a float or an optax schedule.
    b1: see :func:`scale_by_stable_spam`.
    b2: see :func:`scale_by_stable_spam`.
    eps: see :func:`scale_by_stable_spam`.
    weight_decay: λ (decoupled, on the params before the step, as in the official code).
    mask: tree of booleans (or a function of the params) selecting the params that decay.
    gamma1: see :func:`scale_by_stable_spam`.
    gamma2: see :func:`scale_by_stable_spam`.
    theta: see :func:`scale_by_stable_spam`.
    reset_period: see :func:`scale_by_stable_spam`.
    total_steps: see :func:`scale_by_stable_spam`.
    eta_min: see :func:`scale_by_stable_spam`.
    bias_correction: see :func:`scale_by_stable_spam`.
    axis_name: see :func:`scale_by_stable_spam`.
    nu_dtype: see :func:`scale_by_stable_spam`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> f = lambda p: jnp.sum((p - 1.0) ** 2)
    >>> tx = gradtx.stable_spam(learning_rate=0.05)
    >>> params = jnp.zeros(3)
    >>> state = tx.init(params)
    >>> update = jax.jit(tx.update)
    >>> for _ in range(200):
    ...   updates, state = update(jax.grad(f)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(f(params) < 1e-2)
    True

  References:
    Huang et al., `Stable-SPAM: How to Train in 4-Bit More Stably than 16-Bit Adam
    <https://arxiv.org/abs/2502.17055>`_, 2025.
  """
  direction = scale_by_stable_spam(
      b1, b2, eps, gamma1, gamma2, theta, reset_period=reset_period, total_steps=total_steps, eta_min=eta_min,
      bias_correction=bias_correction, axis_name=axis_name, nu_dtype=nu_dtype,
  )
  return alias.decoupled(direction, learning_rate, weight_decay, mask)


registry.register(
    registry.OptimizerSpec(
        name="stable_spam",
        factory=stable_spam,
        test_kwargs={"learning_rate": 0.05, "reset_period": 100},
        family="stability",
        paper="Huang et al., Stable-SPAM: How to Train in 4-Bit More Stably than 16-Bit Adam, 2025, "
        "arXiv:2502.17055",
        reference="TianjinYellow/StableSPAM@6a66da1e galore_torch/stablespam.py; pytorch-optimizer 4.1.0 "
        "StableSPAM",
        static_args=("reset_period", "total_steps", "bias_correction", "axis_name", "mask", "nu_dtype"),
        shard_axis_arg="axis_name",
        state_per_param="2 (m, v) + 3 scalars per tensor",
        elementwise=False,
        optax_counterpart=(optax.adamw, {"learning_rate": 0.05, "weight_decay": 0.0}),
    )
)
