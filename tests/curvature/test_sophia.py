"""Sophia against NumPy transcriptions: the official SophiaG loop (train_sophiag.py + sophia.py) and the paper's
Algorithm 3 closed-form recurrence on a quadratic with diagonal Hessian (Sophia-H)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

_RNG = np.random.default_rng(0)
_A = {"w": _RNG.choice([-0.5, 1.0, 3.0], size=(3, 2)), "b": _RNG.choice([-0.5, 1.0, 3.0], size=(4,))}
_C = {k: _RNG.normal(size=v.shape) for k, v in _A.items()}
_X0 = {k: _C[k] + _RNG.normal(size=v.shape) for k, v in _A.items()}


def _grad(theta):
  return {k: 2 * _A[k] * (theta[k] - _C[k]) + (theta[k] - _C[k]) ** 3 for k in theta}


def _loss(p):
  # Constants cast to the params' dtype: eager ops on raw float64 NumPy constants can hit a JAX dispatch-cache
  # entry compiled under another jax.enable_x64 setting.
  a = {k: jnp.asarray(_A[k], p[k].dtype) for k in p}
  c = {k: jnp.asarray(_C[k], p[k].dtype) for k in p}
  return sum(jnp.sum(a[k] * (p[k] - c[k]) ** 2 + 0.25 * (p[k] - c[k]) ** 4) for k in p)


def _g_hat(theta):
  """A deterministic stand-in for the sampled-label gradient ĝ (official ``update_hessian`` stores ĝ ⊙ ĝ)."""
  return {k: 0.3 * np.sin(theta[k]) + 0.05 for k in theta}


def _official_sophia_g(lr, b1, b2, rho, wd, bs, k, steps):
  """train_sophiag.py: step (decay, m, lr·sign(m)·min(|m|/(ρ·bs·h + 1e-15), 1)); after iteration t with
  t % k == k − 1, h ← β2 h + (1 − β2) ĝ² at the next params (the next batch; here batches are identical)."""
  theta = {kk: v.copy() for kk, v in _X0.items()}
  m = {kk: np.zeros_like(v) for kk, v in theta.items()}
  h = {kk: np.zeros_like(v) for kk, v in theta.items()}
  out = []
  for t in range(steps):
    g = _grad(theta)
    for kk in theta:
      theta[kk] = theta[kk] * (1 - lr * wd)
      m[kk] = b1 * m[kk] + (1 - b1) * g[kk]
      ratio = np.minimum(np.abs(m[kk]) / (rho * bs * h[kk] + 1e-15), 1.0)
      theta[kk] = theta[kk] - lr * np.sign(m[kk]) * ratio
    if t % k == k - 1:
      gh = _g_hat(theta)
      for kk in theta:
        h[kk] = b2 * h[kk] + (1 - b2) * gh[kk] ** 2
    out.append({kk: v.copy() for kk, v in theta.items()})
  return out


def _fixed_estimator(bs):
  """Returns bs · ĝ ⊙ ĝ at params (what estimate_hessian_diag_gnb returns, with ĝ made deterministic)."""

  def update(updates, state, params=None, **extra):
    del updates, extra
    return jax.tree.map(lambda p: bs * (0.3 * jnp.sin(p) + 0.05) ** 2, params), state

  return optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)


def _run(tx, steps, **extra):
  params = {k: jnp.asarray(v) for k, v in _X0.items()}

  @jax.jit
  def step(p, s):
    u, s = tx.update(jax.grad(_loss)(p), s, p, **extra)
    return optax.apply_updates(p, u), s

  state, out = tx.init(params), []
  for _ in range(steps):
    params, state = step(params, state)
    out.append(params)
  return out, state


@pytest.mark.parametrize("k", [1, 3])
def test_matches_official_sophia_g_loop(k):
  lr, b1, b2, rho, wd, bs = 0.05, 0.9, 0.8, 0.04, 0.2, 480.0
  want = _official_sophia_g(lr, b1, b2, rho, wd, bs, k, 20)
  with jax.enable_x64(True):
    tx = optax.chain(
        gradtx.scale_by_sophia(
            b1, b2, rho, 1e-15, hessian_diag=_fixed_estimator(bs), update_interval=k, estimate_at_start=False
        ),
        optax.add_decayed_weights(wd),
        optax.scale_by_learning_rate(lr),
    )
    got, _ = _run(tx, 20)
  for g, w in zip(got, want):
    for kk in w:
      np.testing.assert_allclose(np.asarray(g[kk]), w[kk], rtol=1e-6, atol=1e-7)


def _paper_sophia_h(lr, b1, b2, gamma, eps, wd, k, steps):
  """Algorithm 3 with the exact diagonal ĥ (a diagonal Hessian makes one Rademacher probe exact): refresh at
  t % k == 0 (0-based) and use it in the same step; clip(m / max(γh, ε), 1); decoupled decay."""
  theta = {kk: v.copy() for kk, v in _X0.items()}
  m = {kk: np.zeros_like(v) for kk, v in theta.items()}
  h = {kk: np.zeros_like(v) for kk, v in theta.items()}
  out, fractions = [], []
  for t in range(steps):
    g = _grad(theta)
    if t % k == 0:
      for kk in theta:
        h[kk] = b2 * h[kk] + (1 - b2) * (2 * _A[kk] + 3 * (theta[kk] - _C[kk]) ** 2)
    clipped = 0
    for kk in theta:
      m[kk] = b1 * m[kk] + (1 - b1) * g[kk]
      r = m[kk] / np.maximum(gamma * h[kk], eps)
      clipped += np.sum(np.abs(r) >= 1)
      theta[kk] = theta[kk] - lr * (np.clip(r, -1, 1) + wd * theta[kk])
    fractions.append(clipped / 10)
    out.append({kk: v.copy() for kk, v in theta.items()})
  return out, fractions


def test_sophia_h_follows_algorithm_3_on_a_diagonal_problem():
  """Includes negative curvature: h < 0 gives a sign step (paper, first official SophiaH's relu), never the
  unbounded uphill step of the released SophiaG code."""
  lr, b1, b2, gamma, eps, wd, k = 0.02, 0.9, 0.9, 0.5, 1e-12, 0.1, 2
  want, fractions = _paper_sophia_h(lr, b1, b2, gamma, eps, wd, k, 12)
  assert min(float(np.min(_A[kk])) for kk in _A) < 0
  with jax.enable_x64(True):
    tx = gradtx.sophia_h(lr, b1, b2, gamma, eps, wd, update_interval=k, distribution="rademacher")
    params = {kk: jnp.asarray(v) for kk, v in _X0.items()}
    state = tx.init(params)
    step = jax.jit(lambda p, s: tx.update(jax.grad(_loss)(p), s, p, loss_fn=_loss))
    for w, frac in zip(want, fractions):
      u, state = step(params, state)
      params = optax.apply_updates(params, u)
      assert float(state[0].clip_fraction) == pytest.approx(frac)
      for kk in w:
        np.testing.assert_allclose(np.asarray(params[kk]), w[kk], rtol=1e-6, atol=1e-7)


def test_estimate_runs_only_every_k_steps():
  calls = []

  def update(updates, state, params=None, **extra):
    del updates, extra
    return jax.tree.map(jnp.ones_like, params), state + 1

  counting = optax.GradientTransformationExtraArgs(lambda p: jnp.zeros([], jnp.int32), update)
  tx = gradtx.scale_by_sophia(hessian_diag=counting, update_interval=4)
  params = jnp.ones(3)
  state = tx.init(params)
  step = jax.jit(lambda s: tx.update(params, s, params))
  for _ in range(9):
    _, state = step(state)
    calls.append(int(state.estimator_state))
  assert calls == [1, 1, 1, 1, 2, 2, 2, 2, 3]


def test_mixed_dtype_tree_and_nan_gradients():
  params = {"w": jnp.ones((2, 3), jnp.float32), "e": jnp.ones((4,), jnp.bfloat16)}
  loss = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["e"].astype(jnp.float32) ** 4)
  tx = gradtx.sophia_h(1e-2)
  u, state = tx.update(jax.grad(loss)(params), tx.init(params), params, loss_fn=loss)
  assert u["w"].dtype == jnp.float32 and u["e"].dtype == jnp.bfloat16
  assert state[0].nu["e"].dtype == jnp.float32  # statistics in at least float32 (nu_dtype=None)
  assert state[0].mu["e"].dtype == jnp.bfloat16
  # NaN gradients are not hidden: they reach the update (so optax.apply_if_finite can skip the step).
  bad = jax.tree.map(lambda g: g.at[0].set(jnp.nan), jax.grad(loss)(params))
  u, _ = tx.update(bad, state, params, loss_fn=loss)
  assert not bool(jnp.all(jnp.isfinite(u["w"])))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"b1": 1.0}, "b1"),
        ({"b2": -0.1}, "b2"),
        ({"gamma": 0.0}, "gamma"),
        ({"eps": 0.0}, "eps"),
        ({"update_interval": 0}, "update_interval"),
        ({"estimate_at_start": None}, "estimate_at_start"),
        ({"hessian_diag": "hutchinson"}, "hessian_diag"),
    ],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.scale_by_sophia(**{"hessian_diag": gradtx.estimate_hessian_diag_hutchinson(seed=0), **kwargs})


def test_sophia_g_trains_softmax_regression():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(256, 6)), jnp.float32)
  y = jnp.argmax(x @ jnp.asarray(rng.normal(size=(6, 4)), jnp.float32), axis=-1)
  logits_fn = lambda p: x @ p["w"] + p["b"]
  loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(logits_fn(p), y).mean()
  params = {"w": jnp.zeros((6, 4)), "b": jnp.zeros(4)}
  tx = gradtx.sophia_g(0.05, weight_decay=0.0, estimate_at_start=False)
  state = tx.init(params)

  @jax.jit
  def step(p, s):
    u, s = tx.update(jax.grad(loss)(p), s, p, logits_fn=logits_fn)
    return optax.apply_updates(p, u), s

  first = loss(params)
  for _ in range(60):
    params, state = step(params, state)
  assert float(loss(params)) < 0.4 * float(first)
  assert 0.0 <= float(state[0].clip_fraction) < 1.0
