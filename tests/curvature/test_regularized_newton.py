"""Gradient-regularized Newton against a NumPy transcription of grad_norm_smooth (epfml/grad-norm-smooth
src/methods.py) with gradtx's diagonal Hessian (clipped at 0); separable problem, so Hutchinson is exact."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

_RNG = np.random.default_rng(0)
_A = _RNG.choice([-0.5, 1.0, 3.0], size=6)
_C = _RNG.normal(size=6)
_X0 = _C + 2.0 * _RNG.normal(size=6)


def _f(x):
  return float(np.sum(_A * (x - _C) ** 2 + 0.25 * (x - _C) ** 4))


def _g(x):
  return 2 * _A * (x - _C) + (x - _C) ** 3


def _loss(p):
  a, c = jnp.asarray(_A, p.dtype), jnp.asarray(_C, p.dtype)
  return jnp.sum(a * (p - c) ** 2 + 0.25 * (p - c) ** 4)


def _official(steps, gamma, gamma_min, eps, max_tries):
  x, fk, gk, xs, gammas = _X0.copy(), _f(_X0), _g(_X0), [], []
  for _ in range(steps):
    h = np.maximum(2 * _A + 3 * (x - _C) ** 2, 0.0)
    for i in range(max_tries + 1):
      if i == max_tries:
        break
      lam = np.linalg.norm(gk) / (gamma + eps)
      dx = -gk / (h + lam)
      f_new, g_new = _f(x + dx), _g(x + dx)
      if fk - f_new >= g_new @ g_new / (8 * lam):
        gamma = max(gamma * 2.0, gamma_min)
        break
      gamma *= 0.5
    x, fk, gk = x + dx, f_new, g_new
    xs.append(x.copy())
    gammas.append(gamma)
  return xs, gammas


@pytest.mark.parametrize("gamma_init,max_tries", [(1.0, 40), (1e4, 40), (1e4, 2)])
def test_matches_reference(gamma_init, max_tries):
  want, gammas = _official(8, gamma_init, 1e-9, 1e-8, max_tries)
  with jax.enable_x64(True):
    tx = gradtx.regularized_newton(gamma_init=gamma_init, max_tries=max_tries)
    params = jnp.asarray(_X0)
    state = tx.init(params)

    @jax.jit
    def step(p, s):
      value, grads = jax.value_and_grad(_loss)(p)
      u, s = tx.update(grads, s, p, value=value, loss_fn=_loss)
      return optax.apply_updates(p, u), s

    for w, gamma in zip(want, gammas):
      params, state = step(params, state)
      np.testing.assert_allclose(np.asarray(params), w, rtol=1e-9, atol=1e-12)
      assert float(state[0].gamma) == pytest.approx(gamma, rel=1e-6)
  assert _f(want[-1]) < _f(_X0)


def test_rejections_are_counted():
  tx = gradtx.scale_by_regularized_newton(gamma_init=1e6, max_tries=3)
  params = jnp.asarray(_X0, jnp.float32)
  _, state = tx.update(jax.grad(_loss)(params), tx.init(params), params, value=_loss(params), loss_fn=_loss)
  assert 1 <= int(state.tries) <= 3 and float(state.gamma) < 1e6


@pytest.mark.parametrize(
    "kwargs,name",
    [({"gamma_init": 0.0}, "gamma_init"), ({"gamma_min": -1.0}, "gamma_min"), ({"eps": -1.0}, "eps"), ({"max_tries": 0}, "max_tries")],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.scale_by_regularized_newton(**kwargs)
