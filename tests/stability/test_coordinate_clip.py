"""Coordinate-wise clipping (Pan & Li 2023) against a NumPy transcription of the official code."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx.core import topk


def official_threshold(tree, fraction):
  """adam-vs-sgd ``_get_top_coordinates_threshold`` / ``clip_top_coordinates`` (float64)."""
  flat = np.abs(np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)]))
  if fraction == 1:
    return 0.0
  return float(np.sort(flat)[::-1][int(flat.shape[0] * fraction)])


def official_clip(tree, threshold):
  return jax.tree.map(
      lambda p: np.where(np.abs(p) < threshold, p, np.sign(p) * threshold), jax.tree.map(np.asarray, tree)
  )


def official_adam_clip(params, grads_seq, *, lr, b1, b2, eps, wd, fraction, scale=1.0):
  """AdamClip's multi-tensor step: coupled L2, clip feeds m only, torch Adam's ε placement (float64)."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  out = []
  for t, grads in enumerate(grads_seq, start=1):
    g = {k: np.asarray(grads[k], np.float64) + wd * p[k] for k in p}
    tau = official_threshold(g, fraction) * scale
    gc = official_clip(g, tau)
    for k in p:
      m[k] = b1 * m[k] + (1 - b1) * gc[k]
      v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
      denom = np.sqrt(v[k]) / np.sqrt(1 - b2**t) + eps
      p[k] = p[k] - lr / (1 - b1**t) * m[k] / denom
    out.append({k: x.copy() for k, x in p.items()})
  return out


def _clip(g, *args, **kwargs):
  tx = gradtx.clip_by_coordinate(*args, **kwargs)
  return jax.jit(tx.update)(g, tx.init(g))


def _tree(seed, scale=1.0):
  rng = np.random.default_rng(seed)
  return {
      "bias": jnp.asarray(scale * rng.standard_cauchy(7), jnp.float32),
      "kernel": jnp.asarray(scale * rng.normal(size=(5, 6)), jnp.float32),
  }


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.37, 0.5, 0.99, 1.0])
def test_clip_matches_official(fraction):
  g = _tree(0)
  out, state = _clip(g, fraction)
  tau = official_threshold(g, fraction)
  expected = official_clip(g, tau)
  for k in g:
    np.testing.assert_array_equal(np.asarray(out[k]), expected[k].astype(np.float32))
  assert float(state.threshold) == pytest.approx(tau, rel=1e-7)
  flat = np.concatenate([np.abs(np.asarray(x)).ravel() for x in g.values()])
  assert float(state.clip_fraction) == pytest.approx(np.mean(flat > tau))


def test_threshold_scale_and_ties():
  g = {"a": jnp.array([3.0, -3.0, 3.0, 1.0, 0.5, -0.25])}
  out, state = _clip(g, 0.34, threshold_scale=0.5)
  # int(6 * 0.34) = 2: the third largest is 3 (a tie); s * tau = 1.5.
  np.testing.assert_array_equal(np.asarray(out["a"]), [1.5, -1.5, 1.5, 1.0, 0.5, -0.25])
  assert float(state.clip_fraction) == pytest.approx(0.5)


def test_bf16_updates_keep_dtype_and_exact_threshold():
  g = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _tree(1))
  out, state = _clip(g, 0.2)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(out))
  assert float(state.threshold) == official_threshold(jax.tree.map(lambda x: x.astype(jnp.float32), g), 0.2)


@pytest.mark.parametrize("seed", range(4))
def test_kth_largest_exact_and_histogram(seed):
  rng = np.random.default_rng(seed)
  x = {"a": jnp.asarray(rng.normal(size=300) * 10.0 ** rng.uniform(-20, 20, 300), jnp.float32),
       "b": jnp.asarray(rng.normal(size=(7, 9)), jnp.float32)}
  flat = np.sort(np.abs(np.concatenate([np.asarray(v).ravel() for v in x.values()])))[::-1]
  kth = jax.jit(topk.kth_largest_magnitude, static_argnames="method")
  for index in (0, 1, 17, 150, len(flat) - 1):
    exact = float(kth(x, index))
    assert exact == flat[index]
    approx = float(kth(x, index, method="histogram"))
    assert approx <= exact < approx * (1 + 2.0**-7) or exact == approx == 0.0
    assert np.sum(flat >= approx) >= index + 1


def test_non_finite_magnitudes_count_as_infinite():
  x = {"a": jnp.array([1.0, jnp.nan, 3.0, -jnp.inf, 2.0])}
  kth = jax.jit(topk.kth_largest_magnitude)
  assert float(kth(x, 0)) == np.inf
  assert float(kth(x, 2)) == 3.0
  out, _ = _clip(x, 0.2)
  assert np.isnan(np.asarray(out["a"])[1])  # NaN stays NaN: it is not cleaned, only counted


def test_histogram_method_clips_at_least_as_much():
  g = _tree(2, scale=3.0)
  exact, s_exact = _clip(g, 0.3)
  approx, s_approx = _clip(g, 0.3, method="histogram")
  assert float(s_approx.threshold) <= float(s_exact.threshold) < float(s_approx.threshold) * (1 + 2.0**-7)
  assert float(s_approx.clip_fraction) >= float(s_exact.clip_fraction)
  for k in g:
    np.testing.assert_allclose(np.asarray(approx[k]), np.asarray(exact[k]), rtol=2.0**-7)


@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_adam_coordinate_clipped_matches_official(wd, fraction):
  params = _tree(3)
  seq = [_tree(10 + t, scale=0.5) for t in range(6)]
  expected = official_adam_clip(params, seq, lr=0.01, b1=0.9, b2=0.999, eps=1e-8, wd=wd, fraction=fraction)
  tx = gradtx.adam_coordinate_clipped(0.01, weight_decay=wd, fraction=fraction)
  state, p = tx.init(params), params
  step = jax.jit(tx.update)
  for g, exp in zip(seq, expected):
    u, state = step(g, state, p)
    p = optax.apply_updates(p, u)
    for k in p:
      np.testing.assert_allclose(np.asarray(p[k]), exp[k], rtol=1e-5, atol=1e-6)
  assert 0.0 < float(state[1].clip_fraction) <= fraction


def test_traced_fraction_matches_static():
  g = _tree(4)
  injected = optax.inject_hyperparams(gradtx.clip_by_coordinate)(fraction=0.3, threshold_scale=1.5)
  a, _ = jax.jit(injected.update)(g, injected.init(g))
  b, _ = _clip(g, 0.3, 1.5)
  for k in g:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


@pytest.mark.parametrize("method", ["exact", "histogram"])
def test_sharded_statistics_equal_single_device(method):
  """Under shard_map over 8 devices, each holding a slice of every leaf, the threshold is the global one."""
  mesh = jax.make_mesh((8,), ("d",), axis_types=(jax.sharding.AxisType.Explicit,))
  spec = jax.sharding.PartitionSpec("d")
  g = {"a": jnp.asarray(np.random.default_rng(5).standard_cauchy((16, 3)), jnp.float32),
       "b": jnp.asarray(np.random.default_rng(6).normal(size=(40,)), jnp.float32)}
  single, s_single = _clip(g, 0.2, method=method)
  tx = gradtx.clip_by_coordinate(0.2, method=method, axis_name="d")
  state = tx.init(g)
  sharded = jax.tree.map(lambda x: jax.device_put(x, jax.NamedSharding(mesh, spec)), g)
  fn = jax.shard_map(lambda u, s: tx.update(u, s), mesh=mesh, in_specs=(spec, jax.sharding.PartitionSpec()),
                     out_specs=(spec, jax.sharding.PartitionSpec()))
  out, s_out = jax.jit(fn)(sharded, state)
  for k in g:
    np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(single[k]))
  assert float(s_out.threshold) == float(s_single.threshold)
  assert float(s_out.clip_fraction) == pytest.approx(float(s_single.clip_fraction), rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"fraction": -0.1}, "fraction"),
        ({"fraction": 1.5}, "fraction"),
        ({"threshold_scale": 0.0}, "threshold_scale"),
        ({"method": "sort"}, "method"),
    ],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.clip_by_coordinate(**kwargs)
  with pytest.raises(ValueError, match=name):
    gradtx.adam_coordinate_clipped(0.1, **kwargs)


@pytest.mark.parametrize("kwargs, name", [({"b1": 1.0}, "b1"), ({"b2": -0.1}, "b2"), ({"eps": -1.0}, "eps")])
def test_invalid_adam_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.adam_coordinate_clipped(0.1, **kwargs)


def _tree64(seed):
  """float64 gradients whose mantissas use all 52 bits (none is a float32 value), over 30 decades."""
  rng = np.random.default_rng(seed)
  return {"bias": jnp.asarray(rng.standard_cauchy(7), jnp.float64),
          "kernel": jnp.asarray(rng.normal(size=(5, 6)) * 10.0 ** rng.uniform(-15, 15, (5, 6)), jnp.float64)}


def test_float64_coordinates_keep_their_bits():
  """Unclipped float64 coordinates pass through bit for bit; clipped ones are ± the float64 threshold."""
  fraction = 0.3
  with jax.enable_x64(True):
    g = _tree64(7)
    assert not any(np.any(np.asarray(x) == np.asarray(x).astype(np.float32)) for x in g.values())
    out, state = _clip(g, fraction)
    tau = official_threshold(g, fraction)
    expected = official_clip(g, tau)
    for k in g:
      assert out[k].dtype == jnp.float64
      np.testing.assert_array_equal(np.asarray(out[k]), expected[k])
    assert state.threshold.dtype == jnp.float64 and float(state.threshold) == tau
    approx, s_approx = _clip(g, fraction, method="histogram")  # the float64 threshold, 7 mantissa bits
    t_hat = float(s_approx.threshold)
    assert t_hat <= tau < t_hat * (1 + 2.0**-7)
    for k in g:
      np.testing.assert_array_equal(np.asarray(approx[k]), official_clip(g, t_hat)[k])


def test_adam_coordinate_clipped_float64_first_moment_sees_the_float64_clip():
  with jax.enable_x64(True):
    g = _tree64(8)
    tx = gradtx.scale_by_adam_coordinate_clipped(b1=0.9, fraction=0.5)
    updates, state = jax.jit(tx.update)(g, tx.init(g))
    expected = official_clip(g, official_threshold(g, 0.5))
    # m_1 = (1 − b1) clip(g) with gradtx's float32 rate: one float64 product on both sides, exact.
    rate = np.float64(np.float32(1.0) - np.float32(0.9))
    for k in g:
      assert updates[k].dtype == state.mu[k].dtype == jnp.float64
      np.testing.assert_array_equal(np.asarray(state.mu[k]), rate * expected[k])
    assert state.threshold.dtype == jnp.float64 and float(state.threshold) == official_threshold(g, 0.5)
