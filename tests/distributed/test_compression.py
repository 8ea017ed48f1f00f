"""Compressors and compressed data-parallel means (plain, EF14, EF21, EControl) on 8 simulated devices."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import gradtx

N = 8  # workers = devices
AXIS = "data"


# ---------------------------------------------------------------- compressors


def _tree(seed=0):
  rng = np.random.default_rng(seed)
  return {"a": jnp.asarray(rng.normal(size=(30,)), jnp.float32), "b": jnp.asarray(rng.normal(size=(7, 10)), jnp.float32)}


def _flat(tree):
  return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(tree)])


def _sq(x):
  return float(np.sum(np.square(x, dtype=np.float64)))


def test_top_k_keeps_the_k_largest_of_the_whole_tree():
  x = _tree()
  out = gradtx.top_k(0.1).compress(x, 0)
  flat, kept = _flat(x), _flat(out)
  k = math.ceil(0.1 * flat.size)
  assert np.count_nonzero(kept) == k
  largest = np.argsort(-np.abs(flat))[:k]
  np.testing.assert_array_equal(kept[largest], flat[largest])
  assert _sq(kept - flat) <= (1 - k / flat.size) * _sq(flat)


def test_top_k_histogram_threshold_keeps_at_least_k():
  x = _tree(1)
  kept = _flat(gradtx.top_k(0.1, method="histogram").compress(x, 0))
  assert np.count_nonzero(kept) >= 10


def test_random_k_exact_count_reproducible_and_step_dependent():
  c, x = gradtx.random_k(0.2, seed=3), _tree()
  a, b, c1 = c.compress(x, 5), c.compress(x, 5), c.compress(x, 6)
  assert np.count_nonzero(_flat(a)) == math.ceil(0.2 * 100)
  np.testing.assert_array_equal(_flat(a), _flat(b))
  assert not np.array_equal(_flat(a) != 0, _flat(c1) != 0)
  nz = _flat(a) != 0
  np.testing.assert_array_equal(_flat(a)[nz], _flat(x)[nz])


def test_scaled_sign_per_leaf_and_contraction():
  x = _tree()
  out = gradtx.scaled_sign().compress(x, 0)
  for leaf, got in zip(jax.tree.leaves(x), jax.tree.leaves(out)):
    leaf = np.asarray(leaf)
    np.testing.assert_allclose(np.asarray(got), np.abs(leaf).mean() * np.where(leaf >= 0, 1, -1), rtol=1e-6)
    delta = np.abs(leaf).sum() ** 2 / (leaf.size * _sq(leaf))
    assert _sq(np.asarray(got) - leaf) <= (1 - delta) * _sq(leaf) * (1 + 1e-6)


def test_message_bytes():
  x = _tree()  # 100 float32 coordinates in two leaves (30 and 70)
  assert gradtx.top_k(0.01).message_bytes(x) == 1 * (4 + 4)
  assert gradtx.random_k(0.1).message_bytes(x) == 10 * 4
  assert gradtx.scaled_sign().message_bytes(x) == math.ceil(30 / 8) + 4 + math.ceil(70 / 8) + 4
  assert gradtx.top_k(0.1).delta(x) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "make",
    [lambda axis: gradtx.top_k(0.1, axis_name=axis), lambda axis: gradtx.scaled_sign(axis_name=axis)],
    ids=["top_k", "scaled_sign"],
)
def test_compressors_over_a_split_message_equal_the_whole(make):
  x = {"w": jnp.asarray(np.random.default_rng(2).normal(size=(16, 5)), jnp.float32)}
  mesh = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
  fn = jax.shard_map(lambda t: make("x").compress(t, 0), mesh=mesh, in_specs=P("x"), out_specs=P("x"))
  expected = make(None).compress(x, 0)
  np.testing.assert_allclose(np.asarray(jax.jit(fn)(x)["w"]), np.asarray(expected["w"]), rtol=1e-6)


def test_invalid_arguments():
  with pytest.raises(ValueError, match="ratio"):
    gradtx.top_k(0.0)
  with pytest.raises(ValueError, match="ratio"):
    gradtx.random_k(1.5)
  with pytest.raises(ValueError, match="method"):
    gradtx.top_k(0.1, method="sort")
  with pytest.raises(ValueError, match="seed"):
    gradtx.random_k(0.1, seed=0.5)
  with pytest.raises(ValueError, match="variant"):
    gradtx.compress_with_error_feedback(gradtx.top_k(0.1), variant="ef18")
  with pytest.raises(ValueError, match="eta"):
    gradtx.compress_with_econtrol(gradtx.top_k(0.1), eta=-1.0)
  with pytest.raises(ValueError, match="compressor"):
    gradtx.compress(lambda x: x)


# ------------------------------------------- NumPy transcription, 8 workers, step by step


def _np_top_k(x, ratio):
  k = max(1, math.ceil(ratio * x.size))
  out = np.zeros_like(x)
  idx = np.argsort(-np.abs(x))[:k]
  out[idx] = x[idx]
  return out


def _np_run(method, grads, ratio, eta):
  """Per-step updates of the official update rules for ``grads[t, i]`` (step t, worker i), float64."""
  n, d = grads.shape[1], grads.shape[2]
  e, h_i, h = np.zeros((n, d)), np.zeros((n, d)), np.zeros(d)
  out = []
  for g in grads:
    if method == "none":
      out.append(np.mean([_np_top_k(gi, ratio) for gi in g], axis=0))
    elif method == "ef14":
      p = g + e
      sent = np.stack([_np_top_k(pi, ratio) for pi in p])
      e = p - sent
      out.append(sent.mean(0))
    elif method == "ef21":
      c = np.stack([_np_top_k(gi - hi, ratio) for gi, hi in zip(g, h_i)])
      h_i, h = h_i + c, h + c.mean(0)
      out.append(h.copy())
    else:
      delta = np.stack([_np_top_k(eta * ei + gi - hi, ratio) for ei, gi, hi in zip(e, g, h_i)])
      e = e + g - h_i - delta
      h_i, h = h_i + delta, h + delta.mean(0)
      out.append(h.copy())
  return np.stack(out)


def _tx(method, compressor, eta=0.3):
  if method == "none":
    return gradtx.compress(compressor, axis_name=AXIS)
  if method in ("ef14", "ef21"):
    return gradtx.compress_with_error_feedback(compressor, variant=method, axis_name=AXIS)
  return gradtx.compress_with_econtrol(compressor, eta=eta, axis_name=AXIS)


@pytest.mark.parametrize("method", ["none", "ef14", "ef21", "econtrol"])
def test_pmap_matches_numpy_transcription(method):
  steps, d, ratio = 5, 40, 0.1
  grads = np.random.default_rng(7).normal(size=(steps, N, d))
  expected = _np_run(method, grads, ratio, eta=0.3)
  tx = _tx(method, gradtx.top_k(ratio))

  def run(g):
    def body(s, gt):
      u, s = tx.update(gt, s)
      return s, u

    return jax.lax.scan(body, tx.init(jnp.zeros(d)), g)[1]

  got = jax.pmap(run, axis_name=AXIS)(jnp.asarray(grads.transpose(1, 0, 2), jnp.float32))
  for worker in range(N):
    np.testing.assert_allclose(np.asarray(got[worker]), expected, rtol=1e-5, atol=1e-6)


def test_econtrol_with_eta_zero_is_ef21():
  grads = jnp.asarray(np.random.default_rng(8).normal(size=(6, 20)), jnp.float32)
  a, b = gradtx.compress_with_econtrol(gradtx.top_k(0.2), eta=0.0), gradtx.compress_with_error_feedback(gradtx.top_k(0.2))
  sa, sb = a.init(grads[0]), b.init(grads[0])
  for g in grads:
    (ua, sa), (ub, sb) = a.update(g, sa), b.update(g, sb)
    np.testing.assert_array_equal(np.asarray(ua), np.asarray(ub))


def test_state_dtypes_and_update_dtype_for_bf16():
  params = {"w": jnp.zeros((4, 3), jnp.bfloat16)}
  tx = gradtx.compress_with_econtrol(gradtx.top_k(0.5), eta=0.1)
  state = tx.init(params)
  assert all(x.dtype in (jnp.float32, jnp.int32) for x in jax.tree.leaves(state))
  u, state2 = jax.jit(tx.update)({"w": jnp.ones((4, 3), jnp.bfloat16)}, state)
  assert u["w"].dtype == jnp.bfloat16
  assert [x.dtype for x in jax.tree.leaves(state2)] == [x.dtype for x in jax.tree.leaves(state)]
  abstract = jax.eval_shape(tx.init, jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params))
  assert jax.tree.map(lambda x: x.shape, abstract) == jax.tree.map(lambda x: x.shape, state)


def test_random_k_messages_share_coordinates_across_workers():
  tx = gradtx.compress(gradtx.random_k(0.1, seed=0), axis_name=AXIS)
  g = jnp.asarray(np.random.default_rng(9).normal(size=(N, 50)), jnp.float32)
  u = jax.pmap(lambda x: tx.update(x, tx.init(x))[0], axis_name=AXIS)(g)
  assert np.count_nonzero(np.asarray(u[0])) == 5  # the mean of 8 messages is still 5-sparse


# ------------------------------------------- distributed least squares with 1% top-k


def _least_squares(n=N, m=100, d=200, seed=0):
  """Workers with their own rows A_i and targets from their own x_i*: local optima disagree."""
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(n, m, d)) / np.sqrt(m)
  b = np.einsum("nmd,nd->nm", a, rng.normal(size=(n, d)))
  x_star = np.linalg.lstsq(a.reshape(-1, d), b.reshape(-1), rcond=None)[0]
  f = lambda x: 0.5 * np.mean(np.sum((np.einsum("nmd,d->nm", a, x) - b) ** 2, -1))
  smoothness = np.linalg.eigvalsh(np.einsum("nmd,nme->de", a, a) / n).max()
  return a.astype(np.float32), b.astype(np.float32), lambda x: f(x) - f(x_star), smoothness


def train_least_squares(tx, lr, steps, problem):
  """Gradient descent with ``tx`` as the workers' mean, one worker per device under pmap."""
  a, b, _, _ = problem
  d = a.shape[-1]

  def worker(ai, bi):
    def body(carry, _):
      x, s = carry
      u, s = tx.update(ai.T @ (ai @ x - bi), s, x)
      return (x - lr * u, s), None

    x = jnp.zeros(d, jnp.float32)
    return jax.lax.scan(body, (x, tx.init(x)), None, steps)[0][0]

  x = jax.pmap(worker, axis_name=AXIS)(jnp.asarray(a), jnp.asarray(b))
  np.testing.assert_array_equal(np.asarray(x[0]), np.asarray(x[-1]))  # every worker holds the same iterate
  return np.asarray(x[0], np.float64)


def test_feedback_converges_where_plain_top_k_stalls():
  problem = _least_squares()
  gap = problem[2]
  initial, lr = gap(np.zeros(200)), 1.0 / problem[3]
  c = gradtx.top_k(0.01)  # 2 of 200 coordinates per worker and step
  plain = gap(train_least_squares(gradtx.compress(c, axis_name=AXIS), lr, 1000, problem))
  ef21 = gap(train_least_squares(gradtx.compress_with_error_feedback(c, axis_name=AXIS), 0.5 * lr, 1000, problem))
  econtrol = gap(train_least_squares(gradtx.compress_with_econtrol(c, 0.01, axis_name=AXIS), 0.1 * lr, 1000, problem))
  assert plain > 0.5 * initial, plain  # stalls: most of the initial gap is left
  assert ef21 < 1e-5 * initial, ef21
  assert econtrol < 1e-5 * initial, econtrol


# ------------------------------------------- inside shard_map, worker state with a leading worker axis


def test_ef21_inside_shard_map_equals_pmap():
  problem = _least_squares(m=20, d=100, seed=1)
  a, b = jnp.asarray(problem[0]), jnp.asarray(problem[1])
  tx = gradtx.compress_with_error_feedback(gradtx.top_k(0.05), axis_name=AXIS)
  lr, steps = 0.5 / problem[3], 20
  expected = train_least_squares(tx, lr, steps, problem)

  mesh = jax.make_mesh((N,), (AXIS,), axis_types=(jax.sharding.AxisType.Explicit,))

  # The worker's own estimate h_i gets a leading worker axis; the count and h = ⟨h_i⟩ agree across workers.
  specs = gradtx.EF21State(count=P(), local_estimate=P(AXIS), estimate=P())

  def local(x, state, ai, bi):  # one worker: its rows and its own h_i (leading axis of size 1)
    state = state._replace(local_estimate=state.local_estimate[0])
    u, state = tx.update(ai[0].T @ (ai[0] @ x - bi[0]), state, x)
    return x - lr * u, state._replace(local_estimate=state.local_estimate[None])

  step = jax.jit(
      jax.shard_map(local, mesh=mesh, in_specs=(P(), specs, P(AXIS), P(AXIS)), out_specs=(P(), specs))
  )
  x = jnp.zeros(100, jnp.float32)
  state = tx.init(x)
  state = state._replace(local_estimate=jnp.broadcast_to(state.local_estimate, (N, 100)))
  with jax.set_mesh(mesh):
    a, b = jax.device_put(a, P(AXIS)), jax.device_put(b, P(AXIS))
    state = jax.device_put(state, specs)
    for _ in range(steps):
      x, state = step(x, state, a, b)
  np.testing.assert_allclose(np.asarray(x), expected, rtol=1e-5, atol=1e-6)
