"""Annealed Gaussian gradient noise.

Paper: Neelakantan, Vilnis, Le, Sutskever, Kaiser, Kurach, Martens. "Adding Gradient Noise Improves
Learning for Very Deep Networks", 2015. https://arxiv.org/abs/1511.06807

The paper adds ``N(0, σ_t²)`` with ``σ_t² = η / (1 + t)^γ`` (t from 0) to the gradient, before the rest of
the optimizer. ``optax.add_noise`` computes the same standard deviation (after optax#281 / PR #294 and
optax#337 / PR #369); gradtx writes its own because optax's version

  * promotes bf16/f16 updates to float32 (its float32 ``std`` times the noise), breaking the dtype contract;
  * is a plain ``GradientTransformation`` (``update`` takes no extra keyword arguments);
  * splits the key in the state every step; gradtx keeps the seed's key and folds in the step, so the noise
    of step ``t`` does not depend on how the state was restored.

The noise is drawn in float32 and cast to each update's dtype. With the same seed every replica draws the
same noise (data parallelism: the replicas' updates stay equal). Inside ``shard_map`` over an axis across
which the tensors are split, every shard would draw its block from the same key, so the blocks would repeat;
``axis_name`` folds the shard's index on that axis into the key, so each block is independent (a different
realization from the unsharded run, with the same distribution).
gradtx registers no ``noisy_*`` optimizers: ``optax.chain(gradtx.add_gradient_noise(...), any_optimizer)``
is the whole method, and ``optax.noisy_sgd`` already names the SGD case.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx.core import reduce, tree, validation


class AddGradientNoiseState(NamedTuple):
  """State of :func:`add_gradient_noise`: step count and the key made from the seed."""

  count: jax.Array
  key: jax.Array


def add_gradient_noise(
    eta: float = 0.01, gamma: float = 0.55, *, seed: int = 0, axis_name: reduce.AxisName = None
) -> optax.GradientTransformationExtraArgs:
  r"""Adds annealed Gaussian noise to the updates: ``g + N(0, η / (1 + t)^γ)``.

  .. math::

    \tilde g_t = g_t + \sigma_t\, \xi_t, \quad \xi_t \sim \mathcal N(0, I), \quad
    \sigma_t^2 = \frac{\eta}{(1 + t)^{\gamma}}, \ t = 0, 1, \dots

  Args:
    eta: η >= 0, the initial variance (paper: one of 0.01, 0.3, 1.0).
    gamma: γ >= 0, the annealing exponent (paper: 0.55).
    seed: int seed of the noise; the key of step ``t`` is ``fold_in(PRNGKey(seed), t)``.
    axis_name: inside ``shard_map``, the axis across which the updates are split; each shard folds its
      index into the key. Leave it ``None`` for the data-parallel axis, where replicas must agree.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; put it first in a chain (the paper adds the noise to the
    gradient, before the learning rate and the optimizer's statistics).

  Examples:
    >>> import jax.numpy as jnp, optax, gradtx
    >>> tx = optax.chain(gradtx.add_gradient_noise(eta=0.01, seed=0), optax.sgd(0.1))
    >>> state = tx.init(jnp.zeros(3))
    >>> u, state = tx.update(jnp.ones(3), state)
    >>> u.shape, u.dtype
    ((3,), dtype('float32'))

  References:
    Neelakantan et al., `Adding Gradient Noise Improves Learning for Very Deep Networks
    <https://arxiv.org/abs/1511.06807>`_, 2015.
  """
  validation.check_nonnegative("eta", eta)
  validation.check_nonnegative("gamma", gamma)
  validation.check_int("seed", seed)

  def init_fn(params):
    del params
    return AddGradientNoiseState(count=jnp.zeros([], jnp.int32), key=jax.random.PRNGKey(seed))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    with jax.named_scope("gradtx/add_gradient_noise"):
      t = state.count.astype(jnp.float32)
      std = jnp.sqrt(jnp.asarray(eta, jnp.float32) / (1.0 + t) ** jnp.asarray(gamma, jnp.float32))
      leaves, treedef = jax.tree.flatten(updates)
      key = jax.random.fold_in(state.key, state.count)
      if axis_name is not None:
        key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
      keys = jax.random.split(key, max(len(leaves), 1))
      noisy = [
          (g.astype(jnp.float32) + std * jax.random.normal(k, g.shape, jnp.float32)).astype(g.dtype)
          for g, k in zip(leaves, keys)
      ]
      return treedef.unflatten(noisy), AddGradientNoiseState(count=tree.safe_increment(state.count), key=state.key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
