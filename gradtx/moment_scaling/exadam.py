"""EXAdam: Adam with cross-moment debiasing and gradient acceleration.

Paper: Adly. "EXAdam: The Power of Adaptive Cross-Moments", 2024. https://arxiv.org/abs/2412.20302
(version 2 of the paper).

Reference implementation: AhmedMostafa16/EXAdam@989d7b6c (HEAD; ``exadam.py`` last changed in 6e3a170d,
2025-04-27), which matches arXiv v2. gradtx follows its update step for step:
``d1 = 1 + β2^t v/(v + ε)`` scales the bias-corrected first moment and the bias-corrected gradient ("gradient
acceleration"), ``d2 = 1 + β1^t m²/(m² + ε)`` scales the bias-corrected second moment, and the step is
``(m̃ + g̃)/(√ṽ + ε)``; weight decay is decoupled ``θ(1 − ηλ)`` (the official docstring says "L2 penalty"
but the code decays the params before the step, without touching the gradient).

Other versions:
  * v1 (first commit 9ff8463, arXiv v1) multiplied the learning rate by the dynamic step size
    ``ln(√2 · √(t+1))``, which grows without bound; v2 removed it. gradtx implements v2 only.
  * The HEAD code removed ``import numpy as np`` together with the dynamic step but still sets
    ``self.sqrt_2 = np.sqrt(2.0)`` in ``__init__``, so constructing the official optimizer raises
    ``NameError``; the update rule itself is unaffected.
  * ``eps`` must be > 0 here: with ``eps = 0`` (allowed by the official code) ``v/(v + ε)`` is 0/0 = NaN
    at every coordinate whose gradient has been exactly zero so far.

Numerics: updates are computed in at least float32 with float32 scalars derived from the float32 ``β``
(``1 − β^t`` as ``−expm1(t log β)``); moments are stored in ``mu_dtype`` / ``nu_dtype``.
A NaN or Inf gradient element makes that element's moments NaN from then on (as in the official code);
other elements are unaffected. Wrap the optimizer in ``optax.apply_if_finite`` to skip such steps. A finite
gradient whose square overflows (``|g| > 1.8e19`` in float32) gives ``v = inf``; the ratios
``v/(v + ε)`` and ``m²/(m² + ε)`` are then taken as their limit 1 (the official code computes inf/inf = NaN),
so the step is ``(m̃ + g̃)/inf = 0``, as ``optax.adamw``'s ``m/√v`` is.

Where peers differ: optax has no EXAdam; pytorch-optimizer 4.1.0 ``EXAdam`` matches v2 (the author removed
the dynamic step there in pytorch-optimizer PR #438) and adds ``weight_decouple`` / ``fixed_decay`` flags.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import alias, numerics, tree, validation


class ScaleByExAdamState(NamedTuple):
  """State of :func:`scale_by_exadam`: step count and Adam's ``mu`` and ``nu``."""

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def scale_by_exadam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Rescales updates by EXAdam's cross-debiased moments plus the accelerated gradient.

  Each moment's bias correction is amplified by the other moment: early in training (while
  :math:`\beta^t` is large) coordinates with a large ``v`` get a larger first-moment step, and ones with a
  large ``m²`` a larger denominator. The gradient term roughly doubles Adam's step late in training.

  .. note::
    ``g̃`` is divided by ``1 − β1^t`` like ``m̃``, so the first steps are much longer than Adam's: about
    ``(2 + 20)/√1.9 ≈ 16`` learning rates per coordinate at step 1 (β1 = 0.9), falling towards 2 as ``t``
    grows. This is the official behaviour; a warmup or a smaller learning rate than Adam's keeps it tame.

  .. math::

    m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
    d_1 &= 1 + \beta_2^t \frac{v_t}{v_t + \epsilon}, \qquad
    d_2 = 1 + \beta_1^t \frac{m_t^2}{m_t^2 + \epsilon} \\
    \tilde m_t &= \frac{m_t d_1}{1-\beta_1^t}, \quad \tilde g_t = \frac{g_t d_1}{1-\beta_1^t}, \quad
    \tilde v_t = \frac{v_t d_2}{1-\beta_2^t} \\
    u_t &= \frac{\tilde m_t + \tilde g_t}{\sqrt{\tilde v_t} + \epsilon}

  Args:
    b1: decay rate of the gradient EMA, in [0, 1).
    b2: decay rate of the squared-gradient EMA, in [0, 1).
    eps: in the debiasing ratios and the denominator, > 0.
    mu_dtype: dtype of ``m``; ``None`` keeps each param's dtype.
    nu_dtype: dtype of ``v``; ``None``: at least float32 (pass the params' dtype to keep it).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_exadam()
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.array([0.5, -1.0])}, state, params)
    >>> updates["w"].round(2)  # (1.999 + 19.99) / sqrt(1.9): 16 Adam steps at step 1
    Array([ 15.95, -15.95], dtype=float32)

  References:
    Adly, `EXAdam: The Power of Adaptive Cross-Moments <https://arxiv.org/abs/2412.20302>`_, 2024.
  """
  validation.check_beta("b1", b1)
  validation.check_beta("b2", b2)
  validation.check_eps("eps", eps)  # v / (v + ε) is 0 / 0 for ε = 0 (module docstring)
  mu_dtype = tree.canonical_dtype(mu_dtype)
  nu_dtype = tree.canonical_dtype(nu_dtype)

  def init_fn(params):
    return ScaleByExAdamState(
        count=jnp.zeros([], jnp.int32),
        mu=tree.zeros_like(params, dtype=mu_dtype),
        nu=numerics.stats_zeros_like(params, nu_dtype),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    with jax.named_scope("gradtx/exadam"):
      up = numerics.upcast
      count = tree.safe_increment(state.count)
      bc1 = numerics.bias_correction_accurate(b1, count)
      bc2 = numerics.bias_correction_accurate(b2, count)
      mu = numerics.ema_upcast(state.mu, updates, b1)
      nu = numerics.ema_upcast(state.nu, updates, b2, order=2)

      def cross(c, x):  # c x / (x + ε) for x >= 0; at an overflowed x = inf its limit c (not inf/inf)
        return jnp.where(jnp.isinf(x), c, c * x / (x + eps))

      def direction(g, m, v):
        m2 = jnp.square(m)
        d1 = 1.0 + cross(1.0 - bc2, v)
        d2 = 1.0 + cross(1.0 - bc1, m2)
        accelerated = (m + up(g)) * d1 / bc1
        return (accelerated / (jnp.sqrt(v * d2 / bc2) + eps)).astype(g.dtype)

      new_updates = jax.tree.map(direction, updates, mu, nu)
      new_state = ScaleByExAdamState(
          count=count, mu=tree.cast_like(mu, state.mu), nu=tree.cast_like(nu, state.nu)
      )
      return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def exadam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The EXAdam optimizer (official v2) with its decoupled weight decay.

  .. math::

    \theta_t = \theta_{t-1}(1 - \eta_t\lambda) - \eta_t u_t

  with :math:`u_t` the direction of :func:`scale_by_exadam`. The official README suggests
  ``learning_rate=1e-3, weight_decay=1e-4`` for vision, ``3e-4, 1e-5`` for NLP and ``5e-4, 0`` for RL.

  Args:
    learning_rate: η, a float or an optax schedule.
    b1: see :func:`scale_by_exadam`.
    b2: see :func:`scale_by_exadam`.
    eps: see :func:`scale_by_exadam`.
    weight_decay: λ, a float or an optax schedule.
    mask: tree of booleans (or a function of the params giving one) selecting the params that decay.
    mu_dtype: see :func:`scale_by_exadam`.
    nu_dtype: see :func:`scale_by_exadam`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> f = lambda p: jnp.sum((p - 3.0) ** 2)
    >>> tx = gradtx.exadam(learning_rate=0.05)
    >>> params = jnp.zeros(3)
    >>> state = tx.init(params)
    >>> for _ in range(200):
    ...   updates, state = tx.update(jax.grad(f)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(f(params) < 0.01)
    True

  References:
    Adly, `EXAdam: The Power of Adaptive Cross-Moments <https://arxiv.org/abs/2412.20302>`_, 2024.
  """
  return alias.decoupled(
      scale_by_exadam(b1, b2, eps, mu_dtype=mu_dtype, nu_dtype=nu_dtype), learning_rate, weight_decay, mask
  )


registry.register(
    registry.OptimizerSpec(
        name="exadam",
        factory=exadam,
        test_kwargs={"learning_rate": 0.1},
        family="moment_scaling",
        paper="Adly, EXAdam: The Power of Adaptive Cross-Moments, 2024, arXiv:2412.20302 (v2)",
        reference="AhmedMostafa16/EXAdam@989d7b6c exadam.py (v2 update; the HEAD constructor raises NameError)",
        static_args=("mask", "mu_dtype", "nu_dtype"),
        state_per_param="2 (m, v)",
    )
)
