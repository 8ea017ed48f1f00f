"""The shape every gradtx full optimizer takes (DESIGN.md, 'Names and composition')."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx.core import numerics, validation


def decoupled(
    direction: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
  """``chain(direction, add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))``.

  Decoupled weight decay multiplied by the learning rate: ``θ ← θ − η (u + λ θ)`` (AdamW, Lion). Updates
  keep the dtype of the incoming gradient also under ``optax.inject_hyperparams`` (see
  :func:`keep_update_dtype`).
  """
  validation.check_schedule("learning_rate", learning_rate)
  validation.check_schedule("weight_decay", weight_decay)
  return keep_update_dtype(
      optax.chain(
          direction,
          optax.add_decayed_weights(weight_decay, mask),
          optax.scale_by_learning_rate(learning_rate),
      )
  )


def coupled(
    direction: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
  """``chain(add_decayed_weights(weight_decay, mask), direction, scale_by_learning_rate(learning_rate))``.

  Coupled (L2) weight decay: ``g ← g + λθ`` enters the direction's statistics (the PyTorch ``weight_decay``
  of SGD/Adam-era code). Updates keep the incoming dtype, as in :func:`decoupled`.
  """
  validation.check_schedule("learning_rate", learning_rate)
  validation.check_schedule("weight_decay", weight_decay)
  return keep_update_dtype(
      optax.chain(
          optax.add_decayed_weights(weight_decay, mask),
          direction,
          optax.scale_by_learning_rate(learning_rate),
      )
  )


def fixed(
    direction: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
  """Decoupled decay NOT multiplied by the learning rate: ``θ ← θ − η u − λ θ`` (AdaBelief's fixed_decay)."""
  validation.check_schedule("learning_rate", learning_rate)
  validation.check_schedule("weight_decay", weight_decay)
  return keep_update_dtype(
      optax.chain(
          direction,
          optax.scale_by_learning_rate(learning_rate, flip_sign=False),
          optax.add_decayed_weights(weight_decay, mask),
          optax.scale(-1.0),
      )
  )


def keep_update_dtype(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """``inner`` with each output update cast back to the dtype of the incoming update (contract item 4).

  Under ``optax.inject_hyperparams`` numeric hyperparameters are float32 arrays, and optax blocks that
  multiply by them (``scale_by_learning_rate``, ``add_decayed_weights``, ``trace``) promote bf16/f16
  updates to float32. The state is ``inner``'s own, untouched.
  """
  inner = optax.with_extra_args_support(inner)

  def update_fn(updates, state, params=None, **extra_args):
    new_updates, state = inner.update(updates, state, params, **extra_args)
    return jax.tree.map(lambda new, old: new.astype(old.dtype), new_updates, updates), state

  return optax.GradientTransformationExtraArgs(inner.init, update_fn)


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
  return keep_update_dtype(optax.chain(direction, optax.scale_by_learning_rate(learning_rate), decay))
