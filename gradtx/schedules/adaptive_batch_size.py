"""A wrapper that steps any optimizer and, from per-example gradients, recommends a growing batch size.

Paper: Lau, Liu, Kolar. "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods", 2024.
https://arxiv.org/abs/2402.11215

Reference implementation: timlautk/AdAdaGrad@cc126fb ``main.py`` (the training loop) and ``tests.py``. As
there, the test runs on the gradients of the step being taken (computed at the params before the update),
every ``test_interval`` steps starting with the first, until the batch size reaches ``max_batch_size``; the
new batch size is ``max(b, ⌈estimate⌉)`` capped at ``max_batch_size``. The statistics are
:mod:`gradtx.schedules.batch_size_tests` (see there for the differences from the official code).

Where gradtx differs: the official loop may lower the batch size when the test runs on fewer samples than the
batch (``max_test_micro_batch_size``); gradtx's batch size never decreases. Changing the batch size is the
training loop's job (the transformation only recommends it, in ``state.batch_size``): changing array shapes
recompiles a jitted step, so grow the batch in buckets (e.g. powers of two) or accumulate fixed-size
micro-batches (the notebook ``notebooks/schedules_and_batch_size.ipynb`` shows the bucketed loop).

The inner optimizer steps with ``updates`` (the batch gradient) as usual, and the per-example gradients only
feed the test, as in the official loop (which computes them apart from the backward pass of the step). So
the wrapper composes with ``optax.MultiSteps`` (accumulation), clipping before it and
``optax.apply_if_finite``. NaN per-example gradients give a NaN estimate, which leaves the batch size
unchanged.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx.core import reduce, tree, validation
from gradtx.schedules import batch_size_tests as bst

BatchSizeTest = Literal["norm", "inner_product", "augmented", "coordinate"]


class AdaptiveBatchSizeState(NamedTuple):
  """State of :func:`adaptive_batch_size`.

  Attributes:
    count: steps taken (int32).
    batch_size: the recommended batch size for the next step (int32, non-decreasing, capped).
    estimate: the last test's estimate of the smallest passing batch size (float32; 0 before any test).
    inner_state: the wrapped optimizer's state.
  """

  count: jax.Array
  batch_size: jax.Array
  estimate: jax.Array
  inner_state: Any


def _estimate(test, per_example_grads, eta, theta, nu, micro_batch_size, per_leaf, axis_name):
  common = {"micro_batch_size": micro_batch_size, "axis_name": axis_name}
  if test == "norm":
    return bst.norm_test(per_example_grads, eta, **common).required_batch_size
  if test == "coordinate":
    return bst.coordinate_norm_test(per_example_grads, eta, **common).required_batch_size
  ip = bst.inner_product_test(per_example_grads, theta, per_leaf=per_leaf, **common).required_batch_size
  if test == "inner_product":
    return ip
  orth = bst.orthogonality_test(per_example_grads, nu, per_leaf=per_leaf, **common).required_batch_size
  return jnp.maximum(ip, orth)


def adaptive_batch_size(
    inner: optax.GradientTransformation,
    *,
    initial_batch_size: int,
    max_batch_size: int,
    test: BatchSizeTest = "norm",
    eta: Any = 0.1,
    theta: Any = 0.1,
    nu: Any = 0.1,
    test_interval: int = 1,
    micro_batch_size: int = 1,
    per_leaf: bool = False,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Steps ``inner`` and recommends the next batch size from per-example gradients (AdAdaGrad).

  ``update(updates, state, params, *, per_example_grads)`` steps ``inner`` with ``updates`` (the mini-batch
  gradient) and takes the per-example (or per-micro-batch) gradients of the same batch as a required
  keyword argument: a tree like the params with a leading batch axis on every leaf, e.g.
  ``rows = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(params, x, y)``, whose mean ``rows.mean(0)`` is
  the gradient of the mean loss. (Its structure need not match ``updates``: under ``optax.masked`` the
  statistics still cover every row given.) Then, every ``test_interval`` steps while the batch is below its
  cap,

  .. math::

    b \leftarrow \min\big(\max(b, \lceil \hat b \rceil), b_{\max}\big)

  where ``b̂`` is the chosen test's estimate of the smallest batch that passes it: ``'norm'``
  (:func:`gradtx.norm_test`, η), ``'inner_product'`` (θ), ``'augmented'`` (the larger of the inner-product
  and orthogonality estimates, θ and ν) or ``'coordinate'`` (the coordinate-wise norm test for AdaGrad, η).

  Args:
    inner: the optimizer to step (AdaGrad / AdaGrad-Norm in the paper; any optax transformation works).
    initial_batch_size: b₀, an int >= 1.
    max_batch_size: the cap, an int >= initial_batch_size.
    test: which test grows the batch.
    eta: η > 0 of the (coordinate-wise) norm test; larger values grow the batch later.
    theta: θ > 0 of the inner-product test.
    nu: ν > 0 of the orthogonality test.
    test_interval: test every this many steps (an int >= 1), starting at the first step.
    micro_batch_size: examples per row of ``per_example_grads`` (rows that are micro-batch means).
    per_leaf: inner products and projections per parameter tensor, as in the official code (see
      :func:`gradtx.inner_product_test`).
    axis_name: axis over which the rows are split (data parallelism): the statistics are those of the
      global batch, so every replica recommends the same batch size. (``updates`` are used as given:
      ``pmean`` them across the axis as usual.) Required inside named axes: ``update`` raises inside ``pmap``
      / ``shard_map`` / ``vmap(axis_name=...)`` with ``None``; :data:`gradtx.NO_DATA_AXIS` keeps per-device
      statistics (and batch sizes) on purpose.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is an :class:`AdaptiveBatchSizeState`.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> tx = gradtx.adaptive_batch_size(optax.sgd(0.1), initial_batch_size=4, max_batch_size=64, eta=0.25)
    >>> params = jnp.zeros(2)
    >>> state = tx.init(params)
    >>> rows = jnp.array([[1.0, 0.0], [3.0, 0.0], [2.0, 1.0], [2.0, -1.0]])  # estimate (4/3) / (0.0625 * 4)
    >>> updates, state = tx.update(rows.mean(0), state, params, per_example_grads=rows)
    >>> updates, int(state.batch_size)
    (Array([-0.2, -0. ], dtype=float32), 6)

  References:
    Lau et al., `AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods
    <https://arxiv.org/abs/2402.11215>`_, 2024.
  """
  validation.check_transformation("inner", inner)
  validation.check_int("initial_batch_size", initial_batch_size, low=1)
  validation.check_int("max_batch_size", max_batch_size, low=initial_batch_size)
  validation.check_choice("test", test, ("norm", "inner_product", "augmented", "coordinate"))
  validation.check_positive("eta", eta)
  validation.check_positive("theta", theta)
  validation.check_positive("nu", nu)
  validation.check_int("test_interval", test_interval, low=1)
  validation.check_int("micro_batch_size", micro_batch_size, low=1)
  validation.check_bool("per_leaf", per_leaf)
  inner = optax.with_extra_args_support(inner)
  requested_axis, axis_name = axis_name, reduce.resolve_data_axis(axis_name)

  def init_fn(params):
    return AdaptiveBatchSizeState(
        count=jnp.zeros([], jnp.int32),
        batch_size=jnp.asarray(initial_batch_size, jnp.int32),
        estimate=jnp.zeros([], jnp.float32),
        inner_state=inner.init(params),
    )

  def update_fn(updates, state, params=None, *, per_example_grads, **extra_args):
    reduce.check_data_axis(requested_axis, owner="adaptive_batch_size", uses="per_example_grads")
    with jax.named_scope("gradtx/adaptive_batch_size"):
      new_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)

      def run_test(_):
        return _estimate(test, per_example_grads, eta, theta, nu, micro_batch_size, per_leaf, axis_name)

      estimate, batch_size = state.estimate, state.batch_size
      if jax.tree.leaves(per_example_grads):  # a tree without arrays has nothing to measure
        due = (state.count % test_interval == 0) & (state.batch_size < max_batch_size)
        estimate = jax.lax.cond(due, run_test, lambda _: state.estimate, None)
        batch_size = jnp.where(due, bst.next_batch_size(batch_size, estimate, max_batch_size), batch_size)
      return new_updates, AdaptiveBatchSizeState(
          count=tree.safe_increment(state.count),
          batch_size=batch_size.astype(jnp.int32),
          estimate=jnp.asarray(estimate, jnp.float32),
          inner_state=inner_state,
      )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
