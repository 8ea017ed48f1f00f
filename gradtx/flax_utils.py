"""Flax helpers (needs ``flax``; not imported by ``import gradtx``).

nnx needs none: ``nnx.Optimizer.update(model, grads, **kwargs)`` forwards keyword arguments to ``tx.update``::

    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    loss_fn = lambda p: loss(nnx.merge(graphdef, p, rest, copy=True), x, y)
    optimizer.update(model, grads, loss_fn=loss_fn)

linen's ``flax.training.train_state.TrainState.apply_gradients(grads=..., **kwargs)`` uses its keyword arguments
to replace dataclass fields and never passes them to ``tx.update``; :class:`TrainState` adds ``extra_args``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
  """linen's ``TrainState`` whose ``apply_gradients`` forwards ``extra_args`` to ``tx.update``.

  Examples:
    >>> import jax, jax.numpy as jnp, flax.linen as nn, gradtx
    >>> from gradtx.flax_utils import TrainState
    >>> model, x, y = nn.Dense(1), jnp.ones((4, 2)), jnp.zeros((4, 1))
    >>> state = TrainState.create(apply_fn=model.apply, params=model.init(jax.random.key(0), x)["params"],
    ...                           tx=gradtx.sophia_h(learning_rate=1e-2))
    >>> loss_fn = lambda p: jnp.mean((state.apply_fn({"params": p}, x) - y) ** 2)
    >>> state = state.apply_gradients(grads=jax.grad(loss_fn)(state.params), extra_args={"loss_fn": loss_fn})
    >>> int(state.step)
    1
  """

  def apply_gradients(self, *, grads: Any, extra_args: Mapping[str, Any] | None = None, **kwargs: Any) -> TrainState:
    """Like linen's: increments ``step``, updates ``params`` and ``opt_state``, replaces the fields in ``kwargs``;
    ``extra_args`` (e.g. ``{"loss_fn": ...}``) go to ``tx.update`` as keyword arguments."""
    extra_args = dict(extra_args or {})
    if train_state.OVERWRITE_WITH_GRADIENT in grads:
      updates, new_opt_state = self.tx.update(
          grads["params"], self.opt_state, self.params["params"], **extra_args
      )
      new_params = {
          "params": optax.apply_updates(self.params["params"], updates),
          train_state.OVERWRITE_WITH_GRADIENT: grads[train_state.OVERWRITE_WITH_GRADIENT],
      }
    else:
      updates, new_opt_state = self.tx.update(grads, self.opt_state, self.params, **extra_args)
      new_params = optax.apply_updates(self.params, updates)
    return self.replace(step=self.step + 1, params=new_params, opt_state=new_opt_state, **kwargs)
