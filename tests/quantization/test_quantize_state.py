"""quantize_state: which leaves are quantized, nesting, and the gradtx contract (DESIGN.md)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import gradtx
from gradtx.quantization import blockwise, maps

PARAMS = {"big": jnp.ones((16, 300)), "edge": jnp.ones(4096), "under": jnp.ones(4095), "bias": jnp.ones(3)}


def grads_like(params, seed=0):
  keys = jax.random.split(jax.random.key(seed), len(jax.tree.leaves(params)))
  leaves = [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, jax.tree.leaves(params))]
  return jax.tree.unflatten(jax.tree.structure(params), leaves)


def quantized_paths(state):
  """keystr of every inner-state leaf stored as codes (those with scales in ``absmax``)."""
  return {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state.absmax)[0]}


def test_min_size_and_fields_choose_the_leaves():
  state = gradtx.quantize_state(optax.adam(1e-3)).init(PARAMS)
  assert quantized_paths(state) == {f"[0].{f}['{k}']" for f in ("mu", "nu") for k in ("big", "edge")}
  adam = state.inner_state[0]
  assert adam.mu["big"].dtype == jnp.uint8 and adam.nu["edge"].dtype == jnp.uint8
  assert adam.mu["under"].dtype == jnp.float32 and adam.count.dtype == jnp.int32
  state = gradtx.quantize_state(optax.adam(1e-3), fields=("nu",), min_size=0).init(PARAMS)
  assert quantized_paths(state) == {f"[0].nu['{k}']" for k in PARAMS}


def test_signed_and_unsigned_maps_per_field():
  tx = gradtx.quantize_state(optax.scale_by_adam(), min_size=0)
  g = {"w": jnp.linspace(-1.0, 1.0, 512)}
  _, state = tx.update(g, tx.init(g), g)
  mu = blockwise.dequantize_blockwise(blockwise.QuantizedArray(state.inner_state.mu["w"], state.absmax.mu["w"]),
                                      maps.signed_map())
  nu = blockwise.dequantize_blockwise(blockwise.QuantizedArray(state.inner_state.nu["w"], state.absmax.nu["w"]),
                                      maps.unsigned_map())
  np.testing.assert_allclose(mu, 0.1 * g["w"], atol=0.1 * 0.0071)
  np.testing.assert_allclose(nu, 0.001 * g["w"] ** 2, atol=0.001 * 0.0036)


def test_quantize_mask_keeps_chosen_params_in_full_precision():
  tx = gradtx.quantize_state(optax.adam(1e-3), min_size=0, quantize_mask={"big": False, "edge": True,
                                                                          "under": True, "bias": False})
  assert quantized_paths(tx.init(PARAMS)) == {f"[0].{f}['{k}']" for f in ("mu", "nu") for k in ("edge", "under")}
  matrices = lambda p: jax.tree.map(lambda x: x.ndim == 2, p)  # noqa: E731
  tx = gradtx.quantize_state(optax.adam(1e-3), min_size=0, quantize_mask=matrices)
  assert quantized_paths(tx.init(PARAMS)) == {f"[0].{f}['big']" for f in ("mu", "nu")}


def test_matches_dequantize_update_requantize_by_hand():
  inner = optax.adam(1e-2)
  tx = gradtx.quantize_state(inner, min_size=0)
  step = jax.jit(tx.update)
  _, state = step(grads_like(PARAMS), tx.init(PARAMS), PARAMS)
  g2 = grads_like(PARAMS, seed=1)
  updates2, state2 = step(g2, state, PARAMS)
  # By hand: dequantize the stored moments, run adam, compare updates and requantized codes.
  def dequantize(path, codes, absmax):
    code = maps.unsigned_map() if "nu" in jax.tree_util.keystr(path) else maps.signed_map()
    return blockwise.dequantize_blockwise(blockwise.QuantizedArray(codes, absmax), code)

  leaves, treedef = jax.tree_util.tree_flatten_with_path(state.inner_state)
  scales = treedef.flatten_up_to(state.absmax)
  inner_state = treedef.unflatten(
      [leaf if a is None else dequantize(path, leaf, a) for (path, leaf), a in zip(leaves, scales)])
  expected, new_inner = jax.jit(inner.update)(g2, inner_state, PARAMS)
  jax.tree.map(np.testing.assert_array_equal, updates2, expected)
  for field, code in (("mu", maps.signed_map()), ("nu", maps.unsigned_map())):
    q = blockwise.quantize_blockwise(getattr(new_inner[0], field)["big"], code)
    np.testing.assert_array_equal(getattr(state2.inner_state[0], field)["big"], q.codes)
    np.testing.assert_array_equal(getattr(state2.absmax[0], field)["big"], q.absmax)


def test_zero_moments_stay_exactly_zero_and_give_zero_updates():
  params = {"w": jnp.ones((8, 512))}
  g = jnp.ones((8, 512)).at[:, :256].set(0.0)  # half the blocks never see a gradient
  g = g.at[4, 300].set(0.0).at[5, 301].set(1e15)  # a lone zero in a live block, and a huge neighbour
  tx = gradtx.adamw_8bit(1e-3, weight_decay=0.0, eps=1e-8)
  state = tx.init(params)
  step = jax.jit(tx.update)
  for _ in range(3):
    updates, state = step({"w": g}, state, params)
    assert np.all(np.asarray(updates["w"])[:, :256] == 0.0)
    assert np.asarray(updates["w"])[4, 300] == 0.0
    assert np.all(np.isfinite(np.asarray(updates["w"])))
  adam = state[0].inner_state
  assert np.all(np.asarray(state[0].absmax.mu["w"])[:, 0] == 0.0)  # all-zero blocks keep a zero scale
  assert np.all(np.asarray(adam.mu["w"])[:, :256] == 127) and np.all(np.asarray(adam.nu["w"])[:, :256] == 0)


def test_nested_states_match_quantizing_inside():
  """quantize_state(wrapper(inner)) == wrapper(quantize_state(inner)), bit for bit, for optax wrappers."""
  params = {"a": jnp.ones((8, 512)), "b": jnp.ones((8, 512))}
  labels = {"a": "adam", "b": "lion"}
  q = gradtx.quantize_state
  cases = {
      "chain": (optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)),
                optax.chain(optax.clip_by_global_norm(1.0), q(optax.adam(1e-3))), 4),
      "masked": (optax.masked(optax.adam(1e-3), {"a": True, "b": False}),
                 optax.masked(q(optax.adam(1e-3)), {"a": True, "b": False}), 2),
      "partition": (optax.partition({"adam": optax.adam(1e-3), "lion": gradtx.lion(1e-3)}, labels),
                    optax.partition({"adam": q(optax.adam(1e-3)), "lion": q(gradtx.lion(1e-3))}, labels), 3),
      "multisteps": (optax.MultiSteps(optax.adam(1e-3), every_k_schedule=3),
                     optax.MultiSteps(q(optax.adam(1e-3)), every_k_schedule=3), 4),
      "apply_if_finite": (optax.apply_if_finite(optax.adam(1e-3), 3),
                          optax.apply_if_finite(q(optax.adam(1e-3)), 3), 4),
  }
  for name, (inner, inside, n_quantized) in cases.items():
    tx = q(inner)
    state, ref_state = tx.init(params), inside.init(params)
    assert len(jax.tree.leaves(state.absmax)) == n_quantized, name
    step, ref_step = jax.jit(tx.update), jax.jit(inside.update)
    for seed in range(7):
      g = grads_like(params, seed)
      if name == "apply_if_finite" and seed == 3:
        g = {"a": g["a"].at[0, 0].set(jnp.nan), "b": g["b"]}
      updates, state = step(g, state, params)
      ref_updates, ref_state = ref_step(g, ref_state, params)
      jax.tree.map(lambda u, r, name=name: np.testing.assert_array_equal(u, r, err_msg=name), updates, ref_updates)


def test_state_held_still_by_multisteps_is_not_requantized():
  params = {"w": jnp.ones(4096)}
  g = {"w": -jnp.linspace(1.0, 0.5, 4096)}  # every block's largest magnitude is negative
  for stochastic in (False, True):
    tx = gradtx.quantize_state(optax.MultiSteps(optax.adam(1e-3), every_k_schedule=5),
                               stochastic_rounding=stochastic)
    state = tx.init(params)
    step = jax.jit(tx.update)
    _, state = step(g, state, params)  # mini-step 1 of 5: adam's state is untouched
    _, state = step(g, state, params)
    held = state
    for _ in range(2):
      _, state = step(g, state, params)
      jax.tree.map(np.testing.assert_array_equal, state.absmax, held.absmax)
      jax.tree.map(np.testing.assert_array_equal, state.inner_state.inner_opt_state,
                   held.inner_state.inner_opt_state)


def test_init_is_shape_only_and_matches_abstract_init():
  tx = gradtx.adamw_8bit(1e-3)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), PARAMS)
  from_abstract = tx.init(abstract)
  traced = jax.eval_shape(tx.init, PARAMS)
  concrete = tx.init(PARAMS)
  shapes = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)  # noqa: E731
  assert shapes(from_abstract) == shapes(concrete) == shapes(traced)


def test_none_and_masked_node_leaves():
  params = {"w": jnp.ones((8, 512)), "frozen": None}
  tx = gradtx.quantize_state(optax.adam(1e-3))
  state = tx.init(params)
  updates, _ = tx.update({"w": jnp.ones((8, 512)), "frozen": None}, state, params)
  assert updates["frozen"] is None
  masked = gradtx.quantize_state(optax.masked(optax.adam(1e-3), {"w": True, "frozen": False}))
  updates, _ = masked.update({"w": jnp.ones((8, 512)), "frozen": None}, masked.init(params), params)


def test_jit_compiles_once_and_state_dtypes_are_stable():
  for dtype in (jnp.float16, jnp.bfloat16, jnp.float32):
    params = {"w": jnp.ones((8, 512), dtype), "b": jnp.ones(7, dtype)}
    tx = gradtx.adamw_8bit(1e-3)
    state = tx.init(params)
    traces = []

    @jax.jit
    def step(g, state, params, tx=tx):
      traces.append(None)
      return tx.update(g, state, params)

    dtypes = jax.tree.map(lambda x: x.dtype, state)
    for seed in range(2):
      updates, state = step(grads_like(params, seed), state, params)
      assert jax.tree.map(lambda x: x.dtype, state) == dtypes
      assert jax.tree.map(lambda x: x.dtype, updates) == jax.tree.map(lambda x: x.dtype, params)
    assert len(traces) == 1


def test_inject_hyperparams():
  spec = gradtx.registry.get("adamw_8bit")
  tx = optax.inject_hyperparams(gradtx.adamw_8bit, static_args=spec.static_args)(
      learning_rate=1e-2, b1=0.9, weight_decay=0.1, block_size=256, min_size=0, stochastic_rounding=True, seed=3)
  params = {"w": jnp.ones((8, 512))}
  state = tx.init(params)
  step = jax.jit(tx.update)
  updates, state = step(grads_like(params), state, params)
  state.hyperparams["learning_rate"] = state.hyperparams["learning_rate"] / 10
  updates2, state = step(grads_like(params, 1), state, params)
  assert float(jnp.max(jnp.abs(updates2["w"]))) < float(jnp.max(jnp.abs(updates["w"])))
  assert step._cache_size() == 1


def test_stochastic_rounding_is_seeded_and_folded_with_the_step():
  params = {"w": jnp.ones((8, 512))}
  g = grads_like(params)

  def codes(seed, steps):
    tx = gradtx.adamw_8bit(1e-3, stochastic_rounding=True, seed=seed)
    state = tx.init(params)
    out = []
    for _ in range(steps):
      _, state = tx.update(g, state, params)
      out.append(np.asarray(state[0].inner_state.mu["w"]))
    return out

  a, b, c = codes(0, 2), codes(0, 2), codes(1, 2)
  np.testing.assert_array_equal(a[1], b[1])
  assert np.any(a[1] != c[1])
  nearest = gradtx.adamw_8bit(1e-3)
  _, s = nearest.update(g, nearest.init(params), params)
  assert np.any(a[0] != np.asarray(s[0].inner_state.mu["w"]))


def test_orbax_round_trip(tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  tx = gradtx.adamw_8bit(1e-2, min_size=0, stochastic_rounding=True)
  params = {"w": jnp.ones((8, 512)), "b": jnp.ones(3)}
  state = tx.init(params)
  step = jax.jit(tx.update)
  for seed in range(2):
    _, state = step(grads_like(params, seed), state, params)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / "ckpt", state)
    ckpt.wait_until_finished()
    restored = ckpt.restore(tmp_path / "ckpt", jax.tree.map(ocp.utils.to_shape_dtype_struct, state))
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  jax.tree.map(np.testing.assert_array_equal, restored, state)
  g = grads_like(params, 5)
  jax.tree.map(np.testing.assert_array_equal, step(g, restored, params), step(g, state, params))


def test_explicit_mesh_shardings_agree_after_init_jit_init_and_update():
  mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Explicit,))
  tx = gradtx.adamw_8bit(1e-3)
  with jax.set_mesh(mesh):
    params = {"w": jax.device_put(jnp.ones((64, 512)), NamedSharding(mesh, P("x", None))),
              "v": jax.device_put(jnp.ones((16, 300)), NamedSharding(mesh, P("x", None)))}
    state = tx.init(params)
    state_jit = jax.jit(tx.init)(params)
    _, state_upd = jax.jit(tx.update)(grads_like(params), state, params)
  for a, b, c in zip(jax.tree.leaves(state), jax.tree.leaves(state_jit), jax.tree.leaves(state_upd)):
    assert a.sharding.is_equivalent_to(b.sharding, a.ndim) and a.sharding.is_equivalent_to(c.sharding, a.ndim)
  adam = state_upd[0].inner_state
  assert adam.mu["w"].sharding.is_equivalent_to(params["w"].sharding, 2)
  assert adam.nu["v"].sharding.is_equivalent_to(params["v"].sharding, 2)


def test_nan_gradient_poisons_only_its_block_and_apply_if_finite_skips_it():
  params = {"w": jnp.ones((2, 256))}
  g = jnp.ones((2, 256)).at[0, 3].set(jnp.nan)
  tx = gradtx.quantize_state(optax.adam(1e-3), min_size=0)
  updates, _ = tx.update({"w": g}, tx.init(params), params)
  assert np.isnan(np.asarray(updates["w"])[0, 3]) and np.all(np.isfinite(np.asarray(updates["w"])[1]))
  _, state = tx.update({"w": g}, tx.init(params), params)
  scales = np.asarray(state.absmax[0].mu["w"])
  assert np.isnan(scales[0]) and np.isfinite(scales[1])
  safe = optax.apply_if_finite(gradtx.quantize_state(optax.adam(1e-3), min_size=0), 3)
  state = safe.init(params)
  updates, state = safe.update({"w": g}, state, params)
  assert np.all(np.asarray(updates["w"]) == 0.0)
  assert np.all(np.isfinite(np.asarray(state.inner_state.absmax[0].mu["w"])))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"fields": "mu"}, "fields"),
        ({"fields": ()}, "fields"),
        ({"fields": ("mu", 1)}, "fields"),
        ({"unsigned_fields": "nu"}, "unsigned_fields"),
        ({"bits": 4}, "bits"),
        ({"block_size": 0}, "block_size"),
        ({"block_size": 256.0}, "block_size"),
        ({"min_size": -1}, "min_size"),
        ({"seed": None}, "seed"),
        ({"stochastic_rounding": "yes"}, "stochastic_rounding"),
    ],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.quantize_state(optax.adam(1e-3), **kwargs)


def test_state_whose_scales_do_not_fit_is_rejected():
  tx = gradtx.quantize_state(optax.adam(1e-3))
  state = tx.init(PARAMS)
  with pytest.raises(ValueError, match="state"):
    tx.update(PARAMS, state._replace(absmax=state.absmax[:-1]), PARAMS)


def test_tree_map_params_maps_codes_and_scales_of_param_fields():
  tx = gradtx.adamw_8bit(1e-3)
  state = tx.init(PARAMS)
  marked = optax.tree_map_params(tx, lambda v: "param", state, transform_non_params=lambda v: "other")
  assert marked[0].inner_state.mu["big"] == "param" and marked[0].absmax.mu["big"] == "param"
  assert marked[0].inner_state.count == "other" and marked[0].key == "other"


def test_nnx_optimizer_with_sharding_annotations():
  """Scales are stored bare: nnx must not apply a kernel's sharding names to its differently shaped absmax."""
  nnx = pytest.importorskip("flax.nnx")
  mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Explicit,))
  init = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "x"))

  class Model(nnx.Module):
    def __init__(self, rngs):
      self.a = nnx.Linear(512, 64, kernel_init=init, use_bias=False, rngs=rngs)  # flat blocks: gathered
      self.b = nnx.Linear(64, 4096, kernel_init=init, rngs=rngs)  # (64, 16) scales, sharded like the kernel

    def __call__(self, x):
      return self.b(jax.sharding.reshard(self.a(x), P()))

  with jax.set_mesh(mesh):
    model = Model(nnx.Rngs(0))
    opt = nnx.Optimizer(model, gradtx.adamw_8bit(1e-3, min_size=0), wrt=nnx.Param)
    x = jnp.ones((8, 512))

    @nnx.jit
    def step(model, opt):
      loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)
      opt.update(model, grads)
      return loss

    losses = [float(step(model, opt)) for _ in range(3)]
  state = opt.opt_state[0]
  assert losses[-1] < losses[0]
  assert state.inner_state.mu["b"]["kernel"][...].sharding.spec == P(None, "x")
  assert state.absmax.mu["b"]["kernel"][...].shape == (64, 16)
  assert state.absmax.mu["b"]["kernel"][...].sharding.is_equivalent_to(NamedSharding(mesh, P(None, "x")), 2)
  assert state.absmax.mu["a"]["kernel"][...].shape == (128,)


def test_float16_params_run_the_inner_update_in_float32():
  """optax.adam squares the gradient in its own dtype: 1e3² overflows float16. quantize_state hands the inner
  update float32 gradients (as bitsandbytes computes in float32), so its second moment stays finite; the
  updates come back in float16 and the small, full-precision leaves keep their dtype."""
  tx = gradtx.quantize_state(optax.adam(1e-3), min_size=256)
  params = {"w": jnp.zeros((4, 64), jnp.float16), "b": jnp.zeros(4, jnp.float16)}
  state = tx.init(params)
  dtypes = [x.dtype for x in jax.tree.leaves(state)]
  grads = jax.tree.map(lambda p: jnp.full(p.shape, 1e3, p.dtype), params)
  step = jax.jit(tx.update)
  for _ in range(2):
    updates, state = step(grads, state, params)
  assert [x.dtype for x in jax.tree.leaves(state)] == dtypes
  assert all(u.dtype == jnp.float16 and bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
  nu = blockwise.dequantize_blockwise(
      blockwise.QuantizedArray(state.inner_state[0].nu["w"], state.absmax[0].nu["w"]), maps.unsigned_map(), 256)
  assert bool(jnp.all(jnp.isfinite(nu))) and float(nu.max()) > 1e3  # (1 − 0.999²) · 1e6 ≈ 2e3
