"""SPAM's sparse momentum (density < 1) against a NumPy transcription of the official code
(TianjinYellow/SPAM-Optimizer@e8185fbe galore_torch/SPAM.py) fed the index sets gradtx drew, its memory, and
the registry contract for the sparse variant."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx import registry
from tests.conformance import test_checkpoint, test_contract, test_data_parallel, test_sharding
from tests.fidelity import cases_stability


def _run(kwargs, params, grads):
  """gradtx's trajectory and, per step, the sorted flat indices of 'w' that step used."""
  tx = gradtx.spam(**kwargs)
  p = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  state = tx.init(p)

  def body(carry, g):
    p, state = carry
    u, state = tx.update(g, state, p)
    p = optax.apply_updates(p, u)
    return (p, state), (p, optax.tree.get(state, "indices")["w"])

  seq = {k: jnp.asarray(v, jnp.float32) for k, v in grads.items()}
  _, (traj, idx) = jax.jit(lambda c, s: jax.lax.scan(body, c, s))((p, state), seq)
  return traj, np.asarray(idx)


@pytest.mark.parametrize(
    "hp",
    [
        {"threshold": 1000, "delta_t": 10, "grad_accu_steps": 3, "weight_decay": 0.1, "density": 0.5},
        {"threshold": 50, "delta_t": 7, "grad_accu_steps": 2, "weight_decay": 0.0, "density": 0.3},
    ],
)
def test_sparse_spam_matches_official_transcription(hp):
  params, grads = cases_stability.problem(seed=5)
  full = {**cases_stability.SPAM_HP, **hp}
  kwargs = {"learning_rate": full["lr"], "eps": full["eps"], "weight_decay": full["weight_decay"],
            "threshold": float(full["threshold"]), "reset_period": full["delta_t"], "warmup_steps": 5,
            "accumulation_steps": full["grad_accu_steps"], "density": hp["density"], "seed": 7}
  traj, idx = _run(kwargs, params, grads)
  n = params["w"].size
  k = int(hp["density"] * n)
  assert idx.shape == (cases_stability.STEPS, k)
  masks = np.zeros((cases_stability.STEPS, n), bool)
  np.put_along_axis(masks, idx, True, axis=1)
  # The subset changes at the reset steps (1-based t % ΔT == 0) and only there.
  changed = [t + 1 for t in range(1, cases_stability.STEPS) if not np.array_equal(idx[t], idx[t - 1])]
  assert changed == list(range(hp["delta_t"], cases_stability.STEPS + 1, hp["delta_t"]))
  del full["density"]
  expected = cases_stability.official_spam_sparse(
      params, grads, {"w": masks.reshape(-1, *params["w"].shape)}, warmup_steps=5, **full)
  for key in params:
    # float32 against float64 over 36 steps of Adam; the same bound as the dense transcription test.
    np.testing.assert_allclose(np.asarray(traj[key]), expected[key], rtol=1e-5, atol=1e-6, err_msg=key)
  moved = np.abs(np.diff(expected["w"], axis=0)) > 0
  assert not np.any(moved & ~masks[1:].reshape(moved.shape))  # coordinates outside the subset never move


def test_decay_sparse_switch():
  """Official: the decay of the sparse leaves is a no-op; decay_sparse=True decays them like the others."""
  params = {"w": jnp.ones((4, 4)), "b": jnp.ones(4)}
  zeros = jax.tree.map(jnp.zeros_like, params)  # zero moments: a zero direction, only the decay moves

  @jax.jit
  def moved():
    out = []
    for decay_sparse in (False, True):
      tx = gradtx.spam(0.1, weight_decay=0.5, density=0.5, decay_sparse=decay_sparse)
      out.append(optax.apply_updates(params, tx.update(zeros, tx.init(params), params)[0]))
    return out

  official, decayed = moved()
  np.testing.assert_allclose(np.asarray(official["w"]), 1.0, rtol=1e-6)
  for p in (official["b"], decayed["b"], decayed["w"]):
    np.testing.assert_allclose(np.asarray(p), 1.0 - 0.1 * 0.5, rtol=1e-6)


def test_state_holds_density_of_the_moments():
  params = {"w": jax.ShapeDtypeStruct((64, 32), jnp.float32), "b": jax.ShapeDtypeStruct((32,), jnp.float32)}

  def nbytes(tx, field):  # clip_spikes' own (empty) `nu` is skipped
    found = optax.tree.get(jax.eval_shape(tx.init, params), field, filtering=lambda _, v: v != ())
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(found))

  dense, sparse = gradtx.scale_by_spam(), gradtx.scale_by_spam(density=0.25)
  k = int(0.25 * 64 * 32)
  for field in ("mu", "nu"):
    assert nbytes(sparse, field) == k * 4 + 32 * 4 and nbytes(dense, field) == (64 * 32 + 32) * 4
  assert nbytes(sparse, "indices") == k * 4  # int32 indices: moments and indices are 3k slots, dense 2N


def test_density_mask_selects_leaves_and_draws_depend_only_on_the_seed():
  params = {"w": jnp.zeros((6, 5)), "v": jnp.zeros(20), "b": jnp.zeros(3)}
  mask = {"w": False, "v": True, "b": False}
  idx = gradtx.scale_by_spam(density=0.5, density_mask=mask, seed=3).init(params).inner_state.indices
  assert isinstance(idx["w"], optax.MaskedNode) and isinstance(idx["b"], optax.MaskedNode)
  assert idx["v"].shape == (10,) and np.all(np.diff(np.asarray(idx["v"])) > 0)  # sorted, distinct
  # Every replica builds the same draw from the same seed (no device-dependent randomness).
  again = jax.jit(gradtx.scale_by_spam(density=0.5, density_mask=mask, seed=3).init)(params).inner_state.indices
  np.testing.assert_array_equal(np.asarray(again["v"]), np.asarray(idx["v"]))
  other = gradtx.scale_by_spam(density=0.5, density_mask=mask, seed=4).init(params).inner_state.indices
  assert not np.array_equal(np.asarray(other["v"]), np.asarray(idx["v"]))


@pytest.mark.parametrize(
    "kwargs, name",
    [({"density": 0.0}, "density"), ({"density": 1.5}, "density"), ({"density": jnp.float32(0.5)}, "density"),
     ({"density": "0.5"}, "density"), ({"density_mask": {"w": True}}, "density_mask"),
     ({"density": 0.5, "seed": 1.5}, "seed"), ({"density": 0.5, "decay_sparse": 1}, "decay_sparse")],
)
def test_sparse_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.spam(**{"learning_rate": 1e-3, **kwargs})


@pytest.fixture
def spam_sparse(monkeypatch):
  """The registered SPAM with density 0.5, under a temporary registry name for the conformance checks."""
  spec = gradtx.OPTIMIZERS["spam"]
  sparse = dataclasses.replace(spec, name="spam_sparse", test_kwargs={**spec.test_kwargs, "density": 0.5})
  monkeypatch.setitem(registry._OPTIMIZERS, "spam_sparse", sparse)  # pylint: disable=protected-access
  return "spam_sparse"


@pytest.mark.slow  # about a dozen compilations of the whole optimizer (~30 s of CPU)
def test_registry_contract(spam_sparse, tmp_path):
  for check in (test_contract.test_ignores_unknown_extra_args, test_contract.test_jit_compiles_once,
                test_contract.test_inject_hyperparams, test_contract.test_masked_and_partition,
                test_contract.test_apply_if_finite_skips_nan_step, test_contract.test_tree_map_params,
                test_contract.test_none_and_masked_node_leaves, test_contract.test_abstract_init,
                test_sharding.test_state_sharding_stable_on_explicit_mesh,
                test_sharding.test_sharded_step_equals_unsharded,
                test_data_parallel.test_pmap_step_equals_full_batch_step):
    check(spam_sparse)
  test_checkpoint.test_orbax_round_trip_resumes_exactly(spam_sparse, tmp_path)


@pytest.mark.slow  # compiles the whole optimizer for 8 devices (~5 s of CPU)
def test_user_sharded_sparse_state_on_explicit_mesh():
  """Moments and indices split over the mesh (one rule for both) step like the replicated default."""
  from jax.sharding import AxisType, NamedSharding
  from jax.sharding import PartitionSpec as P

  tx = gradtx.spam(0.1, density=0.5, reset_period=2, warmup_steps=1, accumulation_steps=1, weight_decay=0.1)
  params = {"b": jnp.linspace(-1.0, 1.0, 8), "w": jnp.arange(128.0).reshape(16, 8) / 100}
  specs = {"b": P("x"), "w": P("x", None)}
  step = jax.jit(lambda p, s: tx.update(jax.tree.map(jnp.sin, p), s, p))
  reference, state = [], tx.init(params)
  for _ in range(3):  # a redraw at step 2
    u, state = step(params, state)
    reference.append(u)
  mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Explicit,))
  with jax.set_mesh(mesh):
    rule = lambda path, leaf: P("x") if leaf.shape == (64,) else None  # noqa: E731  (k = 64 moments, indices)
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), gradtx.state_shardings(tx, params, specs, rule=rule))
    sharded = jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), params, specs)
    state = jax.jit(tx.init, out_shardings=shardings)(sharded)
    for expected in reference:
      u, state = step(sharded, state)
      for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(expected)):
        # The same elementwise arithmetic on each shard (no reduction feeds the update); only how XLA fuses
        # it per shard (an FMA or not) can move the last bits.
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)
    assert optax.tree.get(state, "indices")["w"].sharding.spec == P("x")
