"""Learning-rate scaling rules for a change of batch size.

Paper: Granziol, Zohren, Roberts. "Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach
to Neural Network Training", JMLR 2022. https://arxiv.org/abs/2006.09092

The spectral edge of the mini-batch Hessian shrinks as the batch grows, so the largest stable learning rate
grows with the batch size B: linearly for SGD (``η ∝ B``, the classic linear scaling rule, which the paper
derives under weaker conditions) and as the square root for adaptive methods such as Adam (``η ∝ √B``, new
in the paper). Both hold below a curvature-dependent batch size, beyond which the maximal learning rate
saturates; the paper gives no closed-form threshold, so gradtx applies the rule as asked and leaves the
range to the user. No other library exposes the square-root rule as an API.
"""

from __future__ import annotations

import math
from typing import Literal

import jax.numpy as jnp
import optax

from gradtx.core import validation

ScalingRule = Literal["linear", "sqrt"]


def rescale_learning_rate(
    learning_rate: optax.ScalarOrSchedule,
    old_batch_size: float,
    new_batch_size: float,
    *,
    rule: ScalingRule,
) -> optax.ScalarOrSchedule:
  r"""Rescales a learning rate (or schedule) tuned at ``old_batch_size`` for ``new_batch_size``.

  .. math::

    \eta_{\text{new}} = \eta_{\text{old}} \cdot \begin{cases}
      B_{\text{new}} / B_{\text{old}} & \texttt{rule='linear'} \ \text{(SGD, SGD with momentum)} \\
      \sqrt{B_{\text{new}} / B_{\text{old}}} & \texttt{rule='sqrt'} \ \text{(Adam, AdaGrad, other adaptive methods)}
    \end{cases}

  Args:
    learning_rate: a float or an optax schedule tuned at ``old_batch_size``.
    old_batch_size: the batch size the learning rate was tuned for, > 0.
    new_batch_size: the batch size to train with, > 0.
    rule: ``'linear'`` for SGD-like optimizers, ``'sqrt'`` for adaptive ones (Granziol et al.).

  Returns:
    A float when ``learning_rate`` is a number, otherwise a schedule: ``learning_rate`` times the factor.

  Examples:
    >>> import optax, gradtx
    >>> gradtx.rescale_learning_rate(0.1, 256, 1024, rule="linear")
    0.4
    >>> gradtx.rescale_learning_rate(1e-3, 256, 1024, rule="sqrt")
    0.002
    >>> schedule = gradtx.rescale_learning_rate(optax.linear_schedule(1e-3, 0.0, 100), 64, 256, rule="sqrt")
    >>> round(float(schedule(0)), 6)
    0.002

  References:
    Granziol et al., `Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach to Neural
    Network Training <https://arxiv.org/abs/2006.09092>`_, JMLR 2022.
  """
  validation.check_schedule("learning_rate", learning_rate)
  validation.check_positive("old_batch_size", old_batch_size)
  validation.check_positive("new_batch_size", new_batch_size)
  validation.check_choice("rule", rule, ("linear", "sqrt"))
  ratio = float(new_batch_size) / float(old_batch_size)
  factor = ratio if rule == "linear" else math.sqrt(ratio)
  if callable(learning_rate):
    return lambda count: jnp.asarray(learning_rate(count)) * factor
  return learning_rate * factor
