"""With the batch split over 8 simulated devices and ``axis_name``, every curvature statistic equals the
single-device full-batch one (DESIGN contract item 8)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import gradtx
from gradtx.core.reduce import as_varying

_RNG = np.random.default_rng(0)
_X = jnp.asarray(_RNG.normal(size=(16, 3)), jnp.float32)
_Y = jnp.asarray(_RNG.integers(0, 4, size=16))
_PARAMS = {
    "k": jnp.asarray(0.5 * _RNG.normal(size=(1, 3, 3, 4)), jnp.float32),  # a conv-shaped leaf (Flax layout)
    "b": jnp.asarray(0.1 * _RNG.normal(size=(4,)), jnp.float32),
}


def _logits(p, x, y=None):
  del y
  return jnp.tanh(x @ p["k"].reshape(3, 3, 4).sum(0)) * 3.0 + p["b"]


def _loss(p, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(_logits(p, x), y).mean()


def _mesh():
  if len(jax.devices()) < 8:
    pytest.fail("needs 8 devices: XLA_FLAGS is set in the repo-root conftest.py")
  return jax.make_mesh((8,), ("x",), axis_types=(AxisType.Auto,))


def _both(make_tx, n_steps=1, **extra_fns):
  """Runs n_steps of tx.update on one device (full batch) and under shard_map (batch split, axis_name='x')."""

  def steps(tx, params, x, y, axis_name):
    state = tx.init(params)
    outs = []
    for _ in range(n_steps):
      # Per-replica gradients, then their mean: the usual data-parallel step.
      grads = jax.lax.pmean(jax.grad(_loss)(as_varying(params, axis_name), x, y), axis_name) if axis_name else (
          jax.grad(_loss)(params, x, y)
      )
      extra = {name: (lambda f: (lambda p: f(p, x, y)))(fn) for name, fn in extra_fns.items()}
      if "value" in extra_fns:
        extra["value"] = extra_fns["value"](params, x, y)
      u, state = tx.update(grads, state, params, **extra)
      params = optax.apply_updates(params, u)
      outs.append(u)
    return outs, state

  single = jax.jit(lambda p, x, y: steps(make_tx(None), p, x, y, None))(_PARAMS, _X, _Y)
  sharded = jax.jit(
      jax.shard_map(
          lambda p, x, y: steps(make_tx("x"), p, x, y, "x"),
          mesh=_mesh(),
          in_specs=(P(), P("x"), P("x")),
          out_specs=P(),
      )
  )(_PARAMS, _X, _Y)
  return single, sharded


def _close(a, b, rtol=2e-5, atol=1e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    "kw",
    [
        {"distribution": "gaussian", "n_probes": 2},
        {"absolute": True, "spatial_average": "conv"},
        {"absolute": True, "spatial_average": 3},
    ],
)
def test_hutchinson(kw):
  single, sharded = _both(
      lambda axis: gradtx.estimate_hessian_diag_hutchinson(seed=1, axis_name=axis, **kw), 2, loss_fn=_loss
  )
  _close(single, sharded)


def test_gnb():
  single, sharded = _both(lambda axis: gradtx.estimate_hessian_diag_gnb(seed=2, axis_name=axis), 2, logits_fn=_logits)
  _close(single, sharded)


# 20 s of CPU; tests/conformance/test_data_parallel.py checks every per-device-data optimizer in make test
@pytest.mark.slow
@pytest.mark.parametrize(
    "make",
    [
        lambda axis: gradtx.sophia_h(0.01, update_interval=2, axis_name=axis),
        lambda axis: gradtx.adahessian(0.1, axis_name=axis),
    ],
)
def test_sophia_h_and_adahessian_steps(make):
  single, sharded = _both(make, 3, loss_fn=_loss)
  _close(single, sharded)


def test_sophia_g_steps():
  single, sharded = _both(lambda axis: gradtx.sophia_g(0.01, update_interval=2, axis_name=axis), 3, logits_fn=_logits)
  _close(single, sharded)


def test_regularized_newton_steps():
  single, sharded = _both(lambda axis: gradtx.regularized_newton(axis_name=axis), 2, loss_fn=_loss, value=_loss)
  _close(single, sharded, rtol=1e-4, atol=1e-6)


def test_tract():
  x = jnp.asarray(_RNG.normal(size=(16, 5)), jnp.float32)
  g = {"kernel": jnp.asarray(_RNG.normal(size=(5, 2)), jnp.float32)}
  single, _ = gradtx.scale_by_tract().update(g, optax.EmptyState(), layer_inputs=x)
  sharded = jax.jit(
      jax.shard_map(
          lambda g, x: gradtx.scale_by_tract(axis_name="x").update(g, optax.EmptyState(), layer_inputs=x)[0],
          mesh=_mesh(),
          in_specs=(P(), P("x")),
          out_specs=P(),
      )
  )(g, x)
  _close(single, sharded)


def test_hutchinson_under_pmap():
  est = gradtx.estimate_hessian_diag_hutchinson(seed=4, axis_name="x")
  single, _ = gradtx.estimate_hessian_diag_hutchinson(seed=4).update(
      _PARAMS, est.init(_PARAMS), _PARAMS, loss_fn=lambda p: _loss(p, _X, _Y)
  )
  run = lambda x, y: est.update(_PARAMS, est.init(_PARAMS), _PARAMS, loss_fn=lambda p: _loss(p, x, y))[0]
  out = jax.pmap(run, axis_name="x")(_X.reshape(8, 2, 3), _Y.reshape(8, 2))
  _close(single, jax.tree.map(lambda v: v[3], out))
