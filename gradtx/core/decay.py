"""Weight decay applied after the step, the order of PyTorch optimizers that decay the moved params."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx.core import numerics, validation


class DecayAfterStepState(NamedTuple):
  count: jax.Array


def _decay_after_step(learning_rate: optax.ScalarOrSchedule, weight_decay: optax.ScalarOrSchedule):
  def init_fn(params):
    del params
    return DecayAfterStepState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("decoupled_after_step needs `params` in `update` to decay them.")
    lr = numerics.schedule_value(learning_rate, state.count)
    wd = numerics.schedule_value(weight_decay, state.count)

    def one(u, p):
      moved = p.astype(jnp.float32) + u.astype(jnp.float32)
      return (u.astype(jnp.float32) - lr * wd * moved).astype(u.dtype)

    return jax.tree.map(one, updates, params), DecayAfterStepState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def decoupled_after_step(
    direction: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
  """``chain(direction, scale_by_learning_rate(η), decay of the moved params)``.

  ``θ ← (θ − η u)(1 − η λ)``: the order of PyTorch optimizers that call ``p.add_(p, alpha=-lr * wd)`` after
  the step (official SPAM). It differs from :func:`gradtx.core.alias.decoupled` (``θ − η(u + λθ)``) by the
  second-order term ``η² λ u``.
  """
  validation.check_schedule("learning_rate", learning_rate)
  validation.check_schedule("weight_decay", weight_decay)
  decay = _decay_after_step(learning_rate, weight_decay)
  if mask is not None:
    decay = optax.masked(decay, mask)
  return optax.chain(direction, optax.scale_by_learning_rate(learning_rate), decay)
