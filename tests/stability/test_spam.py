"""SPAM pieces (clip_spikes, reset_state_every) and the full optimizer against NumPy transcriptions of the
official code (TianjinYellow/SPAM-Optimizer@e8185fbe galore_torch/SPAM.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.stability import reset as reset_module
from tests.fidelity import cases_stability


def official_multiplier(t, period, warmup):
  """1 − get_dr(current_step) of the official bookkeeping, at 1-based step t."""
  current = warmup + 1
  for step in range(1, t):
    current += 1
    if (step + 1) % period == 0:
      current = 0
  return 1.0 - (0.0 if current >= warmup else 0.99 * (1 + math.cos(math.pi * current / (warmup + 1))) / 2)


@pytest.mark.parametrize("period, warmup", [(1, 3), (2, 1), (5, 3), (10, 4), (7, 0), (4, 9)])
def test_warmup_multiplier_matches_official_bookkeeping(period, warmup):
  for t in range(1, 40):
    got = float(reset_module.warmup_multiplier(jnp.int32(t), period, warmup))
    assert got == pytest.approx(official_multiplier(t, period, warmup), abs=1e-6), t


def test_warmup_values():
  got = [float(reset_module.warmup_multiplier(jnp.int32(t), 10, 5)) for t in range(10, 17)]
  np.testing.assert_allclose(got, [0.01, 0.076317, 0.2575, 0.505, 0.7525, 1.0, 1.0], atol=1e-6)


def _seq(n, shape=(3, 2), seed=0, spikes=()):
  rng = np.random.default_rng(seed)
  out = [rng.normal(size=shape).astype(np.float32) for _ in range(n)]
  for t, idx, mag in spikes:
    out[t].flat[idx] *= mag
  return [jnp.asarray(x) for x in out]


def numpy_clip_spikes_own_ema(seq, threshold, b2, n_a, period):
  v = np.zeros(seq[0].shape)
  out = []
  for t, g in enumerate(seq, start=1):
    g = np.asarray(g, np.float64).copy()
    if threshold != 0 and t >= n_a and (period is None or t % period >= n_a):
      mask = g**2 > threshold * v
      g[mask] = np.sign(g[mask]) * np.sqrt(threshold * v[mask])
    v = b2 * v + (1 - b2) * g * g
    out.append(g)
  return out


@pytest.mark.parametrize("threshold, n_a, period", [(50.0, 3, None), (50.0, 2, 4), (0.0, 2, None), (5000.0, 20, 500)])
def test_clip_spikes_standalone(threshold, n_a, period):
  seq = _seq(12, spikes=[(4, 1, 100.0), (9, 3, -300.0)])
  tx = gradtx.clip_spikes(None, threshold, b2=0.9, accumulation_steps=n_a, reset_period=period)
  state = tx.init(seq[0])
  expected = numpy_clip_spikes_own_ema(seq, threshold, 0.9, n_a, period)
  for g, exp in zip(seq, expected):
    out, state = jax.jit(tx.update)(g, state)
    np.testing.assert_allclose(np.asarray(out), exp, rtol=1e-5, atol=1e-7)


def test_clip_spikes_reads_inner_second_moment():
  seq = _seq(8, spikes=[(5, 2, 200.0)])
  inner = optax.scale_by_adam(b1=0.0, b2=0.99, eps=0.0)
  tx = gradtx.clip_spikes(inner, 100.0, accumulation_steps=2)
  state = tx.init(seq[0])
  v = np.zeros((3, 2))
  for t, g in enumerate(seq, start=1):
    g64 = np.asarray(g, np.float64).copy()
    mask = (g64**2 > 100.0 * v) & (t >= 2)
    g64[mask] = np.sign(g64[mask]) * np.sqrt(100.0 * v[mask])
    v = 0.99 * v + 0.01 * g64**2
    out, state = jax.jit(tx.update)(g, state)
    # b1 = 0, eps = 0: Adam returns g / sqrt(v̂) = the clipped gradient over the debiased sqrt(v).
    np.testing.assert_allclose(np.asarray(out), g64 / np.sqrt(v / (1 - 0.99**t)), rtol=1e-5)
    assert float(state.clip_fraction) == pytest.approx(mask.mean())
  np.testing.assert_allclose(np.asarray(state.inner_state.nu), v, rtol=1e-5)


def test_clip_spikes_fraction_diagnostic():
  seq = _seq(6, spikes=[(5, 0, 1000.0), (5, 4, 1000.0)])
  tx = gradtx.clip_spikes(optax.scale_by_adam(), 5000.0, accumulation_steps=2)
  state = tx.init(seq[0])
  for g in seq:
    _, state = tx.update(g, state)
  assert float(state.clip_fraction) == pytest.approx(2 / 6)


def test_reset_state_every_resets_named_fields_and_keeps_count():
  tx = gradtx.reset_state_every(optax.scale_by_adam(), 3)
  state = tx.init(jnp.zeros(2))
  for t in range(1, 5):
    _, state = tx.update(jnp.ones(2), state)
    inner = state.inner_state
    assert int(inner.count) == t
    if t == 3:  # the reset zeroed mu before this step's update: one EMA step from zero
      np.testing.assert_allclose(np.asarray(inner.mu), [0.1, 0.1], rtol=1e-6)


def test_reset_count_restarts_bias_correction():
  tx = gradtx.reset_state_every(optax.scale_by_adam(), 3, reset_count=True)
  plain = optax.scale_by_adam()
  s, p = tx.init(jnp.zeros(2)), plain.init(jnp.zeros(2))
  for t in range(1, 6):
    u, s = tx.update(jnp.full(2, float(t)), s)
    if t == 3:
      p = plain.init(jnp.zeros(2))
    v, p = plain.update(jnp.full(2, float(t)), p)
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-6)
  assert int(s.inner_state.count) == 3


def test_reset_wraps_chains_and_resets_deep_fields():
  inner = optax.chain(optax.scale_by_adam(), optax.trace(0.9))
  tx = gradtx.reset_state_every(inner, 2, fields=("mu", "nu", "trace"))
  state = tx.init({"a": jnp.zeros(3)})
  _, state = tx.update({"a": jnp.ones(3)}, state)
  _, state = tx.update({"a": jnp.ones(3)}, state)
  adam, trace = state.inner_state
  np.testing.assert_allclose(np.asarray(adam.mu["a"]), 0.1, rtol=1e-6)
  assert float(trace.trace["a"][0]) != 0.0  # reset, then updated with this step's direction


@pytest.mark.parametrize(
    "kwargs, name",
    [({"period": 0}, "period"), ({"period": 2.5}, "period"), ({"warmup_steps": -1}, "warmup_steps"),
     ({"fields": "mu"}, "fields")],
)
def test_reset_invalid_arguments(kwargs, name):
  args = {"period": 10, **kwargs}
  with pytest.raises(ValueError, match=name):
    gradtx.reset_state_every(optax.scale_by_adam(), **args)


def test_reset_fields_must_exist():
  tx = gradtx.reset_state_every(optax.scale_by_adam(), 5, fields=("momentum",))
  with pytest.raises(ValueError, match="fields"):
    tx.init(jnp.zeros(2))


def test_clip_spikes_needs_inner_field():
  with pytest.raises(ValueError, match="nu_field"):
    gradtx.clip_spikes(optax.trace(0.9)).init(jnp.zeros(2))


@pytest.mark.parametrize(
    "kwargs, name",
    [({"threshold": -1.0}, "threshold"), ({"accumulation_steps": -1}, "accumulation_steps"),
     ({"reset_period": 0}, "reset_period"), ({"b2": 1.0}, "b2")],
)
def test_clip_spikes_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.clip_spikes(None, **kwargs)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"b1": 1.5}, "b1"), ({"eps": -1e-6}, "eps"), ({"threshold": -5.0}, "threshold"),
     ({"reset_period": 0}, "reset_period"), ({"warmup_steps": -2}, "warmup_steps"),
     ({"learning_rate": -1.0}, "learning_rate"), ({"weight_decay": -0.1}, "weight_decay")],
)
def test_spam_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.spam(**{"learning_rate": 1e-3, **kwargs})


def _replay_spam(kwargs, params, grads):
  tx = gradtx.spam(**kwargs)
  p = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  state = tx.init(p)
  step = jax.jit(tx.update)
  out = []
  for t in range(cases_stability.STEPS):
    u, state = step({k: jnp.asarray(v[t], jnp.float32) for k, v in grads.items()}, state, p)
    p = optax.apply_updates(p, u)
    out.append(p)
  return out


@pytest.mark.parametrize(
    "hp",
    [
        {"threshold": 1000, "delta_t": 10, "grad_accu_steps": 3, "weight_decay": 0.0},
        {"threshold": 0, "delta_t": 7, "grad_accu_steps": 3, "weight_decay": 0.3},
        {"threshold": 5000, "delta_t": 12, "grad_accu_steps": 1, "weight_decay": 0.0},
    ],
)
def test_spam_matches_official_transcription(hp):
  params, grads = cases_stability.problem(seed=3)
  full = {**cases_stability.SPAM_HP, **hp}
  expected, _ = cases_stability.official_spam(params, grads, warmup_steps=5, **full)
  ours = _replay_spam(
      {"learning_rate": full["lr"], "eps": full["eps"], "weight_decay": full["weight_decay"],
       "threshold": float(full["threshold"]), "reset_period": full["delta_t"], "warmup_steps": 5,
       "accumulation_steps": full["grad_accu_steps"]},
      params, grads,
  )
  for t, p in enumerate(ours):
    for k in p:
      np.testing.assert_allclose(np.asarray(p[k]), expected[k][t], rtol=1e-5, atol=1e-6, err_msg=f"step {t + 1}")


def test_spam_without_resets_is_clip_spikes_adam():
  params, grads = cases_stability.problem(seed=4)
  expected, _ = cases_stability.official_spam(
      params, grads, **{**cases_stability.SPAM_HP, "delta_t": 10_000, "weight_decay": 0.0}, warmup_steps=5)
  ours = _replay_spam({"learning_rate": 1e-2, "threshold": 1000.0, "reset_period": None, "accumulation_steps": 3,
                       "eps": 1e-6}, params, grads)
  for t, p in enumerate(ours):
    for k in p:
      np.testing.assert_allclose(np.asarray(p[k]), expected[k][t], rtol=1e-5, atol=1e-6)


def test_nan_gradient_is_not_hidden():
  """A NaN gradient makes the moments NaN (as in the official code); optax.apply_if_finite skips such steps."""
  tx = gradtx.spam(1e-2, accumulation_steps=1)
  state = tx.init(jnp.zeros(2))
  u, state = tx.update(jnp.array([jnp.nan, 1.0]), state, jnp.zeros(2))
  assert np.isnan(np.asarray(u)[0])
  guarded = optax.apply_if_finite(gradtx.spam(1e-2), 3)
  gs = guarded.init(jnp.zeros(2))
  u, gs = guarded.update(jnp.array([jnp.nan, 1.0]), gs, jnp.zeros(2))
  np.testing.assert_array_equal(np.asarray(u), [0.0, 0.0])


def test_clip_fraction_over_eight_shards_equals_single_device():
  mesh = jax.make_mesh((8,), ("d",), axis_types=(jax.sharding.AxisType.Explicit,))
  spec, rep = jax.sharding.PartitionSpec("d"), jax.sharding.PartitionSpec()
  seq = _seq(6, shape=(16, 2), spikes=[(4, 3, 1000.0), (5, 30, -1000.0)])
  single = gradtx.clip_spikes(None, 50.0, accumulation_steps=2)
  sharded = gradtx.clip_spikes(None, 50.0, accumulation_steps=2, axis_name="d")
  s1 = single.init(seq[0])
  state_specs = jax.tree.map(lambda x: spec if x.ndim else rep, s1)
  s2 = jax.tree.map(lambda x, sp: jax.device_put(x, jax.NamedSharding(mesh, sp)), sharded.init(seq[0]), state_specs)
  fn = jax.jit(jax.shard_map(sharded.update, mesh=mesh, in_specs=(spec, state_specs), out_specs=(spec, state_specs)))
  for g in seq:
    u1, s1 = jax.jit(single.update)(g, s1)
    u2, s2 = fn(jax.device_put(g, jax.NamedSharding(mesh, spec)), s2)
    np.testing.assert_array_equal(np.asarray(u2), np.asarray(u1))
    assert float(s2.clip_fraction) == pytest.approx(float(s1.clip_fraction))
  assert float(s1.clip_fraction) > 0
