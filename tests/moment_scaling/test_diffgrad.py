"""diffGrad against a NumPy transcription of the official fixed code (shivram1987/diffGrad diffGrad_v2.py)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from tests.moment_scaling import _helpers

LR = 0.05


def official_diffgrad(p0, grads, *, lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False):
  """float64 transcription of ``diffgrad.step`` in diffGrad_v2.py@73233ba4 (``previous_grad = grad.clone()``).

  ``decoupled=True`` replaces the official L2 term by pytorch-optimizer's default ``p *= 1 - lr * wd``.
  """
  p = np.array(p0, np.float64)
  m, v, previous_grad = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
  trajectory = [p.copy()]
  for step, grad in enumerate(grads, start=1):
    grad = np.array(grad, np.float64)
    if decoupled:
      p = p * (1.0 - lr * weight_decay)
    elif weight_decay != 0:
      grad = grad + weight_decay * p
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad * grad
    denom = np.sqrt(v) + eps
    bias_correction1 = 1 - b1**step
    bias_correction2 = 1 - b2**step
    dfc = 1.0 / (1.0 + np.exp(-np.abs(previous_grad - grad)))
    previous_grad = grad.copy()
    step_size = lr * math.sqrt(bias_correction2) / bias_correction1
    p = p - step_size * (m * dfc) / denom
    trajectory.append(p.copy())
  return np.array(trajectory)


@pytest.mark.parametrize("weight_decay,weight_decouple", [(0.0, False), (0.1, False), (0.1, True)])
@pytest.mark.parametrize("b1,b2", [(0.9, 0.999), (0.5, 0.9)])
def test_matches_official_code(weight_decay, weight_decouple, b1, b2):
  grads, p0 = _helpers.gradients(), _helpers.params0()
  reference = official_diffgrad(p0, grads, lr=LR, b1=b1, b2=b2, weight_decay=weight_decay, decoupled=weight_decouple)
  tx = gradtx.diffgrad(LR, b1=b1, b2=b2, weight_decay=weight_decay, weight_decouple=weight_decouple)
  _helpers.assert_matches(tx, reference, grads)


def test_friction_uses_the_previous_gradient_not_a_reference_to_the_current_one():
  # diffGrad.py (v1) stored the gradient by reference: from step 2 on the friction was sigmoid(0) = 0.5.
  tx = gradtx.scale_by_diffgrad()
  state = tx.init(jnp.zeros(2))
  u1, state = tx.update(jnp.array([2.0, 2.0]), state)
  np.testing.assert_allclose(u1, 1.0 / (1.0 + np.exp(-2.0)), rtol=1e-5)  # g_0 = 0
  np.testing.assert_array_equal(state.prev_grad, [2.0, 2.0])
  u2, state = tx.update(jnp.array([2.0, -1.0]), state)
  adam = np.array([1.0, (0.09 * 2.0 - 0.1) / (1 - 0.81) / np.sqrt((0.999 * 0.004 + 0.001) / (1 - 0.999**2))])
  np.testing.assert_allclose(u2, adam * [0.5, 1.0 / (1.0 + np.exp(-3.0))], rtol=3e-5)


def test_previous_gradient_includes_the_l2_term():
  tx = gradtx.diffgrad(LR, weight_decay=0.5)
  params = jnp.array([2.0, -4.0])
  state = tx.init(params)
  _, state = tx.update(jnp.array([1.0, 1.0]), state, params)
  np.testing.assert_allclose(state[1].prev_grad, [2.0, -1.0])


def test_state_dtypes_follow_options():
  tx = gradtx.scale_by_diffgrad(mu_dtype=jnp.bfloat16, nu_dtype=jnp.float32)
  params = jnp.zeros(3, jnp.float16)
  state = tx.init(params)
  for _ in range(2):
    u, state = tx.update(jnp.ones(3, jnp.float16), state)
  assert u.dtype == jnp.float16
  assert (state.mu.dtype, state.nu.dtype, state.prev_grad.dtype) == (jnp.bfloat16, jnp.float32, jnp.float16)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"b1": 1.0}, "b1"),
        ({"b2": -0.5}, "b2"),
        ({"eps": -1.0}, "eps"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"weight_decay": -0.1, "weight_decouple": True}, "weight_decay"),
        ({"weight_decouple": "yes"}, "weight_decouple"),
    ],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.diffgrad(**{"learning_rate": LR, **kwargs})
