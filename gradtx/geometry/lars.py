"""LARS: momentum SGD with a per-layer learning rate ``η ‖w‖ / (‖∇L(w)‖ + β ‖w‖)``.

Paper: You, Gitman, Ginsburg. "Large Batch Training of Convolutional Networks", 2017.
https://arxiv.org/abs/1708.03888 (Algorithm 1).

gradtx follows Algorithm 1 per leaf (layer) ``l``:
``λ_l = η ‖w_l‖ / (‖g_l‖ + β ‖w_l‖)``, ``v_l ← m v_l + γ_t λ_l (g_l + β w_l)``, ``w_l ← w_l − v_l``: the
global learning rate γ_t sits inside the momentum, as in the paper and ``optax.lars``.

Where gradtx differs from optax 0.2.8 ``lars``:
  * optax divides by ``‖g + βw‖`` (its ``scale_by_trust_ratio`` sees the decayed update); gradtx uses the
    paper's ``‖g‖ + β‖w‖`` (as pytorch_optimizer 4.1.0 ``LARS`` does). The two agree when ``β = 0``.
  * optax's masks default to every leaf; gradtx's do too (``None``), and recommends
    :func:`gradtx.exclude_bias_and_norm` for both ``mask`` and ``trust_ratio_mask``, the practice of the
    official TF code, TF-addons and pytorch_optimizer (which excludes every ``ndim <= 1`` leaf).

Both keep the ratio at 1 (not ``η``) when ``‖w‖ = 0`` or the denominator is 0, so zero-initialized layers
move. pytorch_optimizer applies the learning rate after the momentum (same result for a constant rate);
torch-optimizer ``LARS`` only applies the ratio when ``β ≠ 0``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import alias, numerics, reduce, tree, validation
from gradtx.geometry import _momentum, masks


class ScaleByLarsTrustRatioState(NamedTuple):
  """State of :func:`scale_by_lars_trust_ratio`: step count (for a weight-decay schedule)."""

  count: jax.Array


def scale_by_lars_trust_ratio(
    trust_coefficient: Any = 0.001,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    eps: Any = 0.0,
    trust_ratio_mask: Any | Callable[[optax.Params], Any] | None = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The LARS direction ``λ_l (g + β w)``, with the paper's ratio ``η ‖w‖ / (‖g‖ + β ‖w‖ + ε)``.

  The weight decay β is part of the direction because the ratio needs ``‖g‖`` and ``‖w‖`` separately; no
  learning rate, no momentum (:func:`lars` adds both).

  .. math::

    u_l = \lambda_l (g_l + \beta m_l w_l), \qquad
    \lambda_l = \frac{\eta \|w_l\|}{\|g_l\| + \beta m_l \|w_l\| + \epsilon}

  with ``m_l`` = ``mask`` and ``λ_l = 1`` outside ``trust_ratio_mask``, where ``‖w_l‖ = 0`` or where the
  denominator is 0.

  Args:
    trust_coefficient: η (the paper's 0.001), > 0.
    weight_decay: β, a float or an optax schedule.
    mask: tree of booleans (or a function of the params giving one) selecting the leaves that decay.
    eps: ε added to the denominator (>= 0; the paper has none).
    trust_ratio_mask: tree of booleans (or a function) selecting the leaves that take the ratio.
    axis_name: mesh or pmap axis over which every leaf is sharded; the norms are then the norms of the
      whole leaves. Leaves replicated over that axis must not go through it (use ``optax.partition``).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``params``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_lars_trust_ratio(trust_coefficient=1.0, weight_decay=0.5)
    >>> params = {"w": jnp.array([3.0, 4.0])}
    >>> updates, _ = tx.update({"w": jnp.array([0.0, 2.5])}, tx.init(params), params)
    >>> updates["w"]  # ratio 5 / (2.5 + 0.5 * 5) = 1 applied to g + 0.5 w
    Array([1.5, 4.5], dtype=float32)

  References:
    You et al., `Large Batch Training of Convolutional Networks <https://arxiv.org/abs/1708.03888>`_, 2017.
  """
  validation.check_positive("trust_coefficient", trust_coefficient)
  validation.check_schedule("weight_decay", weight_decay)
  # The trust ratio is taken only where the denominator is positive (1 elsewhere): eps = 0 is safe.
  validation.check_eps("eps", eps, guarded=True)

  def init_fn(params):
    del params
    return ScaleByLarsTrustRatioState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("scale_by_lars_trust_ratio needs `params`: call update(updates, state, params).")
    with jax.named_scope("gradtx/lars_trust_ratio"):
      beta = numerics.schedule_value(weight_decay, state.count)
      decays = masks.resolve_mask(mask, params)
      scaled = masks.resolve_mask(trust_ratio_mask, params)

      def one(g, w, decays_leaf, scaled_leaf):
        compute = jnp.promote_types(g.dtype, jnp.float32)
        leaf_beta = beta if decays_leaf else jnp.zeros([], jnp.float32)
        u = g.astype(compute) + leaf_beta * w.astype(compute)
        if scaled_leaf:
          w_norm = reduce.norm(w, axis_name)
          denom = reduce.norm(g, axis_name) + leaf_beta * w_norm + eps
          ok = jnp.logical_and(w_norm > 0, denom > 0)
          u = u * jnp.where(ok, trust_coefficient * w_norm / jnp.where(ok, denom, 1.0), 1.0)
        return u.astype(g.dtype)

      new_updates = jax.tree.map(one, updates, params, decays, scaled)
      return new_updates, ScaleByLarsTrustRatioState(count=tree.safe_increment(state.count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def lars(
    learning_rate: optax.ScalarOrSchedule,
    momentum: Any = 0.9,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    trust_coefficient: Any = 0.001,
    eps: Any = 0.0,
    nesterov: bool = False,
    trust_ratio_mask: Any | Callable[[optax.Params], Any] | None = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The LARS optimizer (Algorithm 1 of the paper), with the paper's trust-ratio denominator.

  .. math::

    \lambda_l &= \frac{\eta \|w_l\|}{\|g_l\| + \beta \|w_l\|} \\
    v_l &\leftarrow m \, v_l + \gamma_t \lambda_l (g_l + \beta w_l), \qquad w_l \leftarrow w_l - v_l

  Built as ``chain(scale_by_lars_trust_ratio(...), scale_by_learning_rate(γ), trace(m, nesterov))``
  (a twin of ``optax.trace`` whose buffer keeps its dtype under ``inject_hyperparams``).
  Recommended: ``mask=gradtx.exclude_bias_and_norm, trust_ratio_mask=gradtx.exclude_bias_and_norm``.

  Args:
    learning_rate: γ, a float or an optax schedule (the paper uses polynomial decay of power 2).
    momentum: m in [0, 1).
    weight_decay: β, a float or an optax schedule.
    mask: tree of booleans (or a function of the params giving one) selecting the leaves that decay.
    trust_coefficient: η, > 0 (the paper's 0.001).
    eps: ε added to the ratio's denominator (>= 0).
    nesterov: Nesterov momentum (``optax.trace(nesterov=True)``; not in the paper).
    trust_ratio_mask: tree of booleans (or a function) selecting the leaves that take the ratio.
    axis_name: see :func:`scale_by_lars_trust_ratio`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> f = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> tx = gradtx.lars(learning_rate=2.0, trust_coefficient=0.01)
    >>> params = {"w": jnp.full((3, 2), 0.1)}
    >>> state = tx.init(params)
    >>> for _ in range(200):
    ...   updates, state = tx.update(jax.grad(f)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(f(params) < 0.05)
    True

  References:
    You et al., `Large Batch Training of Convolutional Networks <https://arxiv.org/abs/1708.03888>`_, 2017.
  """
  validation.check_schedule("learning_rate", learning_rate)
  validation.check_beta("momentum", momentum)
  validation.check_bool("nesterov", nesterov)
  return alias.keep_update_dtype(optax.chain(
      scale_by_lars_trust_ratio(
          trust_coefficient,
          weight_decay,
          mask,
          eps=eps,
          trust_ratio_mask=trust_ratio_mask,
          axis_name=axis_name,
      ),
      optax.scale_by_learning_rate(learning_rate),
      _momentum.heavy_ball(momentum, nesterov=nesterov),
  ))


registry.register(
    registry.OptimizerSpec(
        name="lars",
        factory=lars,
        test_kwargs={"learning_rate": 0.1, "trust_coefficient": 0.1},
        family="geometry",
        paper="You, Gitman, Ginsburg, Large Batch Training of Convolutional Networks, 2017, arXiv:1708.03888",
        reference="optax==0.2.8 lars (equal without weight decay); paper Algorithm 1 (NumPy transcription, "
        "tests/geometry/reference.py); pytorch-optimizer 4.1.0 LARS",
        static_args=("mask", "trust_ratio_mask", "nesterov", "axis_name"),
        shard_axis_arg="axis_name",
        state_per_param="1 (momentum)",
        elementwise=False,
        optax_counterpart=(optax.lars, {"learning_rate": 0.1, "trust_coefficient": 0.1}),
    )
)
