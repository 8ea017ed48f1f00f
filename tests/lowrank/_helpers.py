"""Shared pieces of the low-rank tests: gradient sequences and step-by-step comparison with a reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


def gradients(shape, steps=12, seed=0, rank_signal=2):
  """Gradients with a slowly rotating low-rank signal plus noise, shrinking over time."""
  rng = np.random.default_rng(seed)
  m, n = shape
  u0, v0 = rng.normal(size=(m, rank_signal)), rng.normal(size=(n, rank_signal))
  du, dv = rng.normal(size=(m, rank_signal)), rng.normal(size=(n, rank_signal))
  scales = np.linspace(3.0, 1.0, rank_signal)
  out = []
  for t in range(steps):
    u, v = u0 + 0.15 * t * du, v0 + 0.15 * t * dv
    g = (u * scales) @ v.T + 0.3 * rng.normal(size=(m, n))
    out.append(g * 0.9**t)
  return out


def assert_trajectory(tx: optax.GradientTransformation, trajectory, grads, *, wrap=lambda x: {"w": x},
                      unwrap=lambda u: u["w"], rtol=2e-5, atol=1e-5, extra=None):
  """Feeds ``trajectory[t]`` and ``grads[t]`` to ``tx`` in float32 (jitted) and checks each update against
  ``trajectory[t + 1] - trajectory[t]``; ``atol`` is relative to the largest reference step.

  Each update is checked against the reference's own step from the same weights, so errors do not compound
  along the trajectory; they come from float32 against float64 arithmetic, dominated by the float32 SVD,
  whose rank-r subspace moves by about 6e-8 σ₁ / (σ_r − σ_{r+1}): ~1e-6 of the step for the gradients of
  :func:`gradients` (measured at most 7e-7 over these tests), and Adam's normalisation passes it on. The
  default atol 1e-5 leaves 10x for another CPU's summation order; a wrong formula, side or sign moves a
  step by 1e-3 or more.
  """
  params = wrap(jnp.asarray(trajectory[0], jnp.float32))
  state = tx.init(params)
  step = jax.jit(lambda g, s, p: tx.update(g, s, p, **(extra or {})))
  scale = max(float(np.max(np.abs(b - a))) for a, b in zip(trajectory[:-1], trajectory[1:]))
  for t, g in enumerate(grads):
    params = wrap(jnp.asarray(trajectory[t], jnp.float32))
    updates, state = step(wrap(jnp.asarray(g, jnp.float32)), state, params)
    np.testing.assert_allclose(np.asarray(unwrap(updates)), trajectory[t + 1] - trajectory[t], rtol=rtol,
                               atol=atol * scale, err_msg=f"step {t + 1}")
  return state
