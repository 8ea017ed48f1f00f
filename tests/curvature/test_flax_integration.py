"""Sophia and AdaHessian from Flax: nnx through ``nnx.Optimizer.update(model, grads, loss_fn=...)``, linen through
``gradtx.flax_utils.TrainState`` (linen's own ``apply_gradients`` does not forward extra arguments)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import gradtx
from gradtx.flax_utils import TrainState

_RNG = np.random.default_rng(0)
_X = jnp.asarray(_RNG.normal(size=(32, 4)), jnp.float32)
_Y = jnp.sin(_X.sum(axis=1, keepdims=True))


class _MLP(nnx.Module):
  def __init__(self, rngs):
    self.l1, self.l2 = nnx.Linear(4, 16, rngs=rngs), nnx.Linear(16, 1, rngs=rngs)

  def __call__(self, x):
    return self.l2(nnx.tanh(self.l1(x)))


def _mse(model):
  return jnp.mean((model(_X) - _Y) ** 2)


@pytest.mark.parametrize(
    "tx",
    [
        gradtx.sophia_h(optax.cosine_decay_schedule(0.02, 60), weight_decay=0.0),
        gradtx.adahessian(0.05, spatial_average=None),
    ],
    ids=["sophia_h", "adahessian"],
)
def test_nnx_optimizer_forwards_loss_fn(tx):
  model = _MLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer):
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    loss_fn = lambda p: _mse(nnx.merge(graphdef, p, rest, copy=True))
    loss, grads = nnx.value_and_grad(_mse)(model)
    optimizer.update(model, grads, loss_fn=loss_fn)
    return loss

  losses = [float(train_step(model, optimizer)) for _ in range(60)]
  assert losses[-1] < 0.5 * losses[0]


def test_nnx_tract_first_layer():
  model = _MLP(nnx.Rngs(0))
  first_kernel = lambda params: jax.tree.map(lambda _: False, params) | {"l1": {"kernel": True, "bias": False}}
  tx = optax.chain(gradtx.scale_by_tract(mask=first_kernel), optax.adam(1e-2))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(_mse)(model)
    optimizer.update(model, grads, layer_inputs=_X)  # a Dense first layer's inputs are the batch itself
    return loss

  losses = [float(train_step(model, optimizer)) for _ in range(60)]
  assert losses[-1] < 0.5 * losses[0]


class _LinenMLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(1)(nn.tanh(nn.Dense(16)(x)))


def test_linen_train_state_forwards_extra_args():
  model = _LinenMLP()
  params = model.init(jax.random.key(0), _X)["params"]
  tx = gradtx.sophia_h(1e-2)
  state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  loss_fn = lambda p: jnp.mean((model.apply({"params": p}, _X) - _Y) ** 2)
  grads = jax.grad(loss_fn)(state.params)
  new_state = state.apply_gradients(grads=grads, extra_args={"loss_fn": loss_fn})
  updates, _ = tx.update(grads, tx.init(params), params, loss_fn=loss_fn)
  for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(optax.apply_updates(params, updates))):
    np.testing.assert_array_equal(a, b)
  assert int(new_state.step) == 1
  # linen's own TrainState treats extra keyword arguments as fields to replace, so it cannot forward loss_fn.
  plain = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  with pytest.raises((TypeError, ValueError)):
    plain.apply_gradients(grads=grads, loss_fn=loss_fn)
