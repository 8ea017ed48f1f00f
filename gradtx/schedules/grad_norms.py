"""A pass-through transformation that records the norm of every update it sees, for schedule refinement.

Refinement (:func:`gradtx.refined_schedule`, Defazio et al. 2023, https://arxiv.org/abs/2310.07831) needs
the sequence of gradient norms of a previous run (or of the first run of the same job). The official code
(facebookresearch/adaptive_scheduling) reads them from exported logs; gradtx keeps them in the optimizer
state instead, so one line collects them::

    tx = optax.chain(gradtx.record_grad_norms(total_steps), optax.sgd(schedule))
    ...
    norms = gradtx.recorded_grad_norms(opt_state)

The buffer has a fixed length (``max_steps``), so the jitted update compiles once; steps past ``max_steps``
are counted but not stored. The buffer and the count mirror no param: they are small and replicated.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradtx.core import reduce, tree, validation

NormOrder = Literal[1, 2]


class RecordGradNormsState(NamedTuple):
  """State of :func:`record_grad_norms`: steps seen and the float32 buffer of their norms."""

  count: jax.Array
  norms: jax.Array


def _tree_norm(updates: Any, order: int, axis_name: reduce.AxisName) -> jax.Array:
  if order == 2:
    return reduce.global_norm(updates, axis_name)
  leaves = jax.tree.leaves(updates)
  total = sum((jnp.sum(jnp.abs(x.astype(jnp.float32))) for x in leaves), jnp.zeros((), jnp.float32))
  return reduce.psum(total, axis_name)


def record_grad_norms(
    max_steps: int,
    *,
    ord: NormOrder = 2,  # pylint: disable=redefined-builtin
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Passes updates through unchanged and records their global norm at each step.

  .. math::

    n_t = \|g_t\|_2 \ (\texttt{ord=2}, \text{for SGD-like refinement}) \quad\text{or}\quad
    n_t = \|g_t\|_1 \ (\texttt{ord=1}, \text{for Adam-like refinement})

  over the whole tree. Put it first in a chain to record raw gradients (after a clipping step it records
  clipped ones).

  Args:
    max_steps: length of the buffer (usually the number of training steps); an int >= 1.
    ord: 2 for the ℓ2 norm (the paper's SGD weights ``‖g‖⁻²``) or 1 for the ℓ1 norm (its Adam weights
      ``‖g‖₁⁻¹``).
    axis_name: when the params are sharded over a ``pmap`` / ``shard_map`` axis, its name: the partial sums
      are reduced across it so the recorded norm is that of the whole tree. Leave it ``None`` for gradients
      that are already whole on each device (data parallelism after ``pmean``).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`RecordGradNormsState`.

  Examples:
    >>> import jax.numpy as jnp, optax, gradtx
    >>> tx = optax.chain(gradtx.record_grad_norms(4), optax.sgd(0.1))
    >>> params = jnp.zeros(2)
    >>> state = tx.init(params)
    >>> for g in ([3.0, 4.0], [0.0, 1.0]):
    ...   _, state = tx.update(jnp.array(g), state, params)
    >>> gradtx.recorded_grad_norms(state)
    array([5., 1.], dtype=float32)
  """
  validation.check_int("max_steps", max_steps, low=1)
  validation.check_choice("ord", ord, (1, 2))

  def init_fn(params):
    del params
    return RecordGradNormsState(count=jnp.zeros([], jnp.int32), norms=jnp.zeros([max_steps], jnp.float32))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    with jax.named_scope("gradtx/record_grad_norms"):
      norm = _tree_norm(updates, ord, axis_name)
      # Out-of-range indices are dropped, so steps past max_steps leave the buffer as it is.
      norms = state.norms.at[state.count].set(norm, mode="drop")
      return updates, RecordGradNormsState(count=tree.safe_increment(state.count), norms=norms)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def recorded_grad_norms(opt_state: Any) -> np.ndarray:
  """The norms recorded so far by the (first) :func:`record_grad_norms` inside ``opt_state``, as NumPy.

  Args:
    opt_state: an optimizer state holding a :class:`RecordGradNormsState` anywhere (a chain, a wrapper's
      inner state, ``inject_hyperparams``).

  Returns:
    A float32 array of the first ``min(count, max_steps)`` recorded norms.
  """
  found = [
      s
      for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, RecordGradNormsState))
      if isinstance(s, RecordGradNormsState)
  ]
  if not found:
    raise ValueError("`opt_state` holds no RecordGradNormsState; add gradtx.record_grad_norms to the chain.")
  state = found[0]
  norms = np.asarray(jax.device_get(state.norms))
  return norms[: min(int(state.count), norms.shape[0])]
