"""AdaBelief against a NumPy transcription of the official code (adabelief-pytorch 0.2.1, AdaBelief.step)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.moment_scaling.adabelief import rectification
from tests import tolerances
from tests.moment_scaling import _helpers

LR = 0.05
B2 = 0.95  # short memory: s decreases within 20 steps, so the amsgrad maximum matters
DECAY_MODES = ("none", "decoupled", "fixed", "l2")


def official_adabelief(p0, grads, *, lr, b1=0.9, b2=0.999, eps=1e-16, weight_decay=0.0, amsgrad=False,
                       weight_decouple=True, fixed_decay=False, rectify=True, degenerated_to_sgd=True,
                       n_sma_threshold=5):
  """float64 transcription of ``AdaBelief.step`` (juntang-zhuang/Adabelief-Optimizer@2855178e).

  The official threshold is the constant 5; ``n_sma_threshold`` is pytorch-optimizer's generalization.
  """
  p = np.array(p0, np.float64)
  m, s, s_max = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
  trajectory = [p.copy()]
  for step, grad in enumerate(grads, start=1):
    grad = np.array(grad, np.float64)
    if weight_decouple:
      p = p * (1.0 - weight_decay) if fixed_decay else p * (1.0 - lr * weight_decay)
    elif weight_decay != 0:
      grad = grad + weight_decay * p
    bias_correction1 = 1 - b1**step
    bias_correction2 = 1 - b2**step
    m = b1 * m + (1 - b1) * grad
    residual = grad - m
    s = b2 * s + (1 - b2) * residual * residual
    s = s + eps  # exp_avg_var.add_(eps), in place, in both branches
    if amsgrad:
      s_max = np.maximum(s_max, s)
      denom = np.sqrt(s_max) / math.sqrt(bias_correction2) + eps
    else:
      denom = np.sqrt(s) / math.sqrt(bias_correction2) + eps
    if not rectify:
      p = p - lr / bias_correction1 * m / denom
    else:
      beta2_t = b2**step
      n_sma_max = 2 / (1 - b2) - 1
      n_sma = n_sma_max - 2 * step * beta2_t / (1 - beta2_t)
      if n_sma >= n_sma_threshold:
        step_size = math.sqrt(
            (1 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma * n_sma_max / (n_sma_max - 2)
        ) / (1 - b1**step)
      elif degenerated_to_sgd:
        step_size = 1.0 / (1 - b1**step)
      else:
        step_size = -1
      if n_sma >= n_sma_threshold:
        p = p - step_size * lr * m / (np.sqrt(s) + eps)
      elif step_size > 0:
        p = p - step_size * lr * m
    trajectory.append(p.copy())
  return np.array(trajectory)


def _decay_kwargs(mode):
  return {
      "none": {"weight_decay": 0.0},
      "decoupled": {"weight_decay": 0.1},
      "fixed": {"weight_decay": 0.1, "fixed_decay": True},
      "l2": {"weight_decay": 0.1, "weight_decouple": False},
  }[mode]


@pytest.mark.parametrize(
    "rectify,degenerated_to_sgd,amsgrad,mode",
    [(r, d, a, "none") for r, d, a in itertools.product((True, False), repeat=3)]
    + [(r, True, False, mode) for r in (True, False) for mode in DECAY_MODES[1:]]
    + [(False, True, True, "l2")],
)
def test_matches_official_code(rectify, degenerated_to_sgd, amsgrad, mode):
  grads, p0 = _helpers.gradients(), _helpers.params0()
  kwargs = dict(b2=B2, eps=1e-8, rectify=rectify, degenerated_to_sgd=degenerated_to_sgd, amsgrad=amsgrad,
                **_decay_kwargs(mode))
  reference = official_adabelief(p0, grads, lr=LR, **kwargs)
  _helpers.assert_matches(gradtx.adabelief(LR, **kwargs), reference, grads)


def test_matches_official_code_default_eps():
  grads, p0 = _helpers.gradients(), _helpers.params0()
  reference = official_adabelief(p0, grads, lr=LR)
  _helpers.assert_matches(gradtx.adabelief(LR), reference, grads)


@pytest.mark.parametrize("degenerated_to_sgd", [True, False])
def test_n_sma_threshold(degenerated_to_sgd):
  grads, p0 = _helpers.gradients(), _helpers.params0()
  kwargs = dict(eps=1e-8, n_sma_threshold=8.5, degenerated_to_sgd=degenerated_to_sgd)
  reference = official_adabelief(p0, grads, lr=LR, **kwargs)
  _helpers.assert_matches(gradtx.adabelief(LR, **kwargs), reference, grads)


def test_early_steps_follow_degenerated_to_sgd():
  grads = _helpers.gradients(steps=6)
  p0 = _helpers.params0()
  for degenerated_to_sgd in (True, False):
    tx = gradtx.scale_by_belief(degenerated_to_sgd=degenerated_to_sgd)
    state = tx.init(jnp.zeros(6))
    m = np.zeros(6)
    for step, g in enumerate(grads, start=1):
      u, state = tx.update(jnp.asarray(g, jnp.float32), state, p0)
      m = 0.9 * m + 0.1 * g
      if step <= 5:  # rho_t < 5 for b2 = 0.999 up to step 5 (rho_5 = 4.996)
        expected = m / (1 - 0.9**step) if degenerated_to_sgd else np.zeros(6)
        np.testing.assert_allclose(u, expected, rtol=1e-5, atol=1e-12)
      else:
        assert not np.allclose(u, m / (1 - 0.9**step), rtol=1e-2)


def test_amsgrad_changes_only_the_unrectified_update():
  grads, p0 = _helpers.gradients(), _helpers.params0()
  with_max = official_adabelief(p0, grads, lr=LR, b2=B2, eps=1e-8, amsgrad=True, rectify=False)
  without = official_adabelief(p0, grads, lr=LR, b2=B2, eps=1e-8, amsgrad=False, rectify=False)
  assert np.max(np.abs(np.diff(with_max, axis=0) - np.diff(without, axis=0))) > 1e-3  # the maximum matters
  for rectify in (True, False):
    tx_true = gradtx.scale_by_belief(b2=B2, eps=1e-8, rectify=rectify, amsgrad=True)
    tx_false = gradtx.scale_by_belief(b2=B2, eps=1e-8, rectify=rectify, amsgrad=False)
    s_true, s_false = tx_true.init(jnp.zeros(6)), tx_false.init(jnp.zeros(6))
    same = True
    for g in grads:
      u_true, s_true = tx_true.update(jnp.asarray(g, jnp.float32), s_true)
      u_false, s_false = tx_false.update(jnp.asarray(g, jnp.float32), s_false)
      same = same and bool(jnp.all(u_true == u_false))
    assert same == rectify
    assert isinstance(s_true.nu_max, jax.Array) and s_false.nu_max == ()


def test_eps_accumulates_in_the_state():
  tx = gradtx.scale_by_belief(eps=1e-3, rectify=False)
  state = tx.init(jnp.zeros(2))
  for _ in range(3):
    _, state = tx.update(jnp.zeros(2), state)
  expected = 1e-3 * (1 + 0.999 + 0.999**2)
  np.testing.assert_allclose(state.nu, expected, rtol=1e-6)
  tx = gradtx.scale_by_belief(eps=1e-3, eps_root=0.0, rectify=False)
  state = tx.init(jnp.zeros(2))
  _, state = tx.update(jnp.zeros(2), state)
  np.testing.assert_array_equal(state.nu, 0.0)


def test_equals_optax_adabelief_without_rectification():
  grads = _helpers.gradients()
  ours, theirs = gradtx.scale_by_belief(rectify=False), optax.scale_by_belief(eps=1e-16, eps_root=1e-16)
  s_ours, s_theirs = ours.init(jnp.zeros(6)), theirs.init(jnp.zeros(6))
  for step, g in enumerate(grads, start=1):
    g = jnp.asarray(g, jnp.float32)
    u_ours, s_ours = ours.update(g, s_ours)
    u_theirs, s_theirs = theirs.update(g, s_theirs)
    if step == 1:  # m̂ = g, ŝ = (0.9 g)²: exactly ±1/0.9 up to eps (the 1e-3-scale element feels eps)
      # elementwise: a square, a square root and a division, each rounded (and 1/0.9 itself in float32)
      np.testing.assert_allclose(np.abs(u_ours[np.array([0, 2, 3, 4, 5])]), 1 / 0.9, rtol=tolerances.ELEMENTWISE_RTOL)
    # optax takes 1 - b2 in Python float64 but 1 - b2**t in float32 (they disagree by 1.3e-5 for 0.999);
    # gradtx takes both from the float32 b2, as under inject_hyperparams.
    np.testing.assert_allclose(u_ours, u_theirs, rtol=2e-5)


@pytest.mark.parametrize("b2", [0.9, 0.99, 0.999, 0.9999])
def test_rectification_matches_float64(b2):
  steps = np.arange(1, 3001)
  b2_32 = float(np.float32(b2))  # the float32 hyperparameter is what the code sees
  beta2_t = b2_32**steps
  rho_inf = 2 / (1 - b2_32) - 1
  rho = rho_inf - 2 * steps * beta2_t / (1 - beta2_t)
  ratio = (1 - beta2_t) * (rho - 4) / (rho_inf - 4) * (rho - 2) / rho * rho_inf / (rho_inf - 2)
  got_rho, got_r = jax.vmap(lambda t: rectification(b2, t))(jnp.asarray(steps, jnp.int32))
  np.testing.assert_allclose(got_rho, rho, rtol=2e-6, atol=2e-5)
  adaptive = rho >= 5
  np.testing.assert_array_equal(np.asarray(got_rho) >= 5, adaptive)
  np.testing.assert_allclose(np.asarray(got_r)[adaptive], np.sqrt(ratio[adaptive]), rtol=2e-5)


def test_inject_hyperparams_with_rectification_compiles_once():
  tx = optax.inject_hyperparams(gradtx.adabelief, static_args=gradtx.registry.get("adabelief").static_args)(
      learning_rate=LR, weight_decay=0.1, eps=1e-8
  )
  plain = gradtx.adabelief(LR, weight_decay=0.1, eps=1e-8)
  params = jnp.asarray(_helpers.params0(), jnp.float32)
  state, plain_state = tx.init(params), plain.init(params)
  traces = []

  @jax.jit
  def step(g, state):
    traces.append(None)
    return tx.update(g, state, params)

  for g in _helpers.gradients(steps=8):
    g = jnp.asarray(g, jnp.float32)
    u, state = step(g, state)
    u_plain, plain_state = plain.update(g, plain_state, params)
    np.testing.assert_allclose(u, u_plain, rtol=1e-5, atol=1e-9)
  assert len(traces) == 1


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"b1": 1.0}, "b1"),
        ({"b1": -0.1}, "b1"),
        ({"b2": 1.0}, "b2"),
        ({"eps": -1e-8}, "eps"),
        ({"eps_root": -1.0}, "eps_root"),
        ({"n_sma_threshold": 3}, "n_sma_threshold"),
        ({"rectify": "yes"}, "rectify"),
        ({"amsgrad": None}, "amsgrad"),
        ({"degenerated_to_sgd": 2}, "degenerated_to_sgd"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"weight_decouple": False, "fixed_decay": True}, "fixed_decay"),
        ({"weight_decouple": "no"}, "weight_decouple"),
    ],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.adabelief(**{"learning_rate": LR, **kwargs})
