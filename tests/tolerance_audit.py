"""Tolerance audit: how much of each `assert_allclose` tolerance a run actually uses.

Set ``GRADTX_TOLERANCE_AUDIT=<folder>`` before running pytest and every call of
``numpy.testing.assert_allclose`` (which ``chex`` tree assertions also use) appends one line to
``<folder>/<pid>.tsv``: the calling test line, ``rtol``, ``atol``, the dtype compared and the *used
fraction* ``max |actual - desired| / (atol + rtol |desired|)``. A comparison that uses more than ~0.1 of
its tolerance on one CPU can fail on another (float32 reductions run in another order with AVX-512 than with
AVX2), so the audit lists the assertions to look at first::

  GRADTX_TOLERANCE_AUDIT=/tmp/tol .venv/bin/python -m pytest -q -n 2 -m "not slow"
  .venv/bin/python tests/tolerance_audit.py /tmp/tol

The audit changes no result: the original assertion runs after the measurement.
"""

from __future__ import annotations

import os
import sys
import traceback

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _caller() -> str:
  """The innermost frame in the project's own tests, notebooks or package (not numpy's, chex's or jax's)."""
  for frame in reversed(traceback.extract_stack()[:-2]):
    path = os.path.abspath(frame.filename)
    if path.startswith(_ROOT) and not path.endswith("tolerance_audit.py") and "/.venv" not in path:
      return f"{os.path.relpath(path, _ROOT)}:{frame.lineno}"
  return "?"


def _used_fraction(actual, desired, rtol: float, atol: float) -> float:
  a = np.asarray(actual, dtype=np.float64) if np.asarray(actual).dtype != object else None
  d = np.asarray(desired, dtype=np.float64) if np.asarray(desired).dtype != object else None
  if a is None or d is None:
    return float("nan")
  a, d = np.broadcast_arrays(a, d)
  finite = np.isfinite(a) & np.isfinite(d)
  if not finite.any():
    return 0.0
  diff = np.abs(a[finite] - d[finite])
  bound = atol + rtol * np.abs(d[finite])
  with np.errstate(divide="ignore", invalid="ignore"):
    ratio = np.where(bound > 0, diff / bound, np.where(diff > 0, np.inf, 0.0))
  return float(ratio.max())


def install(folder: str) -> None:
  """Wraps ``numpy.testing.assert_allclose`` so every call records its used fraction in ``folder``."""
  os.makedirs(folder, exist_ok=True)
  original = np.testing.assert_allclose
  out = os.path.join(folder, f"{os.getpid()}.tsv")

  def audited(actual, desired, rtol=1e-7, atol=0, *args, **kwargs):
    try:
      dtype = str(np.asarray(actual).dtype)
      used = _used_fraction(actual, desired, rtol, atol)
      test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
      with open(out, "a", encoding="utf-8") as f:
        f.write(f"{_caller()}\t{rtol}\t{atol}\t{dtype}\t{used:.4g}\t{test}\n")
    except Exception:  # pylint: disable=broad-except  (the audit never changes what the test does)
      pass
    return original(actual, desired, rtol, atol, *args, **kwargs)

  np.testing.assert_allclose = audited


def report(folder: str, threshold: float = 0.1) -> None:
  """Prints the assertion lines whose largest used fraction exceeds ``threshold``, worst first."""
  worst: dict[str, tuple[float, str]] = {}
  for name in os.listdir(folder):
    with open(os.path.join(folder, name), encoding="utf-8") as f:
      for line in f:
        where, rtol, atol, dtype, used, test = line.rstrip("\n").split("\t")
        u = float(used)
        key = where
        if key not in worst or not u <= worst[key][0]:
          worst[key] = (u, f"rtol={rtol} atol={atol} {dtype} {test}")
  rows = sorted(worst.items(), key=lambda kv: -kv[1][0] if kv[1][0] == kv[1][0] else 0)
  for where, (u, info) in rows:
    if not u <= threshold:
      print(f"{u:9.3g}  {where}  {info}")


if __name__ == "__main__":
  report(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.1)
