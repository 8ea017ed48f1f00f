"""Just One Byte: per-replica perturbations, one all-gather of scalars, the same update on every replica."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx.zeroth_order import perturbation

N_DEV = 8
_RNG = np.random.default_rng(1)
_X = _RNG.normal(size=(N_DEV, 3, 4))
_Y = _RNG.normal(size=(N_DEV, 3))


def _loss_np(w, x, y):
  return np.mean((x @ w - y) ** 2) + 0.05 * np.sum(w**4)


def _loss(w, x, y):
  return jnp.mean((x @ w - y) ** 2) + 0.05 * jnp.sum(w**4)


@pytest.mark.parametrize("normalization", ["sqrt", "mean"])
@pytest.mark.parametrize("quantize", [False, True])
def test_update_equals_the_sum_of_every_replicas_estimates(normalization, quantize):
  n, eps, step = 2, 1e-2, 3
  w = jnp.asarray(_RNG.normal(size=4), jnp.float32)
  tx = gradtx.scale_by_just_one_byte(eps, seed=5, num_samples=n, normalization=normalization, quantize=quantize,
                                     axis_name="d")
  state = tx.init(w)._replace(count=jnp.int32(step))

  def local(w, x, y):
    return tx.update(w, state, w, loss_fn=lambda q: _loss(q, x, y))[0]

  rep = jnp.broadcast_to(w, (N_DEV, 4))
  got = np.asarray(jax.pmap(local, axis_name="d")(rep, jnp.asarray(_X, jnp.float32), jnp.asarray(_Y, jnp.float32)))

  # finite differences in float64 along the regenerated directions, replica by replica
  w64, want = np.asarray(w, np.float64), np.zeros(4)
  for r in range(N_DEV):
    for s in range(n):
      z = np.asarray(gradtx.spsa_direction(w, seed=5, step=step, sample=s, replica=r), np.float64)
      g = (_loss_np(w64 + eps * z, _X[r], _Y[r]) - _loss_np(w64 - eps * z, _X[r], _Y[r])) / (2 * eps)
      if quantize:
        g = float(perturbation.one_byte(jnp.float32(g)))
      want += g * z
  want /= np.sqrt(N_DEV * n) if normalization == "sqrt" else N_DEV * n
  for r in range(N_DEV):
    np.testing.assert_array_equal(got[r], got[0])  # every replica applies the same update
  np.testing.assert_allclose(got[0], want, rtol=2e-3 if quantize else 2e-4, atol=1e-4)


def test_one_byte_codec():
  g = jnp.asarray([0.0, 1.0, -2.5, 1e-6, 1e6, 3.3e-3], jnp.float32)
  out = np.asarray(perturbation.one_byte(g))
  assert out[0] == 0.0 and out[1] == 1.0 and out[2] < 0
  assert abs(out[2] / -2.5 - 1) < np.expm1(1 / 32) + 1e-6  # half a step of exp(1/16)
  np.testing.assert_allclose(out[3], np.exp(-127 / 16), rtol=1e-6)  # clipped below
  np.testing.assert_allclose(out[4], np.exp(127 / 16), rtol=1e-6)  # clipped above
  assert abs(out[5] / 3.3e-3 - 1) < np.expm1(1 / 32) + 1e-6


def test_replicas_draw_different_directions_and_exchange_only_scalars():
  w = jnp.zeros(4)
  z0 = gradtx.spsa_direction(w, seed=5, step=0, replica=0)
  z1 = gradtx.spsa_direction(w, seed=5, step=0, replica=1)
  assert not np.allclose(z0, z1)
  tx = gradtx.scale_by_just_one_byte(seed=5, num_samples=3, axis_name="d")
  fn = jax.pmap(lambda w, x, y: tx.update(w, tx.init(w), w, loss_fn=lambda q: _loss(q, x, y))[0], axis_name="d")
  text = str(jax.make_jaxpr(fn)(jnp.zeros((N_DEV, 4)), jnp.asarray(_X), jnp.asarray(_Y)))
  gathers = [line for line in text.splitlines() if "= all_gather[" in line]
  assert gathers and all("f32[3]" in line or "f32[8,3]" in line for line in gathers), gathers
  assert "psum" not in text and "pmean" not in text


def test_trains_and_validates():
  tx = gradtx.just_one_byte(0.05, num_samples=4, axis_name="d")
  for kwargs, name in (({"normalization": "n"}, "normalization"), ({"quantize": 1}, "quantize"),
                       ({"num_samples": 0}, "num_samples"), ({"eps": -1.0}, "eps")):
    with pytest.raises(ValueError, match=name):
      gradtx.scale_by_just_one_byte(**kwargs)
  target = jnp.arange(4.0)

  def train(w):
    def body(carry, _):
      w, state = carry
      u, state = tx.update(w, state, w, loss_fn=lambda q: jnp.sum((q - target) ** 2))
      return (w + u, state), None

    return jax.lax.scan(body, (w, tx.init(w)), None, 60)[0][0]

  w = jax.pmap(train, axis_name="d")(jnp.zeros((N_DEV, 4)))
  assert float(jnp.sum((w[0] - target) ** 2)) < 1e-2 * float(jnp.sum(target**2))
