"""Layouts of low-rank state on 8 simulated devices, nnx partitioned kernels, replica agreement (axis_name)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import gradtx
from gradtx import MatrixDims
from gradtx.lowrank import project_low_rank


def _mesh(axis_type=AxisType.Explicit, shape=(8,), names=("x",)):
  return jax.make_mesh(shape, names, axis_types=(axis_type,) * len(shape))


def _spec(x):
  return x.sharding.spec


@pytest.mark.parametrize("projector", ["svd", "dct", "random", gradtx.lowrank.quantized("svd", block_size=16)])
def test_documented_layout_on_explicit_mesh(projector):
  mesh = _mesh()
  specs = {"rows": P("x", None), "cols": P(None, "x"), "stack": P("x", None, None)}
  shapes = {"rows": (16, 8), "cols": (8, 16), "stack": (8, 6, 4)}
  dims = {"rows": MatrixDims(0, 1), "cols": MatrixDims(0, 1), "stack": MatrixDims(1, 2)}
  tx = project_low_rank(optax.adam(0.1), rank=2, update_every=2, projector=projector, dimension_numbers=dims)
  rng = np.random.default_rng(0)
  with jax.set_mesh(mesh):
    params = {k: jax.device_put(jnp.asarray(rng.normal(size=shapes[k]), jnp.float32), NamedSharding(mesh, specs[k]))
              for k in shapes}
    state = jax.jit(tx.init)(params)
    step = jax.jit(tx.update)
    for _ in range(3):
      updates, new_state = step(params, state, params)
      for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new_state)):
        assert a.sharding.is_equivalent_to(b.sharding, a.ndim)
      state = new_state
    leaves = state.leaves
    # rows (16, 8): the 8 outputs are compressed; R is (16, 2) and keeps the row sharding
    assert leaves["rows"].inner[0].mu.shape == (16, 2) and _spec(leaves["rows"].inner[0].mu) == P("x", None)
    # cols (8, 16): the 8 inputs are compressed; R is (2, 16) and keeps the column sharding
    assert leaves["cols"].inner[0].mu.shape == (2, 16) and _spec(leaves["cols"].inner[0].mu) == P(None, "x")
    # stacked layers: batch sharding kept everywhere, the basis replicated within a layer
    assert _spec(leaves["stack"].inner[0].mu) == P("x", None, None)
    for leaf in jax.tree.leaves(leaves["stack"].projector):
      assert _spec(leaf)[0] == "x" and all(s is None for s in _spec(leaf)[1:])
    for leaf in jax.tree.leaves((leaves["rows"].projector, leaves["cols"].projector)):
      assert all(s is None for s in _spec(leaf))
    for k in shapes:
      assert updates[k].sharding.is_equivalent_to(params[k].sharding, 2 if k != "stack" else 3)


def test_auto_mesh_step_equals_single_device():
  rng = np.random.default_rng(1)
  params = {"w": jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)}
  grads = [{"w": jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)} for _ in range(4)]
  tx = gradtx.galore(learning_rate=0.1, rank=2, update_every=2)

  def run(p, gs):
    s = jax.jit(tx.init)(p)
    for g in gs:
      u, s = jax.jit(tx.update)(g, s, p)
      p = optax.apply_updates(p, u)
    return p

  mesh = _mesh(AxisType.Auto)
  put = lambda t: jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, P("x", None))), t)
  # Sharded reductions and the gathered SVD sum in another order: ~1e-7 relative per step, 4 steps
  # (measured 1e-7): rtol 2e-5, atol 1e-6 on weights O(1).
  np.testing.assert_allclose(run(put(params), [put(g) for g in grads])["w"], run(params, grads)["w"], rtol=2e-5,
                             atol=1e-6)


class _Model(nnx.Module):
  def __init__(self, rngs):
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
    self.l1 = nnx.Linear(4, 8, kernel_init=init, rngs=rngs)
    self.l2 = nnx.Linear(8, 2, kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(), ("model", None)),
                         rngs=rngs)

  def __call__(self, x):
    return self.l2(jax.nn.relu(self.l1(x)))


@pytest.mark.parametrize("name", ["galore", "apollo_mini", "q_galore"])
def test_nnx_model_with_partitioned_kernels_and_rank_1(name):
  mesh = jax.make_mesh((2,), ("model",), axis_types=(AxisType.Auto,))
  kwargs = {"learning_rate": 0.01, "rank": 1}
  if name == "q_galore":
    kwargs["block_size"] = 4
  with jax.set_mesh(mesh):
    model = _Model(nnx.Rngs(0))
    opt = nnx.Optimizer(model, getattr(gradtx, name)(**kwargs), wrt=nnx.Param)
    x, y = jnp.ones((3, 4)), jnp.zeros((3, 2))

    @nnx.jit
    def train(model, opt):
      loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
      opt.update(model, grads)
      return loss

    losses = [float(train(model, opt)) for _ in range(3)]
    kernel_state = opt.opt_state[0].leaves["l1"]["kernel"]
  for var in jax.tree.leaves(kernel_state, is_leaf=lambda v: isinstance(v, nnx.Variable)):
    metadata = var.get_metadata()  # the kernel's partitioning must not reach its low-rank state
    assert metadata.get("out_sharding") is None and metadata.get("sharding_names") is None, metadata
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


@pytest.mark.parametrize("projector", ["svd", "dct"])
def test_axis_name_makes_projectors_agree_and_equal_the_full_batch_choice(projector):
  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Explicit,))
  rng = np.random.default_rng(2)
  per_replica = jnp.asarray(rng.normal(size=(8, 10, 6)), jnp.float32)  # different gradient on each replica
  tx = project_low_rank(optax.sgd(1.0), rank=2, projector=projector, axis_name="d")
  single = project_low_rank(optax.sgd(1.0), rank=2, projector=projector)
  state = tx.init({"w": jnp.zeros((10, 6))})

  def step(g):
    _, s = tx.update({"w": g[0]}, state)
    return jax.tree.map(lambda x: x[None], s.leaves["w"].projector)

  sharded = jax.device_put(per_replica, NamedSharding(mesh, P("d")))
  with jax.set_mesh(mesh):
    out = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=P("d"), out_specs=P("d"), check_vma=False))(sharded)
  _, expected = single.update({"w": per_replica.mean(0)}, single.init({"w": jnp.zeros((10, 6))}))
  for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(expected.leaves["w"].projector)):
    got = np.asarray(got)
    for r in range(8):
      np.testing.assert_array_equal(got[r], got[0])  # every replica holds the same projector
    np.testing.assert_allclose(got[0], want, atol=1e-5)  # pmean vs NumPy mean, then a float32 SVD: ~1e-6


@pytest.mark.parametrize("spec", [P(None, "x", None), P("x", None, None), P(None, None, "x")])
def test_attention_kernels_sharded_on_any_axis(spec):
  """(d, heads, head_dim) kernels viewed as (d, heads*head_dim): a merged group keeps its major axis's
  sharding; a sharded minor axis is gathered before the reshape."""
  mesh = _mesh()
  tx = gradtx.galore(learning_rate=0.1, rank=2, update_every=2, dimension_numbers=MatrixDims(0, (1, 2)))
  kernel = jnp.asarray(np.random.default_rng(3).normal(size=(16, 8, 8)), jnp.float32)
  reference = jax.jit(tx.update)({"q": kernel}, tx.init({"q": kernel}), {"q": kernel})[0]["q"]
  with jax.set_mesh(mesh):
    params = {"q": jax.device_put(kernel, NamedSharding(mesh, spec))}
    state = jax.jit(tx.init)(params)
    updates, new = jax.jit(tx.update)(params, state, params)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new)):
      assert a.sharding.is_equivalent_to(b.sharding, a.ndim)
  assert updates["q"].sharding.is_equivalent_to(params["q"].sharding, 3)
  # Gathered or sharded matmuls in another order: ~1e-7 relative (measured 2e-8); rtol 1e-5, atol 1e-6.
  np.testing.assert_allclose(np.asarray(updates["q"]), np.asarray(reference), rtol=1e-5, atol=1e-6)
