"""AdaGrad (PyTorch form) and AdaGrad-Norm against NumPy transcriptions, step by step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import gradtx
from tests.schedules.reference import np_adagrad, np_adagrad_norm


def grad_sequence(steps=6, seed=0):
  rng = np.random.default_rng(seed)
  return [
      {"w": rng.standard_normal((4, 3)).astype(np.float32), "b": rng.standard_normal(3).astype(np.float32)}
      for _ in range(steps)
  ]


@pytest.mark.parametrize("init, eps", [(0.0, 1e-10), (0.1, 1e-3)])
def test_scale_by_adagrad_matches_torch_formula(init, eps):
  grads = grad_sequence()
  tx = gradtx.scale_by_adagrad(init, eps)
  state = tx.init(grads[0])
  step = jax.jit(tx.update)
  v = {k: np.full(x.shape, init) for k, x in grads[0].items()}
  for g in grads:
    updates, state = step(g, state)
    for k in g:
      expected, v[k] = np_adagrad(np.float64(g[k]), v[k], eps)
      np.testing.assert_allclose(updates[k], expected, rtol=1e-5)
  assert int(state.count) == len(grads)


@pytest.mark.parametrize("init, eps, wd", [(0.0, 1e-10, 0.0), (0.5, 1e-3, 0.1)])
def test_adagrad_norm_matches_numpy(init, eps, wd):
  grads = grad_sequence(seed=1)
  lr = 0.3
  tx = gradtx.adagrad_norm(lr, init, eps, weight_decay=wd)
  params = {k: np.ones_like(x) for k, x in grads[0].items()}
  ref = {k: np.float64(x) for k, x in params.items()}
  state = tx.init(params)
  step = jax.jit(tx.update)
  b_sq = init
  keys = sorted(grads[0])
  for g in grads:
    updates, state = step(g, state, params)
    params = optax.apply_updates(params, updates)
    dirs, b_sq = np_adagrad_norm([np.float64(g[k]) for k in keys], b_sq, eps)
    for k, d in zip(keys, dirs):
      ref[k] = ref[k] - lr * (d + wd * ref[k])
      np.testing.assert_allclose(params[k], ref[k], rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
@pytest.mark.parametrize("factory", [gradtx.scale_by_adagrad, gradtx.scale_by_adagrad_norm])
def test_dtypes(dtype, factory):
  params = {"w": jnp.ones((2, 3), dtype)}
  tx = factory()
  state = tx.init(params)
  updates, new_state = tx.update(jax.tree.map(lambda x: x * 0.5, params), state)
  assert updates["w"].dtype == dtype
  assert [x.dtype for x in jax.tree.leaves(state)] == [x.dtype for x in jax.tree.leaves(new_state)]
  assert all(x.dtype in (jnp.int32, jnp.float32) for x in jax.tree.leaves(state))


def test_adagrad_norm_axis_name_over_sharded_params():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices")
  mesh = jax.make_mesh((8,), ("model",), axis_types=(jax.sharding.AxisType.Explicit,))
  g = jnp.arange(16.0) / 4.0 - 1.5
  tx = gradtx.scale_by_adagrad_norm(axis_name="model")

  def step(g):
    return tx.update(g, tx.init(g))[0]

  sharded = jax.device_put(g, jax.sharding.NamedSharding(mesh, P("model")))
  got = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P("model"),), out_specs=P("model")))(sharded)
  np.testing.assert_allclose(got, g / jnp.linalg.norm(g), rtol=1e-6)


@pytest.mark.parametrize(
    "factory, kwargs, name",
    [
        (gradtx.scale_by_adagrad, {"initial_accumulator_value": -1.0}, "initial_accumulator_value"),
        (gradtx.scale_by_adagrad, {"eps": -1e-8}, "eps"),
        (gradtx.scale_by_adagrad_norm, {"initial_accumulator_value": -1.0}, "initial_accumulator_value"),
        (gradtx.scale_by_adagrad_norm, {"eps": float("nan")}, "eps"),
        (gradtx.adagrad_norm, {"learning_rate": -1.0}, "learning_rate"),
        (gradtx.adagrad_norm, {"learning_rate": 0.1, "weight_decay": -0.1}, "weight_decay"),
    ],
)
def test_invalid(factory, kwargs, name):
  with pytest.raises(ValueError, match=name):
    factory(**kwargs)
