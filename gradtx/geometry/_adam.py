"""The Adam direction shared by AdamP and LAMB, with ``mu_dtype`` / ``nu_dtype`` (private).

``optax.scale_by_adam`` has no ``nu_dtype``, and its ``nesterov`` (NAdam: ``β1 m_t / (1−β1^{t+1}) +
(1−β1) g_t / (1−β1^t)``) is not AdamP's (``(β1 m_t + (1−β1) g_t) / (1−β1^t)``), so geometry keeps this
small twin. Without ``nesterov`` it is ``optax.scale_by_adam`` exactly:
``m̂ / (√(v̂ + eps_root) + eps)`` with ``m̂ = m / (1−β1^t)``, ``v̂ = v / (1−β2^t)``.
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
        nu=tree.zeros_like(params, dtype=nu_dtype),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    mu = numerics.ema(state.mu, updates, b1)
    nu = numerics.ema(state.nu, updates, b2, order=2)
    count = tree.safe_increment(state.count)
    bc1 = numerics.bias_correction(b1, count)
    bc2 = numerics.bias_correction(b2, count)

    def one(g, m, v):
      compute = jnp.promote_types(g.dtype, jnp.float32)
      g32, m32, v32 = g.astype(compute), m.astype(compute), v.astype(compute)
      numerator = b1 * m32 + (1.0 - b1) * g32 if nesterov else m32
      denom = jnp.sqrt(v32 / bc2 + eps_root) + eps
      return (numerator / bc1 / denom).astype(g.dtype)

    directions = jax.tree.map(one, updates, mu, nu)
    return directions, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
