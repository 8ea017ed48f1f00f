"""LARS against a NumPy transcription of Algorithm 1 of arXiv:1708.03888, and against optax.lars."""

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
        (dict(weight_decay=5e-4), {}),
        (dict(weight_decay=0.1, momentum=0.5, nesterov=True, eps=1e-3), {}),
        (dict(weight_decay=0.1, trust_coefficient=0.02, momentum=0.0), {}),
        (dict(weight_decay=0.1, mask={"w": True, "c": False, "b": False},
              trust_ratio_mask={"w": True, "c": True, "b": False}),
         dict(decay={"w"}, trust={"w", "c"})),
        (dict(weight_decay=0.1, mask=gradtx.exclude_bias_and_norm, trust_ratio_mask=gradtx.exclude_bias_and_norm),
         dict(decay={"w", "c"}, trust={"w", "c"})),
    ],
)
def test_matches_paper(kw, ref_kw):
  shared = ("weight_decay", "momentum", "nesterov", "eps", "trust_coefficient")
  ref_kw = {**{k: v for k, v in kw.items() if k in shared}, **ref_kw}
  kw = {"trust_coefficient": 0.05, **kw}
  ref_kw = {"trust_coefficient": 0.05, **ref_kw}
  helpers.run_against_reference(gradtx.lars(0.2, **kw), reference.Lars(0.2, **ref_kw))


def test_optax_lars_agrees_without_decay_and_differs_with_it():
  """optax divides by ‖g + βw‖; the paper (and gradtx) by ‖g‖ + β‖w‖."""
  params = {"w": jnp.array([[1.0, 2.0], [3.0, -1.0]])}
  grads = {"w": jnp.array([[0.5, -0.5], [0.1, 0.3]])}
  for decay, same in ((0.0, True), (0.1, False)):
    ours, theirs = gradtx.lars(1.0, weight_decay=decay), optax.lars(1.0, weight_decay=decay)
    u1, _ = helpers.first_update(ours, grads, params)
    u2, _ = helpers.first_update(theirs, grads, params)
    assert np.allclose(u1["w"], u2["w"], rtol=1e-6) == same
  w, g = np.asarray(params["w"]), np.asarray(grads["w"])
  local = 0.001 * np.linalg.norm(w) / (np.linalg.norm(g) + 0.1 * np.linalg.norm(w))
  np.testing.assert_allclose(u1["w"], -local * (g + 0.1 * w), rtol=1e-6)


def test_zero_weights_take_ratio_one():
  tx = gradtx.scale_by_lars_trust_ratio(weight_decay=0.1)
  params = {"w": jnp.zeros((2, 2))}
  grads = {"w": jnp.ones((2, 2))}
  out, _ = helpers.first_update(tx, grads, params)
  np.testing.assert_array_equal(out["w"], 1.0)


def test_axis_name_gives_the_global_norms_inside_shard_map():
  mesh = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Explicit,))
  rng = np.random.default_rng(1)
  params = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
  grads = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
  tx = gradtx.scale_by_lars_trust_ratio(weight_decay=0.1)
  full, _ = helpers.first_update(tx, grads, params)

  def sharded(axis_name):
    tx = gradtx.scale_by_lars_trust_ratio(weight_decay=0.1, axis_name=axis_name)
    f = lambda g, p: helpers.first_update(tx, g, p)[0]  # noqa: E731
    put = lambda x: jax.device_put(x, jax.sharding.NamedSharding(mesh, P("x")))  # noqa: E731
    return jax.shard_map(f, mesh=mesh, in_specs=(P("x"), P("x")), out_specs=P("x"))(put(grads), put(params))

  np.testing.assert_allclose(sharded("x"), full, rtol=1e-6)
  assert not np.allclose(sharded(None), full, rtol=1e-3)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(learning_rate=-0.1), "learning_rate"),
        (dict(learning_rate=0.1, momentum=1.0), "momentum"),
        (dict(learning_rate=0.1, weight_decay=-1.0), "weight_decay"),
        (dict(learning_rate=0.1, trust_coefficient=0.0), "trust_coefficient"),
        (dict(learning_rate=0.1, eps=-1.0), "eps"),
        (dict(learning_rate=0.1, nesterov=None), "nesterov"),
    ],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.lars(**kwargs)
