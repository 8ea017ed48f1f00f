"""project_radial as a block: layouts, masks, odd leaves, values it cannot know from shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from tests import tolerances
from tests.geometry import helpers, reference


def _orthogonal_rows(p, rng):
  return reference.radial_gradient(p, "channel", rng)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_channel_axis_moves_with_the_layout(axis):
  """channel_axis=k on a kernel whose output axis sits at k equals channel_axis=0 on the torch layout."""
  rng = np.random.default_rng(3)
  p_torch = rng.normal(size=(3, 4, 5))
  tx0 = gradtx.project_radial(optax.scale_by_adam(), weight_decay=0.1, channel_axis=0)
  txk = gradtx.project_radial(optax.scale_by_adam(), weight_decay=0.1, channel_axis=axis)
  to_k = lambda x: jnp.asarray(np.moveaxis(x, 0, axis), jnp.float32)  # noqa: E731
  p0, pk = jnp.asarray(p_torch, jnp.float32), to_k(p_torch)
  s0, sk = tx0.init(p0), txk.init(pk)
  update0, updatek = jax.jit(tx0.update), jax.jit(txk.update)
  for kind in ("channel", "layer", "free", "channel"):
    g = reference.radial_gradient(p_torch, kind, rng)
    u0, s0 = update0(jnp.asarray(g, jnp.float32), s0, p0)
    uk, sk = updatek(to_k(g), sk, pk)
    # The two layouts reduce each channel's 20 entries (norms, the cosine, the radial coefficient) in another
    # order: each reduction moves by ≤ sum_rtol(20) ≈ 2.3e-6 of its scale, and the projection subtracts the
    # radial part, so entries are compared against the update's scale; 4 steps through Adam's state and ~3
    # chained reductions per step give the factor 8 (measured on AVX-512: 5.8e-6).
    tolerances.assert_close_normwise(np.moveaxis(np.asarray(uk), axis, 0), u0, rtol=8 * tolerances.sum_rtol(20))


def test_projection_removes_the_radial_part_and_weakens_decay():
  rng = np.random.default_rng(0)
  p = rng.normal(size=(3, 5))
  g = _orthogonal_rows(p, rng)
  u = rng.normal(size=(3, 5))
  expected, ratio, view = reference.projection(p, g, u, 0.1, 0.25, 1e-8)
  assert view == "channel" and ratio == 0.25
  inner_u = optax.GradientTransformation(lambda params: optax.EmptyState(),
                                         lambda updates, state, params=None: (jnp.asarray(u, jnp.float32), state))
  tx = gradtx.project_radial(inner_u, wd_ratio=0.25, weight_decay=0.2, channel_axis=0)
  params = jnp.asarray(p, jnp.float32)
  out, _ = helpers.first_update(tx, jnp.asarray(g, jnp.float32), params)
  np.testing.assert_allclose(out, expected + 0.2 * 0.25 * p, rtol=1e-5, atol=1e-6)
  rows = np.sum(np.asarray(out - 0.2 * 0.25 * params) * p, axis=1)
  np.testing.assert_allclose(rows, 0.0, atol=1e-5)


def test_cosine_clamps_each_norm_like_torch():
  """F.cosine_similarity clamps ‖g‖ and ‖θ‖ at eps separately (torch 2.x), not their product: a tiny
  gradient aligned with large weights then has a small cosine and the leaf counts as projected."""
  p = 1000.0 * np.eye(2)
  g = 1e-10 * np.eye(2)
  _, ratio, view = reference.projection(p, g, g.copy(), 0.1, 0.1, 1e-8)
  assert view == "channel" and ratio == 0.1
  tx = gradtx.project_radial(optax.identity(), weight_decay=1.0, wd_ratio=0.1)
  out, _ = helpers.first_update(tx, jnp.asarray(g, jnp.float32), jnp.asarray(p, jnp.float32))
  np.testing.assert_allclose(out, 0.1 * p, rtol=1e-6)  # radial g removed, decay × wd_ratio


def test_vectors_are_never_projected():
  tx = gradtx.project_radial(optax.identity(), weight_decay=0.5)
  params = {"b": jnp.array([1.0, 0.0]), "s": jnp.array(2.0)}
  grads = {"b": jnp.array([0.0, 1.0]), "s": jnp.array(0.0)}  # orthogonal to b: would project if 2-D
  out, _ = helpers.first_update(tx, grads, params)
  np.testing.assert_allclose(out["b"], [0.5, 1.0])
  np.testing.assert_allclose(out["s"], 1.0)


def test_zero_weights_follow_the_reference():
  # cos = 0 (norms clamped at eps), so the leaf counts as projected: nothing to remove, decay × wd_ratio.
  p = np.zeros((2, 3))
  g = np.ones((2, 3))
  expected, ratio, view = reference.projection(p, g, g.copy(), 0.1, 0.1, 1e-8)
  assert view == "channel" and ratio == 0.1
  tx = gradtx.project_radial(optax.identity())
  out, _ = tx.update(jnp.asarray(g, jnp.float32), tx.init(jnp.zeros((2, 3))), jnp.zeros((2, 3)))
  np.testing.assert_array_equal(out, expected)


def test_mask_prefix_and_callable():
  params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "head": jnp.ones((2, 2))}
  grads = jax.tree.map(jnp.zeros_like, params)
  by_prefix = gradtx.project_radial(optax.identity(), weight_decay=1.0, wd_ratio=0.5,
                                    mask={"dense": False, "head": True})
  by_fn = gradtx.project_radial(optax.identity(), weight_decay=1.0, wd_ratio=0.5,
                                mask=gradtx.exclude_bias_and_norm)
  out, _ = helpers.first_update(by_prefix, grads, params)
  np.testing.assert_array_equal(out["dense"]["kernel"], 0.0)
  np.testing.assert_array_equal(out["head"], 0.5)  # zero gradient: cos = 0, projected, decay × wd_ratio
  out, _ = helpers.first_update(by_fn, grads, params)
  np.testing.assert_array_equal(out["dense"]["bias"], 0.0)
  np.testing.assert_array_equal(out["dense"]["kernel"], 0.5)


def test_odd_leaves_and_abstract_init():
  params = {"w": jnp.ones((2, 3)), "none": None, "masked": optax.MaskedNode()}
  tx = gradtx.adamp(0.1)
  abstract = jax.eval_shape(tx.init, params)
  state = tx.init(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params))
  assert jax.tree.structure(abstract) == jax.tree.structure(state)
  state = tx.init(params)
  grads = {"w": jnp.full((2, 3), 0.1), "none": None, "masked": optax.MaskedNode()}
  updates, _ = tx.update(grads, state, params)
  assert updates["none"] is None and updates["w"].shape == (2, 3)


def test_bfloat16_params_keep_their_dtype():
  params = {"w": jnp.ones((4, 3), jnp.bfloat16), "b": jnp.ones(3, jnp.bfloat16)}
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)
  for tx in (gradtx.adamp(0.1, weight_decay=0.1), gradtx.sgdp(0.1, momentum=0.9, weight_decay=0.1)):
    state = tx.init(params)
    dtypes = jax.tree.map(lambda x: x.dtype, state)
    updates, state = jax.jit(tx.update)(grads, state, params)
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
    assert jax.tree.map(lambda x: x.dtype, state) == dtypes


def test_extra_args_reach_the_inner_transformation():
  seen = {}

  def update_fn(updates, state, params=None, *, value, **unused):
    seen["value"] = value
    return updates, state

  inner = optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update_fn)
  tx = gradtx.project_radial(inner)
  params = jnp.ones((2, 2))
  tx.update(jnp.ones((2, 2)), tx.init(params), params, value=3.0, unused=1)
  assert seen["value"] == 3.0


def test_nan_gradient_is_loud_and_apply_if_finite_skips_it():
  """A NaN gradient poisons the update and the moments (as in Adam); apply_if_finite keeps the state."""
  params = {"w": jnp.ones((2, 2))}
  grads = {"w": jnp.array([[jnp.nan, 0.0], [0.0, 1.0]])}
  tx = gradtx.adamp(0.1)
  updates, state = helpers.first_update(tx, grads, params)
  assert np.isnan(np.asarray(updates["w"])).any()
  assert np.isnan(np.asarray(state[0].inner_state.mu["w"])).any()
  guarded = optax.apply_if_finite(gradtx.adamp(0.1), max_consecutive_errors=3)
  state = guarded.init(params)
  updates, state = guarded.update(grads, state, params)
  np.testing.assert_array_equal(updates["w"], 0.0)
  assert np.isfinite(np.asarray(state.inner_state[0].inner_state.mu["w"])).all()


def test_errors_known_at_trace_time():
  tx = gradtx.project_radial(optax.identity(), channel_axis=2)
  params = jnp.ones((2, 3))
  with pytest.raises(ValueError, match="channel_axis"):
    helpers.first_update(tx, params, params)
  with pytest.raises(ValueError, match="params"):
    tx.update(params, tx.init(params))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(delta=0.0), "delta"),
        (dict(wd_ratio=1.1), "wd_ratio"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(eps=0.0), "eps"),
        (dict(channel_axis="last"), "channel_axis"),
    ],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.project_radial(optax.identity(), **kwargs)
