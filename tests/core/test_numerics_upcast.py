"""The float32-computing helpers appended to gradtx.core.numerics for the moment-scaling family."""

import jax.numpy as jnp
import numpy as np
import optax

from gradtx.core import numerics


def test_upcast_widens_half_precision_only():
  assert numerics.upcast(jnp.ones(2, jnp.bfloat16)).dtype == jnp.float32
  assert numerics.upcast(jnp.ones(2, jnp.float16)).dtype == jnp.float32
  assert numerics.upcast(jnp.ones(2, jnp.float32)).dtype == jnp.float32


def test_ema_upcast_is_the_same_with_python_and_traced_decay():
  m, g = {"a": jnp.ones(3, jnp.bfloat16), "b": None}, {"a": jnp.full(3, 3.0, jnp.bfloat16), "b": None}
  python = numerics.ema_upcast(m, g, 0.999, order=2)
  traced = numerics.ema_upcast(m, g, jnp.asarray(0.999, jnp.float32), order=2)
  assert python["a"].dtype == jnp.float32 and python["b"] is None
  np.testing.assert_array_equal(python["a"], traced["a"])
  np.testing.assert_allclose(python["a"], 0.999 + 0.001 * 9.0, rtol=1e-6)
  masked = numerics.ema_upcast({"a": optax.MaskedNode()}, {"a": optax.MaskedNode()}, 0.9)
  assert isinstance(masked["a"], optax.MaskedNode)


def test_bias_correction_accurate_has_no_cancellation():
  count = jnp.arange(1, 50, dtype=jnp.int32)
  b = np.float64(np.float32(0.999))
  exact = 1.0 - b ** np.arange(1, 50)
  np.testing.assert_allclose(numerics.bias_correction_accurate(0.999, count), exact, rtol=5e-7)
  direct_error = np.max(np.abs(np.asarray(numerics.bias_correction(0.999, count)) / exact - 1))
  assert direct_error > 1e-6  # what the direct float32 form loses
  np.testing.assert_array_equal(numerics.bias_correction_accurate(0.0, count), 1.0)


def test_statistics_dtype_rule():
  assert numerics.stats_dtype(jnp.float16) == jnp.float32 and numerics.stats_dtype(jnp.bfloat16) == jnp.float32
  assert numerics.stats_dtype(jnp.float32) == jnp.float32
  assert numerics.stats_dtype(jnp.float16, jnp.bfloat16) == jnp.bfloat16  # the user's opt-out wins
  zeros = numerics.stats_zeros_like({"a": jnp.ones(2, jnp.float16), "b": None})
  assert zeros["a"].dtype == jnp.float32 and zeros["b"] is None


def test_ema_squares_float16_values_in_a_float32_moment():
  nu = numerics.ema(jnp.zeros(2, jnp.float32), jnp.full(2, 1e3, jnp.float16), jnp.float32(0.999), order=2)
  # 1e3² = 1e6 overflows float16 (max 65504); squared in float32 it is exact, times float32 0.001.
  np.testing.assert_allclose(nu, (1.0 - np.float32(0.999)) * 1e6, rtol=1e-6)
  assert nu.dtype == jnp.float32
