"""SPSA / MeZO: finite differences, the official update rule step by step, data parallelism."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

_RNG = np.random.default_rng(0)
_X = _RNG.normal(size=(16, 5))
_Y = _RNG.normal(size=(16, 3))


def _loss_np(w, b):
  return 0.5 * np.mean(np.sum((_X @ w + b - _Y) ** 2, axis=-1)) + 0.1 * np.sum(np.sin(w))


def _loss(p, x=_X, y=_Y):
  pred = x @ p["w"] + p["b"]
  return 0.5 * jnp.mean(jnp.sum((pred - y) ** 2, axis=-1)) + 0.1 * jnp.sum(jnp.sin(p["w"]))


def _params():
  return {"b": jnp.zeros(3, jnp.float32), "w": jnp.asarray(0.3 * _RNG.normal(size=(5, 3)), jnp.float32)}


def _z(params, step, sample=0, **kw):
  z = gradtx.spsa_direction(params, seed=7, step=step, sample=sample, **kw)
  return {k: np.asarray(v, np.float64) for k, v in z.items()}


@pytest.mark.parametrize("distribution", ["normal", "rademacher"])
def test_estimate_is_the_central_difference_along_the_regenerated_direction(distribution):
  params, eps = _params(), 1e-2
  tx = gradtx.scale_by_spsa(eps, seed=7, distribution=distribution)
  u, state = tx.update(params, tx.init(params), params, loss_fn=_loss)
  z = _z(params, 0, distribution=distribution)
  w, b = np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)
  g_hat = (_loss_np(w + eps * z["w"], b + eps * z["b"]) - _loss_np(w - eps * z["w"], b - eps * z["b"])) / (2 * eps)
  for k in ("w", "b"):
    np.testing.assert_allclose(np.asarray(u[k]), g_hat * z[k], rtol=2e-4, atol=1e-5)
  # ... which is the directional derivative up to O(ε²)
  grad = jax.grad(_loss)(jax.tree.map(lambda a: a.astype(jnp.float32), params))
  directional = sum(float(np.sum(np.asarray(grad[k]) * z[k])) for k in ("w", "b"))
  assert g_hat == pytest.approx(directional, rel=1e-3, abs=1e-4)
  if distribution == "rademacher":
    assert set(np.abs(z["w"]).ravel()) == {1.0}
  assert int(state.count) == 1


def test_average_of_many_estimates_is_the_gradient():
  params = _params()
  tx = gradtx.scale_by_spsa(1e-2, seed=1, num_samples=4000)
  u, _ = jax.jit(lambda p: tx.update(p, tx.init(p), p, loss_fn=_loss))(params)
  grad = jax.grad(_loss)(params)
  err = np.linalg.norm(np.concatenate([np.ravel(u[k] - grad[k]) for k in grad]))
  norm = np.linalg.norm(np.concatenate([np.ravel(grad[k]) for k in grad]))
  assert err < 0.15 * norm  # relative standard error sqrt((d + 2) / n) ≈ 0.08


def _mezo_reference(params, steps, lr, eps, wd, decay_mask, n):
  """MeZO's zo_step / zo_update (SGD) in float64, with the perturbations regenerated from the seed."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  for t in range(steps):
    update = {k: np.zeros_like(v) for k, v in p.items()}
    for s in range(n):
      z = _z(params, t, s)
      plus = _loss_np(p["w"] + eps * z["w"], p["b"] + eps * z["b"])
      minus = _loss_np(p["w"] - eps * z["w"], p["b"] - eps * z["b"])
      for k in p:
        update[k] += (plus - minus) / (2 * eps) * z[k] / n
    p = {k: p[k] - lr * (update[k] + (wd * p[k] if decay_mask[k] else 0.0)) for k in p}
  return p


def test_mezo_follows_the_official_update_with_decay_mask_and_samples():
  params, mask = _params(), {"b": False, "w": True}
  tx = gradtx.mezo(0.05, eps=1e-2, weight_decay=0.1, mask=mask, seed=7, num_samples=2)
  expected = _mezo_reference(params, 4, 0.05, 1e-2, 0.1, mask, 2)
  state, p = tx.init(params), params
  step = jax.jit(lambda p, s: tx.update(p, s, p, loss_fn=_loss))
  for _ in range(4):
    u, state = step(p, state)
    p = optax.apply_updates(p, u)
  for k in p:
    np.testing.assert_allclose(np.asarray(p[k]), expected[k], rtol=1e-4, atol=1e-5)


def test_mezo_adam_is_adam_on_the_estimate():
  params = _params()
  tx = gradtx.mezo_adam(0.01, eps=1e-2, seed=7, num_samples=2)
  spsa = gradtx.scale_by_spsa(1e-2, seed=7, num_samples=2)
  m = {k: np.zeros(v.shape) for k, v in params.items()}
  v = {k: np.zeros(v.shape) for k, v in params.items()}
  state, s_state, p = tx.init(params), spsa.init(params), params
  for t in range(1, 4):
    g, s_state = spsa.update(p, s_state, p, loss_fn=_loss)
    u, state = tx.update(p, state, p, loss_fn=_loss)
    for k in p:
      gk = np.asarray(g[k], np.float64)
      m[k] = 0.9 * m[k] + 0.1 * gk
      v[k] = 0.999 * v[k] + 0.001 * gk**2
      want = -0.01 * (m[k] / (1 - 0.9**t)) / (np.sqrt(v[k] / (1 - 0.999**t)) + 1e-8)
      np.testing.assert_allclose(np.asarray(u[k]), want, rtol=1e-5, atol=1e-7)
    p = optax.apply_updates(p, u)


def test_data_parallel_exchanges_one_scalar_per_sample_and_equals_full_batch():
  n_dev, n = 8, 3
  params = _params()
  tx_dp = gradtx.scale_by_spsa(1e-1, seed=2, num_samples=n, axis_name="d")
  tx_one = gradtx.scale_by_spsa(1e-1, seed=2, num_samples=n)
  xs, ys = jnp.asarray(_X.reshape(n_dev, 2, 5)), jnp.asarray(_Y.reshape(n_dev, 2, 3))

  def local(p, x, y):
    return tx_dp.update(p, tx_dp.init(p), p, loss_fn=lambda q: _loss(q, x, y))[0]

  rep = jax.tree.map(lambda a: jnp.broadcast_to(a, (n_dev, *a.shape)), params)
  got = jax.pmap(local, axis_name="d")(rep, xs, ys)
  want = tx_one.update(params, tx_one.init(params), params, loss_fn=_loss)[0]
  for k in want:
    for r in range(n_dev):
      np.testing.assert_allclose(np.asarray(got[k][r]), np.asarray(want[k]), rtol=1e-4, atol=1e-5)
  jaxpr = jax.make_jaxpr(jax.pmap(local, axis_name="d"))(rep, xs, ys)
  collectives = []

  def walk(j):
    for eqn in j.eqns:
      if eqn.primitive.name in ("psum", "pmean", "all_gather", "all_to_all", "ppermute", "pmax", "pmin"):
        collectives.append([v.aval.shape for v in eqn.invars])
      for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else []:
        walk(sub)
      for param in eqn.params.values():
        inner = getattr(param, "jaxpr", param)
        if hasattr(inner, "eqns"):
          walk(inner)

  walk(jaxpr.jaxpr)
  assert collectives and all(shape == () for c in collectives for shape in c), collectives


def test_invalid_arguments_and_missing_inputs():
  for kwargs, name in (({"eps": 0.0}, "eps"), ({"num_samples": 0}, "num_samples"), ({"seed": 1.5}, "seed"),
                       ({"distribution": "uniform"}, "distribution")):
    with pytest.raises(ValueError, match=name):
      gradtx.scale_by_spsa(**kwargs)
  with pytest.raises(ValueError, match="adam_eps"):
    gradtx.mezo_adam(0.1, adam_eps=0.0)
  tx, params = gradtx.scale_by_spsa(), _params()
  with pytest.raises(ValueError, match="params"):
    tx.update(params, tx.init(params), None, loss_fn=_loss)
  with pytest.raises(TypeError, match="loss_fn"):
    tx.update(params, tx.init(params), params)
