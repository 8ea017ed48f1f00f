"""exclude_bias_and_norm on plain dicts, abstract leaves and Flax parameter trees."""

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import gradtx
from tests.geometry import helpers


def test_by_dimension_and_by_name():
  params = {
      "dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)},
      "attn": {"bias": jnp.ones((2, 4)), "kernel": jnp.ones((3, 2, 4))},
      "norm": {"scale": jnp.ones(2)},
      "embed": {"embedding": jnp.ones((10, 2))},
      "temperature": jnp.ones(()),
      "skip": None,
  }
  assert gradtx.exclude_bias_and_norm(params) == {
      "dense": {"kernel": True, "bias": False},
      "attn": {"bias": False, "kernel": True},
      "norm": {"scale": False},
      "embed": {"embedding": True},
      "temperature": False,
      "skip": None,
  }
  custom = functools.partial(gradtx.exclude_bias_and_norm, names=("embedding",))
  assert custom(params)["embed"]["embedding"] is False
  assert custom(params)["attn"]["bias"] is True


def test_abstract_leaves():
  params = {"w": jax.ShapeDtypeStruct((3, 2), jnp.float32), "b": jax.ShapeDtypeStruct((2,), jnp.float32)}
  assert gradtx.exclude_bias_and_norm(params) == {"w": True, "b": False}


def test_flax_nnx_model_with_lars():
  class Model(nnx.Module):

    def __init__(self, rngs):
      self.dense = nnx.Linear(3, 4, rngs=rngs)
      self.norm = nnx.LayerNorm(4, rngs=rngs)

    def __call__(self, x):
      return self.norm(self.dense(x))

  model = Model(nnx.Rngs(0))
  mask = gradtx.exclude_bias_and_norm(nnx.state(model, nnx.Param))
  assert jax.tree.leaves(mask) == [False, True, False, False]  # dense.bias, dense.kernel, norm.bias, norm.scale
  tx = gradtx.lars(0.1, weight_decay=1e-4, mask=gradtx.exclude_bias_and_norm,
                   trust_ratio_mask=gradtx.exclude_bias_and_norm)
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = jnp.ones((2, 3))
  grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
  before = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
  opt.update(model, grads)
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before, nnx.state(model, nnx.Param))
  assert any(jax.tree.leaves(changed))


def test_optax_masked_accepts_it():
  tx = optax.masked(gradtx.scale_by_lamb_trust_ratio(), gradtx.exclude_bias_and_norm)
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
  updates, _ = helpers.first_update(tx, {"w": jnp.full((2, 2), 0.5), "b": jnp.full(2, 0.5)}, params)
  assert jnp.allclose(updates["w"], 1.0) and jnp.allclose(updates["b"], 0.5)
