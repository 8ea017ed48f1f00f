"""project_low_rank: any inner transformation, matrix views, sides, switch policies, refresh schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx import MatrixDims
from gradtx.core.matrix import MatrixView
from gradtx.lowrank import LowRankLeafState, project_low_rank
from gradtx.lowrank.engine import _switch
from gradtx.lowrank.projector import Geometry

RNG = np.random.default_rng(0)


def _g(*shape):
  return jnp.asarray(RNG.normal(size=shape), jnp.float32)


def test_non_matrix_leaves_go_through_inner_or_full_rank():
  params = {"b": jnp.zeros(5), "w": jnp.zeros((8, 6)), "s": jnp.zeros(())}
  grads = {"b": _g(5), "w": _g(8, 6), "s": _g()}
  tx = project_low_rank(optax.sgd(1.0), rank=2)
  u, state = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(u["b"], -grads["b"])
  np.testing.assert_allclose(u["s"], -grads["s"])
  assert state.leaves["b"] is None and isinstance(state.leaves["w"], LowRankLeafState)
  tx = project_low_rank(optax.sgd(1.0), rank=2, full_rank=optax.sgd(0.5))
  u, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(u["b"], -0.5 * grads["b"])


def test_full_rank_projection_is_lossless_and_rank_is_clipped():
  g = _g(8, 6)
  tx = project_low_rank(optax.identity(), rank=100)
  u, _ = tx.update({"w": g}, tx.init({"w": g}))
  np.testing.assert_allclose(u["w"], g, atol=1e-5)


def test_projected_update_is_the_projection_of_the_gradient():
  g = _g(8, 6)
  tx = project_low_rank(optax.identity(), rank=2, scale=0.5)
  u, state = tx.update({"w": g}, tx.init({"w": g}))
  basis = state.leaves["w"].projector.basis  # (6, 2): the outputs (smaller dimension) are compressed
  np.testing.assert_allclose(u["w"], 0.5 * g @ basis @ basis.T, atol=1e-5)


def test_stacked_layers_are_projected_per_layer():
  grads = [_g(3, 10, 6) for _ in range(4)]
  stacked = project_low_rank(optax.adam(0.1), rank=2, update_every=2, dimension_numbers=MatrixDims(1, 2))
  single = project_low_rank(optax.adam(0.1), rank=2, update_every=2)
  s_all = stacked.init({"w": jnp.zeros((3, 10, 6))})
  s_one = [single.init({"w": jnp.zeros((10, 6))}) for _ in range(3)]
  assert s_all.leaves["w"].projector.basis.shape == (3, 6, 2)
  for g in grads:
    u_all, s_all = stacked.update({"w": g}, s_all)
    for i in range(3):
      u_i, s_one[i] = single.update({"w": g[i]}, s_one[i])
      # The same per-matrix float32 arithmetic (equal in practice); the tolerances allow ~1e-7 reordering in a
      # batched kernel, amplified by Adam's normalisation of small moments.
      np.testing.assert_allclose(u_all["w"][i], u_i["w"], rtol=1e-5, atol=1e-6)


def test_attention_kernel_view_merges_heads():
  g = _g(8, 2, 3)  # (d, heads, head_dim)
  tx = project_low_rank(optax.identity(), rank=2, dimension_numbers=MatrixDims(0, (1, 2)))
  u, state = tx.update({"q": g}, tx.init({"q": g}))
  basis = state.leaves["q"].projector.basis
  assert basis.shape == (6, 2) and u["q"].shape == (8, 2, 3)
  np.testing.assert_allclose(u["q"].reshape(8, 6), g.reshape(8, 6) @ basis @ basis.T, atol=1e-5)


def test_dimension_number_tree_and_mask_exclude_leaves():
  params = {"a": jnp.zeros((8, 6)), "b": jnp.zeros((8, 6)), "c": jnp.zeros((4, 4, 4))}
  tx = project_low_rank(optax.sgd(1.0), rank=2, dimension_numbers={"a": MatrixDims(0, 1), "b": None,
                                                                    "c": MatrixDims(0, 2)})
  state = tx.init(params)
  assert state.leaves["b"] is None and state.leaves["c"].projector.basis.shape == (4, 4, 2)
  tx = project_low_rank(optax.sgd(1.0), rank=2, projection_mask={"a": False, "b": True, "c": True})
  state = tx.init(params)
  assert state.leaves["a"] is None and state.leaves["c"] is None  # 3-D without dimension numbers: full rank


def test_min_state_side_matches_optax_contrib_galore():
  """optax 0.2.8 compresses the larger dimension: gradtx's side='min_state' gives the same updates."""
  params = {"w": jnp.zeros((12, 5))}
  ours = project_low_rank(optax.scale_by_adam(), rank=2, update_every=100, side="min_state")
  theirs = optax.contrib.scale_by_galore(rank=2, update_proj_gap=100, scale=1.0)
  s_ours, s_theirs = ours.init(params), theirs.init(params)
  assert s_ours.leaves["w"].projector.basis.shape == (12, 2)  # projector r·max, state r·min
  for _ in range(4):
    g = {"w": _g(12, 5)}
    u_ours, s_ours = ours.update(g, s_ours)
    u_theirs, s_theirs = theirs.update(g, s_theirs)
    # One SVD (step 0): a sign flip of a vector flips its row of R and of both moments alike, so the update
    # does not depend on optax's raw LAPACK signs. Float32 in another order: measured 1e-5 relative at most.
    np.testing.assert_allclose(u_ours["w"], u_theirs["w"], rtol=1e-4, atol=1e-6)


def test_reset_reinitialises_the_inner_state_at_each_refresh():
  tx = project_low_rank(optax.adam(0.1), rank=2, update_every=3, on_switch="reset")
  state = tx.init({"w": jnp.zeros((8, 6))})
  counts = []
  for _ in range(7):
    _, state = tx.update({"w": _g(8, 6)}, state)
    counts.append(int(state.leaves["w"].inner[0].count))
  assert counts == [1, 2, 3, 1, 2, 3, 1]


def test_rotate_preserves_moments_when_the_subspace_is_unchanged():
  g = jnp.asarray(np.random.default_rng(5).normal(size=(8, 6)), jnp.float32)
  carry = project_low_rank(optax.scale_by_adam(), rank=2, update_every=2, on_switch="carry")
  rotate = project_low_rank(optax.scale_by_adam(), rank=2, update_every=2, on_switch="rotate")
  s_c, s_r = carry.init({"w": g}), rotate.init({"w": g})
  for t in range(5):  # g scaled by powers of two: each refresh finds exactly the same basis, so R = I
    u_c, s_c = carry.update({"w": g * 2.0 ** (t % 3)}, s_c)
    u_r, s_r = rotate.update({"w": g * 2.0 ** (t % 3)}, s_r)
    # R = BᵀB is the identity up to the float32 SVD's orthonormality error (~1e-6), which the rotated moments
    # and Adam's ratio carry (measured 1.5e-6); rtol and atol 1e-5.
    np.testing.assert_allclose(u_c["w"], u_r["w"], rtol=1e-5, atol=1e-5)


def test_rotate_follows_a_sign_flip_of_the_basis():
  """With the basis of the new refresh equal to the old one with its columns negated, rotated moments are
  negated too, so the update in full space is unchanged; carried moments point the wrong way."""
  g = jnp.asarray(np.random.default_rng(6).normal(size=(8, 6)), jnp.float32)
  rotate = project_low_rank(optax.scale_by_adam(), rank=2, update_every=1, on_switch="rotate")
  state = rotate.init({"w": g})
  _, state = rotate.update({"w": g}, state)
  leaf = state.leaves["w"]
  flipped = leaf._replace(projector=leaf.projector._replace(basis=-leaf.projector.basis))
  geo = Geometry.of(MatrixView.of((8, 6), MatrixDims(0, 1)), "official", 2)
  moved = _switch("rotate", optax.scale_by_adam(), leaf.inner, leaf.projector.basis, flipped.projector.basis, geo,
                  jnp.zeros(geo.lowrank_shape))
  # R = -BᵀB = -I up to the float32 SVD's orthonormality error: |‖b‖² - 1| ~ 5e-7, squared in R∘R for the
  # variances (measured 1e-6 relative); atol 1e-6 on mu (~0.1), rtol 1e-5 on nu.
  np.testing.assert_allclose(moved.mu, -leaf.inner.mu, atol=1e-6)
  np.testing.assert_allclose(moved.nu, leaf.inner.nu, rtol=1e-5)  # variances rotate with R∘R
  back = lambda inner, basis: (basis @ (inner.mu / (jnp.sqrt(inner.nu) + 1e-8)).T).T  # right side: N Pᵀ
  np.testing.assert_allclose(back(moved, flipped.projector.basis), back(leaf.inner, leaf.projector.basis), atol=1e-5)


def test_stagger_spreads_refreshes():
  params = {k: jnp.zeros((8, 6)) for k in "abcd"}
  tx = project_low_rank(optax.sgd(1.0), rank=2, update_every=8, stagger=True)
  state, update = tx.init(params), jax.jit(tx.update)
  refresh_steps = {k: [] for k in params}
  for t in range(17):
    _, state = update({k: _g(8, 6) for k in params}, state)
    for k in params:
      if int(state.leaves[k].refresh.last) == t:
        refresh_steps[k].append(t)
  assert refresh_steps == {"a": [0, 8, 16], "b": [0, 2, 10], "c": [0, 4, 12], "d": [0, 6, 14]}


def test_inner_sees_projected_params_and_extra_args():
  seen = {}

  def init(params):
    return optax.EmptyState()

  def update(updates, state, params=None, *, tag):
    seen["params_shape"], seen["tag"] = params.shape, tag
    return updates, state

  inner = optax.GradientTransformationExtraArgs(init, update)
  tx = project_low_rank(inner, rank=2, full_rank=optax.identity())
  params = {"w": jnp.ones((8, 6))}
  tx.update({"w": _g(8, 6)}, tx.init(params), params, tag="x")
  assert seen == {"params_shape": (8, 2), "tag": "x"}


def test_abstract_init_allocates_nothing_and_matches_concrete():
  params = {"w": jax.ShapeDtypeStruct((64, 32), jnp.bfloat16), "b": jax.ShapeDtypeStruct((32,), jnp.float32)}
  for proj in ["svd", "dct", "random", gradtx.lowrank.quantized("svd")]:
    tx = project_low_rank(optax.adam(1e-3), rank=8, projector=proj)
    abstract = jax.eval_shape(tx.init, params)
    direct = tx.init(params)
    concrete = tx.init(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params))
    shapes = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)
    assert shapes(abstract) == shapes(direct) == shapes(concrete)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"rank": 0}, "rank"), ({"rank": 2.5}, "rank"), ({"update_every": 0}, "update_every"),
     ({"side": "std"}, "side"), ({"on_switch": "drop"}, "on_switch"), ({"projector": "qr"}, "projector"),
     ({"scale": -1.0}, "scale"), ({"seed": 1.5}, "seed"), ({"adaptive_refresh": 3}, "adaptive_refresh"),
     ({"full_rank": 3}, "full_rank")],
)
def test_invalid_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    project_low_rank(optax.sgd(1.0), **{"rank": 2, **kwargs})


def test_invalid_inner_and_dimension_numbers():
  with pytest.raises(ValueError, match="inner"):
    project_low_rank("adam", rank=2)
  tx = project_low_rank(optax.sgd(1.0), rank=2, dimension_numbers=MatrixDims(0, 3))
  with pytest.raises(ValueError, match="dimension_numbers"):
    tx.init({"w": jnp.zeros((4, 4))})
  with pytest.raises(ValueError, match="queue_size"):
    gradtx.lowrank.AdaptiveRefresh(queue_size=0)


def test_nan_gradient_poisons_only_its_leaf():
  """Documented: a NaN gradient gives NaN updates and state for that leaf (an SVD of NaN is NaN); wrap in
  optax.apply_if_finite to skip such steps (conformance-tested)."""
  tx = project_low_rank(optax.adam(0.1), rank=2)
  params = {"w": jnp.zeros((8, 6)), "v": jnp.zeros((8, 6))}
  u, state = tx.update({"w": jnp.full((8, 6), jnp.nan), "v": _g(8, 6)}, tx.init(params))
  assert bool(jnp.all(jnp.isnan(u["w"]))) and bool(jnp.all(jnp.isfinite(u["v"])))
