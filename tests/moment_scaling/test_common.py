"""Contract details shared by the moment-scaling transformations: abstract init, empty leaves, dtypes, masks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

DIRECTIONS = {
    "belief": lambda **kw: gradtx.scale_by_belief(**kw),
    "belief_amsgrad": lambda **kw: gradtx.scale_by_belief(amsgrad=True, **kw),
    "diffgrad": lambda **kw: gradtx.scale_by_diffgrad(**kw),
    "exadam": lambda **kw: gradtx.scale_by_exadam(**kw),
}


@pytest.mark.parametrize("name", DIRECTIONS)
def test_init_is_shape_only_and_tolerates_empty_leaves(name):
  tx = DIRECTIONS[name]()
  params = {"w": jnp.ones((3, 2)), "none": None, "masked": optax.MaskedNode()}
  abstract = jax.eval_shape(tx.init, params)
  concrete = tx.init(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params))
  assert jax.tree.structure(abstract) == jax.tree.structure(concrete)
  state = tx.init(params)
  updates, state = tx.update({"w": jnp.ones((3, 2)), "none": None, "masked": optax.MaskedNode()}, state, params)
  assert updates["none"] is None and isinstance(updates["masked"], optax.MaskedNode)


@pytest.mark.parametrize("name", DIRECTIONS)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_update_has_the_param_dtype_and_state_dtypes_are_stable(name, dtype):
  tx = DIRECTIONS[name]()
  params = jnp.ones(4, dtype)
  state = tx.init(params)
  dtypes = [x.dtype for x in jax.tree.leaves(state)]
  step = jax.jit(tx.update)
  for k in range(3):
    updates, state = step(jnp.full(4, 0.1 * (k + 1), dtype), state, params)
    assert updates.dtype == dtype
    assert [x.dtype for x in jax.tree.leaves(state)] == dtypes
  assert step._cache_size() == 1


@pytest.mark.parametrize("name", DIRECTIONS)
def test_mu_and_nu_dtypes(name):
  tx = DIRECTIONS[name](mu_dtype=jnp.bfloat16, nu_dtype=jnp.float32)
  state = tx.init(jnp.ones(4, jnp.float16))
  _, state = tx.update(jnp.ones(4, jnp.float16), state)
  assert state.mu.dtype == jnp.bfloat16 and state.nu.dtype == jnp.float32


@pytest.mark.parametrize(
    "kwargs,decayed",
    [
        ({}, -0.1 * 0.5 * 2.0),  # θ(1 − ηλ): update −ηλθ
        ({"fixed_decay": True}, -0.5 * 2.0),  # θ(1 − λ): not multiplied by η
        ({"weight_decouple": False}, None),  # L2: the direction sees λθ
    ],
)
def test_adabelief_decay_modes_respect_the_mask(kwargs, decayed):
  tx = gradtx.adabelief(0.1, weight_decay=0.5, mask={"a": True, "b": False}, rectify=False, eps=1e-8, **kwargs)
  params = {"a": jnp.array([2.0]), "b": jnp.array([2.0])}
  updates, _ = tx.update({"a": jnp.zeros(1), "b": jnp.zeros(1)}, tx.init(params), params)
  assert float(updates["b"][0]) == 0.0
  if decayed is None:  # g = λθ = 1: the first unrectified AdaBelief step is −η·m̂/(√ŝ + ε) ≈ −η/0.9
    np.testing.assert_allclose(updates["a"], -0.1 / 0.9, rtol=1e-4)
  else:
    np.testing.assert_allclose(updates["a"], decayed, rtol=1e-6)


@pytest.mark.parametrize("name", ["adabelief", "diffgrad", "exadam"])
def test_nan_gradient_stays_in_its_element_and_apply_if_finite_skips_it(name):
  spec = gradtx.registry.get(name)
  params = jnp.ones(3)
  tx = spec.build()
  state = tx.init(params)
  for _ in range(2):
    u, state = tx.update(jnp.array([1.0, jnp.nan, 2.0]), state, params)
  u, nu = np.asarray(u), np.asarray(optax.tree.get(state, "nu"))
  assert np.isnan(u[1]) and np.isfinite(u[[0, 2]]).all()
  assert np.isnan(nu[1]) and np.isfinite(nu[[0, 2]]).all()

  guarded = optax.apply_if_finite(spec.build(), max_consecutive_errors=3)
  state = guarded.init(params)
  u, state = guarded.update(jnp.array([1.0, jnp.nan, 2.0]), state, params)
  np.testing.assert_array_equal(u, 0.0)
  assert int(state.notfinite_count) == 1 and np.isfinite(np.asarray(optax.tree.get(state, "nu"))).all()


def test_registry_entries():
  for name in ("adabelief", "diffgrad", "exadam"):
    spec = gradtx.registry.get(name)
    assert spec.family == "moment_scaling" and spec.factory is getattr(gradtx, name)
    assert {"mask", "mu_dtype", "nu_dtype"} <= set(spec.static_args)
  assert {"weight_decouple", "fixed_decay", "rectify", "degenerated_to_sgd", "amsgrad"} <= set(
      gradtx.registry.get("adabelief").static_args
  )
  assert "weight_decouple" in gradtx.registry.get("diffgrad").static_args
