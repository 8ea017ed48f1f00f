"""AdAdaGrad's batch-size tests against a float64 NumPy transcription of timlautk/AdAdaGrad tests.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import gradtx
from tests.schedules.reference import np_coordinate, np_inner, np_norm, np_orth


def make_rows(n=16, seed=0, shift=0.7):
  rng = np.random.default_rng(seed)
  return {
      "kernel": (rng.standard_normal((n, 3, 4)) + shift).astype(np.float32),
      "bias": (rng.standard_normal((n, 4)) - shift).astype(np.float32),
  }


_JITTED = {}


def run(case, rows, hyper, **kwargs):
  """The test ``case`` under jit, compiled once per case, options and shapes (``hyper`` is traced)."""
  key = (case, tuple(sorted(kwargs.items())))
  if key not in _JITTED:
    _JITTED[key] = jax.jit(lambda r, h: CASES[case][0](r, h, **kwargs))
  return _JITTED[key](rows, jnp.float32(hyper))


CASES = {
    "norm": (lambda r, h, **kw: gradtx.norm_test(r, h, **kw), lambda r, h: np_norm(r, h)),
    "inner": (lambda r, h, **kw: gradtx.inner_product_test(r, h, **kw), lambda r, h: np_inner(r, h, False)),
    "inner_per_leaf": (
        lambda r, h, **kw: gradtx.inner_product_test(r, h, per_leaf=True, **kw),
        lambda r, h: np_inner(r, h, True),
    ),
    "orth": (lambda r, h, **kw: gradtx.orthogonality_test(r, h, **kw), lambda r, h: np_orth(r, h, False)),
    "orth_per_leaf": (
        lambda r, h, **kw: gradtx.orthogonality_test(r, h, per_leaf=True, **kw),
        lambda r, h: np_orth(r, h, True),
    ),
    "coordinate": (lambda r, h, **kw: gradtx.coordinate_norm_test(r, h, **kw), lambda r, h: np_coordinate(r, h)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("hyper", [0.1, 0.7])
def test_statistics_match_numpy(case, hyper):
  ours, ref = CASES[case]
  rows = make_rows(seed=hash(case) % 100)
  got = jax.jit(lambda r: ours(r, hyper))(rows)
  expected = ref(rows, hyper)
  np.testing.assert_allclose(
      [got.required_batch_size, got.variance, got.grad_sq_norm], expected, rtol=2e-5
  )


def test_whole_tree_and_per_leaf_inner_products_differ():
  rows = make_rows(seed=4)
  assert not np.isclose(np_inner(rows, 0.1, True)[0], np_inner(rows, 0.1, False)[0], rtol=1e-3)


@pytest.mark.parametrize("case", sorted(CASES))
def test_micro_batch_rows_scale_the_estimate(case):
  rows = make_rows(seed=5)
  one = run(case, rows, 0.3).required_batch_size
  eight = run(case, rows, 0.3, micro_batch_size=8).required_batch_size
  np.testing.assert_allclose(eight, 8 * one, rtol=1e-6)


def test_norm_test_grows_the_batch_exactly_when_the_variance_condition_holds():
  """A batch of size b fails the norm test iff Σ_j Var_i(g_ij) / b > η² ‖ḡ‖²; then the batch grows."""
  checked = {True: 0, False: 0}
  next_batch = jax.jit(lambda b, e: gradtx.next_batch_size(b, e, 10**6))
  for seed in range(6):
    rows = make_rows(n=12, seed=seed, shift=0.3 * seed)
    for eta in (0.05, 0.2, 0.5, 1.0):
      _, var, gsq = np_norm(rows, eta)
      estimate = run("norm", rows, eta).required_batch_size
      for b in range(1, 200, 3):
        lhs, rhs = var / b, eta**2 * gsq
        if abs(lhs - rhs) < 1e-4 * rhs:  # too close to call in float32
          continue
        grown = int(next_batch(jnp.int32(b), estimate)) > b
        assert grown == (lhs > rhs), (seed, eta, b)
        checked[grown] += 1
  assert checked[True] > 20 and checked[False] > 20


def test_next_batch_size_is_monotone_capped_and_ignores_nan():
  nb = jax.jit(lambda b, e: gradtx.next_batch_size(b, e, 100))
  assert int(nb(jnp.int32(10), jnp.float32(3.2))) == 10
  assert int(nb(jnp.int32(10), jnp.float32(10.0))) == 10
  assert int(nb(jnp.int32(10), jnp.float32(10.01))) == 11
  assert int(nb(jnp.int32(10), jnp.float32(1e12))) == 100
  assert int(nb(jnp.int32(10), jnp.float32(np.inf))) == 100
  assert int(nb(jnp.int32(10), jnp.float32(np.nan))) == 10
  assert nb(jnp.int32(10), jnp.float32(5.0)).dtype == jnp.int32


def test_degenerate_inputs():
  one_row = {"w": jnp.ones((1, 3))}
  for case in ("norm", "inner", "orth", "coordinate"):
    assert float(run(case, one_row, 0.1).required_batch_size) == 0.0, case
  zero_mean = {"w": jnp.array([[1.0, 0.0], [-1.0, 0.0]])}
  assert np.isinf(run("norm", zero_mean, 0.1).required_batch_size)
  assert np.isinf(run("coordinate", zero_mean, 0.1).required_batch_size)
  assert float(run("orth", zero_mean, 0.1).variance) == pytest.approx(2.0)
  constant = {"w": jnp.ones((4, 2))}
  for case in ("norm", "inner", "orth", "coordinate"):
    assert float(run(case, constant, 0.1).required_batch_size) == 0.0, case
  nan = {"w": jnp.array([[np.nan, 1.0], [0.0, 1.0]])}
  assert np.isnan(run("norm", nan, 0.1).required_batch_size)


def test_mismatched_leading_axes_are_an_error():
  with pytest.raises(ValueError, match="per_example_grads"):
    gradtx.norm_test({"a": jnp.ones((3, 2)), "b": jnp.ones((4,))})
  with pytest.raises(ValueError, match="per_example_grads"):
    gradtx.norm_test({"a": jnp.ones(())})


def test_bf16_rows_are_measured_in_float32():
  rows = make_rows(seed=6)
  low = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), rows)
  got = gradtx.norm_test(low, 0.3)
  assert got.required_batch_size.dtype == jnp.float32
  ref = np_norm(jax.tree.map(lambda x: np.asarray(jnp.asarray(x, jnp.float32)), low), 0.3)[0]
  np.testing.assert_allclose(got.required_batch_size, ref, rtol=1e-4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_eight_devices_equal_one_device(case):
  """Rows split over 8 devices with axis_name give the single-device statistics of the whole batch."""
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices")
  ours, _ = CASES[case]
  rows = make_rows(n=32, seed=7)
  single = ours(rows, 0.3)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
  sharded = jax.device_put(rows, jax.sharding.NamedSharding(mesh, P("data")))
  fn = jax.shard_map(lambda r: ours(r, 0.3, axis_name="data"), mesh=mesh, in_specs=(P("data"),), out_specs=P())
  multi = jax.jit(fn)(sharded)
  np.testing.assert_allclose(np.array(multi), np.array(single), rtol=1e-5)
