import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gradtx.core import numerics, reduce, tree, validation
from tests import tolerances


@pytest.mark.parametrize(
    "check,value",
    [
        (validation.check_beta, 1.0),
        (validation.check_beta, -0.5),
        (validation.check_positive, 0.0),
        (validation.check_nonnegative, -1e-9),
        (validation.check_nonnegative, float("nan")),
    ],
)
def test_range_checks_name_argument_and_value(check, value):
  with pytest.raises(ValueError, match=r"`my_arg` must lie in .*got"):
    check("my_arg", value)


def test_range_checks_let_tracers_and_schedules_through():
  validation.check_beta("b", jax.ShapeDtypeStruct((), jnp.float32))
  jax.jit(lambda b: validation.check_beta("b", b) or b)(jnp.float32(3.0))
  validation.check_schedule("lr", optax.constant_schedule(1.0))
  with pytest.raises(ValueError, match="lr"):
    validation.check_schedule("lr", "fast")


def test_choice_and_int():
  with pytest.raises(ValueError, match=r"`mode` must be one of \('a', 'b'\), got 'c'"):
    validation.check_choice("mode", "c", ("a", "b"))
  with pytest.raises(ValueError, match="rank"):
    validation.check_int("rank", 2.0, low=1)
  with pytest.raises(ValueError, match="rank"):
    validation.check_int("rank", True, low=1)
  with pytest.raises(ValueError, match=">= 1"):
    validation.check_int("rank", 0, low=1)
  validation.check_int("rank", 3, low=1)


def test_zeros_like_keeps_holes_and_abstract_leaves():
  params = {"a": jax.ShapeDtypeStruct((2, 3), jnp.bfloat16), "b": None, "c": optax.MaskedNode()}
  z = tree.zeros_like(params)
  assert z["a"].shape == (2, 3) and z["a"].dtype == jnp.bfloat16
  assert z["b"] is None and isinstance(z["c"], optax.MaskedNode)
  assert tree.zeros_like(params, jnp.float32)["a"].dtype == jnp.float32


def test_ema_keeps_moment_dtype_under_traced_decay():
  m = {"x": jnp.ones(3, jnp.bfloat16)}
  out = jax.jit(lambda d: numerics.ema(m, {"x": jnp.full(3, 2.0)}, d, order=2))(jnp.float32(0.5))
  assert out["x"].dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out["x"], np.float32), 2.5)


def test_bias_correction_and_schedule_value():
  # 1 − f32(0.9)² against exact 0.19: 0.9 is not a float32 and 1 − 0.81 cancels, so ~3 ulps of 0.81 over
  # 0.19 relative, plus the pow's own error
  np.testing.assert_allclose(numerics.bias_correction(0.9, jnp.int32(2)), 1 - 0.81, rtol=tolerances.ELEMENTWISE_RTOL)
  assert float(numerics.schedule_value(optax.linear_schedule(1.0, 0.0, 10), jnp.int32(5))) == 0.5


def test_global_norm_under_pmap_equals_full():
  n = len(jax.devices())
  x = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
  got = jax.pmap(lambda v: reduce.global_norm({"v": v}, axis_name="i"), axis_name="i")(x)
  np.testing.assert_allclose(got, np.linalg.norm(x), rtol=1e-6)
  assert float(reduce.global_norm({})) == 0.0


def test_norm_without_overflow():
  big = jnp.full(24, 1e30, jnp.float32)
  assert not np.isfinite(float(reduce.norm(big)))  # the plain sum of squares overflows float32
  # sqrt(24) · 1e30, from the power-of-two scaled sum: float32 rounding only (a few ulps).
  np.testing.assert_allclose(float(reduce.norm_without_overflow(big)), np.sqrt(24.0) * 1e30, rtol=1e-6)
  for x in (jnp.arange(24.0), jnp.full(3, 2.0**59), jnp.zeros(0), jnp.array([3e-30, 4e-30])):
    assert float(reduce.norm_without_overflow(x)) == float(reduce.norm(x))  # below 2^60: norm bit for bit
  assert np.isnan(float(reduce.norm_without_overflow(jnp.array([jnp.nan, 1.0]))))
