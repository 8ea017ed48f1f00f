"""The dynamic ("dynamic tree") quantization maps of 8-bit optimizers.

Paper: Dettmers, Lewis, Shleifer, Zettlemoyer. "8-bit Optimizers via Block-wise Quantization", ICLR 2022.
https://arxiv.org/abs/2110.02861 (the data type itself: Dettmers, "8-Bit Approximations for Parallelism in
Deep Learning", 2015, https://arxiv.org/abs/1511.04561).

Reference implementation: bitsandbytes-foundation/bitsandbytes@95f9af30
``bitsandbytes/functional.py::create_dynamic_map``, which
``Optimizer2State`` calls as ``create_dynamic_map(signed=True)`` for the first state and
``create_dynamic_map(signed=False)`` for the second. A code is a sign bit (signed map only), a run of zeros
whose length is the base-10 exponent, an indicator bit, and a linear fraction in the remaining bits: for
exponent ``i`` (value range ``[0.1, 1] · 10^(i-6)``) the fraction has ``2^i`` levels (signed) or
``2^(i+1)`` (unsigned, the sign bit becomes a fraction bit), placed at the midpoints of a linear grid.
Both maps then get ``0`` and ``1.0`` and are sorted: 256 values each.

Where gradtx differs:
  * The values are computed in float64 and rounded once to float32; bitsandbytes computes them in float32
    with ``torch.linspace``, so 72 of its signed and 100 of its unsigned entries differ from gradtx's by one
    or two float32 ulps (relative 1.5e-7 at most). A value can round to a different code only when it lies
    within that distance of a midpoint between two codes.
  * bitsandbytes 0.36.0–0.41.x built the unsigned map with ``non_sign_bits = total_bits`` and doubled
    "additional items", giving 524 entries where the kernels read 256 (fixed in bitsandbytes commit
    3c9aca91, first released in 0.42.0); ports of that version (fjformer's JAX port among them) still carry
    it. gradtx asserts the length.
"""

from __future__ import annotations

import functools

import numpy as np

from gradtx.core import validation


def create_dynamic_map(signed: bool = True, max_exponent_bits: int = 7, total_bits: int = 8) -> np.ndarray:
  """The sorted dynamic quantization map with ``2**total_bits`` float32 values in ``[-1, 1]``.

  Args:
    signed: ``True`` for a map symmetric around 0 (first moments), ``False`` for ``[0, 1]`` (second
      moments, which are non-negative).
    max_exponent_bits: number of base-10 decades below 1 that the map covers (7 for 8 bits).
    total_bits: bits per code; ``max_exponent_bits <= total_bits - 1``, with equality for the unsigned map
      (bitsandbytes' construction gives it the wrong number of values otherwise).

  Returns:
    A read-only ``np.ndarray`` of shape ``(2**total_bits,)`` and dtype float32, sorted ascending, holding
    ``0.0`` and ``1.0``.

  Examples:
    >>> from gradtx.quantization.maps import create_dynamic_map
    >>> m = create_dynamic_map(signed=True)
    >>> m.shape, round(float(m[0]), 6), float(m[-1]), int((m == 0).sum())
    ((256,), -0.992969, 1.0, 1)
    >>> round(float(create_dynamic_map(signed=False)[1]), 10)  # smallest positive unsigned value
    3.25e-07
  """
  validation.check_bool("signed", signed)
  validation.check_int("total_bits", total_bits, low=2)
  validation.check_int("max_exponent_bits", max_exponent_bits, low=1)
  if max_exponent_bits > total_bits - 1:
    raise ValueError(
        f"`max_exponent_bits` must be <= total_bits - 1 = {total_bits - 1}, got {max_exponent_bits!r}."
    )
  if not signed and max_exponent_bits != total_bits - 1:
    raise ValueError(
        f"`max_exponent_bits` of an unsigned map must equal total_bits - 1 = {total_bits - 1}, "
        f"got {max_exponent_bits!r}."
    )
  return _dynamic_map(bool(signed), max_exponent_bits, total_bits)


@functools.lru_cache(maxsize=None)
def _dynamic_map(signed: bool, max_exponent_bits: int, total_bits: int) -> np.ndarray:
  non_sign_bits = total_bits - 1
  values = [np.zeros(1), np.ones(1)]
  for i in range(max_exponent_bits):
    # One more fraction bit where the map has no sign bit.
    levels = 2 ** (i + non_sign_bits - max_exponent_bits + (0 if signed else 1))
    grid = np.linspace(0.1, 1.0, levels + 1)
    means = 10.0 ** (i - (max_exponent_bits - 1)) * (grid[:-1] + grid[1:]) / 2.0
    values.append(means)
    if signed:
      values.append(-means)
  # Codes left over when the exponent field cannot take all the non-sign bits (signed maps only): linear in
  # the top decade.
  extra = 2 ** (non_sign_bits - max_exponent_bits) - 1
  if extra > 0:
    grid = np.linspace(0.1, 1.0, extra + 1)
    means = (grid[:-1] + grid[1:]) / 2.0
    values.append(means)
    if signed:
      values.append(-means)
  out = np.sort(np.concatenate(values)).astype(np.float32)
  if out.shape != (2**total_bits,):
    raise AssertionError(f"dynamic map has {out.shape[0]} values, expected {2**total_bits}")
  out.setflags(write=False)
  return out


def signed_map() -> np.ndarray:
  """The 256-value signed map bitsandbytes uses for first moments (``create_dynamic_map(True)``)."""
  return _dynamic_map(True, 7, 8)


def unsigned_map() -> np.ndarray:
  """The 256-value unsigned map bitsandbytes uses for second moments (``create_dynamic_map(False)``)."""
  return _dynamic_map(False, 7, 8)
