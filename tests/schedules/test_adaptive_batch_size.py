"""adaptive_batch_size / AdAdaGrad / AdAdaGrad-Norm against a NumPy transcription of the official loop.

timlautk/AdAdaGrad@cc126fb main.py: step the optimizer with the batch gradient, then (every ``test_interval``
steps from the first, while below the cap) set the batch size to ``max(b, ⌈estimate⌉)`` capped at the
maximum, the estimate coming from the per-example gradients of the step just taken.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import gradtx
from tests.schedules.reference import np_adagrad, np_adagrad_norm, np_estimate, np_next_batch_size


def mean_rows(rows):
  return jax.tree.map(lambda r: r.mean(0), rows)


def row_sequence(steps, n=8, seed=0, growing_noise=True):
  rng = np.random.default_rng(seed)
  out = []
  for t in range(steps):
    noise = 0.2 + (0.4 * t if growing_noise else 0.0)
    out.append({
        "w": (rng.standard_normal((n, 3, 2)) * noise + 1.0).astype(np.float32),
        "b": (rng.standard_normal((n, 2)) * noise - 0.5).astype(np.float32),
    })
  return out


@pytest.mark.parametrize(
    "optimizer, kwargs",
    [
        ("adadagrad", {"test": "norm"}),
        ("adadagrad", {"test": "coordinate", "eta": 2.0}),
        ("adadagrad", {"test": "inner_product", "theta": 0.3, "test_interval": 2}),
        ("adadagrad", {"test": "augmented", "theta": 0.5, "nu": 0.7, "per_leaf": True}),
        ("adadagrad_norm", {"test": "norm", "eta": 0.3, "weight_decay": 0.1}),
        ("adadagrad_norm", {"test": "augmented", "test_interval": 3, "max_batch_size": 40}),
    ],
)
def test_matches_numpy_loop(optimizer, kwargs):
  rows_seq = row_sequence(7)
  lr, b0 = 0.2, 4
  opts = {"initial_batch_size": b0, "max_batch_size": 10_000, **kwargs}
  tx = getattr(gradtx, optimizer)(lr, **opts)
  test, eta, theta, nu = opts["test"], opts.get("eta", 0.1), opts.get("theta", 0.1), opts.get("nu", 0.1)
  interval, cap, wd = opts.get("test_interval", 1), opts["max_batch_size"], opts.get("weight_decay", 0.0)

  params = jax.tree.map(lambda x: np.zeros(x.shape[1:], np.float32), rows_seq[0])
  state = tx.init(params)
  step = jax.jit(lambda p, s, r: tx.update(mean_rows(r), s, p, per_example_grads=r))
  keys = sorted(params)
  ref = {k: np.zeros(params[k].shape) for k in keys}
  v = {k: np.zeros(params[k].shape) for k in keys}
  b_sq, b = 0.0, b0
  sizes = []
  for t, rows in enumerate(rows_seq):
    updates, state = step(params, state, rows)
    params = optax.apply_updates(params, updates)
    grads = [np.float64(rows[k]).mean(0) for k in keys]
    if optimizer == "adadagrad":
      dirs = []
      for k, g in zip(keys, grads):
        d, v[k] = np_adagrad(g, v[k])
        dirs.append(d)
    else:
      dirs, b_sq = np_adagrad_norm(grads, b_sq)
    for k, d in zip(keys, dirs):
      ref[k] = ref[k] - lr * (d + wd * ref[k])
      np.testing.assert_allclose(params[k], ref[k], rtol=1e-5, atol=1e-6)
    if t % interval == 0 and b < cap:
      b = np_next_batch_size(b, np_estimate(test, rows, eta, theta, nu, opts.get("per_leaf", False)), cap)
    assert int(state.batch_size) == b, (t, int(state.batch_size), b)
    sizes.append(b)
  assert sizes[-1] > b0, sizes  # the growing noise makes every configuration grow its batch
  assert all(x <= y for x, y in zip(sizes, sizes[1:]))


def test_wraps_any_optimizer_and_state_fields():
  tx = gradtx.adaptive_batch_size(optax.adam(0.1), initial_batch_size=3, max_batch_size=5, eta=0.01)
  params = {"w": jnp.zeros(2)}
  state = tx.init(params)
  assert state.batch_size.dtype == jnp.int32 and int(state.batch_size) == 3
  rows = {"w": jnp.array([[1.0, 2.0], [3.0, -2.0], [2.0, 0.5]])}
  updates, state = tx.update(mean_rows(rows), state, params, per_example_grads=rows)
  adam_updates, _ = optax.adam(0.1).update(mean_rows(rows), optax.adam(0.1).init(params))
  np.testing.assert_allclose(updates["w"], adam_updates["w"], rtol=1e-6)
  assert int(state.batch_size) == 5  # capped
  assert float(state.estimate) > 5


def test_inner_steps_with_updates_and_composes_with_multisteps():
  """The inner optimizer sees ``updates`` (so MultiSteps accumulation reaches it); rows only feed the test."""
  tx = gradtx.adaptive_batch_size(optax.sgd(1.0), initial_batch_size=2, max_batch_size=64, eta=0.1)
  params = jnp.zeros(2)
  rows = jnp.array([[1.0, 0.0], [3.0, 1.0], [2.0, -1.0]])
  updates, _ = tx.update(jnp.array([5.0, 7.0]), tx.init(params), params, per_example_grads=rows)
  np.testing.assert_allclose(updates, [-5.0, -7.0])
  multi = optax.MultiSteps(tx, every_k_schedule=2)
  state = multi.init(params)
  _, state = multi.update(jnp.array([1.0, 0.0]), state, params, per_example_grads=rows)
  updates, state = multi.update(jnp.array([3.0, 2.0]), state, params, per_example_grads=rows)
  np.testing.assert_allclose(updates, [-2.0, -1.0])
  assert int(state.inner_opt_state.batch_size) > 2


def test_missing_extra_arg_and_bad_rows():
  tx = gradtx.adadagrad(0.1, initial_batch_size=2, max_batch_size=8)
  params = {"a": jnp.zeros(2), "b": jnp.zeros(3)}
  state = tx.init(params)
  with pytest.raises(TypeError, match="per_example_grads"):
    tx.update(params, state, params)
  with pytest.raises(ValueError, match="per_example_grads"):
    tx.update(params, state, params, per_example_grads={"a": jnp.zeros((4, 2)), "b": jnp.zeros((5, 3))})


def test_masked_inner_sees_masked_updates_and_all_rows_are_measured():
  tx = optax.masked(gradtx.adadagrad(0.1, initial_batch_size=2, max_batch_size=64, eta=0.1), {"a": True, "b": False})
  params = {"a": jnp.zeros(2), "b": jnp.zeros(3)}
  rows = {"a": jnp.array([[1.0, 2.0], [3.0, 2.0]]), "b": jnp.array([[0.0, 5.0, 1.0], [2.0, -5.0, 1.0]])}
  updates, state = tx.update(mean_rows(rows), tx.init(params), params, per_example_grads=rows)
  np.testing.assert_array_equal(updates["b"], mean_rows(rows)["b"])
  expected = gradtx.norm_test(rows, 0.1).required_batch_size
  np.testing.assert_allclose(state.inner_state.estimate, expected, rtol=1e-6)


def test_nan_rows_keep_the_batch_size():
  """NaN per-example gradients leave the batch size as it was; optax.apply_if_finite skips the step."""
  params = jnp.zeros(2)
  rows = jnp.array([[np.nan, 1.0], [0.0, 1.0], [1.0, 2.0], [0.0, 0.0]])
  bare = gradtx.adadagrad(0.1, initial_batch_size=4, max_batch_size=64)
  _, state = bare.update(rows.mean(0), bare.init(params), params, per_example_grads=rows)
  assert int(state.batch_size) == 4 and np.isnan(float(state.estimate))
  guarded = optax.apply_if_finite(bare, 3)
  guarded_state = guarded.init(params)
  updates, guarded_state = guarded.update(rows.mean(0), guarded_state, params, per_example_grads=rows)
  assert np.all(np.asarray(updates) == 0)
  assert int(guarded_state.inner_state.batch_size) == 4 and int(guarded_state.notfinite_count) == 1


def test_compiles_once_and_works_under_inject_hyperparams():
  spec = gradtx.registry.get("adadagrad")
  tx = optax.inject_hyperparams(spec.factory, static_args=spec.static_args)(
      learning_rate=0.1, initial_batch_size=2, max_batch_size=64, eta=0.5
  )
  params = {"w": jnp.zeros(3)}
  state = tx.init(params)
  traces = []

  @jax.jit
  def step(state, rows):
    traces.append(1)
    return tx.update(mean_rows(rows), state, params, per_example_grads=rows)

  for seed in range(3):
    rows = {"w": jax.random.normal(jax.random.key(seed), (8, 3)) + 0.3}
    _, state = step(state, rows)
  assert len(traces) == 1
  assert int(state.inner_state.batch_size) >= 2


@pytest.mark.parametrize("test", ["norm", "augmented", "coordinate"])
def test_eight_devices_equal_one_device(test):
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices")
  rows_seq = row_sequence(3, n=16, seed=3)
  params = jax.tree.map(lambda x: jnp.zeros(x.shape[1:]), rows_seq[0])
  kwargs = {"initial_batch_size": 16, "max_batch_size": 4096, "test": test, "eta": 0.2}
  one = gradtx.adadagrad(0.1, **kwargs)
  many = gradtx.adadagrad(0.1, axis_name="data", **kwargs)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
  replicated = jax.sharding.NamedSharding(mesh, P())

  def local_step(p, s, r):
    grads = jax.tree.map(lambda x: jax.lax.pmean(x.mean(0), "data"), r)
    u, s = many.update(grads, s, p, per_example_grads=r)
    return optax.apply_updates(p, u), s

  sharded_step = jax.jit(jax.shard_map(local_step, mesh=mesh, in_specs=(P(), P(), P("data")), out_specs=P()))
  def single(p, s, r):
    u, s = one.update(mean_rows(r), s, p, per_example_grads=r)
    return optax.apply_updates(p, u), s

  single_step = jax.jit(single)
  p1, s1 = params, one.init(params)
  p8, s8 = jax.device_put((params, many.init(params)), replicated)
  for rows in rows_seq:
    p1, s1 = single_step(p1, s1, rows)
    p8, s8 = sharded_step(p8, s8, jax.device_put(rows, jax.sharding.NamedSharding(mesh, P("data"))))
    assert int(s8.batch_size) == int(s1.batch_size)
    np.testing.assert_allclose(float(s8.estimate), float(s1.estimate), rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), p8, p1)
  assert int(s1.batch_size) > 16


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"initial_batch_size": 0, "max_batch_size": 8}, "initial_batch_size"),
        ({"initial_batch_size": 2.0, "max_batch_size": 8}, "initial_batch_size"),
        ({"initial_batch_size": 16, "max_batch_size": 8}, "max_batch_size"),
        ({"initial_batch_size": 2, "max_batch_size": 8, "test": "variance"}, "test"),
        ({"initial_batch_size": 2, "max_batch_size": 8, "eta": 0.0}, "eta"),
        ({"initial_batch_size": 2, "max_batch_size": 8, "theta": -1.0}, "theta"),
        ({"initial_batch_size": 2, "max_batch_size": 8, "nu": float("nan")}, "nu"),
        ({"initial_batch_size": 2, "max_batch_size": 8, "test_interval": 0}, "test_interval"),
        ({"initial_batch_size": 2, "max_batch_size": 8, "micro_batch_size": 0}, "micro_batch_size"),
        ({"initial_batch_size": 2, "max_batch_size": 8, "per_leaf": 1}, "per_leaf"),
    ],
)
@pytest.mark.parametrize("factory", ["adaptive_batch_size", "adadagrad", "adadagrad_norm"])
def test_invalid(factory, kwargs, name):
  first = optax.sgd(0.1) if factory == "adaptive_batch_size" else 0.1
  with pytest.raises(ValueError, match=name):
    getattr(gradtx, factory)(first, **kwargs)
