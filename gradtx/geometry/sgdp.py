"""SGDP: SGD with momentum whose update loses its radial component on scale-invariant weights.

Paper: Heo, Chun, Oh, Han, Yun, Kim, Uh, Ha. "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
Scale-invariant Weights", ICLR 2021. https://arxiv.org/abs/2006.08217

Reference implementation: clovaai/AdamP@146287bf ``adamp/sgdp.py``. gradtx follows it step for step:
``b ← μ b + (1 − dampening) g`` from ``b = 0`` (dampening applies from the first step, unlike
``torch.optim.SGD``, which copies ``g`` into a new buffer), direction ``g + μ b`` (nesterov) or ``b``, the
projection of :func:`gradtx.project_radial` tested with the raw gradient, decay
``θ ← θ (1 − lr λ s / (1 − μ))`` with ``s = wd_ratio`` on projected leaves, then ``θ ← θ − lr d``.
As in the reference, nesterov is allowed with dampening and with ``momentum = 0`` (then it is plain SGD).

Without nesterov the official direction is the buffer itself (``d_p = buf``, no copy) and the projection
subtracts in place (``perturb -= ...``), so the stored buffer loses its radial part too and the next step
starts from the projected buffer: ``b_t ← proj(μ b_{t−1} + (1 − dampening) g_t)``. gradtx does the same
(the buffer in the state is the projected one). With nesterov the direction ``g + μ b`` is a new tensor and
the buffer stays unprojected, in the reference and here.

Where gradtx differs from peers: ``optax.trace`` has no dampening; pytorch_optimizer 4.1.0 ``SGDP``
defaults ``lr=1e-3`` where the reference requires it, and without nesterov it projects a copy
(``d_p = buf.clone()``), so its buffer keeps the radial part and its trajectory differs from the official
one whenever the projection fires (``tests/fidelity``, case ``sgdp_dampening``); ``channel_axis`` defaults
to -1 (Flax kernels), the reference's PyTorch layout is ``channel_axis=0``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import alias, reduce, tree, validation
from gradtx.geometry import _momentum
from gradtx.geometry.radial import StateAlias, project_radial_aliased

#: Without nesterov the official direction IS the momentum buffer (``d_p = buf``): project the buffer in the
#: state and keep the projection there.
_BUFFER: StateAlias = (
    lambda state: state.trace,
    lambda state, projected: optax.TraceState(trace=tree.cast_like(projected, state.trace)),
)


def _checked_momentum(momentum, dampening, nesterov):
  validation.check_beta("momentum", momentum)
  validation.check_range("dampening", dampening, low=0.0, high=1.0)
  validation.check_bool("nesterov", nesterov)
  return _momentum.heavy_ball(momentum, dampening, nesterov=nesterov), (None if nesterov else _BUFFER)


def scale_by_sgdp(
    momentum: Any = 0.0,
    dampening: Any = 0.0,
    *,
    nesterov: bool = False,
    eps: Any = 1e-8,
    delta: Any = 0.1,
    channel_axis: int = -1,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The SGDP direction: the reference's momentum with the radial projection, no decay, no lr.

  .. math::

    \tilde b_t &= \mu b_{t-1} + (1 - \text{dampening})\, g_t \\
    \text{nesterov:} \quad u_t &= \operatorname{proj}_{g_t, \theta}(g_t + \mu \tilde b_t), \quad b_t = \tilde b_t \\
    \text{otherwise:} \quad u_t &= b_t = \operatorname{proj}_{g_t, \theta}(\tilde b_t)

  Without nesterov the stored buffer is the projected one, as in the official code, whose ``d_p = buf`` is
  projected in place (pytorch_optimizer 4.1.0 projects a copy and keeps ``b_t = \tilde b_t``).

  Args:
    momentum: μ in [0, 1).
    dampening: in [0, 1].
    nesterov: use ``g_t + μ b_t``.
    eps: ε of the cosine and the normalized weights (> 0).
    delta: δ of the cosine threshold ``δ / √(row length)``.
    channel_axis: output-channel axis of ``ndim > 1`` leaves (-1: Flax; 0: PyTorch).
    axis_name: inside ``shard_map``, the axis across which ``ndim > 1`` leaves are split along a
      non-channel dimension (see :func:`gradtx.project_radial`).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``params``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_sgdp(momentum=0.9)
    >>> params = {"w": jnp.eye(2)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.array([[0.0, 1.0], [2.0, 0.0]])}, state, params)
    >>> updates["w"]  # orthogonal to each row of w: projected, and nothing radial to remove
    Array([[0., 1.],
           [2., 0.]], dtype=float32)

  References:
    Heo et al., `AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights
    <https://arxiv.org/abs/2006.08217>`_, 2021.
  """
  direction, buffer = _checked_momentum(momentum, dampening, nesterov)
  return project_radial_aliased(
      direction, buffer, delta=delta, eps=eps, channel_axis=channel_axis, axis_name=axis_name
  )


def sgdp(
    learning_rate: optax.ScalarOrSchedule,
    momentum: Any = 0.0,
    dampening: Any = 0.0,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    nesterov: bool = False,
    eps: Any = 1e-8,
    delta: Any = 0.1,
    wd_ratio: Any = 0.1,
    channel_axis: int = -1,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The SGDP optimizer, as the official code: momentum SGD, radial projection, decay over ``1 − μ``.

  .. math::

    \theta_t = \theta_{t-1} \left(1 - \frac{\eta_t \lambda s_t}{1 - \mu}\right)
    - \eta_t \operatorname{proj}(d_t)

  with the momentum direction ``d_t`` of :func:`scale_by_sgdp` (without nesterov the projected ``d_t`` is
  also the buffer carried to the next step) and ``s_t = wd_ratio`` on leaves the projection acted on, 1
  elsewhere. Built as ``chain(project_radial(momentum, weight_decay=λ/(1−μ), ...),
  scale_by_learning_rate(η))``, the projection writing back into the momentum buffer without nesterov.

  Args:
    learning_rate: η, a float or an optax schedule (the reference has no default).
    momentum: μ in [0, 1).
    dampening: in [0, 1].
    weight_decay: λ, decoupled and divided by ``1 − μ`` (official README: 1e-5 with μ = 0.9).
    mask: tree of booleans (or a function of the params giving one) selecting the leaves that decay.
    nesterov: use ``g_t + μ b_t``.
    eps: ε of the cosine and the normalized weights (> 0).
    delta: δ of the cosine threshold ``δ / √(row length)``.
    wd_ratio: factor of the decay on projected leaves, in [0, 1].
    channel_axis: output-channel axis of ``ndim > 1`` leaves (-1: Flax; 0: PyTorch).
    axis_name: inside ``shard_map``, the axis across which ``ndim > 1`` leaves are split along a
      non-channel dimension (see :func:`gradtx.project_radial`).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> f = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> tx = gradtx.sgdp(learning_rate=0.05, momentum=0.9, nesterov=True, weight_decay=1e-5)
    >>> params = {"w": jnp.full((3, 2), 0.1)}
    >>> state = tx.init(params)
    >>> for _ in range(100):
    ...   updates, state = tx.update(jax.grad(f)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(f(params) < 1e-3)
    True

  References:
    Heo et al., `AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights
    <https://arxiv.org/abs/2006.08217>`_, 2021.
  """
  validation.check_schedule("learning_rate", learning_rate)
  validation.check_schedule("weight_decay", weight_decay)
  direction, buffer = _checked_momentum(momentum, dampening, nesterov)
  # In float32 whether the hyperparameters are Python floats or traced (inject_hyperparams).
  keep = 1.0 - jnp.asarray(momentum, jnp.float32)
  if callable(weight_decay):
    scaled_decay = lambda count: jnp.asarray(weight_decay(count), jnp.float32) / keep  # noqa: E731
  else:
    scaled_decay = jnp.asarray(weight_decay, jnp.float32) / keep
  return alias.keep_update_dtype(optax.chain(
      project_radial_aliased(
          direction,
          buffer,
          delta=delta,
          wd_ratio=wd_ratio,
          weight_decay=scaled_decay,
          eps=eps,
          channel_axis=channel_axis,
          axis_name=axis_name,
          mask=mask,
      ),
      optax.scale_by_learning_rate(learning_rate),
  ))


registry.register(
    registry.OptimizerSpec(
        name="sgdp",
        factory=sgdp,
        test_kwargs={"learning_rate": 2e-3, "momentum": 0.9},
        family="geometry",
        paper="Heo et al., AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant "
        "Weights, ICLR 2021, arXiv:2006.08217",
        reference="clovaai/AdamP@146287bf adamp/sgdp.py (NumPy transcription, tests/geometry/reference.py)",
        static_args=("mask", "nesterov", "channel_axis", "axis_name"),
        shard_axis_arg="axis_name",
        state_per_param="1 (momentum buffer)",
        elementwise=False,
        optax_counterpart=(optax.sgd, {"learning_rate": 2e-3, "momentum": 0.9}),
    )
)
