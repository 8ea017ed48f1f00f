"""Layer sampling (OwLore, LISA, FRUGAL blocks): slots, frozen layers, draws, outlier ratios, layouts."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import gradtx
from gradtx.lowrank import outlier_ratios, sample_layers
from tests.lowrank import _reference as ref
from tests.lowrank._helpers import gradients

RNG = np.random.default_rng(0)


def _g(*shape):
  return jnp.asarray(RNG.normal(size=shape), jnp.float32)


def test_state_exists_for_active_slots_only():
  params = {"layers": jax.ShapeDtypeStruct((32, 64, 64), jnp.float32), "head": jax.ShapeDtypeStruct((64, 8), jnp.float32)}
  state = jax.eval_shape(sample_layers(optax.adam(1e-3), num_active=4).init, params)
  assert state.inner[0].mu["layers"].shape == (4, 64, 64)  # 4/32 of Adam's state for the stacked layers
  assert state.full_rank[0].mu["head"].shape == (64, 8)


@pytest.mark.parametrize("inactive", ["freeze", "sign", "sgd"])
def test_active_layers_get_inner_and_the_others_the_inactive_rule(inactive):
  tx = sample_layers(optax.adam(0.1), num_active=2, every=3, inactive=inactive, inactive_scale=0.5)
  ref_adam = optax.adam(0.1)
  params = {"layers": jnp.zeros((6, 4, 3))}
  state = tx.init(params)
  for t in range(3):  # one window: the same active layers, inner state carried
    g = _g(6, 4, 3)
    u, state = tx.update({"layers": g}, state)
    active = np.asarray(state.active)
    if t == 0:
      ref_state = ref_adam.init(g[active])
    u_ref, ref_state = ref_adam.update(g[active], ref_state)
    # The same elementwise Adam on the same slices (no reductions): equal up to ~1 ulp of fused operations.
    np.testing.assert_allclose(u["layers"][active], u_ref, rtol=1e-6)
    inactive_idx = np.setdiff1d(np.arange(6), active)
    expected = {"freeze": 0 * g, "sign": 0.5 * jnp.sign(g), "sgd": 0.5 * g}[inactive][inactive_idx]
    np.testing.assert_allclose(u["layers"][inactive_idx], expected, rtol=1e-6)


def test_redraw_every_k_steps_resets_the_slots():
  tx = sample_layers(optax.adam(0.1), num_active=2, every=3, seed=1)
  state = tx.init({"layers": jnp.zeros((16, 2, 2))})
  actives, counts = [], []
  for _ in range(9):
    _, state = tx.update({"layers": _g(16, 2, 2)}, state)
    actives.append(tuple(np.asarray(state.active)))
    counts.append(int(state.inner[0].count))
  assert counts == [1, 2, 3] * 3
  assert actives[0] == actives[1] == actives[2] and len({actives[0], actives[3], actives[6]}) > 1


def test_probabilities_steer_the_draws():
  p = np.zeros(8)
  p[[1, 5, 6]] = [1.0, 2.0, 1.0]
  tx = sample_layers(optax.sgd(1.0), num_active=2, every=1, probabilities=p)
  update = jax.jit(tx.update)
  state = tx.init({"layers": jnp.zeros((8, 2, 2))})
  seen = []
  for _ in range(40):
    _, state = update({"layers": _g(8, 2, 2)}, state)
    seen.extend(np.asarray(state.active).tolist())
  assert set(seen) <= {1, 5, 6} and seen.count(5) > seen.count(1)


@pytest.mark.parametrize("order,expected", [("ascending", [(0, 1), (2, 3), (0, 4), (1, 2)]),
                                            ("descending", [(3, 4), (1, 2), (0, 4), (2, 3)])])
def test_cyclic_block_orders(order, expected):
  tx = sample_layers(optax.sgd(1.0), num_active=2, every=2, order=order, inactive="sign")
  state = tx.init({"layers": jnp.zeros((5, 2, 2))})
  windows = []
  for t in range(8):
    _, state = tx.update({"layers": _g(5, 2, 2)}, state)
    if t % 2 == 0:
      windows.append(tuple(np.asarray(state.active).tolist()))
  assert windows == expected


def test_owlore_first_window_matches_official_galore_on_the_active_layers():
  """Within a window, OwLore is GaLoreAdamW (rank, T=100, α=1, std) on the unfrozen layers only."""
  shape, layers = (8, 6), 4
  grads = [np.stack(g) for g in zip(*[gradients(shape, steps=5, seed=s) for s in range(layers)])]
  w0 = RNG.normal(size=(layers,) + shape)
  tx = gradtx.owlore(learning_rate=0.01, num_active=2, every=50, rank=2, update_every=2)
  params = {"layers": jnp.asarray(w0, jnp.float32)}
  state = tx.init(params)
  total = jnp.zeros(w0.shape)
  for g in grads:
    u, state = tx.update({"layers": jnp.asarray(g, jnp.float32)}, state, params)
    total = total + u["layers"]
  active = np.asarray(state[0].active)
  for layer in range(layers):
    if layer in active:
      official = ref.galore(w0[layer].T, [g[layer].T for g in grads], rank=2, gap=2, scale=1.0, lr=0.01)
      # Five float32 steps summed against float64 (float32 SVD error ~1e-6 of a step, see assert_trajectory;
      # measured 2e-6 relative): rtol 2e-4, atol 1e-6 for entries near zero (steps ~1e-2).
      np.testing.assert_allclose(np.asarray(total[layer]).T, official[-1] - official[0], rtol=2e-4, atol=1e-6)
    else:
      assert float(jnp.abs(total[layer]).max()) == 0.0


def test_outlier_ratios_follow_owl():
  w = RNG.normal(size=(3, 32, 32))
  w[1, :4, :4] = 100.0  # layer 1 has 16 outliers
  expected = [np.mean(np.abs(w[l]) > 5 * np.abs(w[l]).mean()) for l in range(3)]
  # Counts compared exactly (rtol 1e-6 of a ratio of counts): no entry lies within float32 error of the
  # threshold.
  assert min(np.abs(np.abs(w[l]) / (5 * np.abs(w[l]).mean()) - 1).min() for l in range(3)) > 1e-4
  got = outlier_ratios([jnp.asarray(w)], threshold=5.0)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  assert int(jnp.argmax(got)) == 1
  norms = np.ones((3, 32))
  norms[:, 0] = 1000.0  # large activations on input feature 0 make its weights outliers
  assert float(outlier_ratios([jnp.asarray(w)], 5.0, [jnp.asarray(norms)])[0]) > float(got[0])


@pytest.mark.parametrize(
    "kwargs,match",
    [({"num_active": 0}, "num_active"), ({"every": 0}, "every"), ({"inactive": "adam"}, "inactive"),
     ({"order": "random"}, "order"), ({"order": "ascending", "probabilities": np.ones(4)}, "probabilities"),
     ({"inactive_scale": -1.0}, "inactive_scale")],
)
def test_invalid_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    sample_layers(optax.sgd(1.0), **{"num_active": 2, **kwargs})


def test_shape_errors_at_trace_time():
  with pytest.raises(ValueError, match="num_active"):
    sample_layers(optax.sgd(1.0), num_active=5).init({"l": jnp.zeros((4, 2, 2))})
  with pytest.raises(ValueError, match="probabilities"):
    sample_layers(optax.sgd(1.0), num_active=2, probabilities=np.ones(3)).init({"l": jnp.zeros((4, 2, 2))})
  with pytest.raises(ValueError, match="stacked"):
    sample_layers(optax.sgd(1.0), num_active=2).init({"a": jnp.zeros((4, 2, 2)), "b": jnp.zeros((5, 2, 2))})


def test_layout_on_explicit_mesh_with_sharded_layers():
  mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Explicit,))
  tx = gradtx.owlore(learning_rate=0.01, num_active=2, every=2, rank=2, update_every=2)
  with jax.set_mesh(mesh):
    params = {"layers": jax.device_put(_g(8, 6, 4), NamedSharding(mesh, P("x", None, None))),
              "head": jax.device_put(_g(8, 4), NamedSharding(mesh, P("x", None)))}
    state = jax.jit(tx.init)(params)
    step = jax.jit(tx.update)
    for _ in range(3):
      updates, new = step(params, state, params)
      for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new)):
        assert a.sharding.is_equivalent_to(b.sharding, a.ndim)
      state = new
    for k in params:
      assert updates[k].sharding.is_equivalent_to(params[k].sharding, params[k].ndim)
