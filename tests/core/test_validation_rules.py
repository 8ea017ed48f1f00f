"""gradtx.core.validation: what counts as a number at construction, and what is left for later."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gradtx.core import validation


@pytest.mark.parametrize(
    "value",
    [0.5, 1, np.float32(0.5), np.int64(1), jnp.asarray(0.5), jnp.asarray(0.5, jnp.bfloat16), np.asarray(0.5)],
    ids=["float", "int", "np.float32", "np.int64", "0-d jax", "0-d bf16", "0-d numpy"],
)
def test_real_numbers_of_every_kind_pass(value):
  validation.check_range("x", value, low=0.0, high=1.0)


@pytest.mark.parametrize(
    "value, wording",
    [
        ("0.5", "of type str (a string"),
        (b"0.5", "of type bytes (a string"),
        ((0.9, 0.999), "of type tuple (one number per argument"),
        ([0.5], "of type list (one number per argument"),
        (True, "of type bool"),
        (np.bool_(True), "of type bool"),
        (None, "of type NoneType"),
        (1j, "of type complex"),
        (jnp.ones(2), "of type ArrayImpl"),
        ({"b1": 0.5}, "of type dict"),
    ],
)
def test_non_numbers_are_refused_with_their_type(value, wording):
  with pytest.raises(ValueError, match=r"`x` must be a real number in \[0.0, 1.0\]") as e:
    validation.check_range("x", value, low=0.0, high=1.0)
  assert wording in str(e.value)


def test_nan_always_and_inf_unless_allowed():
  for v in (math.nan, -math.inf, math.inf):
    with pytest.raises(ValueError, match=r"`x` must lie in \[0.0, inf\), got"):
      validation.check_nonnegative("x", v)
  validation.check_positive("p", math.inf, allow_inf=True)
  with pytest.raises(ValueError, match=r"\(0.0, inf\], got nan"):
    validation.check_positive("p", math.nan, allow_inf=True)


def test_tracers_abstract_scalars_and_schedules_are_left_for_later():
  jax.jit(lambda b: validation.check_beta("b", b) or b)(jnp.float32(3.0))
  validation.check_beta("b", jax.ShapeDtypeStruct((), jnp.float32))
  validation.check_schedule("learning_rate", optax.constant_schedule(-1.0))  # optax evaluates it later
  with pytest.raises(ValueError, match="must be a real number in"):
    validation.check_range("b", lambda count: 0.5)  # only ScalarOrSchedule arguments take callables


def test_eps_is_positive_unless_guarded():
  with pytest.raises(ValueError, match=r"`eps` must lie in \(0.0, inf\), got 0.0"):
    validation.check_eps("eps", 0.0)
  validation.check_eps("eps", 0.0, guarded=True)
  assert validation.may_be_positive(1e-8) and validation.may_be_positive(optax.constant_schedule(0.1))
  assert not validation.may_be_positive(0.0) and not validation.may_be_positive(None)
  assert jax.jit(lambda x: validation.may_be_positive(x) and x)(jnp.float32(0.0)) == 0.0  # traced: maybe


def test_int_choices_and_flags_do_not_match_floats_or_bools():
  validation.check_choice("bits", 4, (4, 8))
  for bad in (4.0, True, "4"):
    with pytest.raises(ValueError, match=r"`bits` must be one of \(4, 8\)"):
      validation.check_choice("bits", bad, (4, 8))
  with pytest.raises(ValueError, match=r"`flag` must be one of \(True, False\)"):
    validation.check_choice("flag", 1, (True, False))
  with pytest.raises(ValueError, match=r"`rank` must be a Python int >= 1, got '2' of type str"):
    validation.check_int("rank", "2", low=1)
  with pytest.raises(ValueError, match=r"`bits` must be a Python int in \[2, 8\], got 9"):
    validation.check_int("bits", 9, low=2, high=8)


def test_intervals_and_transformations():
  validation.check_at_most("lo", 1.0, "hi", 1.0)
  with pytest.raises(ValueError, match="`lo` must be <= hi=1.0, got 2.0"):
    validation.check_at_most("lo", 2.0, "hi", 1.0)
  validation.check_transformation("inner", optax.adam(1e-3))
  validation.check_transformation("inner", None, allow_none=True)
  with pytest.raises(ValueError, match="`inner` must be an optax GradientTransformation, got 'adam'"):
    validation.check_transformation("inner", "adam")
