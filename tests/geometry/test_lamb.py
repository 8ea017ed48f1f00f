"""LAMB against a NumPy transcription of Algorithm 2 of arXiv:1904.00962, and against optax.lamb."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import gradtx
from tests.geometry import helpers, reference


@pytest.mark.parametrize(
    "kw, ref_kw",
    [
        (dict(weight_decay=0.01), {}),
        (dict(weight_decay=0.1, eps_root=1e-4, b2=0.99), {}),
        (dict(weight_decay=0.1, phi_min=3.0, phi_max=3.5), dict(phi_min=3.0, phi_max=3.5)),
        (dict(weight_decay=0.1, mask={"w": True, "c": True, "b": False},
              trust_ratio_mask={"w": True, "c": False, "b": True}),
         dict(decay={"w", "c"}, trust={"w", "b"})),
        (dict(weight_decay=0.1, mask=gradtx.exclude_bias_and_norm, trust_ratio_mask=gradtx.exclude_bias_and_norm),
         dict(decay={"w", "c"}, trust={"w", "c"})),
    ],
)
def test_matches_paper(kw, ref_kw):
  ref_kw = {**{k: v for k, v in kw.items() if k in ("weight_decay", "eps_root", "b2")}, **ref_kw}
  helpers.run_against_reference(gradtx.lamb(0.01, **kw), reference.Lamb(0.01, **ref_kw))


def test_phi_clips_the_weight_norm():
  params = {"w": jnp.array([3.0, 4.0])}
  grads = {"w": jnp.array([0.0, 1.0])}
  for phi_min, phi_max, norm in ((0.0, None, 5.0), (0.0, 2.0, 2.0), (7.0, None, 7.0), (7.0, 9.0, 7.0)):
    tx = gradtx.scale_by_lamb_trust_ratio(phi_min, phi_max)
    out, _ = helpers.first_update(tx, grads, params)
    np.testing.assert_allclose(out["w"], [0.0, norm])


def test_equals_optax_lamb_with_identity_phi():
  kw = dict(b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.05, mask={"w": True, "c": True, "b": False})
  ours, theirs = gradtx.lamb(0.01, **kw), optax.lamb(0.01, **kw)
  params = {k: jnp.asarray(np.random.default_rng(0).normal(size=s), jnp.float32) for k, s in helpers.SHAPES.items()}
  s1, s2 = ours.init(params), theirs.init(params)
  update1, update2 = jax.jit(ours.update), jax.jit(theirs.update)
  for t in range(5):
    grads = jax.tree.map(lambda x: jnp.sin(x * (t + 1)), params)
    u1, s1 = update1(grads, s1, params)
    u2, s2 = update2(grads, s2, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), u1, u2)
    params = optax.apply_updates(params, u1)


def test_zero_weights_take_ratio_one():
  tx = gradtx.scale_by_lamb_trust_ratio()
  params = {"w": jnp.zeros(3)}
  out, _ = helpers.first_update(tx, {"w": jnp.array([1.0, 2.0, 3.0])}, params)
  np.testing.assert_array_equal(out["w"], [1.0, 2.0, 3.0])
  out, _ = tx.update({"w": jnp.zeros(3)}, tx.init(params), {"w": jnp.ones(3)})
  np.testing.assert_array_equal(out["w"], 0.0)


def test_axis_name_gives_the_global_norm_inside_shard_map():
  mesh = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Explicit,))
  rng = np.random.default_rng(0)
  params = jnp.asarray(rng.normal(size=(8, 6)), jnp.float32)
  grads = jnp.asarray(rng.normal(size=(8, 6)), jnp.float32)
  full, _ = gradtx.scale_by_lamb_trust_ratio(phi_max=2.0).update(grads, optax.EmptyState(), params)

  def sharded(axis_name):
    tx = gradtx.scale_by_lamb_trust_ratio(phi_max=2.0, axis_name=axis_name)
    f = lambda g, p: tx.update(g, optax.EmptyState(), p)[0]  # noqa: E731
    put = lambda x: jax.device_put(x, jax.sharding.NamedSharding(mesh, P("x")))  # noqa: E731
    return jax.shard_map(f, mesh=mesh, in_specs=(P("x"), P("x")), out_specs=P("x"))(put(grads), put(params))

  np.testing.assert_allclose(sharded("x"), full, rtol=1e-6)
  assert not np.allclose(sharded(None), full, rtol=1e-3)


def test_moment_dtypes_and_update_dtype():
  tx = gradtx.lamb(0.01, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16)
  params = {"w": jnp.ones((2, 3), jnp.float16)}
  updates, state = helpers.first_update(tx, {"w": jnp.full((2, 3), 0.5, jnp.float16)}, params)
  assert state[0].mu["w"].dtype == jnp.bfloat16 and state[0].nu["w"].dtype == jnp.bfloat16
  assert updates["w"].dtype == jnp.float16


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(learning_rate=-0.1), "learning_rate"),
        (dict(learning_rate=0.1, b1=1.0), "b1"),
        (dict(learning_rate=0.1, b2=1.5), "b2"),
        (dict(learning_rate=0.1, eps=-1.0), "eps"),
        (dict(learning_rate=0.1, eps_root=-1.0), "eps_root"),
        (dict(learning_rate=0.1, weight_decay=-1.0), "weight_decay"),
        (dict(learning_rate=0.1, phi_min=-1.0), "phi_min"),
        (dict(learning_rate=0.1, phi_max=0.0), "phi_max"),
        (dict(learning_rate=0.1, phi_min=2.0, phi_max=1.0), "phi_max"),
    ],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.lamb(**kwargs)


def test_needs_params():
  tx = gradtx.lamb(0.1)
  with pytest.raises(ValueError, match="params"):
    tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))
