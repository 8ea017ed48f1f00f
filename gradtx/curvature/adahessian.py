"""AdaHessian: Adam with the squared gradient replaced by a spatially averaged |Hutchinson| Hessian diagonal.

Paper: Yao, Gholami, Shen, Mustafa, Keutzer, Mahoney. "ADAHESSIAN: An Adaptive Second Order Optimizer for
Machine Learning", AAAI 2021. https://arxiv.org/abs/2006.00719

Reference implementation: amirgholami/adahessian@85ebc00 ``image_classification/optim_adahessian.py``:
``D = |Hv|`` with Rademacher ``v`` (conv kernels averaged over the kernel window), ``m ← β1 m + (1−β1) g``,
``s ← β2 s + (1−β2) D²``, ``denom = (√s)^k / (√(1−β2^t))^k + ε``,
``θ ← θ − lr (m / (1−β1^t) / denom + wd θ)``. gradtx follows it step for step; its spatial averaging is
:func:`~gradtx.curvature.hutchinson.spatial_average_leaf` (Flax kernel layout).

Where gradtx differs from peers:
  * ``update_interval`` (not in the official code, which estimates every step): the ``D²`` EMA is updated every
    k steps and bias-corrected by the number of *estimates*. pytorch-optimizer 4.1.0 ``AdaHessian`` (and
    davda54/ada-hessian) bias-correct by the *step* count, so for k > 1 their denominator shrinks by
    ``√((1−β2^t)/(1−β2^{⌈t/k⌉}))`` between refreshes. For k = 1 gradtx equals both.
  * pytorch-optimizer uses the signed ``z ⊙ Hz`` and no spatial averaging (it is squared in the EMA, so without
    averaging it is the official update); optax 0.2.8 has no AdaHessian (optax#1603, PR #1604 open).
  * The official multi-GPU averaging never happens (an all-reduce of a temporary); gradtx averages ``Hz`` across
    ``axis_name``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import alias, numerics, reduce, tree, validation
from gradtx.core import hvp as hvp_lib
from gradtx.curvature import hutchinson


class ScaleByAdaHessianState(NamedTuple):
  """State of :func:`scale_by_adahessian`: steps, Hessian estimates made, ``m``, the ``D²`` EMA ``nu``."""

  count: jax.Array
  hessian_count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  estimator_state: hutchinson.HutchinsonState


def scale_by_adahessian(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-4,
    hessian_power: float = 1.0,
    *,
    update_interval: int = 1,
    n_probes: int = 1,
    distribution: hvp_lib.Distribution = "rademacher",
    spatial_average: hutchinson.SpatialAverage = "conv",
    seed: int = 0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""AdaHessian's direction: bias-corrected momentum over the Hessian power of an RMS of |diag(H)| estimates.

  .. math::

    D_t &= \operatorname{spatial\_average}(|z \odot \nabla^2 L(\theta_{t-1}) z|) \\
    m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad s_j = \beta_2 s_{j-1} + (1-\beta_2) D_t^2
      \ \text{(every k steps; j counts estimates)} \\
    u_t &= \frac{m_t / (1-\beta_1^t)}{\left(\sqrt{s_j / (1-\beta_2^j)}\right)^{k_H} + \epsilon}

  Args:
    b1: momentum decay β1.
    b2: decay β2 of the ``D²`` EMA.
    eps: ε > 0 added to the denominator (official 1e-4).
    hessian_power: k_H in (0, 1] (official default 1; "try 0.5").
    update_interval: steps between Hessian estimates (1 in the official code).
    n_probes: probes per estimate.
    distribution: ``'rademacher'`` (official) or ``'gaussian'``.
    spatial_average: ``'conv'`` (official image code: conv kernel windows, Flax layout), ``None``, or an int
      block size (official transformer code); see :func:`~gradtx.curvature.hutchinson.spatial_average_leaf`.
    seed: seed of the probes' PRNG key (kept in the state).
    mu_dtype: dtype of ``m``; ``None`` keeps each param's dtype.
    nu_dtype: dtype of ``s``; ``None``: at least float32 (pass the params' dtype to keep it).
    axis_name: average Hessian-vector products across this axis (data parallelism). Required inside named axes:
      ``update`` raises inside ``pmap`` / ``shard_map`` / ``vmap(axis_name=...)`` with ``None``;
      :data:`gradtx.NO_DATA_AXIS` keeps per-device estimates on purpose.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``params`` and ``loss_fn``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_adahessian(eps=1e-12)
    >>> params = jnp.array([1.0, 1.0])
    >>> loss_fn = lambda p: jnp.sum(jnp.array([1.0, 100.0]) * p**2)  # diag(H) = (2, 200)
    >>> u, _ = tx.update(jnp.array([2.0, 200.0]), tx.init(params), params, loss_fn=loss_fn)
    >>> jnp.round(u, 4)  # Newton's step: g / |diag(H)|
    Array([1., 1.], dtype=float32)

  References:
    Yao et al., `ADAHESSIAN <https://arxiv.org/abs/2006.00719>`_, 2021.
  """
  validation.check_beta("b1", b1)
  validation.check_beta("b2", b2)
  # A coordinate whose Hessian-diagonal estimate is 0 (the loss is linear in it) has a zero root: eps = 0
  # divides m by 0 there.
  validation.check_eps("eps", eps)
  validation.check_range("hessian_power", hessian_power, low=0.0, high=1.0, low_inclusive=False)
  validation.check_int("update_interval", update_interval, low=1)
  estimator = hutchinson.estimate_hessian_diag_hutchinson(
      seed=seed,
      n_probes=n_probes,
      distribution=distribution,
      absolute=True,
      spatial_average=spatial_average,
      axis_name=axis_name,
  )
  mu_dtype, nu_dtype = tree.canonical_dtype(mu_dtype), tree.canonical_dtype(nu_dtype)

  def init_fn(params):
    return ScaleByAdaHessianState(
        count=jnp.zeros([], jnp.int32),
        hessian_count=jnp.zeros([], jnp.int32),
        mu=tree.zeros_like(params, dtype=mu_dtype),
        nu=numerics.stats_zeros_like(params, nu_dtype),
        estimator_state=estimator.init(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError("`params` must be given to AdaHessian's update (the estimator differentiates at them).")
    with jax.named_scope("gradtx/adahessian"):
      # Decays rounded to the moments' (at least float32) precision before 1 - b is formed, so a Python float and
      # an injected float32 hyperparameter give the same moments.
      wide = jnp.result_type(jnp.float32, *[x.dtype for x in jax.tree.leaves((state.mu, state.nu))])
      d1, d2 = jnp.asarray(b1, wide), jnp.asarray(b2, wide)

      def refresh(nu, est_state, n):
        est, est_state = estimator.update(updates, est_state, params, **extra_args)
        return numerics.ema(nu, est, d2, order=2), est_state, tree.safe_increment(n)

      nu, est_state, hessian_count = jax.lax.cond(
          state.count % update_interval == 0,
          refresh,
          lambda *args: args,
          state.nu,
          state.estimator_state,
          state.hessian_count,
      )
      count = tree.safe_increment(state.count)
      mu = numerics.ema(state.mu, updates, d1)
      # In the decays' precision (numerics.bias_correction is float32), consistent with the EMAs above.
      bc1 = 1.0 - d1 ** count.astype(wide)
      bc2 = 1.0 - d2 ** jnp.maximum(hessian_count, 1).astype(wide)

      def one(m, s, g):
        w = jnp.promote_types(m.dtype, jnp.float32)
        rms = jnp.sqrt(s.astype(w)) / jnp.sqrt(bc2).astype(w)
        return (m.astype(w) / bc1.astype(w) / (jnp.power(rms, hessian_power) + eps)).astype(g.dtype)

      new_updates = jax.tree.map(one, mu, nu, updates)
      return new_updates, ScaleByAdaHessianState(
          count=count, hessian_count=hessian_count, mu=mu, nu=nu, estimator_state=est_state
      )

  return reduce.with_data_axis_check(
      optax.GradientTransformationExtraArgs(init_fn, update_fn), axis_name, owner="scale_by_adahessian", uses="loss_fn"
  )


def adahessian(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-4,
    hessian_power: float = 1.0,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    update_interval: int = 1,
    n_probes: int = 1,
    distribution: hvp_lib.Distribution = "rademacher",
    spatial_average: hutchinson.SpatialAverage = "conv",
    seed: int = 0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The AdaHessian optimizer (needs ``loss_fn``), with the official decoupled weight decay.

  .. math::

    \theta_t = \theta_{t-1} - \eta_t \left(u_t + \lambda \theta_{t-1}\right)

  with :func:`scale_by_adahessian` giving ``u_t``. ``tx.update(grads, state, params, loss_fn=...)``. Official
  defaults: lr 0.15, β = (0.9, 0.999), ε = 1e-4, k_H = 1 (the CIFAR script passes ``wd / lr`` so the decay per
  step is 5e-4 θ).

  Args:
    learning_rate: η, a float or an optax schedule.
    b1: see :func:`scale_by_adahessian`.
    b2: see :func:`scale_by_adahessian`.
    eps: see :func:`scale_by_adahessian`.
    hessian_power: see :func:`scale_by_adahessian`.
    weight_decay: λ, decoupled and multiplied by the learning rate.
    mask: tree of booleans (or a function of the params giving one) selecting the params that decay.
    update_interval: see :func:`scale_by_adahessian`.
    n_probes: see :func:`scale_by_adahessian`.
    distribution: see :func:`scale_by_adahessian`.
    spatial_average: see :func:`scale_by_adahessian`.
    seed: see :func:`scale_by_adahessian`.
    mu_dtype: see :func:`scale_by_adahessian`.
    nu_dtype: see :func:`scale_by_adahessian`.
    axis_name: see :func:`scale_by_adahessian`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``loss_fn``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> loss = lambda p: jnp.sum(jnp.array([1.0, 100.0]) * (p - 1.0) ** 2)
    >>> tx = gradtx.adahessian(learning_rate=0.15)
    >>> params = jnp.zeros(2)
    >>> state = tx.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...   updates, state = tx.update(jax.grad(loss)(params), state, params, loss_fn=loss)
    ...   return optax.apply_updates(params, updates), state
    >>> for _ in range(100):
    ...   params, state = step(params, state)
    >>> bool(loss(params) < 1e-2)
    True

  References:
    Yao et al., `ADAHESSIAN <https://arxiv.org/abs/2006.00719>`_, 2021.
  """
  direction = scale_by_adahessian(
      b1,
      b2,
      eps,
      hessian_power,
      update_interval=update_interval,
      n_probes=n_probes,
      distribution=distribution,
      spatial_average=spatial_average,
      seed=seed,
      mu_dtype=mu_dtype,
      nu_dtype=nu_dtype,
      axis_name=axis_name,
  )
  return reduce.with_data_axis_check(
      alias.decoupled(direction, learning_rate, weight_decay, mask), axis_name, owner="adahessian", uses="loss_fn"
  )


registry.register(
    registry.OptimizerSpec(
        name="adahessian",
        factory=adahessian,
        test_kwargs={"learning_rate": 0.15, "hessian_power": 0.5},
        family="curvature",
        paper="Yao et al., ADAHESSIAN: An Adaptive Second Order Optimizer for Machine Learning, 2021, arXiv:2006.00719",
        reference="amirgholami/adahessian@85ebc00 optim_adahessian.py; pytorch-optimizer 4.1.0 AdaHessian (fixtures)",
        required_extra_args=("loss_fn",),
        static_args=(
            "update_interval",
            "n_probes",
            "distribution",
            "spatial_average",
            "seed",
            "mu_dtype",
            "nu_dtype",
            "axis_name",
            "mask",
        ),
        data_axis_arg="axis_name",
        state_per_param="2 (m, D² EMA)",
    )
)
