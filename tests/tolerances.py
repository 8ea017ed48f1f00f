"""Tolerances that follow from float32 arithmetic, so the suite passes on any x86-64 CPU.

XLA compiles reductions (sums, norms, dot products) with the vector width of the CPU it runs on: AVX-512
adds 16 float32 lanes at a time, AVX2 8, SSE 4, and the partial sums are combined in another order. Each
order is correctly rounded step by step, so the results differ within the bound of floating-point summation
(Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §4.2): any order of ``n`` terms is within
``(n − 1) u Σ|x_i|`` of the exact sum, ``u = 2⁻²⁴`` the float32 unit roundoff, so two orders are within
twice that. Elementwise arithmetic (``+ − × ÷ √``) is correctly rounded and identical on every CPU, except
where XLA contracts ``a·b + c`` into one fused multiply-add on one CPU and not on another (one rounding
instead of two) and for transcendental functions (``exp``, ``log``, ``tanh``, ``pow``), whose vectorized
polynomial approximations are accurate to a few ulps and may differ with the vector width.

The helpers below turn those bounds into tolerances; a test that uses one says in a comment which terms
it counts. ``tests/tolerance_audit.py`` measures how much of each tolerance a run uses.
"""

from __future__ import annotations

import numpy as np

#: float32 unit roundoff (half the distance from 1.0 to the next float32).
U32 = 2.0**-24

#: A few-ulp elementwise formula (a chain of ≲ 8 correctly rounded operations, some possibly fused into
#: FMAs on one CPU only, or a transcendental function accurate to ~4 ulps): 16 ulps of float32.
ELEMENTWISE_RTOL = 16 * 2 * U32


def sum_rtol(n: int, *, cancellation: float = 1.0) -> float:
  """How far two summation orders of ``n`` float32 terms can be apart, relative to the sum.

  ``2 (n − 1) u`` relative to ``Σ|x_i|``; ``cancellation = Σ|x_i| / |Σ x_i|`` (1 for a sum of squares or of
  same-signed terms) converts it to a bound relative to the sum itself.
  """
  return 2 * max(n - 1, 1) * U32 * cancellation


def assert_close_normwise(actual, desired, rtol: float, err_msg: str = "") -> None:
  """``max |actual − desired| <= rtol · max |desired|`` over the whole array.

  The comparison for results that subtract nearly equal quantities (projections, centred moments): a
  reordered reduction moves every entry by about ``rtol`` times the *scale* of the array, so an entry that
  happens to be near zero has no meaningful relative error of its own.
  """
  actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
  assert actual.shape == desired.shape, (actual.shape, desired.shape)
  scale = float(np.max(np.abs(desired))) if desired.size else 0.0
  np.testing.assert_allclose(actual, desired, rtol=0, atol=rtol * scale, err_msg=err_msg)


def reordered_trajectory_rtol(steps: int, n: int) -> float:
  """Two runs of ``steps`` optimizer steps whose reductions (≤ ``n`` terms) run in another order.

  Sharded against whole arrays, ``pmap`` against the full batch, ``nnx.Optimizer`` against plain optax: each
  step's gradient (a mean over the batch, a matrix product) and each statistic of the update (a norm, a
  trust ratio, a random projection, a central difference of two losses) moves by ≤ ``sum_rtol(n)`` of its
  scale; the update chains up to ~4 of them and the steps add: ``4 · steps · sum_rtol(n)``, compared against
  each leaf's scale (:func:`assert_close_normwise`). A layout bug (a shard read twice, a statistic left
  per-shard) moves leaves by O(1) of their scale.
  """
  return 4 * steps * sum_rtol(n)
