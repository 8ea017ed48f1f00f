"""Annealed gradient noise (Neelakantan et al. 2015): σ_t² = η / (1 + t)^γ, t = 0, 1, ..."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from tests import tolerances


def test_noise_is_the_papers_schedule_and_key_scheme():
  eta, gamma, seed = 0.3, 0.55, 7
  tx = gradtx.add_gradient_noise(eta, gamma, seed=seed)
  g = {"a": jnp.zeros((3, 4)), "b": jnp.ones(5)}
  state = tx.init(g)
  for t in range(4):
    out, state = jax.jit(tx.update)(g, state)
    std = np.sqrt(eta / (1.0 + t) ** gamma)
    keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), t), 2)
    for (k, x), key in zip(sorted(g.items()), keys):
      expected = np.asarray(x) + std * np.asarray(jax.random.normal(key, x.shape, jnp.float32))
      # x + std·z elementwise, std through a pow (a few-ulp transcendental): a few roundings apart
      np.testing.assert_allclose(np.asarray(out[k]), expected, rtol=tolerances.ELEMENTWISE_RTOL, atol=1e-7)


def test_noise_variance_matches_optax_add_noise_schedule():
  """Same standard deviation as optax.add_noise (which follows the paper), checked on many coordinates."""
  eta, gamma = 1.0, 0.55
  g = jnp.zeros(200_000)
  ours, reference = gradtx.add_gradient_noise(eta, gamma), optax.add_noise(eta, gamma, key=0)
  s1, s2 = ours.init(g), reference.init(g)
  for _ in range(3):
    a, s1 = ours.update(g, s1)
    b, s2 = reference.update(g, s2)
    assert float(jnp.std(a)) == pytest.approx(float(jnp.std(b)), rel=0.01)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_dtype_kept(dtype):
  tx = gradtx.add_gradient_noise()
  g = jnp.ones(8, dtype)
  out, state = tx.update(g, tx.init(g))
  assert out.dtype == dtype
  assert state.key.dtype == jnp.uint32


def test_seed_determines_noise_and_state_is_restorable():
  g = jnp.zeros(6)
  a = gradtx.add_gradient_noise(seed=1)
  b = gradtx.add_gradient_noise(seed=2)
  sa, sb = a.init(g), b.init(g)
  _, sa = a.update(g, sa)
  restored = jax.tree.map(lambda x: np.asarray(x).copy(), sa)
  u1, _ = a.update(g, sa)
  u2, _ = a.update(g, jax.tree.map(jnp.asarray, restored))
  np.testing.assert_array_equal(np.asarray(u1), np.asarray(u2))
  assert not np.allclose(np.asarray(a.update(g, a.init(g))[0]), np.asarray(b.update(g, sb)[0]))


@pytest.mark.parametrize("kwargs, name", [({"eta": -0.1}, "eta"), ({"gamma": -1.0}, "gamma"), ({"seed": 0.5}, "seed")])
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.add_gradient_noise(**kwargs)
