"""Refined learning-rate schedules from the gradient norms of a previous run.

Paper: Defazio, Cutkosky, Mehta, Mishchenko. "When, Why and How Much? Adaptive Learning Rate Scheduling by
Refinement", 2023. https://arxiv.org/abs/2310.07831

Reference implementation: facebookresearch/adaptive_scheduling@37a8a9b — ``find_schedule.py::
find_closed_form_schedule`` (the weights-to-schedule map), the README's median-filter recipe and
``visual.py`` (smoothing width ``sigma2 = 0.1``; ℓ2 norms with weights ``‖g‖⁻²`` for SGD, ℓ1 norms with
weights ``‖g‖₁⁻¹`` for Adam). gradtx follows them step for step on the host (NumPy/SciPy, computed once):

1. ``ĝ = median_filter(pad_right_reflect(g, 2w), size=w, mode='nearest')`` cropped back, with
   ``w = 2⌊τT⌋//2 + 1``;
2. optionally resample ``ĝ`` to ``total_steps`` points by linear interpolation in relative time (as
   ``visual.py`` resamples to its plotting length);
3. ``w_t = ĝ_t⁻²`` (SGD) or ``ĝ_t⁻¹`` (Adam);
4. ``η_t ∝ w_t Σ_{p>t} w_p``, ``η_{T−1} = 0``, normalised so that ``max_t η_t = peak_value``.

Where gradtx differs: ``visual.py`` computes the filter width from its resampled length (10,000), so its
window is 10% of the run only for runs shorter than that; gradtx always uses ``τ`` times the recorded
length, as the README's formula reads. The result is a jit-compatible optax schedule that interpolates a
stored array at the traced step.
"""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp
import numpy as np
import optax
from scipy import ndimage

from gradtx.core import validation

RefinementKind = Literal["sgd", "adam"]


def _as_norms(grad_norms) -> np.ndarray:
  norms = np.asarray(grad_norms, dtype=np.float64)
  if norms.ndim != 1 or norms.shape[0] < 2:
    raise ValueError(f"`grad_norms` must be a 1-D sequence of at least 2 values, got shape {norms.shape}.")
  if not np.all(np.isfinite(norms)) or np.any(norms <= 0):
    bad = norms[~(np.isfinite(norms) & (norms > 0))][:5]
    raise ValueError(
        f"`grad_norms` must be finite and > 0 (the weights are their inverse powers), got values such as {bad}."
    )
  return norms


def smooth_grad_norms(grad_norms, tau: float = 0.1) -> np.ndarray:
  """The official median filtering of a gradient-norm sequence (README of adaptive_scheduling).

  Args:
    grad_norms: 1-D sequence of T > 1 finite positive norms.
    tau: window width as a fraction of T, in [0, 1]; the window is the odd integer ``2⌊τT⌋//2 + 1``.

  Returns:
    The filtered float64 sequence, of length T.
  """
  norms = _as_norms(grad_norms)
  validation.check_range("tau", tau, low=0.0, high=1.0)
  width = 2 * (int(tau * norms.shape[0]) // 2) + 1
  pad = 2 * width
  padded = np.pad(norms, (0, pad), mode="reflect")
  return ndimage.median_filter(padded, size=width, mode="nearest")[:-pad]


def refined_schedule_values(
    grad_norms,
    *,
    kind: RefinementKind = "sgd",
    tau: float = 0.1,
    total_steps: int | None = None,
) -> np.ndarray:
  """The refined schedule as a NumPy array, normalised to a maximum of 1 (see :func:`refined_schedule`)."""
  validation.check_choice("kind", kind, ("sgd", "adam"))
  smoothed = smooth_grad_norms(grad_norms, tau)
  if total_steps is not None:
    validation.check_int("total_steps", total_steps, low=2)
    if total_steps != smoothed.shape[0]:
      smoothed = np.interp(
          np.linspace(0.0, 1.0, total_steps), np.linspace(0.0, 1.0, smoothed.shape[0]), smoothed
      )
  weights = smoothed ** (-2.0 if kind == "sgd" else -1.0)
  # tail[t] = Σ_{p >= t} w_p; η_t = w_t tail[t+1] for t < T-1 and η_{T-1} = 0.
  tail = np.cumsum(weights[::-1])[::-1]
  values = np.zeros_like(weights)
  values[:-1] = weights[:-1] * tail[1:]
  return values / np.max(values)


def refined_schedule(
    grad_norms,
    peak_value: float,
    *,
    kind: RefinementKind = "sgd",
    tau: float = 0.1,
    total_steps: int | None = None,
) -> optax.Schedule:
  r"""The learning-rate schedule refined from observed gradient norms (Defazio et al., 2023).

  The last-iterate bound of SGD-like methods is minimised by the step sizes

  .. math::

    \eta_t \propto w_t \sum_{p=t+1}^{T} w_p, \qquad w_t = \hat g_t^{-2} \ \text{(SGD, ℓ2 norms)}
    \quad\text{or}\quad w_t = \hat g_t^{-1} \ \text{(Adam, ℓ1 norms)}

  where ``ĝ`` is the median-filtered norm sequence. The large norms typical of early training give a
  warm-up, and the tail sum a fast final anneal; with constant norms the schedule is linear decay
  ``peak_value (1 − s/(T−1))``, the worst-case optimal schedule. Record the norms with
  :func:`record_grad_norms` (``ord=2`` for ``kind='sgd'``, ``ord=1`` for ``kind='adam'``).

  Args:
    grad_norms: 1-D sequence of T >= 2 finite positive gradient norms, one per step of the previous run.
    peak_value: the maximum learning rate of the schedule, >= 0.
    kind: ``'sgd'`` (weights ``ĝ⁻²``, for SGD / momentum SGD) or ``'adam'`` (weights ``ĝ⁻¹``, for Adam-type
      methods given ℓ1 norms).
    tau: median-filter width as a fraction of the run (official value 0.1).
    total_steps: length of the new run when it differs from ``len(grad_norms)``: the smoothed norms are
      resampled to it in relative time. ``None`` keeps T.

  Returns:
    An optax schedule ``step -> learning rate``: jit-compatible (linear interpolation of a stored float32
    array at the traced step), 0 from the last step on.

  Examples:
    >>> import numpy as np, gradtx
    >>> schedule = gradtx.refined_schedule(np.ones(5), peak_value=1.0)
    >>> [float(schedule(s)) for s in range(6)]
    [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]

  References:
    Defazio et al., `When, Why and How Much? Adaptive Learning Rate Scheduling by Refinement
    <https://arxiv.org/abs/2310.07831>`_, 2023.
  """
  validation.check_nonnegative("peak_value", peak_value)
  values = refined_schedule_values(grad_norms, kind=kind, tau=tau, total_steps=total_steps)
  table = jnp.asarray(values * peak_value, jnp.float32)
  steps = jnp.arange(table.shape[0], dtype=jnp.float32)

  def schedule(count):
    return jnp.interp(jnp.asarray(count, jnp.float32), steps, table)

  return schedule
