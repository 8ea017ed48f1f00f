"""Construction-time argument checks with messages that name the argument, the value and what is allowed.

One rule for every numeric hyperparameter: it is a real number (a Python ``int``/``float``, a NumPy scalar
or a 0-d array), finite unless the argument gives ``inf`` a meaning, and inside its documented range.
Refused with a ``ValueError`` at construction, before anything is traced:

- strings (``eps='1e-8'`` read from a YAML file without ``float()``), which otherwise either run (string
  arithmetic is never reached) or fail late inside a trace with ``unsupported operand type(s)``;
- booleans (``True`` is an int to Python, never a meaningful rate or size);
- tuples and lists (PyTorch's ``betas=(0.9, 0.999)`` is two arguments here, ``b1`` and ``b2``), arrays of
  more than one element, ``None`` where no default behaviour exists, complex numbers;
- NaN always, and ``±inf`` unless the check says ``allow_inf`` (a p-norm order, where ``inf`` is the max
  norm).

Values that cannot be known at construction are let through: JAX tracers (``optax.inject_hyperparams``
calls factories with traced hyperparameters, and so does a factory called inside ``jax.jit``),
``jax.ShapeDtypeStruct`` scalars (``jax.eval_shape``) and, where the argument is an
``optax.ScalarOrSchedule``, callables (schedules are checked by optax when called).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _deferred(value: Any) -> bool:
  """True for values whose number is only known later: tracers and abstract scalars."""
  return isinstance(value, (jax.core.Tracer, jax.ShapeDtypeStruct))


def _interval(low, high, low_inclusive, high_inclusive, allow_inf) -> str:
  lo = "-inf" if low is None else repr(low)
  hi = "inf" if high is None else repr(high)
  left = "[" if (low is not None and low_inclusive) or (low is None and allow_inf) else "("
  right = "]" if (high is not None and high_inclusive) or (high is None and allow_inf) else ")"
  return f"{left}{lo}, {hi}{right}"


def _type_hint(value: Any) -> str:
  if isinstance(value, (str, bytes)):
    return " (a string, e.g. read from a config file: convert it with float() or int())"
  if isinstance(value, (tuple, list)):
    return " (one number per argument: PyTorch's betas=(b1, b2) are b1=..., b2=... here)"
  return ""


def _real(name: str, value: Any, allowed: str, *, schedule: bool = False) -> float | None:
  """``value`` as a Python float; None when it is deferred; a ``ValueError`` when it is no real number."""
  if _deferred(value) or (schedule and callable(value)):
    return None
  arr = None
  if not isinstance(value, (str, bytes, bool, np.bool_, tuple, list, dict, set)) and value is not None:
    try:
      arr = np.asarray(value)
    except Exception:  # pylint: disable=broad-except
      arr = None
  # bf16 is not an np.number, hence jnp.issubdtype; bool and complex arrays are no real numbers either.
  if (
      arr is None
      or arr.shape != ()
      or not jnp.issubdtype(arr.dtype, jnp.number)
      or jnp.issubdtype(arr.dtype, jnp.complexfloating)
  ):
    what = "a real number or an optax schedule (callable)" if schedule else "a real number"
    raise ValueError(
        f"`{name}` must be {what} in {allowed}, got {value!r} of type {type(value).__name__}{_type_hint(value)}."
    )
  return float(arr)


def check_range(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    allow_inf: bool = False,
    schedule: bool = False,
) -> None:
  """Raises ``ValueError`` unless ``value`` is a real number with ``low <= value <= high``.

  Args:
    name: the argument's name as the user wrote it (the message backquotes it).
    value: the value given.
    low, high: optional bounds; ``low_inclusive`` / ``high_inclusive`` make them strict or not.
    allow_inf: let ``inf`` / ``-inf`` through when they lie in the range (where the argument gives them a
      meaning); NaN is refused always.
    schedule: the argument is an ``optax.ScalarOrSchedule``: callables are let through.
  """
  allowed = _interval(low, high, low_inclusive, high_inclusive, allow_inf)
  v = _real(name, value, allowed, schedule=schedule)
  if v is None:
    return
  ok = not math.isnan(v) and (allow_inf or math.isfinite(v))
  if low is not None:
    ok = ok and (v >= low if low_inclusive else v > low)
  if high is not None:
    ok = ok and (v <= high if high_inclusive else v < high)
  if not ok:
    raise ValueError(f"`{name}` must lie in {allowed}, got {value!r}.")


def check_nonnegative(name: str, value: Any, *, allow_inf: bool = False) -> None:
  check_range(name, value, low=0.0, allow_inf=allow_inf)


def check_positive(name: str, value: Any, *, allow_inf: bool = False) -> None:
  check_range(name, value, low=0.0, low_inclusive=False, allow_inf=allow_inf)


def check_beta(name: str, value: Any) -> None:
  """A decay rate of an exponential moving average: ``0 <= value < 1``."""
  check_range(name, value, low=0.0, high=1.0, high_inclusive=False)


def check_eps(name: str, value: Any, *, guarded: bool = False) -> None:
  """An ε added to a denominator: ``> 0``, or ``>= 0`` where ``guarded``.

  Without a guard the denominator (``sqrt(v)``, a curvature estimate, a norm) is exactly 0 on a coordinate
  whose statistics are 0 (a parameter whose gradient is 0), so ε = 0 gives 0/0 there. ``guarded``: another
  term keeps the denominator positive (an ε under the root, a positive initial accumulator, a positive
  floor), and ε = 0 is a valid choice. Each caller says in a comment which case its arithmetic is.
  """
  check_range(name, value, low=0.0, low_inclusive=guarded)


def may_be_positive(value: Any) -> bool:
  """False only for ``None`` and concrete numbers ``<= 0``: traced values and schedules may be positive."""
  if value is None:
    return False
  if _deferred(value) or callable(value):
    return True
  try:
    return float(np.asarray(value)) > 0
  except Exception:  # pylint: disable=broad-except  (not a number: the argument's own check reports it)
    return True


def check_at_most(name: str, value: Any, bound_name: str, bound: Any) -> None:
  """``value <= bound`` (two arguments that form an interval), when both are numbers known at construction."""
  known = [None if _deferred(v) or callable(v) else float(np.asarray(v)) for v in (value, bound)]
  if None not in known and known[0] > known[1]:
    raise ValueError(f"`{name}` must be <= {bound_name}={bound!r}, got {value!r}.")


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
  allowed = tuple(allowed)
  def same_kind(a):
    # True == 1 == 1.0 to Python: a flag or a float must not select an int choice, nor an int a flag choice.
    if isinstance(a, bool) or isinstance(value, (bool, np.bool_)):
      return isinstance(a, bool) and isinstance(value, (bool, np.bool_))
    if isinstance(a, int):
      return isinstance(value, (int, np.integer))
    return True

  try:
    ok = any(value == a and same_kind(a) for a in allowed)
  except Exception:  # pylint: disable=broad-except  (arrays compare elementwise)
    ok = False
  if not ok:
    raise ValueError(f"`{name}` must be one of {allowed!r}, got {value!r}.")


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> None:
  """Structural integers (ranks, block sizes, periods) must be Python ints known at construction."""
  if low is not None and high is not None:
    what = f"a Python int in [{low}, {high}]"
  elif low is not None:
    what = f"a Python int >= {low}"
  elif high is not None:
    what = f"a Python int <= {high}"
  else:
    what = "a Python int"
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"`{name}` must be {what}, got {value!r} of type {type(value).__name__}{_type_hint(value)}.")
  if (low is not None and value < low) or (high is not None and value > high):
    raise ValueError(f"`{name}` must be {what}, got {value!r}.")


def check_transformation(name: str, value: Any, *, allow_none: bool = False) -> None:
  """An optax transformation (anything with ``init`` and ``update``), e.g. the ``inner`` of a wrapper."""
  if value is None and allow_none:
    return
  if not (hasattr(value, "init") and hasattr(value, "update")):
    what = "an optax GradientTransformation" + (" or None" if allow_none else "")
    raise ValueError(f"`{name}` must be {what}, got {value!r}.")


def check_callable_or_none(name: str, value: Any) -> None:
  if value is not None and not callable(value):
    raise ValueError(f"`{name}` must be a callable or None, got {value!r}.")


def check_schedule(name: str, value: Any) -> None:
  """A ``optax.ScalarOrSchedule`` (learning rate, weight decay): a finite number >= 0, or a callable."""
  check_range(name, value, low=0.0, schedule=True)


def check_bool(name: str, value: Any) -> None:
  """A flag: exactly ``True`` or ``False`` (``1`` and ``0`` are refused: flags are static, never traced)."""
  if not isinstance(value, bool):
    raise ValueError(f"`{name}` must be True or False, got {value!r}.")


__all__: list[str] = [
    "check_at_most",
    "check_beta",
    "check_bool",
    "check_callable_or_none",
    "check_choice",
    "check_eps",
    "check_int",
    "check_nonnegative",
    "check_positive",
    "check_range",
    "check_schedule",
    "check_transformation",
    "may_be_positive",
]
