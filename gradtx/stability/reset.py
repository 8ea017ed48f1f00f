"""Periodic reset of named state fields of any optax transformation, with a cosine learning-rate warm-up.

Paper: Huang, Zhu, Jin, Liu, Wang, Liu. "SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM
Training", ICLR 2025. https://arxiv.org/abs/2501.06842

Reference implementation: TianjinYellow/SPAM-Optimizer@e8185fbe ``galore_torch/SPAM.py``. At 1-based step
``t`` with ``t % period == 0`` the moments are zeroed before the update; the per-parameter bias-correction
step is not reset (so the fresh moments are under-corrected, which the warm-up compensates). The step size
is multiplied by ``1 − D(k)``, ``D(k) = 0.99 (1 + cos(π k / (W + 1))) / 2`` for ``k < W`` and 0 otherwise,
``k = t mod period`` the steps since the last reset (0 on the reset step); there is no warm-up before the
first reset.

Where gradtx differs from peers:
  * pytorch-optimizer 4.1.0 ``SPAM`` steps its ``CosineAnnealingLR`` after overwriting ``last_epoch``,
    which evaluates the recursive form one step ahead: its multiplier is ``1 − D(k + 1)`` (0.076 instead
    of 0.01 on the reset step, for W = 5), and its default W is 50 (official 150). gradtx uses the
    official closed form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx.core import tree, validation


class ResetStateEveryState(NamedTuple):
  """State of :func:`reset_state_every`: the global step count and the inner state."""

  count: jax.Array
  inner_state: optax.OptState


def _reset_fields(state: Any, fields: frozenset[str]) -> Any:
  """Zeroes every NamedTuple field of ``state`` (at any depth) whose name is in ``fields``."""
  if hasattr(state, "_fields") and isinstance(state, tuple):
    return type(state)(
        *(
            tree.zeros_like(value) if name in fields else _reset_fields(value, fields)
            for name, value in zip(state._fields, state)
        )
    )
  if isinstance(state, (tuple, list)):
    return type(state)(_reset_fields(s, fields) for s in state)
  if isinstance(state, dict):
    return {k: _reset_fields(v, fields) for k, v in state.items()}
  return state


def _has_fields(state: Any, fields: frozenset[str]) -> bool:
  if hasattr(state, "_fields") and isinstance(state, tuple):
    return any(name in fields or _has_fields(v, fields) for name, v in zip(state._fields, state))
  if isinstance(state, (tuple, list)):
    return any(_has_fields(s, fields) for s in state)
  if isinstance(state, dict):
    return any(_has_fields(v, fields) for v in state.values())
  return False


def warmup_multiplier(count: jax.Array, period: int, warmup_steps: int) -> jax.Array:
  """SPAM's step-size multiplier at 1-based step ``count`` (float32; 1 outside the warm-ups)."""
  t = count.astype(jnp.int32)
  k = t % period
  warming = (t >= period) & (t >= 2) & (k < warmup_steps)
  decay = 0.99 * (1.0 + jnp.cos(jnp.pi * k.astype(jnp.float32) / (warmup_steps + 1))) / 2.0
  return jnp.where(warming, 1.0 - decay, 1.0).astype(jnp.float32)


def reset_state_every(
    inner: optax.GradientTransformation,
    period: int,
    *,
    warmup_steps: int = 0,
    fields: Sequence[str] = ("mu", "nu"),
    reset_count: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""Zeroes the named state fields of ``inner`` every ``period`` steps, then warms its step size back up.

  Wraps any optax transformation: every NamedTuple field of its state (at any depth) whose name is in
  ``fields`` is zeroed before the update of each step ``t`` with ``t % period == 0`` (1-based), and the
  updates are multiplied by SPAM's cosine warm-up factor during the ``warmup_steps`` steps that start at
  each reset.

  .. math::

    s_t = 1 - 0.99\,\frac{1 + \cos(\pi k / (W + 1))}{2} \text{ if } k < W \text{ else } 1,
    \qquad k = t \bmod \Delta T \ (\text{only once } t \ge \Delta T)

  Args:
    inner: the transformation whose state is reset, e.g. ``optax.scale_by_adam()``.
    period: ΔT, the reset interval in steps (int >= 1).
    warmup_steps: W, the length of the warm-up after each reset (official SPAM: 150; 0 disables it).
    fields: names of the state fields to zero (``optax.tree.get``-style names: ``'mu'``, ``'nu'``, ...).
    reset_count: also zero every ``count`` field, restarting the bias correction (Stable-SPAM's choice).
      The official SPAM keeps counting (False).

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``inner``'s state is in ``state.inner_state``.

  Raises:
    ValueError: at ``init``, when ``inner``'s state has none of ``fields``.

  Examples:
    >>> import jax.numpy as jnp, optax, gradtx
    >>> tx = gradtx.reset_state_every(optax.scale_by_adam(), period=3, warmup_steps=2)
    >>> state = tx.init(jnp.zeros(2))
    >>> for _ in range(3):
    ...   u, state = tx.update(jnp.ones(2), state)
    >>> u.round(4)  # step 3 zeroed mu and nu (count kept: 0.64) and scales the step by 1 - 0.99
    Array([0.0064, 0.0064], dtype=float32)

  References:
    Huang et al., `SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM Training
    <https://arxiv.org/abs/2501.06842>`_, 2025.
  """
  validation.check_transformation("inner", inner)
  validation.check_int("period", period, low=1)
  validation.check_int("warmup_steps", warmup_steps, low=0)
  validation.check_bool("reset_count", reset_count)
  if isinstance(fields, str) or not all(isinstance(f, str) for f in fields):
    raise ValueError(f"`fields` must be a sequence of field names, got {fields!r}.")
  names = frozenset(fields) | ({"count"} if reset_count else frozenset())
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    inner_state = inner.init(params)
    if not _has_fields(inner_state, names):
      raise ValueError(f"`fields` {sorted(names)!r} name no field of the inner state {type(inner_state).__name__}.")
    return ResetStateEveryState(count=jnp.zeros([], jnp.int32), inner_state=inner_state)

  def update_fn(updates, state, params=None, **extra_args):
    with jax.named_scope("gradtx/reset_state_every"):
      count = tree.safe_increment(state.count)
      reset = (count % period) == 0
      inner_state = jax.lax.cond(reset, lambda s: _reset_fields(s, names), lambda s: s, state.inner_state)
      updates, inner_state = inner.update(updates, inner_state, params, **extra_args)
      if warmup_steps:
        scale = warmup_multiplier(count, period, warmup_steps)
        updates = jax.tree.map(lambda u: (u * scale).astype(u.dtype), updates)
      return updates, ResetStateEveryState(count=count, inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
