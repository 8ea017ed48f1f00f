"""diffGrad: Adam whose momentum is damped where the gradient barely changes between steps.

Paper: Dubey, Chakraborty, Roy, Mukherjee, Singh, Chaudhuri. "diffGrad: An Optimization Method for
Convolutional Neural Networks", IEEE TNNLS 2020. https://arxiv.org/abs/1909.11015

Reference implementation: shivram1987/diffGrad@73233ba4, ``diffGrad_v2.py`` (the fixed version the README
recommends). gradtx follows it step for step: the friction ``ξ_t = sigmoid(|g_{t−1} − g_t|)`` with
``g_0 = 0``, torch-Adam's step ``η √(1−β2^t)/(1−β1^t) · ξ m / (√v + ε)`` (``ε`` not bias-corrected), and
coupled L2 weight decay (``g + λθ`` before the moments, so the stored previous gradient includes it).

The paper-era ``diffGrad.py`` (v1) stores ``previous_grad = grad`` by reference. With PyTorch's in-place
``zero_grad`` of that time the stored tensor *is* the next gradient, so from step 2 on ``|g_{t−1} − g_t| ≡ 0``
and ``ξ ≡ 0.5``: the paper's results are effectively Adam at half the learning rate (diffGrad#2; fixed with
``.clone()`` in ``diffGrad_v2.py``). gradtx implements only the fixed v2 rule.

Numerics: updates are computed in at least float32 with float32 scalars derived from the float32 ``β``
(``1 − β^t`` as ``−expm1(t log β)``); moments are stored in ``mu_dtype`` / ``nu_dtype``.
A NaN or Inf gradient element makes that element's moments NaN from then on (as in the official code);
other elements are unaffected. Wrap the optimizer in ``optax.apply_if_finite`` to skip such steps.

Where peers differ:
  * optax has no diffGrad.
  * pytorch-optimizer 4.1.0 ``DiffGrad`` defaults to decoupled decay (``weight_decouple=True``; gradtx's
    ``weight_decouple=True`` matches it), divides by ``√(v + 1e-15) + ε`` instead of ``√v + ε``, and adds
    ``rectify`` (diffRGrad) and ``ams_bound`` options; its friction uses the previous gradient correctly.
  * torch-optimizer ``DiffGrad`` matches v2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import alias, numerics, tree, validation


class ScaleByDiffGradState(NamedTuple):
  """State of :func:`scale_by_diffgrad`: step count, Adam's ``mu`` and ``nu``, and the previous gradient."""

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  prev_grad: optax.Updates


def scale_by_diffgrad(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Rescales updates by diffGrad: Adam with the momentum damped by the change of the gradient.

  The friction ``ξ`` lies in [0.5, 1): near 0.5 where the gradient is almost the same as at the previous
  step (close to an optimum, or on a plateau) and near 1 where it changes fast.

  .. math::

    m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
    \xi_t &= \operatorname{sigmoid}(|g_{t-1} - g_t|), \qquad g_0 = 0 \\
    u_t &= \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t} \, \frac{\xi_t m_t}{\sqrt{v_t} + \epsilon}

  Args:
    b1: decay rate of the gradient EMA, in [0, 1).
    b2: decay rate of the squared-gradient EMA, in [0, 1).
    eps: added to the denominator (not bias-corrected, as in torch's Adam), > 0.
    mu_dtype: dtype of ``m``; ``None`` keeps each param's dtype.
    nu_dtype: dtype of ``v``; ``None``: at least float32 (pass the params' dtype to keep it). The previous
      gradient keeps the
      gradient's dtype.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_diffgrad()
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.array([0.0, -3.0])}, state, params)
    >>> updates["w"].round(4)  # Adam's first step (±1) times sigmoid(|g_1 - 0|)
    Array([ 0.    , -0.9526], dtype=float32)

  References:
    Dubey et al., `diffGrad: An Optimization Method for Convolutional Neural Networks
    <https://arxiv.org/abs/1909.11015>`_, 2020.
  """
  validation.check_beta("b1", b1)
  validation.check_beta("b2", b2)
  # eps = 0 divides 0 by 0 where a coordinate's gradient is 0 (m = v = 0), so eps > 0.
  validation.check_eps("eps", eps)
  mu_dtype = tree.canonical_dtype(mu_dtype)
  nu_dtype = tree.canonical_dtype(nu_dtype)

  def init_fn(params):
    return ScaleByDiffGradState(
        count=jnp.zeros([], jnp.int32),
        mu=tree.zeros_like(params, dtype=mu_dtype),
        nu=numerics.stats_zeros_like(params, nu_dtype),
        prev_grad=tree.zeros_like(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    with jax.named_scope("gradtx/diffgrad"):
      up = numerics.upcast
      count = tree.safe_increment(state.count)
      step = jnp.sqrt(numerics.bias_correction_accurate(b2, count)) / numerics.bias_correction_accurate(b1, count)
      mu = numerics.ema_upcast(state.mu, updates, b1)
      nu = numerics.ema_upcast(state.nu, updates, b2, order=2)

      def direction(g, g_prev, m, v):
        friction = jax.nn.sigmoid(jnp.abs(up(g_prev) - up(g)))
        return (step * friction * m / (jnp.sqrt(v) + eps)).astype(g.dtype)

      new_updates = jax.tree.map(direction, updates, state.prev_grad, mu, nu)
      new_state = ScaleByDiffGradState(
          count=count,
          mu=tree.cast_like(mu, state.mu),
          nu=tree.cast_like(nu, state.nu),
          prev_grad=tree.cast_like(updates, state.prev_grad),
      )
      return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def diffgrad(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    weight_decouple: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The diffGrad optimizer (fixed v2 friction) with the official coupled L2 weight decay.

  .. math::

    \theta_t = \begin{cases}
      \theta_{t-1} - \eta_t u_t(g_t + \lambda\theta_{t-1}) & \text{default (official L2)} \\
      \theta_{t-1}(1 - \eta_t\lambda) - \eta_t u_t(g_t) & \text{weight\_decouple (pytorch-optimizer's default)}
    \end{cases}

  with :math:`u_t(\cdot)` the direction of :func:`scale_by_diffgrad` (with L2, the friction and the stored
  previous gradient see ``g + λθ``).

  Args:
    learning_rate: η, a float or an optax schedule.
    b1: see :func:`scale_by_diffgrad`.
    b2: see :func:`scale_by_diffgrad`.
    eps: see :func:`scale_by_diffgrad`.
    weight_decay: λ, a float or an optax schedule.
    mask: tree of booleans (or a function of the params giving one) selecting the params that decay.
    weight_decouple: decoupled decay ``θ(1 − ηλ)`` instead of L2 added to the gradient.
    mu_dtype: see :func:`scale_by_diffgrad`.
    nu_dtype: see :func:`scale_by_diffgrad`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> f = lambda p: jnp.sum((p - 3.0) ** 2)
    >>> tx = gradtx.diffgrad(learning_rate=0.1)
    >>> params = jnp.zeros(3)
    >>> state = tx.init(params)
    >>> for _ in range(200):
    ...   updates, state = tx.update(jax.grad(f)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(f(params) < 0.01)
    True

  References:
    Dubey et al., `diffGrad: An Optimization Method for Convolutional Neural Networks
    <https://arxiv.org/abs/1909.11015>`_, 2020.
  """
  validation.check_bool("weight_decouple", weight_decouple)
  direction = scale_by_diffgrad(b1, b2, eps, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
  if weight_decouple:
    return alias.decoupled(direction, learning_rate, weight_decay, mask)
  return alias.coupled(direction, learning_rate, weight_decay, mask)


registry.register(
    registry.OptimizerSpec(
        name="diffgrad",
        factory=diffgrad,
        test_kwargs={"learning_rate": 0.2},
        family="moment_scaling",
        paper=(
            "Dubey et al., diffGrad: An Optimization Method for Convolutional Neural Networks, "
            "IEEE TNNLS 2020, arXiv:1909.11015"
        ),
        reference="shivram1987/diffGrad@73233ba4 diffGrad_v2.py",
        static_args=("weight_decouple", "mask", "mu_dtype", "nu_dtype"),
        state_per_param="3 (m, v, previous gradient)",
    )
)
