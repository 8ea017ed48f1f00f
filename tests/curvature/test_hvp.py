"""The shared Hessian-vector product module (gradtx.core.hvp)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.core import hvp


def _loss(p):
  return jnp.sum(jnp.sin(p["w"].astype(jnp.float32)) ** 2) * jnp.sum(p["b"].astype(jnp.float32) ** 3) + jnp.sum(
      p["w"].astype(jnp.float32) @ p["b"].astype(jnp.float32)
  )


def _params(w_dtype=jnp.float32, b_dtype=jnp.float32):
  return {"w": jnp.asarray([[0.3, -1.2], [0.7, 0.1], [2.0, -0.4]], w_dtype), "b": jnp.asarray([0.5, -1.5], b_dtype)}


def test_hvp_equals_dense_hessian_product():
  params = _params()
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  dense = jax.hessian(lambda f: _loss(unravel(f)))(flat)
  v = jax.random.normal(jax.random.key(3), flat.shape)
  got = jax.flatten_util.ravel_pytree(hvp.hvp(_loss, params, unravel(v)))[0]
  np.testing.assert_allclose(got, dense @ v, rtol=1e-5, atol=1e-5)


def test_mixed_f32_bf16_tree():
  params = _params(jnp.float32, jnp.bfloat16)
  z = hvp.probes(jax.random.PRNGKey(0), params, "rademacher")
  assert z["w"].dtype == jnp.float32 and z["b"].dtype == jnp.bfloat16
  out = hvp.hvp(_loss, params, z)
  assert out["w"].dtype == jnp.float32 and out["b"].dtype == jnp.bfloat16
  est = gradtx.estimate_hessian_diag_hutchinson(seed=0)
  diag, _ = est.update(params, est.init(params), params, loss_fn=_loss)
  assert diag["b"].dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(diag["w"])))


def test_optax_contrib_hutchinson_fails_on_mixed_trees():
  """The peer bug gradtx fixes (optax 0.2.8 casts every probe to the lowest dtype of the tree)."""
  params = _params(jnp.float32, jnp.bfloat16)
  est = optax.contrib.hutchinson_estimator_diag_hessian(jax.random.PRNGKey(0))
  with pytest.raises((TypeError, ValueError)):
    est.update(params, est.init(params), params, obj_fn=_loss)


def test_probes():
  params = _params()
  key = jax.random.PRNGKey(7)
  z = hvp.probes(key, params, "rademacher")
  assert set(np.unique(np.asarray(z["w"]))) <= {-1.0, 1.0}
  again = hvp.probes(key, params, "rademacher")
  np.testing.assert_array_equal(z["w"], again["w"])
  # A leaf's probe depends on its position among the visible leaves only, not on the other leaves' shapes.
  only_b = hvp.probes(key, {"b": params["b"], "w": optax.MaskedNode()}, "gaussian")
  np.testing.assert_array_equal(only_b["b"], hvp.probes(key, {"b": params["b"]}, "gaussian")["b"])


def test_fill_masked_leaves_differentiates_visible_leaves_only():
  full = _params()
  for hole in (None, optax.MaskedNode()):
    seen = {"w": full["w"], "b": hole}
    filled = gradtx.fill_masked_leaves(_loss, full)
    np.testing.assert_allclose(filled(seen), _loss(full), rtol=1e-6)
    np.testing.assert_allclose(filled(full), _loss(full), rtol=1e-6)
    sub = lambda p: _loss({"w": p["w"], "b": full["b"]})
    t = {"w": jnp.ones_like(full["w"]), "b": hole}
    got = hvp.hvp(filled, seen, t)
    assert got["b"] == hole
    np.testing.assert_allclose(got["w"], hvp.hvp(sub, {"w": full["w"]}, {"w": t["w"]})["w"], rtol=1e-6)
