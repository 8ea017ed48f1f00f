"""Stable-SPAM pieces and optimizer against NumPy transcriptions of the official code
(TianjinYellow/StableSPAM@6a66da1e galore_torch/stablespam.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from tests.fidelity import cases_stability


def _seq(n, seed=0):
  rng = np.random.default_rng(seed)
  out = [rng.normal(size=(4, 3)) for _ in range(n)]
  for t in range(3, n, 4):
    out[t].flat[rng.integers(12)] *= 50.0
  return out


def official_step(t, mode, period):
  """The step the official bias corrections use at global step t (per_reset) or t itself (global)."""
  s = 0
  for step in range(1, t + 1):
    s += 1
    used = s
    if period and step % period == 0:
      s = 1
  return used if mode == "per_reset" else t


def numpy_adaclip(seq, theta, mode, period):
  m, out = 0.0, []
  for t, g in enumerate(seq, start=1):
    g = g.copy()
    mx = np.max(np.abs(g))
    m = theta * m + (1 - theta) * mx
    m_hat = m / (1 - theta ** official_step(t, mode, period))
    mask = np.abs(g) > m_hat
    g[mask] = g[mask] / mx * m_hat
    out.append(g)
  return out


def numpy_adagn(seq, gamma1, gamma2, eps, mode, period, total_t, eta_min):
  a = b = 0.0
  out = []
  for t, g in enumerate(seq, start=1):
    s = 1.0 if total_t is None else eta_min + (1 - eta_min) * (1 + math.cos(math.pi * t / (total_t + 1))) / 2
    n = np.linalg.norm(g)
    a = gamma1 * s * a + (1 - gamma1 * s) * n
    b = gamma2 * b + (1 - gamma2) * n**2
    k = official_step(t, mode, period)
    c = (a / (1 - (gamma1 * s) ** k)) / (np.sqrt(b / (1 - gamma2**k)) + eps)
    out.append(g / n * c if n > 0 else g)
  return out


def _run(tx, seq):
  state = tx.init(jnp.zeros((4, 3)))
  step = jax.jit(tx.update)
  out = []
  for g in seq:
    u, state = step(jnp.asarray(g, jnp.float32), state)
    out.append(np.asarray(u))
  return out, state


@pytest.mark.parametrize("mode", ["per_reset", "global"])
@pytest.mark.parametrize("period", [None, 5])
def test_adaptive_max_clip(mode, period):
  seq = _seq(16)
  ours, state = _run(gradtx.clip_by_adaptive_max(0.9, bias_correction=mode, reset_period=period), seq)
  for t, (a, b) in enumerate(zip(ours, numpy_adaclip(seq, 0.9, mode, period))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=f"step {t + 1}")
  assert 0.0 <= float(state.clip_fraction) <= 1.0


def test_official_count_inflates_threshold_after_reset():
  """After a reset at step 200 the official count debiases with 1/(1 − 0.999²) ≈ 500 instead of
  1/(1 − 0.999²⁰²) ≈ 5.5: a ×40 spike on step 202 passes unclipped; the global count clips it."""
  seq = [np.ones((4, 3)) for _ in range(203)]
  seq[201] = seq[201].copy()
  seq[201][0, 0] = 40.0
  official, _ = _run(gradtx.clip_by_adaptive_max(0.999, reset_period=200), seq)
  global_, _ = _run(gradtx.clip_by_adaptive_max(0.999, bias_correction="global", reset_period=200), seq)
  assert official[201][0, 0] == pytest.approx(40.0)
  assert global_[201][0, 0] < 1.5


@pytest.mark.parametrize("mode, period, total_t", [("per_reset", None, None), ("per_reset", 6, 10), ("global", 6, 30)])
def test_norm_ema_normalization(mode, period, total_t):
  seq = _seq(16, seed=1)
  seq[7] = np.zeros((4, 3))  # a zero gradient is left alone, the EMAs still decay (official)
  tx = gradtx.normalize_by_norm_ema(0.8, 0.95, 1e-8, bias_correction=mode, reset_period=period,
                                    total_steps=total_t, eta_min=0.3)
  ours, _ = _run(tx, seq)
  for t, (a, b) in enumerate(zip(ours, numpy_adagn(seq, 0.8, 0.95, 1e-8, mode, period, total_t, 0.3))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=f"step {t + 1}")


def _replay(kwargs, params, grads):
  tx = gradtx.stable_spam(**kwargs)
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
        {"update_proj_gap": 8, "total_t": None, "weight_decay": 0.0},
        {"update_proj_gap": 12, "total_t": 20, "weight_decay": 0.05, "gamma1": 0.85, "gamma2": 0.999},
        {"update_proj_gap": 0, "total_t": 40, "weight_decay": 0.0},
    ],
)
def test_stable_spam_matches_official_transcription_with_in_place_reset(hp):
  params, grads = cases_stability.problem(seed=5)
  h = {**cases_stability.STABLE_HP, **hp}
  total_t = h.pop("total_t")
  expected, _ = cases_stability.official_stable_spam(params, grads, total_t=total_t, fix_reset_aliasing=True, **h)
  ours = _replay(
      {"learning_rate": h["lr"], "eps": h["eps"], "weight_decay": h["weight_decay"], "gamma1": h["gamma1"],
       "gamma2": h["gamma2"], "theta": h["gamma3"], "reset_period": h["update_proj_gap"] or None,
       "total_steps": total_t, "eta_min": h["eta_min"]},
      params, grads,
  )
  for t, p in enumerate(ours):
    for k in p:
      np.testing.assert_allclose(np.asarray(p[k]), expected[k][t], rtol=1e-5, atol=1e-6, err_msg=f"step {t + 1}")


def test_official_reset_step_differs_only_from_the_reset_on():
  params, grads = cases_stability.problem(seed=6)
  h = cases_stability.STABLE_HP
  official, _ = cases_stability.official_stable_spam(params, grads, total_t=None, **h)
  ours = _replay({"learning_rate": h["lr"], "weight_decay": h["weight_decay"], "reset_period": h["update_proj_gap"]},
                 params, grads)
  gaps = [max(abs(np.asarray(p[k]) - official[k][t]).max() for k in p) for t, p in enumerate(ours)]
  assert max(gaps[: h["update_proj_gap"] - 1]) < 1e-5
  assert gaps[h["update_proj_gap"] - 1] > 1e-3


def test_sharded_tensors_give_single_device_statistics():
  """clip_by_adaptive_max and normalize_by_norm_ema under shard_map (tensors split over 8 devices)."""
  mesh = jax.make_mesh((8,), ("d",), axis_types=(jax.sharding.AxisType.Explicit,))
  spec, rep = jax.sharding.PartitionSpec("d"), jax.sharding.PartitionSpec()
  seq = [{"w": jnp.asarray(g.repeat(2, 0)[:8], jnp.float32), "v": jnp.asarray(g.ravel()[:8] * 3, jnp.float32)}
         for g in _seq(6, seed=2)]
  single = gradtx.scale_by_stable_spam(reset_period=3)
  sharded_tx = gradtx.scale_by_stable_spam(reset_period=3, axis_name="d")
  s1 = single.init(seq[0])
  state_specs = jax.tree.map(lambda x: spec if x.ndim else rep, s1)  # moments split like the params
  s2 = jax.tree.map(lambda x, sp: jax.device_put(x, jax.NamedSharding(mesh, sp)), sharded_tx.init(seq[0]), state_specs)
  fn = jax.jit(jax.shard_map(sharded_tx.update, mesh=mesh, in_specs=(spec, state_specs),
                             out_specs=(spec, state_specs)))
  for g in seq:
    u1, s1 = jax.jit(single.update)(g, s1)
    u2, s2 = fn(jax.tree.map(lambda x: jax.device_put(x, jax.NamedSharding(mesh, spec)), g), s2)
    for k in g:
      np.testing.assert_allclose(np.asarray(u2[k]), np.asarray(u1[k]), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"gamma1": 1.0}, "gamma1"), ({"gamma2": -0.5}, "gamma2"), ({"theta": 1.2}, "theta"),
     ({"eps": -1.0}, "eps"), ({"eta_min": 2.0}, "eta_min"), ({"reset_period": 0}, "reset_period"),
     ({"total_steps": 0}, "total_steps"), ({"bias_correction": "local"}, "bias_correction"),
     ({"b1": 1.0}, "b1"), ({"learning_rate": -1.0}, "learning_rate")],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.stable_spam(**{"learning_rate": 1e-3, **kwargs})
