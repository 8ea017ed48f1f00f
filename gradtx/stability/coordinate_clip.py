"""Coordinate-wise (top-k) clipping and the Adam variant whose first moment sees clipped gradients.

Paper: Pan, Li. "Toward Understanding Why Adam Converges Faster Than SGD for Transformers", 2023.
https://arxiv.org/abs/2306.00204

Reference implementation: panyan7/adam-vs-sgd@d85d3a1f ``torch_optimizer/adam_clip.py`` (``AdamClip``),
``sgd_clip.py`` and ``landscape_utils.py``. The threshold is the magnitude at 0-based position
``int(d * fraction)`` of all ``d`` coordinates of all params sorted by decreasing ``|g|`` (so the top
``int(d * fraction)`` coordinates are clipped); coordinates with ``|g| >= s τ`` become ``sign(g) s τ``;
``fraction = 1`` gives ``τ = 0`` (every coordinate becomes 0), as in the official code. AdamClip adds the
coupled L2 term ``λθ`` to the gradient first, feeds the clipped gradient to the first moment only and the
unclipped one to the second moment.

Where gradtx differs:
  * The official ``AdamClip`` / ``SGDClip`` clip only in their multi-tensor (``foreach=True``) path; with
    the default ``foreach=None`` (how ``train_utils.py`` builds them) they fall back to the single-tensor
    path, which ignores ``coordinate_clip``. gradtx always clips (the method of the paper and of
    ``landscape_utils.py``).
  * The official threshold sorts all coordinates each step; gradtx finds the same value exactly without a
    sort (bisection over float32 bit patterns, :mod:`gradtx.core.topk`), or approximately in one pass
    (``method='histogram'``: the threshold rounded down to 8 significant bits, relative error < 2**-7).
  * ``axis_name``: the threshold and the clip fraction are taken over the coordinates of every shard.
  * dtypes: the threshold is found and applied in float32, or in float64 when a leaf is float64 (as the
    official code sorts the gradients in their own dtype), so float64 coordinates below it pass through
    unchanged and clipped ones equal the float64 threshold; the state's ``threshold`` has that dtype. The
    Adam scalars (bias corrections) stay float32, as everywhere in gradtx.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradtx import registry
from gradtx.core import alias, numerics, reduce, topk, tree, validation


class ClipByCoordinateState(NamedTuple):
  """Diagnostics of :func:`clip_by_coordinate`: the last threshold ``s τ`` and the fraction clipped."""

  threshold: jax.Array
  clip_fraction: jax.Array


class ScaleByAdamCoordinateClippedState(NamedTuple):
  """State of :func:`scale_by_adam_coordinate_clipped`: Adam's moments plus the clipping diagnostics."""

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  threshold: jax.Array
  clip_fraction: jax.Array


def _check(fraction, threshold_scale, method):
  validation.check_range("fraction", fraction, low=0.0, high=1.0)
  validation.check_positive("threshold_scale", threshold_scale)
  validation.check_choice("method", method, ("exact", "histogram"))


def _threshold_zero(params):
  """The initial threshold, in the dtype :func:`_clip_tree` computes it in for updates shaped like ``params``."""
  return jnp.zeros([], topk.ranking_dtype(params))


def _clip_tree(updates, fraction, threshold_scale, method, axis_name):
  """Clipped updates, the threshold ``s τ`` and the fraction of coordinates whose value changed.

  The threshold is found and applied in :func:`gradtx.core.topk.ranking_dtype` (float64 when a leaf is
  float64, else float32), so unclipped coordinates keep every bit and clipped ones are ``±s τ`` in their
  own dtype.
  """
  total = topk.size(updates, axis_name)
  dtype = topk.ranking_dtype(updates)
  if not jax.tree.leaves(updates):
    zero = jnp.zeros((), jnp.float32)
    return updates, zero, zero
  if isinstance(fraction, (int, float, np.floating)):
    index = jnp.int32(int(total * float(fraction)))  # float64, as the official int(d * k)
  else:
    index = jnp.floor(jnp.asarray(total, jnp.float32) * jnp.asarray(fraction, jnp.float32)).astype(jnp.int32)
  kth = topk.kth_largest_magnitude(updates, jnp.minimum(index, total - 1), method=method, axis_name=axis_name)
  tau = jnp.where(index >= total, jnp.zeros((), dtype), kth) * jnp.asarray(threshold_scale, dtype)

  def widened(g):
    return g.astype(jnp.promote_types(g.dtype, dtype))

  def one(g):
    w = widened(g)
    return jnp.where(jnp.abs(w) < tau, w, jnp.sign(w) * tau).astype(g.dtype)

  changed = jnp.zeros((), jnp.int32)
  for g in jax.tree.leaves(updates):
    changed = changed + jnp.sum(jnp.abs(widened(g)) > tau, dtype=jnp.int32)
  fraction_clipped = reduce.psum(changed, axis_name).astype(jnp.float32) / jnp.asarray(total, jnp.float32)
  return jax.tree.map(one, updates), tau, fraction_clipped


def clip_by_coordinate(
    fraction: float = 0.1,
    threshold_scale: float = 1.0,
    *,
    method: topk.ThresholdMethod = "exact",
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Clips the largest ``fraction`` of coordinates, over all params together, to the top-k threshold.

  A few coordinates dominate the directional sharpness of SGD's update on transformers; clipping them to
  the magnitude of the k-th largest coordinate lowers it. Put it in front of any optimizer
  (``optax.chain(gradtx.clip_by_coordinate(0.1), optax.sgd(lr, 0.9))``) or behind one to clip the final
  update (the paper's ``clip_update``: ``optax.chain(optax.adam(1.0), gradtx.clip_by_coordinate(0.5),
  optax.scale(-lr))``).

  .. math::

    \tau &= |g|_{(\lfloor k d \rfloor)} \quad \text{(0-based, all } d \text{ coordinates, descending)} \\
    \operatorname{clip}(g)_j &= g_j \text{ if } |g_j| < s\tau \text{ else } \operatorname{sign}(g_j)\, s\tau

  Args:
    fraction: k in [0, 1]; the paper uses 0.1 for SGD and 0.5 for Adam. 0 clips nothing, 1 zeroes
      everything (official behaviour). A traced k (``inject_hyperparams``) gives the rank
      ``floor(d * k)`` in float32, which can differ by one from the official float64 ``int(d * k)``
      when ``d * k`` lies within float32 rounding of an integer.
    threshold_scale: s > 0, multiplies the threshold.
    method: ``'exact'`` (the official threshold, 31 counting passes) or ``'histogram'`` (one pass; the
      threshold rounded down to 8 significant bits, so slightly more coordinates are clipped).
    axis_name: mapped axis over which the params are sharded; the threshold and the diagnostics then
      cover every shard.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state holds the last threshold and the fraction of
    coordinates clipped (``|g| > s τ``).

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.clip_by_coordinate(fraction=0.25)
    >>> g = {"a": jnp.array([4.0, -3.0, 1.0]), "b": jnp.array([0.5, 2.0, -8.0, 0.1, 0.2])}
    >>> state = tx.init(g)
    >>> clipped, state = tx.update(g, state)
    >>> clipped["a"], clipped["b"]
    (Array([ 3., -3.,  1.], dtype=float32), Array([ 0.5,  2. , -3. ,  0.1,  0.2], dtype=float32))
    >>> float(state.clip_fraction)
    0.25

  References:
    Pan and Li, `Toward Understanding Why Adam Converges Faster Than SGD for Transformers
    <https://arxiv.org/abs/2306.00204>`_, 2023.
  """
  _check(fraction, threshold_scale, method)

  def init_fn(params):
    return ClipByCoordinateState(threshold=_threshold_zero(params), clip_fraction=jnp.zeros([], jnp.float32))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    with jax.named_scope("gradtx/clip_by_coordinate"):
      clipped, tau, frac = _clip_tree(updates, fraction, threshold_scale, method, axis_name)
      return clipped, ClipByCoordinateState(threshold=tau.astype(state.threshold.dtype), clip_fraction=frac)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_adam_coordinate_clipped(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    fraction: float = 0.5,
    threshold_scale: float = 1.0,
    *,
    method: topk.ThresholdMethod = "exact",
    axis_name: reduce.AxisName = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Adam whose first moment sees coordinate-clipped gradients and second moment the raw ones (AdamClip).

  .. math::

    m_t &= \beta_1 m_{t-1} + (1-\beta_1)\operatorname{clip}(g_t) \\
    v_t &= \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
    u_t &= \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}

  with ``clip`` as in :func:`clip_by_coordinate`.

  Args:
    b1: decay rate of the first moment, in [0, 1).
    b2: decay rate of the second moment, in [0, 1).
    eps: added to the denominator, > 0.
    fraction: see :func:`clip_by_coordinate` (paper: 0.5 for Adam).
    threshold_scale: see :func:`clip_by_coordinate`.
    method: see :func:`clip_by_coordinate`.
    axis_name: see :func:`clip_by_coordinate`.
    nu_dtype: dtype of ``v``; ``None``: at least float32 (pass the params' dtype to keep it).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_adam_coordinate_clipped(fraction=0.5)
    >>> g = jnp.array([10.0, 1.0, -1.0, 0.5])
    >>> state = tx.init(g)
    >>> u, state = tx.update(g, state)
    >>> u.round(3)
    Array([ 0.1,  1. , -1. ,  1. ], dtype=float32)

  References:
    Pan and Li, `Toward Understanding Why Adam Converges Faster Than SGD for Transformers
    <https://arxiv.org/abs/2306.00204>`_, 2023.
  """
  validation.check_beta("b1", b1)
  validation.check_beta("b2", b2)
  # eps = 0 divides 0 by 0 where a coordinate's gradient is 0 (m = v = 0), so eps > 0.
  validation.check_eps("eps", eps)
  _check(fraction, threshold_scale, method)

  def init_fn(params):
    return ScaleByAdamCoordinateClippedState(
        count=jnp.zeros([], jnp.int32),
        mu=tree.zeros_like(params),
        nu=numerics.stats_zeros_like(params, nu_dtype),
        threshold=_threshold_zero(params),
        clip_fraction=jnp.zeros([], jnp.float32),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    with jax.named_scope("gradtx/adam_coordinate_clipped"):
      clipped, tau, frac = _clip_tree(updates, fraction, threshold_scale, method, axis_name)
      # float32 rates: the EMA weights and the bias corrections round alike (inject_hyperparams does too).
      beta1, beta2 = jnp.asarray(b1, jnp.float32), jnp.asarray(b2, jnp.float32)
      mu = numerics.ema(state.mu, clipped, beta1)
      nu = numerics.ema(state.nu, updates, beta2, order=2)
      count = tree.safe_increment(state.count)
      bc1 = numerics.bias_correction(beta1, count)
      bc2 = numerics.bias_correction(beta2, count)

      def one(g, m, v):
        m_hat = numerics.upcast(m) / bc1
        v_hat = numerics.upcast(v) / bc2
        return (m_hat / (jnp.sqrt(v_hat) + eps)).astype(g.dtype)

      new_updates = jax.tree.map(one, updates, mu, nu)
      tau = tau.astype(state.threshold.dtype)
      return new_updates, ScaleByAdamCoordinateClippedState(count, mu, nu, tau, frac)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def adam_coordinate_clipped(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    fraction: float = 0.5,
    threshold_scale: float = 1.0,
    method: topk.ThresholdMethod = "exact",
    axis_name: reduce.AxisName = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""AdamClip (Pan & Li 2023): Adam with coordinate-wise clipping of its first moment's input.

  Weight decay is coupled (L2: ``λθ`` is added to the gradient before clipping), as in the official
  ``AdamClip`` (a ``torch.optim.Adam`` copy), so this is not a decoupled-decay optimizer.

  .. math::

    \theta_t = \theta_{t-1} - \eta_t\, \mathrm{AdamClip}(g_t + \lambda \theta_{t-1})

  Args:
    learning_rate: η, a float or an optax schedule.
    b1: see :func:`scale_by_adam_coordinate_clipped`.
    b2: see :func:`scale_by_adam_coordinate_clipped`.
    eps: see :func:`scale_by_adam_coordinate_clipped`.
    weight_decay: λ of the coupled L2 term, a float or schedule.
    mask: tree of booleans (or a function of the params) selecting the params that decay.
    fraction: see :func:`clip_by_coordinate` (official Adam value 0.5).
    threshold_scale: see :func:`clip_by_coordinate`.
    method: see :func:`clip_by_coordinate`.
    axis_name: see :func:`clip_by_coordinate`.
    nu_dtype: see :func:`scale_by_adam_coordinate_clipped`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> f = lambda p: jnp.sum((p - jnp.sin(jnp.arange(50.0))) ** 2)
    >>> tx = gradtx.adam_coordinate_clipped(learning_rate=0.05, fraction=0.1)
    >>> params = jnp.zeros(50)
    >>> state = tx.init(params)
    >>> update = jax.jit(tx.update)
    >>> for _ in range(200):
    ...   updates, state = update(jax.grad(f)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(f(params) < 1e-2)
    True

  References:
    Pan and Li, `Toward Understanding Why Adam Converges Faster Than SGD for Transformers
    <https://arxiv.org/abs/2306.00204>`_, 2023.
  """
  return alias.coupled(
      scale_by_adam_coordinate_clipped(
          b1, b2, eps, fraction, threshold_scale, method=method, axis_name=axis_name, nu_dtype=nu_dtype
      ),
      learning_rate,
      weight_decay,
      mask,
  )


registry.register(
    registry.OptimizerSpec(
        name="adam_coordinate_clipped",
        factory=adam_coordinate_clipped,
        test_kwargs={"learning_rate": 0.1, "fraction": 0.1, "threshold_scale": 2.0},
        family="stability",
        paper="Pan and Li, Toward Understanding Why Adam Converges Faster Than SGD for Transformers, 2023, "
        "arXiv:2306.00204",
        reference="panyan7/adam-vs-sgd@d85d3a1f torch_optimizer/adam_clip.py (AdamClip, foreach path)",
        static_args=("method", "axis_name", "mask", "nu_dtype"),
        shard_axis_arg="axis_name",
        state_per_param="2 (m, v)",
        elementwise=False,
        optax_counterpart=(optax.adam, {"learning_rate": 0.1}),
    )
)
