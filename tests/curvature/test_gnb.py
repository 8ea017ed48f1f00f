"""Sophia-G's Gauss-Newton-Bartlett estimator: its expectation, its exact formula and options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from tests import tolerances

_RNG = np.random.default_rng(0)
_X = _RNG.normal(size=(24, 3)).astype(np.float32)
_W = (0.7 * _RNG.normal(size=(3, 4))).astype(np.float32)


def _logits_fn(p):
  return jnp.asarray(_X) @ p["w"] + p["b"]


def _params():
  return {"w": jnp.asarray(_W), "b": jnp.asarray([0.1, -0.2, 0.3, 0.0], jnp.float32)}


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_expectation_is_the_gauss_newton_diagonal():
  """E[B ĝ²] = diag((1/B) Σ_b J_bᵀ (diag p_b − p_b p_bᵀ) J_b) exactly; checked within 5 standard errors."""
  est, params, n = gradtx.estimate_hessian_diag_gnb(seed=3), _params(), 3000

  def body(state, _):
    h, state = est.update(params, state, params, logits_fn=_logits_fn)
    return state, h

  _, samples = jax.jit(lambda s: jax.lax.scan(body, s, None, n))(est.init(params))
  p = _softmax(_X @ _W + np.asarray(params["b"]))
  want = {"w": (_X**2).T @ (p * (1 - p)) / len(_X), "b": np.mean(p * (1 - p), axis=0)}
  for k in want:
    s = np.asarray(samples[k], np.float64)
    se = s.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(s.mean(axis=0) - want[k]) < 5 * se + 1e-7), k


def test_formula_with_documented_key_scheme():
  seed, params = 5, _params()
  est = gradtx.estimate_hessian_diag_gnb(seed=seed)
  state = est.init(params)
  _, state = est.update(params, state, params, logits_fn=_logits_fn)  # count 0 -> 1
  h, _ = est.update(params, state, params, logits_fn=_logits_fn)
  logits = _X @ _W + np.asarray(params["b"])
  key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
  noise = np.stack([np.asarray(jax.random.gumbel(jax.random.fold_in(key, i), (4,))) for i in range(len(_X))])
  labels = np.argmax(logits + noise, axis=-1)
  delta = (_softmax(logits) - np.eye(4)[labels]) / len(_X)
  g = {"w": _X.T @ delta, "b": delta.sum(0)}
  for k in g:
    np.testing.assert_allclose(h[k], len(_X) * g[k] ** 2, rtol=1e-5, atol=1e-9)


def test_batch_tokens_and_clip_norm():
  params = _params()
  base, _ = (e := gradtx.estimate_hessian_diag_gnb(seed=0)).update(params, e.init(params), params, logits_fn=_logits_fn)
  scaled, _ = (e := gradtx.estimate_hessian_diag_gnb(seed=0, batch_tokens=480.0)).update(
      params, e.init(params), params, logits_fn=_logits_fn
  )
  np.testing.assert_allclose(scaled["w"], base["w"] * 480.0 / len(_X), rtol=1e-5)
  norm = np.sqrt(sum(float(np.sum(v / len(_X))) for v in jax.tree.leaves(base)))  # ||ĝ|| from B ĝ²
  clip = norm / 4
  clipped, _ = (e := gradtx.estimate_hessian_diag_gnb(seed=0, clip_norm=clip)).update(
      params, e.init(params), params, logits_fn=_logits_fn
  )
  np.testing.assert_allclose(clipped["w"], base["w"] * (clip / (norm + 1e-6)) ** 2, rtol=1e-4)


def test_sequence_logits_count_every_position():
  x = jnp.asarray(_RNG.normal(size=(2, 5, 3)), jnp.float32)  # batch x sequence x features
  est = gradtx.estimate_hessian_diag_gnb(seed=0)
  params = {"w": jnp.asarray(_W)}
  h, _ = est.update(params, est.init(params), params, logits_fn=lambda p: x @ p["w"])
  flat, _ = est.update(params, est.init(params), params, logits_fn=lambda p: x.reshape(10, 3) @ p["w"])
  # The same 10 positions summed in another order (3-D batch vs flattened): ≤ sum_rtol(10) per term, and
  # the estimate is a sum of squares (no cancellation); x4 for the chained products before it.
  np.testing.assert_allclose(h["w"], flat["w"], rtol=4 * tolerances.sum_rtol(10))


def test_missing_logits_fn_is_a_type_error():
  est = gradtx.estimate_hessian_diag_gnb(seed=0)
  with pytest.raises(TypeError, match="logits_fn"):
    est.update(_params(), est.init(_params()), _params(), loss_fn=lambda p: 0.0)


@pytest.mark.parametrize(
    "kwargs,name",
    [({"seed": "0"}, "seed"), ({"seed": 0, "batch_tokens": 0.0}, "batch_tokens"), ({"seed": 0, "clip_norm": -1.0}, "clip_norm")],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.estimate_hessian_diag_gnb(**kwargs)
