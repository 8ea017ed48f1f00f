"""Scalar numerics shared by the moment-keeping transformations.

Statistics (second moments, Hessian-diagonal EMAs) are kept in at least float32 whatever the param dtype
(:func:`stats_dtype`, DESIGN.md "Tests and speed"): in float16 a squared gradient of 256 already overflows,
and float16/bfloat16 lose the small increments ``(1 − β2) g²`` of a long EMA. A transformation's
``nu_dtype`` argument is the user's opt-out (``nu_dtype=jnp.bfloat16`` halves that memory).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def bias_correction(decay: Any, count: jax.Array) -> jax.Array:
  """``1 - decay ** count`` in float32 (count is the number of moment updates so far, >= 1)."""
  return 1.0 - jnp.asarray(decay, jnp.float32) ** count.astype(jnp.float32)


def schedule_value(value: optax.ScalarOrSchedule, count: jax.Array) -> jax.Array:
  """The value of a float or optax schedule at step ``count``, as a float32 scalar."""
  return jnp.asarray(value(count) if callable(value) else value, jnp.float32)


def stats_dtype(dtype: Any, requested: Any = None) -> Any:
  """The dtype to keep a statistic of a ``dtype`` leaf in: ``requested`` when given (the user's opt-out), else
  at least float32 (float16 and bfloat16 are widened, float32 and float64 kept)."""
  if requested is not None:
    return jax.dtypes.canonicalize_dtype(requested)
  return jnp.promote_types(dtype, jnp.float32)


def stats_zeros_like(tree: Any, dtype: Any = None) -> Any:
  """Zeros with each leaf's shape (and sharding) in :func:`stats_dtype` of the leaf's dtype and ``dtype``."""
  return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=stats_dtype(x.dtype, dtype)), tree)


def ema(moment: Any, value: Any, decay: Any, order: int = 1) -> Any:
  """``decay * moment + (1 - decay) * value ** order`` leaf by leaf, kept in each moment's dtype.

  Traced ``decay`` (float32 under ``inject_hyperparams``) would otherwise promote bf16/f16 moments. The power
  is taken in the wider of the two dtypes, so a float32 moment of float16 values does not overflow at
  ``|value| > 256``.
  """

  def one(m, v):
    v = v.astype(jnp.promote_types(m.dtype, v.dtype))
    v = v if order == 1 else v**order if order != 2 else v * v
    return (decay * m + (1.0 - decay) * v.astype(m.dtype)).astype(m.dtype)

  return jax.tree.map(one, moment, value)


def upcast(x: jax.Array) -> jax.Array:
  """``x`` in at least float32 (f16/bf16 are widened, f32/f64 kept): the precision to compute updates in."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def ema_upcast(moment: Any, value: Any, decay: Any, order: int = 1) -> Any:
  """``decay * moment + (1 - decay) * value ** order`` leaf by leaf in at least float32, NOT cast back.

  For transformations that use the new moment in further arithmetic before storing it (cast it back with
  ``tree.cast_like``). ``decay`` is taken as a float32 scalar whether it is a Python float or a traced
  hyperparameter, so ``1 - decay`` is the same number with and without ``optax.inject_hyperparams``
  (in Python, ``1 - 0.999`` differs from float32's by 1.3e-5 relative).
  """
  decay = jnp.asarray(decay, jnp.float32)

  def one(m, v):
    v = upcast(v)
    return decay * upcast(m) + (1.0 - decay) * (v if order == 1 else v * v if order == 2 else v**order)

  return jax.tree.map(one, moment, value)


def bias_correction_accurate(decay: Any, count: jax.Array) -> jax.Array:
  """``1 - decay ** count`` in float32 as ``-expm1(count * log(decay))``, without the cancellation.

  For ``decay`` near 1 and small ``count`` the direct form loses digits (float32 ``1 - 0.999**2`` is off by
  about 3e-5 relative); this one is accurate to a few ulps, so updates match float64 reference code.
  """
  decay = jnp.asarray(decay, jnp.float32)
  return -jnp.expm1(count.astype(jnp.float32) * jnp.log(decay))
