"""TrAct: the first layer's weight gradient preconditioned by its inputs' second moment.

Paper: Petersen, Borgelt, Ermon. "TrAct: Making First-layer Pre-Activations Trainable", NeurIPS 2024.
https://arxiv.org/abs/2410.23970

Reference implementation: Felix-Petersen/tract@8c04529 ``src/tract.py`` (``TrActLinearFunction``,
``TrActConv2DFunction``): a custom backward for the first Linear / Conv2d whose weight gradient is
``Δᵀ X (XᵀX / b + λ I)⁻¹`` with ``X`` the b × n layer inputs (conv: the unfolded patches, b = batch · H_out ·
W_out) and λ = ``lambda_`` (0.1 in the README); input and bias gradients are unchanged. For ``b < n`` the code
takes the Woodbury form in b × b, the same matrix.

gradtx applies it as a gradient transformation: the user passes the layer inputs as the extra argument
``layer_inputs`` and selects the leaves to transform (``mask``). Flax kernels are ``(n, out)`` (Dense) and
``(kh, kw, in, out)`` (Conv), the transpose of PyTorch's, so the preconditioner multiplies from the left:
``∇̃W = (XᵀX / b + λ I)⁻¹ ∇W`` with the kernel viewed as ``(prod(shape[:-1]), out)``. For a Dense first layer the
inputs are the batch itself; for a Conv, :func:`conv_patches` gives ``X`` in the kernel's ``(kh, kw, in)`` order.
Always uses the n × n solve (Cholesky); the official code switches to b × b when ``b < n``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gradtx.core import reduce, validation


def conv_patches(
    x: jax.Array,
    kernel_size: Sequence[int],
    strides: int | Sequence[int] = 1,
    padding: str | Sequence[tuple[int, int]] = "SAME",
) -> jax.Array:
  """The ``(batch · H_out · W_out, kh · kw · in)`` patches of NHWC images that a Flax ``Conv`` kernel multiplies.

  Features are ordered like ``kernel.reshape(-1, out)`` for a kernel of shape ``(kh, kw, in, out)``, so
  ``conv_patches(x, ...) @ kernel.reshape(-1, out)`` is the (flattened) convolution without bias.
  """
  kh, kw = kernel_size
  strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
  c = x.shape[-1]
  patches = jax.lax.conv_general_dilated_patches(
      x, (kh, kw), strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  lead = patches.shape[:-1]
  # conv_general_dilated_patches orders features channel-major (in, kh, kw); Flax kernels flatten (kh, kw, in).
  patches = patches.reshape(*lead, c, kh, kw)
  patches = jnp.moveaxis(patches, -3, -1)
  return patches.reshape(-1, kh * kw * c)


def scale_by_tract(
    damping: float = 0.1,
    *,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""TrAct's first-layer gradient transform: ``(XᵀX / b + λ I)⁻¹ ∇W`` for the selected kernels.

  .. math::

    \tilde\nabla_W = \left(\tfrac{1}{b} X^\top X + \lambda I_n\right)^{-1} \nabla_W,
    \qquad X \in \mathbb{R}^{b \times n} \text{ the layer inputs}

  ``update(updates, state, params, *, layer_inputs)``: ``layer_inputs`` has shape ``(..., n)`` (leading axes are
  flattened into b). Selected leaves must have ``prod(shape[:-1]) == n``; others (and every leaf with fewer than 2
  dimensions, e.g. biases) pass unchanged. Put it before the optimizer:
  ``optax.chain(gradtx.scale_by_tract(mask=...), optax.adam(1e-3))``.

  Args:
    damping: λ > 0 (official ``lambda_``, 0.1).
    mask: tree of booleans like the params (or a function of the params giving one) selecting the first layer's
      kernel; ``None`` selects every leaf with ``ndim >= 2`` (for use under ``optax.masked``).
    axis_name: sum ``XᵀX`` and b across this axis (data parallelism), so the result is the full-batch one.
      Required inside named axes: ``update`` raises inside ``pmap`` / ``shard_map`` / ``vmap(axis_name=...)``
      with ``None``; :data:`gradtx.NO_DATA_AXIS` keeps per-device statistics on purpose.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``layer_inputs``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_tract(damping=1.0)
    >>> x = jnp.array([[2.0, 0.0], [0.0, 0.0]])  # XᵀX / b = diag(2, 0)
    >>> g = {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}
    >>> u, _ = tx.update(g, tx.init(g), layer_inputs=x)
    >>> jnp.round(u["kernel"][:, 0], 4), u["bias"]  # rows divided by (2 + 1) and (0 + 1)
    (Array([0.3333, 1.    ], dtype=float32), Array([1., 1., 1.], dtype=float32))

  References:
    Petersen et al., `TrAct: Making First-layer Pre-Activations Trainable <https://arxiv.org/abs/2410.23970>`_,
    2024.
  """
  validation.check_positive("damping", damping)
  requested_axis, axis_name = axis_name, reduce.resolve_data_axis(axis_name)

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, layer_inputs, **extra_args):
    del extra_args
    reduce.check_data_axis(requested_axis, owner="scale_by_tract", uses="layer_inputs")
    with jax.named_scope("gradtx/tract"):
      x = jnp.asarray(layer_inputs)
      n = x.shape[-1]
      x = x.reshape(-1, n)
      wide = jnp.promote_types(x.dtype, jnp.float32)
      x = x.astype(wide)
      b = reduce.psum(jnp.asarray(x.shape[0], wide), axis_name)
      gram = jnp.matmul(x.T, x, precision=jax.lax.Precision.HIGHEST)
      second = reduce.psum(gram, axis_name) / b + damping * jnp.eye(n, dtype=wide)
      factor = jax.scipy.linalg.cho_factor(second, lower=True)

      def one(g, selected):
        if not selected or g.ndim < 2:
          return g
        rows = g.size // g.shape[-1]
        if rows != n:
          raise ValueError(
              f"`layer_inputs` has {n} features but a selected kernel of shape {g.shape} has {rows} input rows"
              " (prod(shape[:-1])); select only the layer these inputs feed."
          )
        solved = jax.scipy.linalg.cho_solve(factor, g.reshape(n, -1).astype(wide))
        return solved.reshape(g.shape).astype(g.dtype)

      selection = mask(params if params is not None else updates) if callable(mask) else mask
      if selection is None:
        selection = jax.tree.map(lambda g: g.ndim >= 2, updates)
      return jax.tree.map(one, updates, selection), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
