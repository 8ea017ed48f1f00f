"""Adaptive batch-size tests from per-example (or per-micro-batch) gradients: norm, inner product, orthogonality.

Paper: Lau, Liu, Kolar. "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods", 2024.
https://arxiv.org/abs/2402.11215 — the norm test (Byrd et al. 2012), the inner-product test and the
orthogonality test (Bollapragada et al. 2018) used to grow the batch of AdaGrad / AdaGrad-Norm, and a
coordinate-wise variant of the norm test for coordinate-wise AdaGrad.

Reference implementation: timlautk/AdAdaGrad@cc126fb ``tests.py`` (``norm_test``, ``inner_product_test``,
``orthogonality_test``, ``inner_product_orthogonality_test``). Each test estimates, from the b rows
``g_i`` of ``per_example_grads`` with mean ``ḡ`` and unbiased (÷(b−1)) sample variances, the smallest batch
size at which it passes; the batch size is increased to it when it exceeds the current one:

* norm: ``Σ_j Var_i(g_ij) / (η² ‖ḡ‖²)``
* inner product: ``Var_i(⟨g_i, ḡ⟩) / (θ² ‖ḡ‖⁴)``
* orthogonality: ``Σ_j Var_i(g_ij − ⟨g_i, ḡ⟩ ḡ_j / ‖ḡ‖²) / (ν² ‖ḡ‖²)``
* coordinate-wise norm: ``max_j Var_i(g_ij) / (η² ḡ_j²)`` (the per-coordinate condition
  ``Var_i(g_ij)/b ≤ η² ḡ_j²`` for every j; the official code does not implement it, and its exact form in the
  paper's text could not be checked here: this is the natural per-coordinate reading of the norm test).

Where gradtx differs from the official code:

* The official inner products and orthogonal projections are taken per parameter tensor
  (``Σ_l Var_i(⟨g_i^l, ḡ^l⟩)``), which drops the covariances between tensors that the paper's
  ``⟨∇f_i, ∇F⟩`` keeps. gradtx takes them over the whole tree, as in the paper; ``per_leaf=True`` gives the
  official per-tensor statistics.
* Across devices (``axis_name``) the official code combines per-device unbiased variances with the law of
  total variance, which is not the unbiased variance of the global batch; gradtx computes the global
  batch's statistics exactly (global mean first, then the summed squared deviations), so the result equals
  the single-device one on the concatenated batch.
* Rows that are micro-batch means (``micro_batch_size = m > 1``) have variance ``σ²/m``; the estimate is
  multiplied by m so it stays a number of examples (the official code handles accumulation for the norm
  test only, by combining variances).
* Degenerate values: fewer than two rows give a zero estimate (no variance can be measured); ``ḡ = 0`` with
  a non-zero variance gives ``inf`` (grow to the cap); NaN statistics are returned as they are, and
  :func:`next_batch_size` ignores them (the batch size is kept).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.core import reduce


class BatchSizeTestResult(NamedTuple):
  """Outcome of one adaptive batch-size test.

  Attributes:
    required_batch_size: float32 estimate of the smallest batch size (in examples) that passes the test;
      a batch of size ``b`` passes when ``b >= required_batch_size``.
    variance: the test's numerator (a sum of unbiased sample variances over the rows).
    grad_sq_norm: ``‖ḡ‖²``, the squared norm of the mean of the rows.
  """

  required_batch_size: jax.Array
  variance: jax.Array
  grad_sq_norm: jax.Array


def _rows(per_example_grads: Any) -> list[jax.Array]:
  leaves = [x.astype(jnp.promote_types(x.dtype, jnp.float32)) for x in jax.tree.leaves(per_example_grads)]
  if not leaves:
    raise ValueError("`per_example_grads` has no leaves.")
  counts = {x.shape[0] if x.ndim else None for x in leaves}
  if None in counts or len(counts) != 1:
    raise ValueError(
        "`per_example_grads` must have the same leading (batch) axis on every leaf, got leaf shapes "
        f"{[x.shape for x in leaves]}."
    )
  return [x.reshape(x.shape[0], -1) for x in leaves]


def _count(rows: list[jax.Array], axis_name: reduce.AxisName) -> jax.Array:
  return reduce.psum(jnp.asarray(rows[0].shape[0], jnp.float32), axis_name)


def _mean(rows: list[jax.Array], n: jax.Array, axis_name: reduce.AxisName) -> list[jax.Array]:
  return [reduce.psum(jnp.sum(r, axis=0), axis_name) / n for r in rows]


def _ratio(num: jax.Array, den: jax.Array) -> jax.Array:
  """``num / den`` with ``0/0 = 0`` and ``x/0 = inf`` for ``x > 0``; NaN stays NaN."""
  safe = jnp.where(den > 0, den, 1.0)
  ratio = jnp.where(den > 0, num / safe, jnp.where(num > 0, jnp.inf, 0.0))
  return jnp.where(jnp.isnan(num) | jnp.isnan(den), jnp.nan, ratio)


def _deviation_sq(rows: list[jax.Array], mean: list[jax.Array], axis_name: reduce.AxisName) -> list[jax.Array]:
  """Per coordinate, ``Σ_i (g_ij − ḡ_j)²`` over the global batch."""
  return [reduce.psum(jnp.sum(jnp.square(r - m), axis=0), axis_name) for r, m in zip(rows, mean)]


def _variance_of(values: jax.Array, n: jax.Array, axis_name: reduce.AxisName) -> jax.Array:
  """Unbiased variance over the global batch of per-row scalars ``values`` (shape ``(rows,)``)."""
  mean = reduce.psum(jnp.sum(values), axis_name) / n
  return reduce.psum(jnp.sum(jnp.square(values - mean)), axis_name) / jnp.maximum(n - 1.0, 1.0)


def norm_test(
    per_example_grads: Any,
    eta: Any = 0.1,
    *,
    micro_batch_size: int = 1,
    axis_name: reduce.AxisName = None,
) -> BatchSizeTestResult:
  r"""The norm test: is ``Σ_j Var_i(g_ij) / b ≤ η² ‖ḡ‖²``?

  Args:
    per_example_grads: tree of gradients with a leading batch axis of the same size on every leaf (rows
      are per-example gradients, or means over micro-batches of ``micro_batch_size`` examples).
    eta: η > 0; larger values tolerate more noise (grow the batch later).
    micro_batch_size: examples per row.
    axis_name: axis over which the rows are split (data parallelism); the statistics are those of the
      global batch.

  Returns:
    A :class:`BatchSizeTestResult` with ``required_batch_size = m Σ_j Var_i(g_ij) / (η² ‖ḡ‖²)``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> rows = {"w": jnp.array([[1.0, 0.0], [3.0, 0.0]])}  # mean (2, 0), variance (2, 0)
    >>> float(gradtx.norm_test(rows, eta=0.5).required_batch_size)  # 2 / (0.25 * 4)
    2.0
  """
  with jax.named_scope("gradtx/norm_test"):
    rows = _rows(per_example_grads)
    n = _count(rows, axis_name)
    mean = _mean(rows, n, axis_name)
    dev = _deviation_sq(rows, mean, axis_name)
    variance = sum(jnp.sum(d) for d in dev) / jnp.maximum(n - 1.0, 1.0)
    grad_sq = sum(jnp.sum(jnp.square(m)) for m in mean)
    required = micro_batch_size * _ratio(variance, jnp.square(eta) * grad_sq)
    return BatchSizeTestResult(required.astype(jnp.float32), variance, grad_sq)


def coordinate_norm_test(
    per_example_grads: Any,
    eta: Any = 0.1,
    *,
    micro_batch_size: int = 1,
    axis_name: reduce.AxisName = None,
) -> BatchSizeTestResult:
  r"""The coordinate-wise norm test: is ``Var_i(g_ij) / b ≤ η² ḡ_j²`` for every coordinate j?

  For coordinate-wise AdaGrad (AdAdaGrad). A coordinate whose mean gradient is exactly zero while its
  variance is not makes the estimate infinite (the batch grows to its cap); ``0/0`` counts as passing.

  Args:
    per_example_grads: see :func:`norm_test`.
    eta: η > 0.
    micro_batch_size: examples per row.
    axis_name: see :func:`norm_test`.

  Returns:
    A :class:`BatchSizeTestResult` with ``required_batch_size = m max_j Var_i(g_ij) / (η² ḡ_j²)`` and
    ``variance = Σ_j Var_i(g_ij)``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> rows = jnp.array([[1.0, 2.0], [3.0, 2.2]])  # mean (2, 2.1), variance (2, 0.02)
    >>> float(gradtx.coordinate_norm_test(rows, eta=1.0).required_batch_size)  # max(2/4, 0.02/4.41)
    0.5
  """
  with jax.named_scope("gradtx/coordinate_norm_test"):
    rows = _rows(per_example_grads)
    n = _count(rows, axis_name)
    mean = _mean(rows, n, axis_name)
    denom = jnp.maximum(n - 1.0, 1.0)
    dev = _deviation_sq(rows, mean, axis_name)
    ratios = [jnp.max(_ratio(d / denom, jnp.square(eta) * jnp.square(m))) for d, m in zip(dev, mean)]
    worst = jnp.max(jnp.stack(ratios))
    variance = sum(jnp.sum(d) for d in dev) / denom
    grad_sq = sum(jnp.sum(jnp.square(m)) for m in mean)
    return BatchSizeTestResult((micro_batch_size * worst).astype(jnp.float32), variance, grad_sq)


def _coefficient(inner: jax.Array, sq_norm: jax.Array) -> jax.Array:
  """Projection coefficients ``⟨g_i, ḡ⟩ / ‖ḡ‖²``; 0 when ``ḡ = 0`` (nothing to project on)."""
  return jnp.where(sq_norm > 0, inner / jnp.where(sq_norm > 0, sq_norm, 1.0), 0.0)


def _inner_products(rows, mean, per_leaf):
  """Per row, ``⟨g_i, ḡ⟩`` over the whole tree, or one such vector per leaf when ``per_leaf``."""
  per = [r @ m for r, m in zip(rows, mean)]
  return per if per_leaf else [sum(per)]


def inner_product_test(
    per_example_grads: Any,
    theta: Any = 0.1,
    *,
    micro_batch_size: int = 1,
    per_leaf: bool = False,
    axis_name: reduce.AxisName = None,
) -> BatchSizeTestResult:
  r"""The inner-product test: is ``Var_i(⟨g_i, ḡ⟩) / b ≤ θ² ‖ḡ‖⁴``?

  Args:
    per_example_grads: see :func:`norm_test`.
    theta: θ > 0.
    micro_batch_size: examples per row.
    per_leaf: take the inner products per parameter tensor and sum their variances, as the official code
      does, instead of over the whole tree (the paper).
    axis_name: see :func:`norm_test`.

  Returns:
    A :class:`BatchSizeTestResult` with ``required_batch_size = m Var_i(⟨g_i, ḡ⟩) / (θ² ‖ḡ‖⁴)``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> rows = jnp.array([[1.0, 1.0], [3.0, -1.0]])  # mean (2, 0); inner products 2 and 6
    >>> float(gradtx.inner_product_test(rows, theta=1.0).required_batch_size)  # 8 / 16
    0.5
  """
  with jax.named_scope("gradtx/inner_product_test"):
    rows = _rows(per_example_grads)
    n = _count(rows, axis_name)
    mean = _mean(rows, n, axis_name)
    grad_sq = sum(jnp.sum(jnp.square(m)) for m in mean)
    variance = sum(_variance_of(s, n, axis_name) for s in _inner_products(rows, mean, per_leaf))
    required = micro_batch_size * _ratio(variance, jnp.square(theta) * jnp.square(grad_sq))
    return BatchSizeTestResult(required.astype(jnp.float32), variance, grad_sq)


def orthogonality_test(
    per_example_grads: Any,
    nu: Any = 0.1,
    *,
    micro_batch_size: int = 1,
    per_leaf: bool = False,
    axis_name: reduce.AxisName = None,
) -> BatchSizeTestResult:
  r"""The orthogonality test: is ``Σ_j Var_i(g_ij − ⟨g_i, ḡ⟩ ḡ_j / ‖ḡ‖²) / b ≤ ν² ‖ḡ‖²``?

  Measures the variance of the part of each row orthogonal to the mean; with :func:`inner_product_test` it
  makes the augmented inner-product test (Bollapragada et al. 2018).

  Args:
    per_example_grads: see :func:`norm_test`.
    nu: ν > 0.
    micro_batch_size: examples per row.
    per_leaf: project each parameter tensor on its own mean (the official code) instead of the whole tree
      on the whole mean (the paper).
    axis_name: see :func:`norm_test`.

  Returns:
    A :class:`BatchSizeTestResult` with ``required_batch_size = m Σ_j Var_i(o_ij) / (ν² ‖ḡ‖²)``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> rows = jnp.array([[1.0, 1.0], [3.0, -1.0]])  # orthogonal parts (0, 1) and (0, -1)
    >>> float(gradtx.orthogonality_test(rows, nu=1.0).required_batch_size)  # 2 / 4
    0.5
  """
  with jax.named_scope("gradtx/orthogonality_test"):
    rows = _rows(per_example_grads)
    n = _count(rows, axis_name)
    mean = _mean(rows, n, axis_name)
    grad_sq = sum(jnp.sum(jnp.square(m)) for m in mean)
    if per_leaf:
      scales = [_coefficient(s, jnp.sum(jnp.square(m))) for s, m in zip(_inner_products(rows, mean, True), mean)]
    else:
      scales = [_coefficient(_inner_products(rows, mean, False)[0], grad_sq)] * len(rows)
    ortho = [r - c[:, None] * m[None, :] for r, c, m in zip(rows, scales, mean)]
    ortho_mean = _mean(ortho, n, axis_name)
    variance = sum(jnp.sum(d) for d in _deviation_sq(ortho, ortho_mean, axis_name)) / jnp.maximum(n - 1.0, 1.0)
    required = micro_batch_size * _ratio(variance, jnp.square(nu) * grad_sq)
    return BatchSizeTestResult(required.astype(jnp.float32), variance, grad_sq)


def next_batch_size(batch_size: jax.Array, required_batch_size: jax.Array, max_batch_size: int) -> jax.Array:
  """``min(max(batch_size, ⌈required⌉), max_batch_size)`` as int32: never decreasing, capped; NaN keeps it."""
  required = jnp.where(jnp.isnan(required_batch_size), 0.0, required_batch_size)
  grown = jnp.ceil(jnp.minimum(required, float(max_batch_size)))
  return jnp.minimum(jnp.maximum(batch_size, grown.astype(jnp.int32)), max_batch_size).astype(jnp.int32)
