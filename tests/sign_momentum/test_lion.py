"""Lion / Lion-K / Signum against a NumPy transcription of the official update (google/automl lion)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

_RNG = np.random.default_rng(0)
_PARAMS = {"w": _RNG.normal(size=(4, 3)), "b": _RNG.normal(size=(3,))}
_GRADS = [{k: _RNG.normal(size=v.shape) for k, v in _PARAMS.items()} for _ in range(8)]


def _numpy_lion(lr, b1, b2, wd, direction, params, grads, coupled=False):
  """lion_pytorch.py: p *= 1 - lr*wd; p -= lr * sign(b1 m + (1-b1) g); m = b2 m + (1-b2) g."""
  params = {k: v.copy() for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in params.items()}
  out = []
  for g in grads:
    for k in params:
      gk = g[k] + wd * params[k] if coupled else g[k]
      c = b1 * m[k] + (1 - b1) * gk
      if not coupled:
        params[k] = params[k] * (1 - lr * wd)
      params[k] = params[k] - lr * direction(c)
      m[k] = b2 * m[k] + (1 - b2) * gk
    out.append({k: v.copy() for k, v in params.items()})
  return out


def _run(tx, params, grads):
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  state = tx.init(params)
  out = []
  for g in grads:
    u, state = tx.update(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g), state, params)
    params = optax.apply_updates(params, u)
    out.append(params)
  return out


@pytest.mark.parametrize(
    "mode,direction",
    [
        ("hard", np.sign),
        ("smooth", lambda c: np.tanh(2.0 * c)),
        ("refined", lambda c: np.clip(c, -1.0, 1.0)),
    ],
)
def test_lion_matches_numpy(mode, direction):
  tx = gradtx.lion(0.1, b1=0.8, b2=0.95, weight_decay=0.3, mode=mode, smooth_beta=2.0)
  want = _numpy_lion(0.1, 0.8, 0.95, 0.3, direction, _PARAMS, _GRADS)
  for got, exp in zip(_run(tx, _PARAMS, _GRADS), want):
    for k in exp:
      np.testing.assert_allclose(got[k], exp[k], rtol=1e-5, atol=1e-6)


def test_lion_k_user_gradient_l2_norm():
  kappa = lambda c: c / (jnp.linalg.norm(c) + 1e-12)
  tx = gradtx.lion(0.05, weight_decay=0.1, kappa_grad=kappa)
  want = _numpy_lion(0.05, 0.9, 0.99, 0.1, lambda c: c / (np.linalg.norm(c) + 1e-12), _PARAMS, _GRADS)
  for got, exp in zip(_run(tx, _PARAMS, _GRADS), want):
    for k in exp:
      np.testing.assert_allclose(got[k], exp[k], rtol=1e-5, atol=1e-6)


def test_signum_is_sign_of_momentum_with_coupled_decay():
  tx = gradtx.signum(0.1, momentum=0.7, weight_decay=0.2)
  want = _numpy_lion(0.1, 0.7, 0.7, 0.2, np.sign, _PARAMS, _GRADS, coupled=True)
  for got, exp in zip(_run(tx, _PARAMS, _GRADS), want):
    for k in exp:
      np.testing.assert_allclose(got[k], exp[k], rtol=1e-5, atol=1e-6)


def test_lion_box_constraint():
  """With decay λ, Lion's iterates end in the box ||θ||∞ <= 1/λ (Lion-K's constrained view)."""
  f = lambda p: jnp.sum((p - 10.0) ** 2)
  tx = gradtx.lion(0.01, weight_decay=0.5)
  def step(carry, _):
    p, state = carry
    u, state = tx.update(jax.grad(f)(p), state, p)
    return (optax.apply_updates(p, u), state), None

  p = jnp.zeros(4)
  p, _ = jax.lax.scan(step, (p, tx.init(p)), None, 1500)[0]
  assert float(jnp.max(jnp.abs(p))) <= 1 / 0.5 + 0.02


def test_mu_dtype():
  tx = gradtx.scale_by_lion(mu_dtype=jnp.bfloat16)
  state = tx.init({"w": jnp.ones(3)})
  assert state.mu["w"].dtype == jnp.bfloat16
  u, state = tx.update({"w": jnp.ones(3)}, state)
  assert u["w"].dtype == jnp.float32 and state.mu["w"].dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "kwargs,arg",
    [
        ({"b1": 1.0}, "b1"),
        ({"b1": -0.1}, "b1"),
        ({"b2": 1.5}, "b2"),
        ({"mode": "soft"}, "mode"),
        ({"smooth_beta": 0.0}, "smooth_beta"),
        ({"kappa_grad": 3}, "kappa_grad"),
    ],
)
def test_invalid_arguments(kwargs, arg):
  with pytest.raises(ValueError, match=arg):
    gradtx.lion(0.1, **kwargs)


@pytest.mark.parametrize("kwargs,arg", [({"learning_rate": -1.0}, "learning_rate"), ({"weight_decay": "x"}, "weight_decay")])
def test_invalid_full_optimizer_arguments(kwargs, arg):
  with pytest.raises(ValueError, match=arg):
    gradtx.lion(**{"learning_rate": 0.1, **kwargs})
  with pytest.raises(ValueError, match=arg):
    gradtx.signum(**{"learning_rate": 0.1, **kwargs})
