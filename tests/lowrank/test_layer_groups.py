"""Layer sampling of models with one module per layer (linen ``layers_0..``, nnx lists of blocks): grouping by
path, slots for the active layers only, OWL's outlier ratios, equivalence with the stacked layout, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import gradtx
from gradtx.lowrank import layer_groups, outlier_ratios, sample_layers

L, D, F = 4, 8, 12  # layers, model width, MLP width


class _Block(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.LayerNorm(name="norm")(x)
    return x + nn.Dense(D, name="down")(nn.relu(nn.Dense(F, name="up")(h)))


class _LinenLM(nn.Module):
  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(16, D, name="embed")(tokens)
    for l in range(L):
      x = _Block(name=f"layers_{l}")(x)
    return nn.Dense(16, name="head")(x)


class _NnxBlock(nnx.Module):
  def __init__(self, rngs):
    self.norm = nnx.LayerNorm(D, rngs=rngs)
    self.up = nnx.Linear(D, F, rngs=rngs)
    self.down = nnx.Linear(F, D, rngs=rngs)

  def __call__(self, x):
    return x + self.down(nnx.relu(self.up(self.norm(x))))


class _NnxLM(nnx.Module):
  def __init__(self, rngs):
    self.embed = nnx.Embed(16, D, rngs=rngs)
    self.blocks = nnx.List([_NnxBlock(rngs) for _ in range(L)])
    self.head = nnx.Linear(D, 16, rngs=rngs)

  def __call__(self, tokens):
    x = self.embed(tokens)
    for block in self.blocks:
      x = block(x)
    return self.head(x)


def _linen_params(seed=0):
  """The linen model's params, filled with NumPy normals (no eager Flax init: cheap)."""
  shapes = jax.eval_shape(_LinenLM().init, jax.random.PRNGKey(0), jnp.zeros((2, 3), jnp.int32))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), shapes)


def _nbytes(tree):
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _per_layer(params, l):
  return params["params"][f"layers_{l}"]


def test_paths_of_common_layouts_name_their_layer():
  cases = {"params/layers_3/up/kernel": "params/layers_3", "blocks/3/attn/kernel": "blocks/3",
           "model/blocks.3.mlp": "model/blocks.3", "transformer/h/11/attn/c_attn": "transformer/h/11",
           "params/Block_2/Dense_0/kernel": "params/Block_2", "decoder/DecoderLayer_0/q": "decoder/DecoderLayer_0",
           "encoder_layers/7/w": "encoder_layers/7"}
  for path, name in cases.items():
    assert layer_groups._locate("auto", path)[0] == name, path
  for path in ["params/Dense_0/kernel", "params/Embed_0/embedding", "head/kernel", "0", "params/layers/kernel"]:
    assert layer_groups._locate("auto", path) is None, path


def test_linen_layers_hold_moments_for_the_active_layers_only():
  params = _linen_params()
  state = jax.eval_shape(sample_layers(optax.adam(1e-3), num_active=2).init, params)
  layer_bytes = _nbytes(_per_layer(params, 0))
  assert _nbytes(state.inner[0].mu) == 2 * layer_bytes  # Adam's μ for 2 of the 4 layers
  assert _nbytes(state.full_rank[0].mu) == _nbytes(params) - L * layer_bytes  # embed and head at full size
  assert state.inner[0].mu["params"]["layers_0"]["up"]["kernel"].shape == (2, D, F)
  assert isinstance(state.inner[0].mu["params"]["layers_3"]["up"]["kernel"], optax.MaskedNode)
  galore = jax.eval_shape(gradtx.owlore(1e-3, num_active=2, rank=3).init, params)
  kernel = galore[0].inner.leaves["params"]["layers_0"]["up"]["kernel"]
  assert kernel.inner.mu.shape == (2, 3, F)  # rank-3 GaLore moments of the 2 active layers' kernels


def test_nnx_list_of_blocks_through_nnx_optimizer():
  graphdef, state = nnx.split(nnx.eval_shape(lambda: _NnxLM(nnx.Rngs(0))))  # no eager init: cheap
  rng = np.random.default_rng(0)
  model = nnx.merge(graphdef, jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), state))
  before = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  opt = nnx.Optimizer(model, sample_layers(optax.adam(0.1), num_active=1, every=10), wrt=nnx.Param)
  mu = opt.opt_state.inner[0].mu
  assert _nbytes(mu) == _nbytes(before["blocks"][0])  # Adam's μ for 1 of the 4 blocks
  grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
  nnx.jit(lambda model, opt, grads: opt.update(model, grads))(model, opt, grads)
  after = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  active = int(opt.opt_state.active[0])
  for l in range(L):
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before["blocks"][l]),
                                                      jax.tree.leaves(after["blocks"][l]))]
    assert all(moved) if l == active else not any(moved), l  # whole blocks move or stay frozen together
  assert not np.array_equal(before["head"]["kernel"], after["head"]["kernel"])  # the head always trains


def _owl_scores(kernels, norms):
  """OWL's ``W_metric = |W| * sqrt(scaler_row)`` of a layer's Linear weights, concatenated. A torch weight
  is the transpose of a Flax kernel (in, out); ``sqrt(scaler_row)`` (``norms``, default 1) scales inputs."""
  return np.concatenate([(np.abs(k.T) * norms.get(id(k), np.ones(k.shape[0]))[None, :]).ravel() for k in kernels])


def _owl_reference(layers, norms, threshold):
  """NumPy transcription of OWL's ``check_outlier_mean`` per layer (in percent), then OwLore's
  ``layer_probabilities = score / sum(score)``."""
  ratios = []
  for kernels in layers:
    scores = _owl_scores(kernels, norms)
    ratios.append(float(np.sum(scores > np.mean(scores) * threshold)) / scores.size * 100)
  ratios = np.asarray(ratios)
  return ratios, ratios / ratios.sum()


def test_outlier_probabilities_follow_owl_and_owlore_on_per_module_layers():
  params = _linen_params()
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: rng.standard_t(3.0, size=x.shape), params)
  for l in range(L):  # plant l + 1 outliers in layer l's up-projection: a non-uniform distribution
    up = _per_layer(params, l)["up"]["kernel"]
    up.flat[rng.choice(up.size, l + 1, replace=False)] = 1e3 * rng.choice([-1.0, 1.0], l + 1)
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  up_norms = {l: np.abs(rng.normal(size=D)) + 0.5 for l in range(L)}  # ||X_j|| of the up-projection's inputs
  input_norms = {"params": {f"layers_{l}": {"up": {"kernel": jnp.asarray(up_norms[l], jnp.float32)}}
                            for l in range(L)}}
  got = outlier_ratios(params, 13.0, input_norms)
  layers = [[np.asarray(_per_layer(params, l)[m]["kernel"], np.float64) for m in ("up", "down")] for l in range(L)]
  norms = {id(layers[l][0]): up_norms[l] for l in range(L)}
  ratios, probabilities = _owl_reference(layers, norms, 13.0)
  # No score lies within 1e-4 (relative) of its layer's threshold, and a float32 mean of 192 scores is off
  # by at most 192 ulps (~1e-5) in any summation order, so gradtx counts exactly the outliers of the float64
  # reference; what is left is the float32 rounding of count / size and of the normalisation (a few ulps):
  # rtol 1e-6.
  for kernels in layers:
    scores = _owl_scores(kernels, norms)
    assert np.min(np.abs(scores / (13.0 * scores.mean()) - 1.0)) > 1e-4
  assert np.all(ratios > 0) and len(set(ratios.tolist())) > 1  # a meaningful, non-uniform distribution
  np.testing.assert_allclose(np.asarray(got) * 100, ratios, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(got / got.sum()), probabilities, rtol=1e-6)
  stacked = {"up": jnp.stack([_per_layer(params, l)["up"]["kernel"] for l in range(L)]),
             "down": jnp.stack([_per_layer(params, l)["down"]["kernel"] for l in range(L)])}
  stacked_norms = {"up": jnp.stack([input_norms["params"][f"layers_{l}"]["up"]["kernel"] for l in range(L)]),
                   "down": None}
  np.testing.assert_allclose(outlier_ratios(stacked, 13.0, stacked_norms), got, rtol=1e-6)  # same counts


def _small_per_module(rng):
  layers = {f"layers_{l}": {"up": rng.normal(size=(D, F)), "norm": rng.normal(size=(D,))} for l in range(L)}
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), {**layers, "head": rng.normal(size=(D, 3))})


def _stack_layers(params):
  """The same weights with the layer modules stacked along a leading axis (what nn.scan would make)."""
  return {"head": params["head"], "layers": jax.tree.map(lambda *xs: jnp.stack(xs),
                                                         *[params[f"layers_{l}"] for l in range(L)])}


def test_per_module_trajectory_equals_the_stacked_one():
  rng = np.random.default_rng(1)
  params = _small_per_module(rng)
  grads = [_small_per_module(rng) for _ in range(7)]
  kwargs = dict(num_active=2, every=2, probabilities=np.array([0.1, 0.4, 0.2, 0.3]), rank=3, update_every=3, seed=3)
  per_module_tx = gradtx.owlore(0.01, **kwargs)
  stacked_tx = gradtx.owlore(0.01, stacked={"head": False, "layers": True}, **kwargs)

  def run(tx, params, grads):
    def step(carry, g):
      p, s = carry
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), s[0].active

    (p, _), actives = jax.lax.scan(step, (params, tx.init(params)), jax.tree.map(lambda *g: jnp.stack(g), *grads))
    return p, actives

  p_module, a_module = jax.jit(run, static_argnums=0)(per_module_tx, params, grads)
  p_stacked, a_stacked = jax.jit(run, static_argnums=0)(stacked_tx, _stack_layers(params),
                                                         [_stack_layers(g) for g in grads])
  np.testing.assert_array_equal(a_module, a_stacked)  # the same layers at every step (the same key)
  assert len({tuple(a) for a in np.asarray(a_module)}) > 1  # several windows
  # Both layouts run the same operations on the same slot values (bit-identical on the machine this was
  # written on), but XLA may fuse the two programs differently (FMA contraction, reduction order in the
  # SVD): a few float32 ulps (~1e-7) of weights of size ~1 per step, over 7 steps. atol 1e-5 allows that
  # and still fails if a slot held the wrong layer (a move of ~η = 1e-2).
  for a, b in zip(jax.tree.leaves(_stack_layers(p_module)), jax.tree.leaves(p_stacked)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_layers_of_different_structure_share_the_draw():
  # Layer 1 alone has a gate; layers 0, 2 hold kernels of another width: each kind has its own slots.
  params = {f"layers_{l}": {"w": jnp.zeros((3, 4 if l % 2 else 2))} for l in range(4)}
  params["layers_1"]["gate"] = jnp.zeros((5,))
  tx = sample_layers(optax.chain(optax.trace(0.0), optax.scale(-1.0)), num_active=3, every=1, seed=2)
  state = tx.init(params)
  assert state.inner[0].trace["layers_0"]["w"].shape == (2, 3, 2)  # min(γ, 2 members)
  assert state.inner[0].trace["layers_1"]["gate"].shape == (1, 5)
  step = jax.jit(tx.update)
  grads = jax.tree.map(lambda x: jnp.ones_like(x), params)
  for _ in range(4):
    updates, state = step(grads, state)
    active = set(np.asarray(state.active).tolist())
    for name, leaf in updates.items():
      expected = -1.0 if int(name.split("_")[1]) in active else 0.0
      for x in jax.tree.leaves(leaf):
        np.testing.assert_array_equal(x, np.full(x.shape, expected))


def test_stacked_rows_and_per_module_layers_of_one_model_are_one_layer():
  params = {"layers_0": {"w": jnp.zeros((2,))}, "layers_1": {"w": jnp.zeros((2,))}, "s": jnp.zeros((2, 3))}
  tx = sample_layers(optax.chain(optax.trace(0.0), optax.scale(-1.0)), num_active=1, every=1, seed=1,
                     stacked={"layers_0": False, "layers_1": False, "s": True})
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  for _ in range(3):
    updates, state = tx.update(grads, state)
    l = int(state.active[0])
    np.testing.assert_array_equal(updates[f"layers_{l}"]["w"], [-1.0, -1.0])
    np.testing.assert_array_equal(updates[f"layers_{1 - l}"]["w"], [0.0, 0.0])
    np.testing.assert_array_equal(updates["s"][l], [-1.0] * 3)  # row l of the stack is layer l
    np.testing.assert_array_equal(updates["s"][1 - l], [0.0] * 3)


def test_layout_on_explicit_mesh_with_per_module_layers():
  mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Explicit,))
  tx = gradtx.owlore(learning_rate=0.01, num_active=2, every=2, rank=2, update_every=2)
  rng = np.random.default_rng(3)
  with jax.set_mesh(mesh):
    params = {f"layers_{l}": {"kernel": jax.device_put(jnp.asarray(rng.normal(size=(6, 8)), jnp.float32),
                                                       NamedSharding(mesh, P(None, "x"))),
                              "scale": jnp.ones((8,))} for l in range(3)}
    state = jax.jit(tx.init)(params)
    step = jax.jit(tx.update)
    for _ in range(3):
      updates, new = step(params, state, params)
      for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new)):
        assert a.sharding.is_equivalent_to(b.sharding, a.ndim)
      state = new
    for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
      assert a.sharding.is_equivalent_to(b.sharding, b.ndim)


@pytest.mark.parametrize("groups,match", [
    (r"layers_\d+", "exactly one capture group"),
    (r"(layers)_(\d+)", "exactly one capture group"),
    ("(unclosed", "not a valid regular expression"),
    (3, "layer_groups"),
])
def test_invalid_layer_groups_at_construction(groups, match):
  with pytest.raises(ValueError, match=match):
    sample_layers(optax.sgd(1.0), num_active=1, layer_groups=groups)


@pytest.mark.parametrize("groups,match", [
    (r"block_(\d+)", r"matched no parameter path; the paths look like 'params/embed"),
    (r"(layers)_\d+", "must capture an integer layer index, captured 'layers'"),
    (lambda path: "0" if "layers" in path else None, "must return an int layer index or None, got '0'"),
])
def test_wrong_layer_groups_fail_with_a_clear_message(groups, match):
  with pytest.raises(ValueError, match=match):
    sample_layers(optax.sgd(1.0), num_active=1, layer_groups=groups).init(_linen_params())


def test_layer_count_must_agree_between_layouts():
  params = {"layers_0": {"w": jnp.zeros((2, 2))}, "layers_1": {"w": jnp.zeros((2, 2))}, "s": jnp.zeros((3, 2, 2))}
  plan = layer_groups.plan(params, "auto")  # a rank-3 leaf beside per-module layers (a conv stem) is no stack
  assert plan.num_layers == 2 and plan.stacked == ()
  with pytest.raises(ValueError, match="2 per-module layers .* `stacked` leaves have 3"):
    sample_layers(optax.sgd(1.0), num_active=1, stacked={"layers_0": False, "layers_1": False, "s": True}).init(params)


def test_callable_and_regex_groupings_agree_with_auto():
  params = _linen_params()
  auto = layer_groups.plan(params, "auto")
  assert auto.names == tuple(f"params/layers_{l}" for l in range(L)) and len(auto.kinds) == 6
  assert all(kind.layers == tuple(range(L)) for kind in auto.kinds)
  assert layer_groups.plan(params, r"layers_(\d+)") == auto
  by_callable = layer_groups.plan(params, lambda path: int(path[14]) if "/layers_" in path else None)
  assert sorted(k.leaves for k in by_callable.kinds) == sorted(k.leaves for k in auto.kinds)
  assert layer_groups.plan(params, None).num_layers is None  # no grouping: every leaf at full size


@pytest.mark.parametrize("probabilities", [np.array([1.0, 0.0, 0.0, 0.0]), np.array([1.0, -1.0, 1.0, 1.0]),
                                           np.array([1.0, np.nan, 1.0, 1.0]), np.ones((2, 2))])
def test_invalid_probabilities_at_construction(probabilities):
  with pytest.raises(ValueError, match="`probabilities`"):
    sample_layers(optax.sgd(1.0), num_active=2, probabilities=probabilities)


def test_probabilities_need_layers_and_input_norms_need_the_input_axis():
  with pytest.raises(ValueError, match="`probabilities` were given but the params have no layers"):
    sample_layers(optax.sgd(1.0), num_active=1, probabilities=np.ones(2)).init({"w": jnp.zeros((3, 3))})
  params = {f"layers_{l}": {"w": jnp.ones((3, 5))} for l in range(2)}
  with pytest.raises(ValueError, match=r"`input_norms` at 'layers_1/w' must have shape \(3,\)"):
    outlier_ratios(params, input_norms={"layers_1": {"w": jnp.ones(5)}})
