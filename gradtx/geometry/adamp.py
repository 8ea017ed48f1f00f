"""AdamP: Adam whose update loses its radial component on scale-invariant weights.

Paper: Heo, Chun, Oh, Han, Yun, Kim, Uh, Ha. "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
Scale-invariant Weights", ICLR 2021. https://arxiv.org/abs/2006.08217

Reference implementation: clovaai/AdamP@146287bf ``adamp/adamp.py``. gradtx follows it step for step:
``denom = √v_t / √(1−β2^t) + ε``, direction ``m_t / denom`` (nesterov: ``(β1 m_t + (1−β1) g_t) / denom``),
step ``lr / (1−β1^t)``, the projection of :func:`gradtx.project_radial` (same ``ε``) tested with the raw
gradient, and decoupled decay ``θ ← θ (1 − lr λ s)`` with ``s = wd_ratio`` on projected leaves. The
official ``perturb = exp_avg / denom`` is a new tensor, so its in-place projection leaves the moments
unprojected; gradtx projects only the update too (unlike SGDP without nesterov, whose ``d_p`` is the
momentum buffer itself: :mod:`gradtx.geometry.sgdp`).

Where gradtx differs from peers:
  * AdamP's nesterov is not ``optax.scale_by_adam(nesterov=True)`` (NAdam's ``β1 m_t / (1−β1^{t+1})``
    term); gradtx uses the official form.
  * pytorch_optimizer 4.1.0 ``AdamP`` divides by ``(√v + ε) / √(1−β2^t)`` (ε scaled by the bias
    correction); gradtx keeps the official ``√v / √(1−β2^t) + ε``.
  * ``channel_axis`` defaults to -1 (Flax kernels); the reference's PyTorch layout is ``channel_axis=0``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax

from gradtx import registry
from gradtx.core import alias, reduce, validation
from gradtx.geometry import _adam
from gradtx.geometry.radial import project_radial


def _checked_adam(b1, b2, eps, nesterov, mu_dtype, nu_dtype):
  validation.check_beta("b1", b1)
  validation.check_beta("b2", b2)
  # Adam's sqrt(v) is 0 on a zero-gradient coordinate, and ε also guards the cosine: ε = 0 gives 0 / 0.
  validation.check_eps("eps", eps)
  validation.check_bool("nesterov", nesterov)
  return _adam.scale_by_adam(b1, b2, eps, nesterov=nesterov, mu_dtype=mu_dtype, nu_dtype=nu_dtype)


def scale_by_adamp(
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    *,
    delta: Any = 0.1,
    nesterov: bool = False,
    channel_axis: int = -1,
    axis_name: reduce.AxisName = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The AdamP direction: Adam's bias-corrected update with the radial projection, no decay, no lr.

  .. math::

    u_t = \operatorname{proj}_{g_t, \theta}\!\left(\frac{m_t / (1-\beta_1^t)}
    {\sqrt{v_t} / \sqrt{1-\beta_2^t} + \epsilon}\right)

  (nesterov: ``β1 m_t + (1−β1) g_t`` in place of ``m_t``), with the projection of
  :func:`gradtx.project_radial`. :func:`adamp` adds the decay whose strength depends on the projection.

  Args:
    b1: decay rate of the first moment, in [0, 1).
    b2: decay rate of the second moment, in [0, 1).
    eps: ε of the denominator, the cosine and the normalized weights (> 0).
    delta: δ of the cosine threshold ``δ / √(row length)``.
    nesterov: use ``β1 m_t + (1−β1) g_t`` as the numerator.
    channel_axis: output-channel axis of ``ndim > 1`` leaves (-1: Flax; 0: PyTorch).
    axis_name: inside ``shard_map``, the axis across which ``ndim > 1`` leaves are split along a
      non-channel dimension (see :func:`gradtx.project_radial`).
    mu_dtype: dtype of the first moment; ``None`` keeps each param's dtype.
    nu_dtype: dtype of the second moment; ``None``: at least float32 (pass the params' dtype to keep it).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``params``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_adamp()
    >>> params = {"b": jnp.ones(2)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"b": jnp.array([0.5, -2.0])}, state, params)
    >>> updates["b"].round(4)  # 1-D leaves are never projected: the first Adam step is sign(g)
    Array([ 1., -1.], dtype=float32)

  References:
    Heo et al., `AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights
    <https://arxiv.org/abs/2006.08217>`_, 2021.
  """
  return project_radial(
      _checked_adam(b1, b2, eps, nesterov, mu_dtype, nu_dtype),
      delta=delta,
      eps=eps,
      channel_axis=channel_axis,
      axis_name=axis_name,
  )


def adamp(
    learning_rate: optax.ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    delta: Any = 0.1,
    wd_ratio: Any = 0.1,
    nesterov: bool = False,
    channel_axis: int = -1,
    axis_name: reduce.AxisName = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The AdamP optimizer, as the official code: Adam, radial projection, decay weakened when projected.

  .. math::

    \theta_t = \theta_{t-1} (1 - \eta_t \lambda s_t) - \frac{\eta_t}{1-\beta_1^t} \,
    \operatorname{proj}\!\left(\frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}\right)

  with ``s_t = wd_ratio`` on leaves the projection acted on and 1 elsewhere. Built as
  ``chain(project_radial(adam_direction, weight_decay=λ, ...), scale_by_learning_rate(η))``.

  Args:
    learning_rate: η, a float or an optax schedule.
    b1: decay rate of the first moment, in [0, 1).
    b2: decay rate of the second moment, in [0, 1).
    eps: ε of the denominator, the cosine and the normalized weights (> 0).
    weight_decay: λ, decoupled (official default 0; the README uses 1e-2).
    mask: tree of booleans (or a function of the params giving one) selecting the leaves that decay.
    delta: δ of the cosine threshold ``δ / √(row length)``.
    wd_ratio: factor of the decay on projected leaves, in [0, 1].
    nesterov: use ``β1 m_t + (1−β1) g_t`` as the numerator.
    channel_axis: output-channel axis of ``ndim > 1`` leaves (-1: Flax; 0: PyTorch).
    axis_name: inside ``shard_map``, the axis across which ``ndim > 1`` leaves are split along a
      non-channel dimension (see :func:`gradtx.project_radial`).
    mu_dtype: dtype of the first moment; ``None`` keeps each param's dtype.
    nu_dtype: dtype of the second moment; ``None``: at least float32 (pass the params' dtype to keep it).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> f = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> tx = gradtx.adamp(learning_rate=0.1, weight_decay=1e-2)
    >>> params = {"w": jnp.full((3, 2), 0.1)}
    >>> state = tx.init(params)
    >>> for _ in range(100):
    ...   updates, state = tx.update(jax.grad(f)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(f(params) < 0.05)
    True

  References:
    Heo et al., `AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights
    <https://arxiv.org/abs/2006.08217>`_, 2021.
  """
  validation.check_schedule("learning_rate", learning_rate)
  return alias.keep_update_dtype(optax.chain(
      project_radial(
          _checked_adam(b1, b2, eps, nesterov, mu_dtype, nu_dtype),
          delta=delta,
          wd_ratio=wd_ratio,
          weight_decay=weight_decay,
          eps=eps,
          channel_axis=channel_axis,
          axis_name=axis_name,
          mask=mask,
      ),
      optax.scale_by_learning_rate(learning_rate),
  ))


registry.register(
    registry.OptimizerSpec(
        name="adamp",
        factory=adamp,
        test_kwargs={"learning_rate": 0.1},
        family="geometry",
        paper="Heo et al., AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant "
        "Weights, ICLR 2021, arXiv:2006.08217",
        reference="clovaai/AdamP@146287bf adamp/adamp.py (NumPy transcription, tests/geometry/reference.py)",
        static_args=("mask", "nesterov", "channel_axis", "mu_dtype", "nu_dtype", "axis_name"),
        shard_axis_arg="axis_name",
        state_per_param="2 (m, v)",
        elementwise=False,
        optax_counterpart=(optax.adamw, {"learning_rate": 0.1, "weight_decay": 0.0}),
    )
)
