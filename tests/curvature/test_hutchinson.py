"""Hutchinson's diagonal estimator: exactness, unbiasedness, AdaHessian's |·| and spatial averaging."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx.curvature import hutchinson

_RNG = np.random.default_rng(0)
_D = {"k": _RNG.uniform(-2, 3, size=(3, 3, 2, 4)), "v": _RNG.uniform(-2, 3, size=(5,))}


def _diag_loss(p):
  """0.5 Σ d ⊙ θ²: Hessian diag(d), signs mixed."""
  return sum(0.5 * jnp.sum(_D[k] * p[k] ** 2) for k in p)


def _estimate(params, loss_fn, **kw):
  est = gradtx.estimate_hessian_diag_hutchinson(**{"seed": 0, **kw})
  out, state = est.update(params, est.init(params), params, loss_fn=loss_fn)
  return out, state


def _params():
  return {k: jnp.asarray(_RNG.normal(size=v.shape), jnp.float32) for k, v in _D.items()}


def test_rademacher_is_exact_for_a_diagonal_hessian():
  out, state = _estimate(_params(), _diag_loss, n_probes=3)
  for k in _D:
    np.testing.assert_allclose(out[k], _D[k], rtol=1e-6)
  assert int(state.count) == 1


def test_gaussian_is_unbiased():
  a = _RNG.normal(size=(4, 4))
  h = a @ a.T
  loss = lambda p: 0.5 * p @ jnp.asarray(h, jnp.float32) @ p
  out, _ = _estimate(jnp.zeros(4), loss, n_probes=4000, distribution="gaussian")
  # Var of one sample z_i (Hz)_i for Gaussian z is H_ii^2 + sum_j H_ij^2.
  se = np.sqrt((np.diag(h) ** 2 + np.sum(h**2, axis=1)) / 4000)
  assert np.all(np.abs(np.asarray(out) - np.diag(h)) < 5 * se)


def test_absolute_and_fresh_probes():
  a = _RNG.normal(size=(3, 3))
  loss = lambda p: 0.5 * p @ jnp.asarray(a + a.T, jnp.float32) @ p
  est = gradtx.estimate_hessian_diag_hutchinson(seed=1, absolute=True)
  params = jnp.zeros(3)
  state = est.init(params)
  first, state = est.update(params, state, params, loss_fn=loss)
  second, state = est.update(params, state, params, loss_fn=loss)
  assert bool(jnp.all(first >= 0))
  assert not np.allclose(first, second), "probes must change from call to call"
  # Documented key scheme: fold_in(key(seed), estimate count), then the probe index, then the leaf index.
  key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(1), 0), 0), 0)
  z = jax.random.rademacher(key, (3,), jnp.float32)
  np.testing.assert_allclose(first, np.abs(np.asarray(z) * ((a + a.T) @ np.asarray(z))), rtol=1e-6)


def test_spatial_average_conv_flax_layout():
  out, _ = _estimate(_params(), _diag_loss, absolute=True, spatial_average="conv")
  # Official code: mean of |Hv| over the kernel window, dims (2, 3) of torch's (out, in, kh, kw) = dims (0, 1) here.
  torch_layout = np.abs(_D["k"]).transpose(3, 2, 0, 1)
  want = np.broadcast_to(torch_layout.mean(axis=(2, 3), keepdims=True), torch_layout.shape).transpose(2, 3, 1, 0)
  np.testing.assert_allclose(out["k"], want, rtol=1e-6)
  np.testing.assert_allclose(out["v"], np.abs(_D["v"]), rtol=1e-6)  # 1-D leaves are not averaged


def test_spatial_average_blocks_and_3d():
  x = jnp.arange(24.0).reshape(2, 3, 4)
  np.testing.assert_allclose(
      hutchinson.spatial_average_leaf(x, 6), np.repeat(np.arange(24.0).reshape(-1, 6).mean(1), 6).reshape(2, 3, 4)
  )
  np.testing.assert_allclose(hutchinson.spatial_average_leaf(x, "conv"), np.broadcast_to(x.mean(0), x.shape))
  np.testing.assert_array_equal(hutchinson.spatial_average_leaf(jnp.arange(5.0), 5), jnp.arange(5.0))
  with pytest.raises(ValueError, match="spatial_average"):
    hutchinson.spatial_average_leaf(x, 5)


def test_missing_loss_fn_is_a_type_error():
  est = gradtx.estimate_hessian_diag_hutchinson(seed=0)
  params = jnp.zeros(2)
  with pytest.raises(TypeError, match="loss_fn"):
    est.update(params, est.init(params), params)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"seed": 0.5}, "seed"),
        ({"seed": 0, "n_probes": 0}, "n_probes"),
        ({"seed": 0, "distribution": "uniform"}, "distribution"),
        ({"seed": 0, "spatial_average": "rows"}, "spatial_average"),
        ({"seed": 0, "spatial_average": 0}, "spatial_average"),
        ({"seed": 0, "absolute": "yes"}, "absolute"),
    ],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.estimate_hessian_diag_hutchinson(**kwargs)
