"""A quick pass of the contract for the geometry entries of the registry (the full suite is tests/conformance)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx import registry

NAMES = ("adamp", "sgdp", "lamb", "lars")

_rng = np.random.default_rng(0)
_A = jnp.asarray(_rng.normal(size=5), jnp.float32)
_T = jnp.asarray(_rng.normal(size=(8, 6)), jnp.float32)
_X = jnp.asarray(_rng.normal(size=(32, 4)), jnp.float32)
_Y = _X @ jnp.asarray(_rng.normal(size=(4, 3)), jnp.float32) + 0.5
PROBLEMS = {
    "parabola": (lambda p: jnp.sum((p - _A) ** 2), jnp.zeros(5), 1e-2),
    "rosenbrock": (lambda p: (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2, jnp.array([-1.2, 1.0]), 0.1),
    "matrix": (lambda p: jnp.sum((p - _T) ** 2), jnp.zeros((8, 6)), 1e-2),
    "mixed": (lambda p: jnp.mean((_X @ p["kernel"] + p["bias"] - _Y) ** 2),
              {"kernel": 0.1 * jnp.ones((4, 3)), "bias": jnp.zeros(3)}, 1e-2),
}


def test_registered():
  for name in NAMES:
    spec = registry.get(name)
    assert spec.family == "geometry" and spec.factory is getattr(gradtx, name)
  assert registry.get("lamb").optax_counterpart[0] is optax.lamb
  assert registry.get("lars").optax_counterpart[0] is optax.lars


@pytest.mark.parametrize("name", NAMES)
def test_converges_with_test_kwargs(name):
  tx = registry.get(name).build()
  for problem, (f, p0, tol) in PROBLEMS.items():

    def body(_, carry, f=f):
      p, s = carry
      u, s = tx.update(jax.grad(f)(p), s, p)
      return optax.apply_updates(p, u), s

    p, _ = jax.jit(lambda p: jax.lax.fori_loop(0, 300, body, (p, tx.init(p))))(p0)
    assert float(f(p)) < tol * float(f(p0)), problem


@pytest.mark.parametrize("name", NAMES)
def test_inject_hyperparams_jit_and_dtypes(name):
  spec = registry.get(name)
  tx = optax.inject_hyperparams(spec.factory, static_args=spec.static_args)(**spec.test_kwargs)
  params = {"w": jnp.ones((3, 2), jnp.bfloat16), "b": jnp.ones(2, jnp.float32)}
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.3), params)
  state = tx.init(params)
  dtypes = jax.tree.map(lambda x: x.dtype, state)
  update = jax.jit(tx.update)
  for _ in range(2):
    updates, state = update(grads, state, params)
  assert update._cache_size() == 1
  assert jax.tree.map(lambda x: x.dtype, state) == dtypes
  assert jax.tree.map(lambda u: u.dtype, updates) == jax.tree.map(lambda p: p.dtype, params)
  assert all(np.isfinite(np.asarray(u, np.float32)).all() for u in jax.tree.leaves(updates))


@pytest.mark.parametrize("name", NAMES)
def test_sharded_params_on_an_explicit_mesh(name):
  """Leaves sharded on any axis (including the channel axis) need no resharding; state keeps its sharding."""
  mesh = jax.make_mesh((4, 2), ("x", "y"), axis_types=(jax.sharding.AxisType.Explicit,) * 2)
  spec = lambda *names: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*names))  # noqa: E731
  with jax.set_mesh(mesh):
    params = {
        "w": jax.device_put(jnp.ones((8, 6)) + jnp.arange(6.0), spec("x", "y")),
        "c": jax.device_put(jnp.ones((3, 3, 4, 8)), spec(None, None, "y", "x")),
        "b": jax.device_put(jnp.ones(8), spec("x")),
    }
    tx = registry.get(name).build(weight_decay=0.1)
    state = jax.jit(tx.init)(params)
    updates, new_state = jax.jit(tx.update)(jax.tree.map(lambda x: 0.1 * x, params), state, params)
  shardings = lambda tree: [x.sharding.spec for x in jax.tree.leaves(tree)]  # noqa: E731
  assert shardings(new_state) == shardings(state)
  assert shardings(updates) == shardings(params)
