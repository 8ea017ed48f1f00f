"""Linear decay with optional linear warm-up, as an optax schedule.

Paper: Defazio, Cutkosky, Mehta, Mishchenko. "When, Why and How Much? Adaptive Learning Rate Scheduling by
Refinement", 2023. https://arxiv.org/abs/2310.07831 — linear decay ``η_t = η_max (1 − t/T)`` is the
worst-case optimal schedule for the last iterate, and it matches or beats cosine decay across their suite.

gradtx builds it from ``optax.linear_schedule`` and ``optax.join_schedules``; it only fixes the shape (warm-up,
then decay to ``end_value`` at ``total_steps``) and validates the arguments.
"""

from __future__ import annotations

import optax

from gradtx.core import validation


def linear_decay(
    peak_value: float,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    init_value: float = 0.0,
    end_value: float = 0.0,
) -> optax.Schedule:
  r"""Linear warm-up from ``init_value`` to ``peak_value``, then linear decay to ``end_value``.

  .. math::

    \eta(s) = \begin{cases}
      \eta_0 + (\eta_{\max} - \eta_0)\, s / W & s < W \\
      \eta_{\max} + (\eta_{\text{end}} - \eta_{\max})\, \min\!\big(1, \tfrac{s - W}{T - W}\big) & s \ge W
    \end{cases}

  with ``W = warmup_steps`` and ``T = total_steps``; the step ``s`` counts from 0 as optax's schedules do,
  so ``η(T) = end_value`` and the value stays there afterwards. With ``warmup_steps=0`` and
  ``end_value=0`` this is the paper's ``η_max (1 − s/T)``.

  Args:
    peak_value: η_max, >= 0.
    total_steps: T, the step at which the decay reaches ``end_value``; an int >= 1.
    warmup_steps: W, an int in [0, total_steps).
    init_value: the value at step 0 when ``warmup_steps > 0``.
    end_value: the value reached at ``total_steps``.

  Returns:
    An optax schedule (a function of the step count).

  Examples:
    >>> import gradtx
    >>> schedule = gradtx.linear_decay(1.0, total_steps=10, warmup_steps=2)
    >>> [round(float(schedule(s)), 3) for s in (0, 1, 2, 6, 10, 12)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]

  References:
    Defazio et al., `When, Why and How Much? Adaptive Learning Rate Scheduling by Refinement
    <https://arxiv.org/abs/2310.07831>`_, 2023.
  """
  validation.check_nonnegative("peak_value", peak_value)
  validation.check_int("total_steps", total_steps, low=1)
  validation.check_int("warmup_steps", warmup_steps, low=0)
  if warmup_steps >= total_steps:
    raise ValueError(f"`warmup_steps` must be < total_steps={total_steps}, got {warmup_steps}.")
  validation.check_nonnegative("init_value", init_value)
  validation.check_nonnegative("end_value", end_value)
  decay = optax.linear_schedule(peak_value, end_value, transition_steps=total_steps - warmup_steps)
  if warmup_steps == 0:
    return decay
  warmup = optax.linear_schedule(init_value, peak_value, transition_steps=warmup_steps)
  return optax.join_schedules([warmup, decay], [warmup_steps])
