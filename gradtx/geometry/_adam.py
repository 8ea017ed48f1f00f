"""The Adam direction shared by AdamP and LAMB, with ``mu_dtype`` / ``nu_dtype`` (private).

``optax.scale_by_adam`` has no ``nu_dtype``, and its ``nesterov`` (NAdam: ``β1 m_t / (1−β1^{t+1}) +
(1−β1) g_t / (1−β1^t)``) is not AdamP's (``(β1 m_t + (1−β1) g_t) / (1−β1^t)``), so geometry keeps this
small twin. Without ``nesterov`` it is the maths of ``optax.scale_by_adam``:
``m̂ / (√(v̂ + eps_root) + eps)`` with ``m̂ = m / (1−β1^t)``, ``v̂ = v / (1−β2^t)``, computed in float32
with float32 betas and ``-expm1`` bias corrections (the same numbers with and without
``inject_hyperparams``, and within a few ulps of float64 reference code).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from gradtx.core import numerics, tree


def scale_by_adam(
    b1: Any,
    b2: Any,
    eps: Any,
    eps_root: Any = 0.0,
    *,
    nesterov: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """Adam's bias-corrected direction; state is ``optax.ScaleByAdamState(count, mu, nu)``."""
  mu_dtype = tree.canonical_dtype(mu_dtype)
  nu_dtype = tree.canonical_dtype(nu_dtype)

  def init_fn(params):
    return optax.ScaleByAdamState(
        count=jnp.zeros([], jnp.int32),
        mu=tree.zeros_like(params, dtype=mu_dtype),
        nu=numerics.stats_zeros_like(params, nu_dtype),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    # float32 betas whether given as Python floats or traced (inject_hyperparams): the same numbers either way.
    f32_b1 = jnp.asarray(b1, jnp.float32)
    mu = numerics.ema_upcast(state.mu, updates, f32_b1)
    nu = numerics.ema_upcast(state.nu, updates, b2, order=2)
    count = tree.safe_increment(state.count)
    bc1 = numerics.bias_correction_accurate(b1, count)
    bc2 = numerics.bias_correction_accurate(b2, count)

    def one(g, m, v):
      numerator = f32_b1 * m + (1.0 - f32_b1) * numerics.upcast(g) if nesterov else m
      return (numerator / bc1 / (jnp.sqrt(v / bc2 + eps_root) + eps)).astype(g.dtype)

    directions = jax.tree.map(one, updates, mu, nu)
    return directions, optax.ScaleByAdamState(
        count=count, mu=tree.cast_like(mu, state.mu), nu=tree.cast_like(nu, state.nu)
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
