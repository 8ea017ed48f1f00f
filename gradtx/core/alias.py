"""The shape every gradtx full optimizer takes (DESIGN.md, 'Names and composition')."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax

from gradtx.core import validation


def decoupled(
    direction: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
  """``chain(direction, add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))``.

  Decoupled weight decay multiplied by the learning rate: ``θ ← θ − η (u + λ θ)`` (AdamW, Lion).
  """
  validation.check_schedule("learning_rate", learning_rate)
  validation.check_schedule("weight_decay", weight_decay)
  return optax.chain(
      direction,
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate),
  )
