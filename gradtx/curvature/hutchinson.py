"""Hutchinson's estimator of the Hessian diagonal, with AdaHessian's absolute value and spatial averaging.

Papers:
  * Bekas, Kokiopoulou, Saad. "An estimator for the diagonal of a matrix", 2007 (z ⊙ Hz).
  * Yao, Gholami, Shen, Mustafa, Keutzer, Mahoney. "ADAHESSIAN: An Adaptive Second Order Optimizer for Machine
    Learning", AAAI 2021. https://arxiv.org/abs/2006.00719 (|Hz| and spatial averaging)

Reference implementation: amirgholami/adahessian@85ebc00 ``image_classification/optim_adahessian.py`` (conv
kernels: mean of |Hv| over the kernel window) and ``instruction/adahessian.py`` (fixed blocks:
``view(-1, b).mean(1)`` repeated back).

Where gradtx differs from peers:
  * optax 0.2.8 ``contrib.hutchinson_estimator_diag_hessian``: one Rademacher probe cast to the lowest dtype of
    the tree (fails on mixed f32/bf16 trees), ``PRNGKey(0)`` unless a key is given (``contrib.sophia``'s default
    estimator is built at import), no averaging across devices.
    gradtx draws each leaf's probe in its own dtype from a key made from ``seed`` (folded with the estimate
    count), and averages ``Hz`` across ``axis_name``.
  * The official AdaHessian multi-GPU code all-reduces a temporary (``dist.all_reduce(output1 / n)``), so the
    estimate is never actually averaged; gradtx averages ``Hz`` (before ``|·|`` and spatial averaging, which are
    not linear), so the result equals the single-device full-batch estimate.
  * Conv kernels use Flax's layout ``(kh, kw, in, out)`` (window axes 0, 1) and ``(k, in, out)`` for 1-D convs,
    where PyTorch averages axes (2, 3) of ``(out, in, kh, kw)``. The official image code silently drops 3-D
    tensors from its list (its zip then misaligns estimates and params); gradtx averages their window axis.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx.core import hvp as hvp_lib
from gradtx.core import reduce, validation

SpatialAverage = Literal["conv"] | int | None


class HutchinsonState(NamedTuple):
  """State of :func:`estimate_hessian_diag_hutchinson`: estimates made so far and the base PRNG key."""

  count: jax.Array
  key: jax.Array


def check_spatial_average(spatial_average: Any) -> None:
  if spatial_average is None or spatial_average == "conv":
    return
  if isinstance(spatial_average, bool) or not isinstance(spatial_average, int) or spatial_average < 1:
    raise ValueError(f"`spatial_average` must be None, 'conv' or an int >= 1, got {spatial_average!r}.")


def spatial_average_leaf(x: jax.Array, spatial_average: SpatialAverage) -> jax.Array:
  """AdaHessian's spatial averaging of one leaf's diagonal estimate (shape preserved).

  ``'conv'``: 4-D kernels ``(kh, kw, in, out)`` average over the window ``(kh, kw)``, 3-D kernels ``(k, in, out)``
  over ``k``; other leaves unchanged. An int ``b``: leaves with ``ndim >= 2`` average over consecutive blocks of
  ``b`` elements in row-major order (``reshape(-1, b)``, as the official ``view(-1, b)``); 0-D and 1-D leaves
  unchanged. A block size that does not divide a leaf's size raises ``ValueError`` at trace time.
  """
  if spatial_average is None or x.ndim < 2:
    return x
  if spatial_average == "conv":
    axes = {4: (0, 1), 3: (0,)}.get(x.ndim)
    if axes is None:
      return x
    return jnp.broadcast_to(jnp.mean(x, axis=axes, keepdims=True), x.shape).astype(x.dtype)
  b = spatial_average
  if x.size % b:
    raise ValueError(f"`spatial_average` block size {b} does not divide a leaf of shape {x.shape}.")
  blocks = jnp.mean(x.reshape(-1, b), axis=1, keepdims=True)
  return jnp.broadcast_to(blocks, (x.size // b, b)).reshape(x.shape).astype(x.dtype)


def diag_estimate(
    loss_fn: Any,
    params: Any,
    key: jax.Array,
    *,
    n_probes: int,
    distribution: hvp_lib.Distribution,
    absolute: bool,
    spatial_average: SpatialAverage,
    axis_name: reduce.AxisName,
) -> Any:
  """mean over probes of z ⊙ Hz (float32 or wider), then ``|·|`` and spatial averaging when asked."""

  def one(i, acc):
    z = hvp_lib.probes(jax.random.fold_in(key, i), params, distribution)
    hz = hvp_lib.averaged_hvp(loss_fn, params, z, axis_name)
    return jax.tree.map(lambda a, zz, h: a + zz.astype(a.dtype) * h.astype(a.dtype), acc, z, hz)

  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.promote_types(p.dtype, jnp.float32)), params)
  total = jax.lax.fori_loop(0, n_probes, one, zeros) if n_probes > 1 else one(0, zeros)
  est = jax.tree.map(lambda t: t / n_probes, total)
  if absolute:
    est = jax.tree.map(jnp.abs, est)
  return jax.tree.map(lambda e: spatial_average_leaf(e, spatial_average), est)


def estimate_hessian_diag_hutchinson(
    *,
    seed: int,
    n_probes: int = 1,
    distribution: hvp_lib.Distribution = "rademacher",
    absolute: bool = False,
    spatial_average: SpatialAverage = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Replaces the updates by Hutchinson's estimate of the Hessian diagonal of ``loss_fn`` at ``params``.

  Each probe ``z`` has independent Rademacher (±1) or standard normal entries, so ``E[z ⊙ Hz] = diag(H)``; with
  Rademacher probes and a diagonal ``H`` a single probe is exact.

  .. math::

    \hat D = \frac{1}{n} \sum_{i=1}^{n} z_i \odot (\nabla^2 L(\theta)\, z_i), \qquad
    \hat D \leftarrow |\hat D| \ \text{(absolute)}, \qquad \hat D \leftarrow \text{spatial average of } \hat D

  ``update(updates, state, params, *, loss_fn)`` ignores ``updates`` and returns the estimate (in each param's
  dtype); ``loss_fn`` maps params to the scalar loss on the current batch (see :mod:`gradtx.core.hvp` for
  masked leaves). Probes come from ``fold_in(key(seed), count)``: identical on every replica, fresh each call.

  Args:
    seed: seed of the PRNG key kept in the state.
    n_probes: probes averaged per estimate (Hessian-vector products per call).
    distribution: ``'rademacher'`` (AdaHessian, optax) or ``'gaussian'`` (Sophia-H paper, levanter).
    absolute: return ``|z ⊙ Hz|`` (AdaHessian's ``|Hv|`` for Rademacher probes).
    spatial_average: ``None``, ``'conv'`` (average over conv kernel windows, Flax layout) or an int block size;
      see :func:`spatial_average_leaf`.
    axis_name: average ``Hz`` across this axis (``pmap`` / ``shard_map`` data parallelism), so the estimate is the
      single-device full-batch estimate. Required inside named axes: ``update`` raises when ``loss_fn`` is
      per-device data and it runs inside ``pmap`` / ``shard_map`` / ``vmap(axis_name=...)`` with ``None``;
      :data:`gradtx.NO_DATA_AXIS` keeps per-device estimates on purpose.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires the keyword argument ``loss_fn``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> est = gradtx.estimate_hessian_diag_hutchinson(seed=0)
    >>> params = jnp.array([1.0, 2.0])
    >>> loss_fn = lambda p: jnp.sum(jnp.array([3.0, 0.5]) * p**2)
    >>> diag, _ = est.update(params, est.init(params), params, loss_fn=loss_fn)
    >>> diag
    Array([6., 1.], dtype=float32)

  References:
    Bekas et al., `An estimator for the diagonal of a matrix
    <https://doi.org/10.1016/j.apnum.2007.01.003>`_, 2007.
    Yao et al., `ADAHESSIAN <https://arxiv.org/abs/2006.00719>`_, 2021.
  """
  validation.check_int("seed", seed)
  validation.check_int("n_probes", n_probes, low=1)
  validation.check_choice("distribution", distribution, ("rademacher", "gaussian"))
  validation.check_bool("absolute", absolute)
  check_spatial_average(spatial_average)
  requested_axis, axis_name = axis_name, reduce.resolve_data_axis(axis_name)

  def init_fn(params):
    del params
    return HutchinsonState(count=jnp.zeros([], jnp.int32), key=jax.random.PRNGKey(seed))

  def update_fn(updates, state, params=None, *, loss_fn, **extra_args):
    del updates, extra_args
    if params is None:
      raise ValueError("`params` must be given to the Hutchinson estimator's update.")
    reduce.check_data_axis(requested_axis, owner="estimate_hessian_diag_hutchinson", uses="loss_fn")
    with jax.named_scope("gradtx/hutchinson"):
      est = diag_estimate(
          loss_fn,
          params,
          jax.random.fold_in(state.key, state.count),
          n_probes=n_probes,
          distribution=distribution,
          absolute=absolute,
          spatial_average=spatial_average,
          axis_name=axis_name,
      )
      est = jax.tree.map(lambda e, p: e.astype(p.dtype), est, params)
      return est, HutchinsonState(count=optax.safe_increment(state.count), key=state.key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
