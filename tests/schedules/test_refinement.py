"""Refined schedules (Defazio et al. 2023) and the gradient-norm recorder, against NumPy transcriptions.

The transcription follows facebookresearch/adaptive_scheduling: the README's median-filter recipe
(right padding by twice the window with 'reflect', a median window of ``2*(int(tau*T)//2)+1`` with
edge-replicating borders, cropped back), ``find_closed_form_schedule`` (``w_t * tail_sum[t+1]``, last step 0)
and ``visual.py``'s weights (``G**-2``; ``G**-1`` for ℓ1 norms) and normalisation to a maximum of 1. The
median filter is written here with a sliding window rather than SciPy, so the two are independent.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import gradtx


def np_median_filter_nearest(x, width):
  half = width // 2
  padded = np.pad(x, (half, half), mode="edge")
  return np.median(np.lib.stride_tricks.sliding_window_view(padded, width), axis=1)


def np_smooth(norms, tau):
  width = 2 * (int(tau * len(norms)) // 2) + 1
  pad = 2 * width
  return np_median_filter_nearest(np.pad(norms, (0, pad), mode="reflect"), width)[:-pad]


def np_refined(norms, kind="sgd", tau=0.1, total_steps=None):
  g = np_smooth(np.asarray(norms, np.float64), tau)
  if total_steps is not None:
    g = np.interp(np.linspace(0, 1, total_steps), np.linspace(0, 1, len(g)), g)
  w = g ** (-2.0 if kind == "sgd" else -1.0)
  T = len(w)
  sched = np.zeros(T)
  for t in range(T - 1):
    sched[t] = w[t] * np.sum(w[t + 1 :]) / w[-1]
  return sched / sched.max()


def noisy_norms(T, seed=0):
  rng = np.random.default_rng(seed)
  t = np.linspace(0, 1, T)
  return (3.0 * np.exp(-8 * t) + 1.0 + 0.5 * t) * np.exp(0.3 * rng.standard_normal(T))


@pytest.mark.parametrize("T, tau", [(50, 0.1), (200, 0.1), (97, 0.25), (30, 0.0), (12, 1.0)])
def test_smoothing_matches_numpy(T, tau):
  norms = noisy_norms(T)
  np.testing.assert_allclose(gradtx.smooth_grad_norms(norms, tau), np_smooth(norms, tau), rtol=1e-12)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("total_steps", [None, 64, 300])
def test_refined_values_match_numpy(kind, total_steps):
  norms = noisy_norms(150, seed=1)
  got = gradtx.refined_schedule_values(norms, kind=kind, total_steps=total_steps)
  np.testing.assert_allclose(got, np_refined(norms, kind, total_steps=total_steps), rtol=1e-10, atol=1e-12)


def test_refined_schedule_is_jittable_and_scaled():
  norms = noisy_norms(80, seed=2)
  schedule = gradtx.refined_schedule(norms, peak_value=0.3)
  expected = 0.3 * np_refined(norms)
  jitted = jax.jit(schedule)
  got = np.array([float(jitted(jnp.asarray(s, jnp.int32))) for s in range(80)])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
  assert float(jitted(jnp.asarray(500))) == 0.0
  assert got.max() == pytest.approx(0.3, rel=1e-6)


@pytest.mark.parametrize("T", [2, 3, 10, 101])
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_constant_norms_give_linear_decay(T, kind):
  """The paper's worst case: constant gradient norms refine to linear decay, reaching 0 at the last step."""
  schedule = gradtx.refined_schedule(np.full(T, 2.5), peak_value=0.7, kind=kind)
  linear = gradtx.linear_decay(0.7, total_steps=T - 1)
  for s in range(T + 2):
    assert float(schedule(s)) == pytest.approx(float(linear(s)), abs=1e-6)


def test_large_early_norms_give_a_warmup():
  """The paper's synthetic example: norms falling from 15 to 1 early in the run give a warm-up."""
  T = 400
  norms = np.interp(np.linspace(0, 1, T), [0, 0.003, 0.02, 0.03, 0.1, 1], [15, 6, 4, 2, 1, 1])
  values = gradtx.refined_schedule_values(norms)
  assert np.argmax(values) > 10  # the peak is not at the first step
  assert values[0] < 0.2 and values[-1] == 0.0


def test_refined_schedule_in_an_optimizer_under_inject_hyperparams():
  schedule = gradtx.refined_schedule(noisy_norms(20), 0.1)
  tx = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule)
  params = jnp.ones(3)
  state = tx.init(params)
  for _ in range(3):
    _, state = tx.update(jnp.ones(3), state, params)
  assert float(state.hyperparams["learning_rate"]) == pytest.approx(float(schedule(2)), rel=1e-6)


@pytest.mark.parametrize(
    "norms, kwargs, name",
    [
        ([1.0], {}, "grad_norms"),
        ([[1.0, 2.0]], {}, "grad_norms"),
        ([1.0, 0.0, 2.0], {}, "grad_norms"),
        ([1.0, np.nan, 2.0], {}, "grad_norms"),
        ([1.0, np.inf], {}, "grad_norms"),
        ([1.0, 2.0, 3.0], {"kind": "sgdm"}, "kind"),
        ([1.0, 2.0, 3.0], {"tau": 1.5}, "tau"),
        ([1.0, 2.0, 3.0], {"total_steps": 1}, "total_steps"),
        ([1.0, 2.0, 3.0], {"total_steps": 10.0}, "total_steps"),
        ([1.0, 2.0, 3.0], {"peak_value": -1.0}, "peak_value"),
    ],
)
def test_refined_invalid(norms, kwargs, name):
  kwargs = {"peak_value": 1.0, **kwargs}
  with pytest.raises(ValueError, match=name):
    gradtx.refined_schedule(norms, **kwargs)


# --- the recorder ---


@pytest.mark.parametrize("ord", [1, 2])
def test_recorder_matches_numpy_and_passes_updates_through(ord):
  rng = np.random.default_rng(3)
  grads = [
      {"a": rng.standard_normal((3, 2)).astype(np.float32), "b": rng.standard_normal(4).astype(np.float32)}
      for _ in range(5)
  ]
  tx = optax.chain(gradtx.record_grad_norms(8, ord=ord), optax.sgd(0.1))
  params = jax.tree.map(jnp.zeros_like, grads[0])
  state = tx.init(params)
  step = jax.jit(tx.update)
  for g in grads:
    updates, state = step(g, state, params)
    jax.tree.map(lambda u, gg: np.testing.assert_allclose(u, -0.1 * gg, rtol=1e-6), updates, g)
  flat = [np.concatenate([x.ravel() for x in jax.tree.leaves(g)]).astype(np.float64) for g in grads]
  expected = [np.linalg.norm(v, ord) for v in flat]
  np.testing.assert_allclose(gradtx.recorded_grad_norms(state), expected, rtol=1e-6)


def test_recorder_stops_at_max_steps_and_compiles_once():
  tx = gradtx.record_grad_norms(3)
  traces = []

  @jax.jit
  def step(g, s):
    traces.append(1)
    return tx.update(g, s)

  state = tx.init(jnp.zeros(1))
  for v in (1.0, 2.0, 3.0, 4.0, 5.0):
    _, state = step(jnp.array([v]), state)
  assert len(traces) == 1
  assert int(state[0]) == 5
  np.testing.assert_array_equal(gradtx.recorded_grad_norms(state), [1.0, 2.0, 3.0])


def test_recorded_norms_found_in_nested_states_and_missing_is_an_error():
  def factory(learning_rate):
    return optax.chain(gradtx.record_grad_norms(4), optax.adam(learning_rate))

  tx = optax.inject_hyperparams(factory)(learning_rate=0.1)
  params = jnp.zeros(2)
  state = tx.init(params)
  _, state = tx.update(jnp.array([3.0, 4.0]), state, params)
  np.testing.assert_allclose(gradtx.recorded_grad_norms(state), [5.0])
  with pytest.raises(ValueError, match="opt_state"):
    gradtx.recorded_grad_norms(optax.adam(0.1).init(params))


@pytest.mark.parametrize(
    "kwargs, name", [({"max_steps": 0}, "max_steps"), ({"max_steps": 3.0}, "max_steps"), ({"max_steps": 3, "ord": 3}, "ord")]
)
def test_recorder_invalid(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.record_grad_norms(**kwargs)


def test_recorder_axis_name_over_sharded_params():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices")
  mesh = jax.make_mesh((8,), ("model",), axis_types=(jax.sharding.AxisType.Explicit,))
  g = jnp.arange(16.0) - 7.5
  tx = gradtx.record_grad_norms(2, ord=1, axis_name="model")

  def step(g):
    state = tx.init(g)
    _, state = tx.update(g, state)
    return state.norms

  sharded = jax.device_put(g, jax.sharding.NamedSharding(mesh, P("model")))
  norms = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P("model"),), out_specs=P()))(sharded)
  np.testing.assert_allclose(norms[0], np.abs(np.asarray(g)).sum(), rtol=1e-6)
