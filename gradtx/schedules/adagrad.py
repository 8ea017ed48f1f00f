"""AdaGrad and AdaGrad-Norm directions, the base optimizers of AdAdaGrad / AdAdaGrad-Norm.

Papers:
  * Duchi, Hazan, Singer. "Adaptive Subgradient Methods for Online Learning and Stochastic Optimization",
    JMLR 2011 (AdaGrad).
  * Ward, Wu, Bottou. "AdaGrad stepsizes: Sharp convergence over nonconvex landscapes", ICML 2019 / JMLR 2020.
    https://arxiv.org/abs/1806.01811 (AdaGrad-Norm: one scalar step size for the whole model).
  * Lau, Liu, Kolar. "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods", 2024.
    https://arxiv.org/abs/2402.11215 (their base optimizers).

Reference implementation: timlautk/AdAdaGrad@cc126fb runs coordinate-wise AdaGrad as ``torch.optim.Adagrad``
(``v ← v + g²``, ``u = g / (√v + ε)``, ε = 1e-10, ``v₀ = 0``), which :func:`scale_by_adagrad` follows.
Its ``adagradnorm.py`` is a row-wise (per output channel) variant whose weight decay subtracts a multiple of
the *gradient* (``p.add_(-clr*wd, grad)``), a bug; gradtx's AdaGrad-Norm is the papers' scalar version
(``b_t² = b_{t−1}² + ‖g_t‖²``, ``u = g / (b_t + ε)`` over the whole tree) with decoupled weight decay.

Where gradtx differs from optax: ``optax.adagrad`` / ``optax.scale_by_rss`` start the accumulator at 0.1 and
put ε inside the root (``g / √(v + ε)``), and their traced ε promotes bf16 updates to f32; gradtx keeps the
PyTorch form, accumulates in at least float32 and returns updates in the params' dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import alias, reduce, tree, validation


def _acc_dtype(x) -> Any:
  return jnp.promote_types(x.dtype, jnp.float32)


class ScaleByAdagradState(NamedTuple):
  """State of :func:`scale_by_adagrad`: step count and per-coordinate sums of squared gradients."""

  count: jax.Array
  sum_of_squares: optax.Updates


class ScaleByAdagradNormState(NamedTuple):
  """State of :func:`scale_by_adagrad_norm`: step count and the scalar ``b_t²``."""

  count: jax.Array
  sum_of_squares: jax.Array


def scale_by_adagrad(
    initial_accumulator_value: float = 0.0, eps: float = 1e-10
) -> optax.GradientTransformationExtraArgs:
  r"""Rescales updates by the root of the per-coordinate sum of squared gradients (PyTorch's AdaGrad).

  .. math::

    v_t = v_{t-1} + g_t^2, \qquad u_t = g_t / (\sqrt{v_t} + \epsilon)

  Args:
    initial_accumulator_value: ``v₀`` >= 0 (PyTorch default 0; optax's is 0.1).
    eps: ε added to the root: > 0, or >= 0 when ``initial_accumulator_value > 0``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_adagrad()
    >>> state = tx.init(jnp.zeros(2))
    >>> updates, state = tx.update(jnp.array([3.0, -0.5]), state)
    >>> updates
    Array([ 1., -1.], dtype=float32)
  """
  validation.check_nonnegative("initial_accumulator_value", initial_accumulator_value)
  # With v₀ = 0 the root is 0 until a coordinate sees a nonzero gradient: eps = 0 would divide 0 by 0.
  validation.check_eps("eps", eps, guarded=validation.may_be_positive(initial_accumulator_value))

  def init_fn(params):
    return ScaleByAdagradState(
        count=jnp.zeros([], jnp.int32),
        sum_of_squares=jax.tree.map(
            lambda p: jnp.full_like(p, initial_accumulator_value, dtype=_acc_dtype(p)), params
        ),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    with jax.named_scope("gradtx/adagrad"):
      acc = jax.tree.map(
          lambda g, v: (v + jnp.square(g.astype(v.dtype))).astype(v.dtype), updates, state.sum_of_squares
      )
      new_updates = jax.tree.map(
          lambda g, v: (g.astype(v.dtype) / (jnp.sqrt(v) + eps)).astype(g.dtype), updates, acc
      )
      return new_updates, ScaleByAdagradState(count=tree.safe_increment(state.count), sum_of_squares=acc)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_adagrad_norm(
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    *,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Rescales updates by one scalar: the root of the sum of all squared gradient norms (AdaGrad-Norm).

  .. math::

    b_t^2 = b_{t-1}^2 + \|g_t\|^2, \qquad u_t = g_t / (b_t + \epsilon)

  where ``‖g_t‖`` is the norm of the whole tree.

  Args:
    initial_accumulator_value: ``b₀²`` >= 0.
    eps: ε added to ``b_t``: > 0, or >= 0 when ``initial_accumulator_value > 0``.
    axis_name: axis over which the params are sharded, so ``‖g_t‖`` is the norm of the whole tree.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_adagrad_norm()
    >>> state = tx.init({"a": jnp.zeros(1), "b": jnp.zeros(1)})
    >>> updates, state = tx.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, state)
    >>> updates["a"], updates["b"]
    (Array([0.6], dtype=float32), Array([0.8], dtype=float32))
  """
  validation.check_nonnegative("initial_accumulator_value", initial_accumulator_value)
  # With v₀ = 0 the root is 0 until a coordinate sees a nonzero gradient: eps = 0 would divide 0 by 0.
  validation.check_eps("eps", eps, guarded=validation.may_be_positive(initial_accumulator_value))

  def init_fn(params):
    del params
    return ScaleByAdagradNormState(
        count=jnp.zeros([], jnp.int32), sum_of_squares=jnp.asarray(initial_accumulator_value, jnp.float32)
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    with jax.named_scope("gradtx/adagrad_norm"):
      sq = state.sum_of_squares + jnp.square(reduce.global_norm(updates, axis_name))
      scale = 1.0 / (jnp.sqrt(sq) + eps)
      new_updates = jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates)
      return new_updates, ScaleByAdagradNormState(
          count=tree.safe_increment(state.count), sum_of_squares=sq.astype(jnp.float32)
      )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def adagrad_norm(
    learning_rate: optax.ScalarOrSchedule,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""AdaGrad-Norm: SGD with the single step size ``η / b_t``, ``b_t² = b_{t−1}² + ‖g_t‖²``.

  .. math::

    \theta_t = \theta_{t-1} - \eta_t \left(\frac{g_t}{b_t + \epsilon} + \lambda \theta_{t-1}\right)

  Args:
    learning_rate: η, a float or an optax schedule.
    initial_accumulator_value: ``b₀²``.
    eps: ε added to ``b_t``.
    weight_decay: λ, decoupled and multiplied by the learning rate.
    mask: tree of booleans (or a function of the params giving one) selecting the params that decay.
    axis_name: see :func:`scale_by_adagrad_norm`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> f = lambda p: jnp.sum((p - 3.0) ** 2)
    >>> tx = gradtx.adagrad_norm(learning_rate=2.0)
    >>> params = jnp.zeros(3)
    >>> state = tx.init(params)
    >>> for _ in range(100):
    ...   updates, state = tx.update(jax.grad(f)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(f(params) < 1e-3)
    True

  References:
    Ward et al., `AdaGrad stepsizes: Sharp convergence over nonconvex landscapes
    <https://arxiv.org/abs/1806.01811>`_, 2019.
  """
  return alias.decoupled(
      scale_by_adagrad_norm(initial_accumulator_value, eps, axis_name=axis_name), learning_rate, weight_decay, mask
  )


registry.register(
    registry.OptimizerSpec(
        name="adagrad_norm",
        factory=adagrad_norm,
        test_kwargs={"learning_rate": 1.0},
        family="schedules",
        paper="Ward, Wu, Bottou, AdaGrad stepsizes: Sharp convergence over nonconvex landscapes, 2019, "
        "arXiv:1806.01811",
        reference="timlautk/AdAdaGrad@cc126fb (base optimizers); paper's scalar AdaGrad-Norm",
        static_args=("mask", "axis_name"),
        shard_axis_arg="axis_name",
        state_per_param="0 (one scalar)",
        elementwise=False,
    )
)
