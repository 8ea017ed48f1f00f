"""Shared pieces of the moment-scaling tests: a gradient sequence that exercises every branch, and a
step-by-step comparison of a gradtx optimizer against a NumPy (float64) trajectory."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

STEPS = 20


def gradients(steps: int = STEPS, size: int = 6, seed: int = 0) -> np.ndarray:
  """Gradients of mixed scales (1e-3 to 10), an element that is exactly zero for a while, and scales that
  shrink over time (so EMAs of squares decrease and an amsgrad maximum matters)."""
  rng = np.random.default_rng(seed)
  scale = np.array([1.0, 1e-3, 10.0, 1.0, 0.1, 3.0])[:size]
  shrink = np.where(np.arange(size) % 2 == 0, 0.7, 1.0) ** np.arange(steps)[:, None]
  g = rng.normal(size=(steps, size)) * scale * shrink
  g[5:9, 1] = 0.0
  return g


def params0(size: int = 6, seed: int = 1) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=size)


def assert_matches(tx: optax.GradientTransformation, trajectory: np.ndarray, grads: np.ndarray,
                   rtol: float = 2e-5, atol: float = 1e-6) -> None:
  """Feeds the reference params ``trajectory[t]`` and ``grads[t]`` to ``tx`` in float32 and checks each
  update against ``trajectory[t + 1] - trajectory[t]``.

  ``atol`` is relative to the largest reference step (an update can be the small difference of a step and a
  decay of that size). float32 scalars such as ``1 - 0.999**t`` carry a
  relative error of about 1e-5 (0.999 is not a float32), hence ``rtol``.
  """
  state = tx.init(jnp.asarray(trajectory[0], jnp.float32))
  steps = np.diff(trajectory, axis=0)
  scale = np.max(np.abs(steps))
  for t, g in enumerate(grads):
    params = jnp.asarray(trajectory[t], jnp.float32)
    updates, state = tx.update(jnp.asarray(g, jnp.float32), state, params)
    assert updates.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(updates), steps[t], rtol=rtol, atol=atol * scale,
                               err_msg=f"step {t + 1}")
