"""Signum and signSGD: the sign of a momentum of gradients.

Paper: Bernstein, Wang, Azizzadenesheli, Anandkumar. "signSGD: Compressed Optimisation for Non-Convex
Problems", ICML 2018. https://arxiv.org/abs/1802.04434

Signum is Lion with ``b1 = b2 = momentum`` (the direction is the sign of the momentum itself), so gradtx
builds it from :func:`gradtx.scale_by_lion`; ``momentum=0`` gives signSGD. Weight decay is coupled (added
to the gradient before the momentum), as in the reference code of the majority-vote follow-up paper
(jiaweizzhao/signSGD-with-Majority-Vote@5bebcd0 ``main/Signum_SGD.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax

from gradtx import registry
from gradtx.core import alias, validation
from gradtx.sign_momentum.lion import scale_by_lion


def signum(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.9,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Signum (signSGD with momentum), with coupled weight decay.

  .. math::

    \tilde g_t &= g_t + \lambda \theta_{t-1} \\
    m_t &= \beta m_{t-1} + (1-\beta) \tilde g_t \\
    \theta_t &= \theta_{t-1} - \eta_t \operatorname{sign}(m_t)

  Args:
    learning_rate: η, a float or an optax schedule.
    momentum: β in [0, 1); 0 gives signSGD.
    weight_decay: λ, added to the gradient (coupled L2), a float or schedule.
    mask: tree of booleans (or a function of the params) selecting the params that decay.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> f = lambda p: jnp.sum((p - 1.0) ** 2)
    >>> tx = gradtx.signum(learning_rate=0.02)
    >>> params = jnp.zeros(4)
    >>> state = tx.init(params)
    >>> for _ in range(100):
    ...   updates, state = tx.update(jax.grad(f)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(f(params) < 0.05)
    True

  References:
    Bernstein et al., `signSGD: Compressed Optimisation for Non-Convex Problems
    <https://arxiv.org/abs/1802.04434>`_, 2018.
  """
  validation.check_beta("momentum", momentum)  # checked under the name the user wrote, before Lion sees it as b1, b2
  return alias.coupled(scale_by_lion(b1=momentum, b2=momentum), learning_rate, weight_decay, mask)


registry.register(
    registry.OptimizerSpec(
        name="signum",
        factory=signum,
        test_kwargs={"learning_rate": 0.03},
        family="sign_momentum",
        paper="Bernstein et al., signSGD: Compressed Optimisation for Non-Convex Problems, 2018, arXiv:1802.04434",
        reference="jiaweizzhao/signSGD-with-Majority-Vote@5bebcd0 main/Signum_SGD.py (momentum of g + λθ, then sign)",
        static_args=("mask",),
        state_per_param="1 (m)",
    )
)
