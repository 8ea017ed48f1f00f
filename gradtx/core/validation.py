"""Construction-time argument checks with messages that name the argument, the value and what is allowed.

Values that are JAX tracers (as under ``optax.inject_hyperparams``, which calls factories with traced
hyperparameters) and callables (schedules) cannot be checked eagerly and are let through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np


def _concrete(value: Any) -> float | None:
  """Returns ``value`` as a Python float, or None when it cannot be known at construction time."""
  if value is None or callable(value) or isinstance(value, jax.core.Tracer):
    return None
  try:
    arr = np.asarray(value)
  except Exception:  # pylint: disable=broad-except
    return None
  if arr.shape != () or not jax.numpy.issubdtype(arr.dtype, jax.numpy.number):  # bf16 is not an np.number
    return None
  return float(arr)


def check_range(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
  """Raises ``ValueError`` unless ``low <= value <= high`` (bounds optional, strictness configurable)."""
  v = _concrete(value)
  if v is None:
    return
  ok = not np.isnan(v)
  if low is not None:
    ok = ok and (v >= low if low_inclusive else v > low)
  if high is not None:
    ok = ok and (v <= high if high_inclusive else v < high)
  if not ok:
    lo = "-inf" if low is None else repr(low)
    hi = "inf" if high is None else repr(high)
    interval = f"{'[' if low_inclusive and low is not None else '('}{lo}, {hi}{']' if high_inclusive and high is not None else ')'}"
    raise ValueError(f"`{name}` must lie in {interval}, got {value!r}.")


def check_nonnegative(name: str, value: Any) -> None:
  check_range(name, value, low=0.0)


def check_positive(name: str, value: Any) -> None:
  check_range(name, value, low=0.0, low_inclusive=False)


def check_beta(name: str, value: Any) -> None:
  """A decay rate of an exponential moving average: ``0 <= value < 1``."""
  check_range(name, value, low=0.0, high=1.0, high_inclusive=False)


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
  allowed = tuple(allowed)
  if value not in allowed:
    raise ValueError(f"`{name}` must be one of {allowed!r}, got {value!r}.")


def check_int(name: str, value: Any, *, low: int | None = None) -> None:
  """Structural integers (ranks, block sizes, periods) must be Python ints known at construction."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"`{name}` must be a Python int, got {value!r} of type {type(value).__name__}.")
  if low is not None and value < low:
    raise ValueError(f"`{name}` must be an int >= {low}, got {value!r}.")


def check_callable_or_none(name: str, value: Any) -> None:
  if value is not None and not callable(value):
    raise ValueError(f"`{name}` must be a callable or None, got {value!r}.")


def check_schedule(name: str, value: Any) -> None:
  """A ``optax.ScalarOrSchedule``: a non-negative number, or a callable of the step count."""
  if callable(value):
    return
  if _concrete(value) is None and not isinstance(value, jax.core.Tracer):
    raise ValueError(f"`{name}` must be a float or an optax schedule (callable), got {value!r}.")
  check_nonnegative(name, value)


def check_bool(name: str, value: Any) -> None:
  """A flag: exactly ``True`` or ``False`` (``1`` and ``0`` are refused: flags are static, never traced)."""
  if not isinstance(value, bool):
    raise ValueError(f"`{name}` must be True or False, got {value!r}.")


__all__: list[str] = [
    "check_beta",
    "check_bool",
    "check_callable_or_none",
    "check_choice",
    "check_int",
    "check_nonnegative",
    "check_positive",
    "check_range",
    "check_schedule",
]

del Callable
