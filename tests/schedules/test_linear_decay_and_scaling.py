"""Linear decay (Defazio et al. 2023) and the batch-size scaling rules (Granziol et al. 2022)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx


def np_linear_decay(step, peak, total, warmup=0, init=0.0, end=0.0):
  if step < warmup:
    return init + (peak - init) * step / warmup
  frac = min(1.0, (step - warmup) / (total - warmup))
  return peak + (end - peak) * frac


@pytest.mark.parametrize(
    "kwargs",
    [
        {"peak_value": 1.0, "total_steps": 10},
        {"peak_value": 0.3, "total_steps": 17, "warmup_steps": 5},
        {"peak_value": 2.0, "total_steps": 8, "warmup_steps": 3, "init_value": 0.5, "end_value": 0.1},
    ],
)
def test_linear_decay_matches_numpy(kwargs):
  schedule = gradtx.linear_decay(**kwargs)
  jitted = jax.jit(schedule)
  expected = [
      np_linear_decay(
          s,
          kwargs["peak_value"],
          kwargs["total_steps"],
          kwargs.get("warmup_steps", 0),
          kwargs.get("init_value", 0.0),
          kwargs.get("end_value", 0.0),
      )
      for s in range(kwargs["total_steps"] + 4)
  ]
  got = [float(jitted(jnp.asarray(s))) for s in range(kwargs["total_steps"] + 4)]
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_linear_decay_is_the_paper_formula():
  schedule = gradtx.linear_decay(0.5, 20)
  got = [float(schedule(t)) for t in range(21)]
  np.testing.assert_allclose(got, [0.5 * (1 - t / 20) for t in range(21)], atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"peak_value": -1.0, "total_steps": 10}, "peak_value"),
        ({"peak_value": 1.0, "total_steps": 0}, "total_steps"),
        ({"peak_value": 1.0, "total_steps": 10.0}, "total_steps"),
        ({"peak_value": 1.0, "total_steps": 10, "warmup_steps": 10}, "warmup_steps"),
        ({"peak_value": 1.0, "total_steps": 10, "warmup_steps": -1}, "warmup_steps"),
        ({"peak_value": 1.0, "total_steps": 10, "init_value": -0.1}, "init_value"),
        ({"peak_value": 1.0, "total_steps": 10, "end_value": float("nan")}, "end_value"),
    ],
)
def test_linear_decay_invalid(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.linear_decay(**kwargs)


@pytest.mark.parametrize("rule, factor", [("linear", 4.0), ("sqrt", 2.0)])
def test_rescale_float_and_schedule(rule, factor):
  assert gradtx.rescale_learning_rate(0.25, 32, 128, rule=rule) == pytest.approx(0.25 * factor)
  assert gradtx.rescale_learning_rate(0.25, 128, 32, rule=rule) == pytest.approx(0.25 / factor)
  base = optax.cosine_decay_schedule(0.1, 50)
  scaled = jax.jit(gradtx.rescale_learning_rate(base, 32, 128, rule=rule))
  for s in (0, 7, 49, 60):
    assert float(scaled(s)) == pytest.approx(float(base(s)) * factor, rel=1e-6)


def test_rescaled_schedule_drives_an_optimizer():
  lr = gradtx.rescale_learning_rate(optax.linear_schedule(0.1, 0.0, 10), 8, 32, rule="sqrt")
  tx = optax.sgd(lr)
  params = jnp.ones(2)
  updates, _ = tx.update(jnp.ones(2), tx.init(params), params)
  np.testing.assert_allclose(updates, -0.2 * jnp.ones(2), rtol=1e-6)


@pytest.mark.parametrize(
    "args, kwargs, name",
    [
        ((0.1, 0, 32), {"rule": "linear"}, "old_batch_size"),
        ((0.1, 32, -1), {"rule": "linear"}, "new_batch_size"),
        ((0.1, 32, 64), {"rule": "cubic"}, "rule"),
        ((-0.1, 32, 64), {"rule": "sqrt"}, "learning_rate"),
        (("0.1", 32, 64), {"rule": "sqrt"}, "learning_rate"),
    ],
)
def test_rescale_invalid(args, kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.rescale_learning_rate(*args, **kwargs)
