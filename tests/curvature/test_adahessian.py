"""AdaHessian against a NumPy transcription of the official optim_adahessian.py on separable problems (diagonal
Hessian, so one Rademacher probe is exact), including conv-kernel spatial averaging in Flax layout."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

_RNG = np.random.default_rng(0)
# "k" is a conv kernel in Flax layout (kh, kw, in, out); "v" a bias.
_A = {"k": _RNG.choice([-0.5, 1.0, 3.0], size=(3, 3, 2, 4)), "v": _RNG.choice([-0.5, 1.0, 3.0], size=(4,))}
_C = {k: _RNG.normal(size=v.shape) for k, v in _A.items()}
_X0 = {k: _C[k] + _RNG.normal(size=v.shape) for k, v in _A.items()}


def _grad(theta):
  return {k: 2 * _A[k] * (theta[k] - _C[k]) + (theta[k] - _C[k]) ** 3 for k in theta}


def _hess_diag(theta):
  return {k: 2 * _A[k] + 3 * (theta[k] - _C[k]) ** 2 for k in theta}


def _loss(p):
  # Constants cast to the params' dtype: eager ops on raw float64 NumPy constants can hit a JAX dispatch-cache
  # entry compiled under another jax.enable_x64 setting.
  a = {k: jnp.asarray(_A[k], p[k].dtype) for k in p}
  c = {k: jnp.asarray(_C[k], p[k].dtype) for k in p}
  return sum(jnp.sum(a[k] * (p[k] - c[k]) ** 2 + 0.25 * (p[k] - c[k]) ** 4) for k in p)


def _official(lr, b1, b2, eps, wd, power, steps, conv_average, interval=1):
  """optim_adahessian.py (``Adahessian.step``), with gradtx's ``update_interval`` (s updated every ``interval``
  steps, bias-corrected by the number of estimates). 4-D tensors are averaged over torch dims (2, 3)."""
  theta = {k: v.copy() for k, v in _X0.items()}
  m = {k: np.zeros_like(v) for k, v in theta.items()}
  s = {k: np.zeros_like(v) for k, v in theta.items()}
  out, n_est = [], 0
  for t in range(1, steps + 1):
    g = _grad(theta)
    refresh = (t - 1) % interval == 0
    if refresh:
      hv = {k: np.abs(v) for k, v in _hess_diag(theta).items()}
      if conv_average:
        torch_k = hv["k"].transpose(3, 2, 0, 1)  # (out, in, kh, kw)
        torch_k = np.broadcast_to(torch_k.mean(axis=(2, 3), keepdims=True), torch_k.shape)
        hv["k"] = torch_k.transpose(2, 3, 1, 0)
      n_est += 1
    for k in theta:
      m[k] = b1 * m[k] + (1 - b1) * g[k]
      if refresh:
        s[k] = b2 * s[k] + (1 - b2) * hv[k] * hv[k]
      denom = (np.sqrt(s[k]) ** power) / (np.sqrt(1 - b2**n_est) ** power) + eps
      theta[k] = theta[k] - lr * (m[k] / (1 - b1**t) / denom + wd * theta[k])
    out.append({k: v.copy() for k, v in theta.items()})
  return out


@pytest.mark.parametrize(
    "power,conv_average,interval",
    [(1.0, False, 1), (0.5, False, 1), (1.0, True, 1), (1.0, True, 3), (0.5, False, 2)],
)
def test_matches_official_recurrence(power, conv_average, interval):
  lr, b1, b2, eps, wd = 0.1, 0.9, 0.99, 1e-4, 0.05
  want = _official(lr, b1, b2, eps, wd, power, 12, conv_average, interval)
  with jax.enable_x64(True):
    tx = gradtx.adahessian(
        lr,
        b1,
        b2,
        eps,
        power,
        wd,
        spatial_average="conv" if conv_average else None,
        update_interval=interval,
    )
    params = {k: jnp.asarray(v) for k, v in _X0.items()}
    state = tx.init(params)
    step = jax.jit(lambda p, s: tx.update(jax.grad(_loss)(p), s, p, loss_fn=_loss))
    for w in want:
      u, state = step(params, state)
      params = optax.apply_updates(params, u)
      for k in w:
        np.testing.assert_allclose(np.asarray(params[k]), w[k], rtol=1e-6, atol=1e-7)


def test_hessian_count_drives_the_second_bias_correction():
  tx = gradtx.scale_by_adahessian(update_interval=4)
  params = {k: jnp.asarray(v, jnp.float32) for k, v in _X0.items()}
  state = tx.init(params)
  for _ in range(6):
    _, state = tx.update(jax.grad(_loss)(params), state, params, loss_fn=_loss)
  assert int(state.count) == 6 and int(state.hessian_count) == 2


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"b1": 1.0}, "b1"),
        ({"b2": 1.5}, "b2"),
        ({"eps": -1.0}, "eps"),
        ({"hessian_power": 0.0}, "hessian_power"),
        ({"hessian_power": 1.5}, "hessian_power"),
        ({"update_interval": 0}, "update_interval"),
        ({"spatial_average": "window"}, "spatial_average"),
        ({"n_probes": 0}, "n_probes"),
        ({"distribution": "normal"}, "distribution"),
    ],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.scale_by_adahessian(**kwargs)
