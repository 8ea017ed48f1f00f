"""AdAdaGrad and AdAdaGrad-Norm: AdaGrad / AdaGrad-Norm with adaptive batch sizes.

Paper: Lau, Liu, Kolar. "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods", 2024.
https://arxiv.org/abs/2402.11215

Reference implementation: timlautk/AdAdaGrad@cc126fb (``main.py`` with ``--optimizer=adagrad`` /
``adagradnorm``, ``tests.py``). Each is :func:`gradtx.adaptive_batch_size` around the base optimizer of
:mod:`gradtx.schedules.adagrad` (see both modules for where gradtx differs from the official code). The
update needs ``per_example_grads`` (the batch's per-example gradients, leading batch axis on every leaf);
the recommended next batch size is ``state.batch_size``. ``updates`` is the batch gradient, as for any
optax optimizer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax

from gradtx import registry
from gradtx.core import alias, reduce
from gradtx.schedules.adagrad import scale_by_adagrad, scale_by_adagrad_norm
from gradtx.schedules.adaptive_batch_size import BatchSizeTest, adaptive_batch_size

_STATIC = (
    "initial_batch_size",
    "max_batch_size",
    "test",
    "test_interval",
    "micro_batch_size",
    "per_leaf",
    "mask",
    "axis_name",
)


def adadagrad(
    learning_rate: optax.ScalarOrSchedule,
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
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""AdAdaGrad: coordinate-wise AdaGrad with a batch size grown by a variance test.

  .. math::

    \bar g_t = \tfrac{1}{b_t} \textstyle\sum_{i \in B_t} \nabla f_i, \quad
    v_t = v_{t-1} + \bar g_t^2, \quad
    \theta_t = \theta_{t-1} - \eta_t \left(\frac{\bar g_t}{\sqrt{v_t} + \epsilon} + \lambda \theta_{t-1}\right),
    \quad b_{t+1} = \min(\max(b_t, \lceil \hat b_t \rceil), b_{\max})

  The paper pairs coordinate-wise AdaGrad with the coordinate-wise norm test (``test='coordinate'``) in
  its analysis; the official experiments use the norm test (the default here).

  Args:
    learning_rate: η, a float or an optax schedule.
    initial_batch_size: see :func:`gradtx.adaptive_batch_size`.
    max_batch_size: see :func:`gradtx.adaptive_batch_size`.
    test: see :func:`gradtx.adaptive_batch_size`.
    eta: see :func:`gradtx.adaptive_batch_size`.
    theta: see :func:`gradtx.adaptive_batch_size`.
    nu: see :func:`gradtx.adaptive_batch_size`.
    test_interval: see :func:`gradtx.adaptive_batch_size`.
    micro_batch_size: see :func:`gradtx.adaptive_batch_size`.
    per_leaf: see :func:`gradtx.adaptive_batch_size`.
    initial_accumulator_value: ``v₀`` of :func:`gradtx.scale_by_adagrad`.
    eps: ε of :func:`gradtx.scale_by_adagrad`.
    weight_decay: λ, decoupled and multiplied by the learning rate.
    mask: tree of booleans (or a function of the params giving one) selecting the params that decay.
    axis_name: see :func:`gradtx.adaptive_batch_size`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (state: :class:`gradtx.AdaptiveBatchSizeState`) whose update
    requires ``per_example_grads``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> x = jax.random.normal(jax.random.key(0), (64, 3))
    >>> y = x @ jnp.array([1.0, -2.0, 0.5]) + 0.1 * jax.random.normal(jax.random.key(1), (64,))
    >>> loss = lambda w, xi, yi: (xi @ w - yi) ** 2
    >>> tx = gradtx.adadagrad(0.5, initial_batch_size=4, max_batch_size=64)
    >>> w = jnp.zeros(3)
    >>> state = tx.init(w)
    >>> for step in range(50):
    ...   b = int(state.batch_size)
    ...   rows = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(w, x[:b], y[:b])
    ...   updates, state = tx.update(rows.mean(0), state, w, per_example_grads=rows)
    ...   w = optax.apply_updates(w, updates)
    >>> bool(jnp.allclose(w, jnp.array([1.0, -2.0, 0.5]), atol=0.1)), int(state.batch_size) > 4
    (True, True)

  References:
    Lau et al., `AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods
    <https://arxiv.org/abs/2402.11215>`_, 2024.
  """
  tx = adaptive_batch_size(
      alias.decoupled(scale_by_adagrad(initial_accumulator_value, eps), learning_rate, weight_decay, mask),
      initial_batch_size=initial_batch_size,
      max_batch_size=max_batch_size,
      test=test,
      eta=eta,
      theta=theta,
      nu=nu,
      test_interval=test_interval,
      micro_batch_size=micro_batch_size,
      per_leaf=per_leaf,
      axis_name=axis_name,
  )
  return reduce.with_data_axis_check(tx, axis_name, owner="adadagrad", uses="per_example_grads")


def adadagrad_norm(
    learning_rate: optax.ScalarOrSchedule,
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
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""AdAdaGrad-Norm: AdaGrad-Norm with a batch size grown by a variance test.

  .. math::

    b_t^2 = b_{t-1}^2 + \|\bar g_t\|^2, \quad
    \theta_t = \theta_{t-1} - \eta_t \left(\frac{\bar g_t}{b_t + \epsilon} + \lambda \theta_{t-1}\right)

  with the batch grown as in :func:`adadagrad` (the paper proves a high-probability O(1/K) rate for it with
  the norm test). ``updates`` is the batch gradient ``ḡ_t`` (pmean it across devices as usual).

  Args:
    learning_rate: η, a float or an optax schedule.
    initial_batch_size: see :func:`gradtx.adaptive_batch_size`.
    max_batch_size: see :func:`gradtx.adaptive_batch_size`.
    test: see :func:`gradtx.adaptive_batch_size`.
    eta: see :func:`gradtx.adaptive_batch_size`.
    theta: see :func:`gradtx.adaptive_batch_size`.
    nu: see :func:`gradtx.adaptive_batch_size`.
    test_interval: see :func:`gradtx.adaptive_batch_size`.
    micro_batch_size: see :func:`gradtx.adaptive_batch_size`.
    per_leaf: see :func:`gradtx.adaptive_batch_size`.
    initial_accumulator_value: ``b₀²`` of :func:`gradtx.scale_by_adagrad_norm`.
    eps: ε of :func:`gradtx.scale_by_adagrad_norm`.
    weight_decay: λ, decoupled and multiplied by the learning rate.
    mask: tree of booleans (or a function of the params giving one) selecting the params that decay.
    axis_name: see :func:`gradtx.adaptive_batch_size`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (state: :class:`gradtx.AdaptiveBatchSizeState`) whose update
    requires ``per_example_grads``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> tx = gradtx.adadagrad_norm(1.0, initial_batch_size=2, max_batch_size=32, eta=0.5)
    >>> w = jnp.zeros(2)
    >>> state = tx.init(w)
    >>> rows = jnp.array([[1.0, 0.0], [3.0, 0.0], [2.0, 1.0], [2.0, -1.0]])  # batch gradient (2, 0)
    >>> updates, state = tx.update(rows.mean(0), state, w, per_example_grads=rows)
    >>> updates, int(state.batch_size)  # -g / ‖g‖; estimate (4/3) / (0.25 * 4)
    (Array([-1., -0.], dtype=float32), 2)

  References:
    Lau et al., `AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods
    <https://arxiv.org/abs/2402.11215>`_, 2024.
  """
  tx = adaptive_batch_size(
      alias.decoupled(scale_by_adagrad_norm(initial_accumulator_value, eps), learning_rate, weight_decay, mask),
      initial_batch_size=initial_batch_size,
      max_batch_size=max_batch_size,
      test=test,
      eta=eta,
      theta=theta,
      nu=nu,
      test_interval=test_interval,
      micro_batch_size=micro_batch_size,
      per_leaf=per_leaf,
      axis_name=axis_name,
  )
  return reduce.with_data_axis_check(tx, axis_name, owner="adadagrad_norm", uses="per_example_grads")


_PAPER = (
    "Lau, Liu, Kolar, AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods, 2024, arXiv:2402.11215"
)

registry.register(
    registry.OptimizerSpec(
        name="adadagrad",
        factory=adadagrad,
        test_kwargs={"learning_rate": 1.0, "initial_batch_size": 2, "max_batch_size": 1024},
        family="schedules",
        paper=_PAPER,
        reference="timlautk/AdAdaGrad@cc126fb tests.py, main.py (torch.optim.Adagrad base)",
        required_extra_args=("per_example_grads",),
        static_args=_STATIC,
        state_per_param="1 (v) + transient per-example gradients",
        elementwise=False,
        data_axis_arg="axis_name",
    )
)

registry.register(
    registry.OptimizerSpec(
        name="adadagrad_norm",
        factory=adadagrad_norm,
        test_kwargs={"learning_rate": 1.0, "initial_batch_size": 2, "max_batch_size": 1024},
        family="schedules",
        paper=_PAPER,
        reference="timlautk/AdAdaGrad@cc126fb tests.py, main.py; paper's scalar AdaGrad-Norm",
        required_extra_args=("per_example_grads",),
        static_args=_STATIC,
        state_per_param="0 (one scalar) + transient per-example gradients",
        elementwise=False,
        data_axis_arg="axis_name",
    )
)
