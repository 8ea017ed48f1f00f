"""Lion and Lion-K: the sign (or ∇K) of an interpolated momentum.

Papers:
  * Chen, Liang, Huang, Real, Wang, Pham, Dong, Luong, Hsieh, Lu, Le. "Symbolic Discovery of Optimization
    Algorithms", 2023. https://arxiv.org/abs/2302.06675
  * Chen, Liu, Liang, Liu. "Lion Secretly Solves Constrained Optimization: As Lyapunov Predicts" (Lion-K),
    ICLR 2024. https://arxiv.org/abs/2310.05898

Reference implementation: google/automl@6a54c874 ``lion/lion_optax.py`` and ``lion/lion_pytorch.py``.
gradtx follows it step for step: ``c = β1 m + (1−β1) g``, direction ``sign(c)``, momentum
``m ← β2 m + (1−β2) g``, decoupled weight decay multiplied by the learning rate, official default weight
decay 0.

Where gradtx differs from peers:
  * ``optax.lion`` defaults ``weight_decay=1e-3``; the official code (and gradtx) default to 0.
  * optax's Lion-K stops at the three fixed modes; gradtx also takes a user-given ``kappa_grad`` (∇K of any
    convex K, e.g. ``x / ||x||`` for the ℓ2 norm or ``U Vᵀ`` for the nuclear norm), applied per leaf.
  * bitsandbytes' 32-bit Lion applied coupled L2 decay inside ``sign`` until bitsandbytes#1992 / PR #1993
    (2026-07); gradtx's decay is decoupled as in the official code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import alias, numerics, tree, validation

LionMode = Literal["hard", "smooth", "refined"]


class ScaleByLionState(NamedTuple):
  """State of :func:`scale_by_lion`: step count and the momentum ``mu``."""

  count: jax.Array
  mu: optax.Updates


def _direction(mode: str, smooth_beta: Any, kappa_grad: Callable[[jax.Array], jax.Array] | None):
  if kappa_grad is not None:
    return kappa_grad
  if mode == "hard":
    return jnp.sign
  if mode == "smooth":
    return lambda c: jnp.tanh(smooth_beta * c).astype(c.dtype)
  return lambda c: jnp.clip(c, -1.0, 1.0)


def scale_by_lion(
    b1: float = 0.9,
    b2: float = 0.99,
    *,
    mode: LionMode = "hard",
    smooth_beta: float = 1.0,
    kappa_grad: Callable[[jax.Array], jax.Array] | None = None,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Rescales updates to ∇K of an interpolated momentum (Lion; Lion-K for other convex K).

  Lion keeps one momentum and returns the elementwise sign of a second, faster interpolation between it
  and the gradient; every coordinate moves by the same magnitude. Lion-K replaces ``sign`` (the gradient
  of K = ‖·‖₁) by the gradient of another convex K, which changes the constraint Lion implicitly solves.

  .. math::

    c_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
    u_t &= \nabla K(c_t) \quad (\operatorname{sign}, \ \tanh(\beta_s c_t), \ \operatorname{clip}(c_t,-1,1)
    \text{ or } \texttt{kappa\_grad}) \\
    m_t &= \beta_2 m_{t-1} + (1-\beta_2) g_t

  Args:
    b1: interpolation rate of the direction, in [0, 1).
    b2: decay rate of the momentum, in [0, 1).
    mode: ``'hard'`` (sign; Lion), ``'smooth'`` (``tanh(smooth_beta * c)``) or ``'refined'``
      (``clip(c, -1, 1)``, the Huber-type K). Ignored when ``kappa_grad`` is given.
    smooth_beta: sharpness of the ``'smooth'`` mode, > 0.
    kappa_grad: ∇K, applied to each leaf's ``c``. For a symmetric K (every norm) ∇K is odd and this is the
      paper's update; for another K pass ``lambda c: -grad_k(-c)`` (the paper's momentum is of −g).
    mu_dtype: dtype of the momentum; ``None`` keeps each param's dtype.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, optax, gradtx
    >>> tx = gradtx.scale_by_lion()
    >>> params = {"w": jnp.array([1.0, -2.0, 0.5])}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.array([0.3, -0.1, 0.0])}, state, params)
    >>> updates["w"]
    Array([ 1., -1.,  0.], dtype=float32)

  References:
    Chen et al., `Symbolic Discovery of Optimization Algorithms <https://arxiv.org/abs/2302.06675>`_, 2023.
    Chen et al., `Lion Secretly Solves Constrained Optimization <https://arxiv.org/abs/2310.05898>`_, 2024.
  """
  validation.check_beta("b1", b1)
  validation.check_beta("b2", b2)
  validation.check_choice("mode", mode, ("hard", "smooth", "refined"))
  validation.check_positive("smooth_beta", smooth_beta)
  validation.check_callable_or_none("kappa_grad", kappa_grad)
  mu_dtype = tree.canonical_dtype(mu_dtype)

  def init_fn(params):
    return ScaleByLionState(count=jnp.zeros([], jnp.int32), mu=tree.zeros_like(params, dtype=mu_dtype))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    with jax.named_scope("gradtx/lion"):
      direction = _direction(mode, smooth_beta, kappa_grad)

      def one(g, m):
        c = (b1 * m + (1.0 - b1) * g.astype(m.dtype)).astype(m.dtype)
        return direction(c).astype(g.dtype)

      new_updates = jax.tree.map(one, updates, state.mu)
      mu = numerics.ema(state.mu, updates, b2)
      return new_updates, ScaleByLionState(count=tree.safe_increment(state.count), mu=mu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def lion(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    mode: LionMode = "hard",
    smooth_beta: float = 1.0,
    kappa_grad: Callable[[jax.Array], jax.Array] | None = None,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The Lion optimizer (and Lion-K), with the official decoupled weight decay.

  .. math::

    \theta_t = \theta_{t-1} - \eta_t \left(\nabla K(\beta_1 m_{t-1} + (1-\beta_1) g_t)
    + \lambda \theta_{t-1}\right)

  with :func:`scale_by_lion` giving the first term. Use a learning rate 3–10× smaller and a weight decay
  3–10× larger than for AdamW (official README).

  Args:
    learning_rate: η, a float or an optax schedule.
    b1: interpolation rate of the direction.
    b2: decay rate of the momentum.
    weight_decay: λ (official default 0; optax's default is 1e-3).
    mask: tree of booleans (or a function of the params giving one) selecting the params that decay.
    mode: see :func:`scale_by_lion`.
    smooth_beta: see :func:`scale_by_lion`.
    kappa_grad: see :func:`scale_by_lion`.
    mu_dtype: see :func:`scale_by_lion`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> f = lambda p: jnp.sum((p - 3.0) ** 2)
    >>> tx = gradtx.lion(learning_rate=optax.cosine_decay_schedule(0.2, 100))
    >>> params = jnp.zeros(3)
    >>> state = tx.init(params)
    >>> for _ in range(100):
    ...   updates, state = tx.update(jax.grad(f)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(f(params) < 1e-3)
    True

  References:
    Chen et al., `Symbolic Discovery of Optimization Algorithms <https://arxiv.org/abs/2302.06675>`_, 2023.
  """
  return alias.decoupled(
      scale_by_lion(b1, b2, mode=mode, smooth_beta=smooth_beta, kappa_grad=kappa_grad, mu_dtype=mu_dtype),
      learning_rate,
      weight_decay,
      mask,
  )


registry.register(
    registry.OptimizerSpec(
        name="lion",
        factory=lion,
        test_kwargs={"learning_rate": 0.03},
        family="sign_momentum",
        paper="Chen et al., Symbolic Discovery of Optimization Algorithms, 2023, arXiv:2302.06675",
        reference="google/automl@6a54c874 lion/lion_optax.py; pytorch-optimizer 4.1.0 Lion",
        static_args=("mode", "kappa_grad", "mu_dtype", "mask"),
        state_per_param="1 (m)",
        optax_counterpart=(optax.lion, {"learning_rate": 0.01, "weight_decay": 0.0}),
    )
)
