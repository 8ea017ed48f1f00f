"""EXAdam against a NumPy transcription of the official v2 code (AhmedMostafa16/EXAdam@989d7b6c exadam.py)."""

import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from tests.moment_scaling import _helpers

LR = 0.01


def official_exadam(p0, grads, *, lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, dynamic_step=False):
  """float64 transcription of ``EXAdam.step`` at HEAD (v2); ``dynamic_step=True`` is the v1 step size."""
  p = np.array(p0, np.float64)
  m, v = np.zeros_like(p), np.zeros_like(p)
  trajectory = [p.copy()]
  for step, grad in enumerate(grads, start=1):
    grad = np.array(grad, np.float64)
    if weight_decay != 0.0:
      p = p + p * (lr * -weight_decay)
    beta1_t, beta2_t = b1**step, b2**step
    bias_correction1, bias_correction2 = 1 - beta1_t, 1 - beta2_t
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad * grad
    d1 = 1 + (v / (v + eps)) * beta2_t
    d2 = 1 + (m**2 / (m**2 + eps)) * beta1_t
    m_tilde = m / bias_correction1 * d1
    v_tilde = v / bias_correction2 * d2
    g_tilde = grad / bias_correction1 * d1
    step_size = lr * np.log(np.sqrt(step + 1) * np.sqrt(2.0)) if dynamic_step else lr
    p = p - step_size * (m_tilde + g_tilde) / (np.sqrt(v_tilde) + eps)
    trajectory.append(p.copy())
  return np.array(trajectory)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("b1,b2,eps", [(0.9, 0.999, 1e-8), (0.5, 0.9, 1e-3)])
def test_matches_official_code(weight_decay, b1, b2, eps):
  grads, p0 = _helpers.gradients(), _helpers.params0()
  reference = official_exadam(p0, grads, lr=LR, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
  _helpers.assert_matches(gradtx.exadam(LR, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay), reference, grads)


def test_is_v2_without_the_dynamic_step_size():
  grads, p0 = _helpers.gradients(steps=5), _helpers.params0()
  v1 = official_exadam(p0, grads, lr=LR, dynamic_step=True)
  with pytest.raises(AssertionError):
    _helpers.assert_matches(gradtx.exadam(LR), v1, grads)


def test_first_step_is_about_sixteen_adam_steps():
  tx = gradtx.scale_by_exadam()
  u, _ = tx.update(jnp.array([0.5, -1.0]), tx.init(jnp.zeros(2)))
  expected = (1 + 0.999) * (1 + 1 / 0.1) / np.sqrt(1 + 0.9)
  np.testing.assert_allclose(u, [expected, -expected], rtol=1e-4)


def test_state_dtypes_follow_options():
  tx = gradtx.scale_by_exadam(mu_dtype=jnp.float32, nu_dtype=jnp.bfloat16)
  state = tx.init(jnp.zeros(3, jnp.bfloat16))
  for _ in range(2):
    u, state = tx.update(jnp.ones(3, jnp.bfloat16), state)
  assert u.dtype == jnp.bfloat16
  assert (state.mu.dtype, state.nu.dtype) == (jnp.float32, jnp.bfloat16)


def test_zero_gradient_history_gives_a_zero_update():
  tx = gradtx.scale_by_exadam()
  state = tx.init(jnp.zeros(2))
  for _ in range(3):
    u, state = tx.update(jnp.array([0.0, 1.0]), state)
  assert float(u[0]) == 0.0 and np.isfinite(np.asarray(u)).all()


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"b1": 1.0}, "b1"),
        ({"b2": 1.5}, "b2"),
        ({"eps": 0.0}, "eps"),
        ({"eps": -1e-8}, "eps"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"weight_decay": -0.1}, "weight_decay"),
    ],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.exadam(**{"learning_rate": LR, **kwargs})
