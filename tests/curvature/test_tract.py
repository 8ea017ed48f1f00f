"""TrAct against the official closed form (Felix-Petersen/tract src/tract.py, both branches, Linear and Conv2d)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import gradtx

_RNG = np.random.default_rng(0)


def _official_linear(x, delta, lam):
  """TrActLinearFunction.backward's weight gradient in torch layout (out, n)."""
  b, n = x.shape
  if b < n:
    aat = x @ x.T / b
    inner = aat @ np.linalg.inv(aat / lam + np.eye(b))
    return delta.T @ (np.eye(b) - inner / lam) @ x / lam
  return delta.T @ x @ np.linalg.inv(x.T @ x / b + lam * np.eye(n))


@pytest.mark.parametrize("batch", [16, 3])  # b >= n and b < n (the official Woodbury branch)
def test_dense_matches_official(batch):
  n, out, lam = 5, 3, 0.1
  x = _RNG.normal(size=(batch, n)).astype(np.float32)
  t = _RNG.normal(size=(batch, out)).astype(np.float32)
  params = {"kernel": jnp.asarray(_RNG.normal(size=(n, out)), jnp.float32), "bias": jnp.zeros(out)}
  loss = lambda p: jnp.mean(jnp.sum((x @ p["kernel"] + p["bias"] - t) ** 2, axis=-1))
  grads = jax.grad(loss)(params)
  delta = 2 * (x @ np.asarray(params["kernel"]) - t) / batch  # dL/dy
  tx = gradtx.scale_by_tract(lam)
  u, _ = tx.update(grads, tx.init(params), params, layer_inputs=x)
  np.testing.assert_allclose(u["kernel"], _official_linear(x, delta, lam).T, rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(u["bias"], grads["bias"])


def test_conv_patches_and_official_conv_gradient():
  lam = 0.1
  conv = nnx.Conv(2, 3, kernel_size=(3, 3), padding="SAME", rngs=nnx.Rngs(0))
  x = jnp.asarray(_RNG.normal(size=(2, 5, 5, 2)), jnp.float32)
  kernel = conv.kernel[...]
  patches = gradtx.conv_patches(x, (3, 3), 1, "SAME")
  np.testing.assert_allclose(
      (patches @ kernel.reshape(-1, 3)).reshape(2, 5, 5, 3), conv(x) - conv.bias[...], rtol=1e-5, atol=1e-5
  )
  t = jnp.asarray(_RNG.normal(size=(2, 5, 5, 3)), jnp.float32)
  loss = lambda k: jnp.mean((jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) - t) ** 2)
  g = jax.grad(loss)(kernel)
  tx = gradtx.scale_by_tract(lam)
  u, _ = tx.update({"kernel": g}, tx.init({"kernel": g}), layer_inputs=patches)
  # Official (torch layout): unfold features ordered (in, kh, kw); grad_weight.reshape(out, -1) @ inv(aᵀa/b + λI).
  a = np.asarray(patches).reshape(-1, 3, 3, 2).transpose(0, 3, 1, 2).reshape(-1, 18)
  g_torch = np.asarray(g).transpose(3, 2, 0, 1).reshape(3, -1)
  want = (g_torch @ np.linalg.inv(a.T @ a / len(a) + lam * np.eye(18))).reshape(3, 2, 3, 3).transpose(2, 3, 1, 0)
  np.testing.assert_allclose(u["kernel"], want, rtol=1e-4, atol=1e-6)


def test_mask_selects_leaves_and_shapes_are_checked():
  x = jnp.ones((4, 5))
  g = {"first": jnp.ones((5, 3)), "second": jnp.ones((3, 2))}
  tx = gradtx.scale_by_tract(mask={"first": True, "second": False})
  u, _ = tx.update(g, tx.init(g), layer_inputs=x)
  np.testing.assert_array_equal(u["second"], g["second"])
  assert not np.allclose(u["first"], g["first"])
  with pytest.raises(ValueError, match="layer_inputs"):
    gradtx.scale_by_tract().update(g, optax.EmptyState(), layer_inputs=x)  # "second" has 3 input rows, not 5
  with pytest.raises(TypeError, match="layer_inputs"):
    tx.update(g, tx.init(g))


def test_invalid_damping():
  with pytest.raises(ValueError, match="damping"):
    gradtx.scale_by_tract(0.0)
