"""Heavy-ball momentum with dampening whose buffer keeps its dtype (private; SGDP and LARS).

``optax.trace`` has no dampening, and under ``optax.inject_hyperparams`` its traced float32 decay promotes a
bf16 buffer to float32 (the state dtype changes and the jitted update recompiles). Without dampening this
is ``optax.trace`` exactly: ``b ← μ b + g``, output ``g + μ b`` (nesterov) or ``b``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from gradtx.core import tree


def heavy_ball(
    momentum: Any, dampening: Any = 0.0, *, nesterov: bool = False
) -> optax.GradientTransformationExtraArgs:
  """``b ← μ b + (1 − dampening) g`` from ``b = 0``; state ``optax.TraceState(trace=b)``."""

  def init_fn(params):
    return optax.TraceState(trace=tree.zeros_like(params))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    # float32 scalars whether given as Python floats or traced (inject_hyperparams): the same numbers.
    decay, keep = jnp.asarray(momentum, jnp.float32), 1.0 - jnp.asarray(dampening, jnp.float32)
    trace = jax.tree.map(
        lambda g, b: (decay * b + keep * g.astype(b.dtype)).astype(b.dtype), updates, state.trace
    )
    if nesterov:
      directions = jax.tree.map(lambda g, b: (g + decay * b).astype(g.dtype), updates, trace)
    else:
      directions = tree.cast_like(trace, updates)
    return directions, optax.TraceState(trace=trace)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
