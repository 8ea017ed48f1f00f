"""M-FAC: the inverse of a damped empirical Fisher over a sliding window of the last m gradients.

Paper: Frantar, Kurtic, Alistarh. "M-FAC: Efficient Matrix-Free Approximations of Second-Order Information",
NeurIPS 2021. https://arxiv.org/abs/2107.03356 (the dynamic algorithm)

Reference implementation: IST-DASLab/M-FAC@8116367 ``optim.py`` (``HInvFastUpMulti``, ``MFAC``). Per step the
official optimizer takes ``g ← ∇ + wd · w`` over the whole flattened model, overwrites the oldest row of the
ring buffer ``G`` (m × d, zeros at the start) with it, refreshes row and column ``last`` of ``GGᵀ``, and returns
``F̂⁻¹ g`` with ``F̂ = δ I + GᵀG / m``; ``v ← μ v + (1−μ) u`` if momentum; ``w ← w − lr v``.

Its fast path factors ``K = λ GGᵀ + m I`` (λ = 1/δ) by a non-pivoted LU and runs two sequential recurrences
(``D``, ``B``). For the SPD ``K`` those are the triangular solves with its Cholesky factor (``U = diag(C) Cᵀ``), so
gradtx uses Woodbury directly: ``F̂⁻¹ x = (x − Gᵀ (GGᵀ + m δ I)⁻¹ G x) / δ``, with the same costs: O(dm) for the
products with ``G`` (``Gg`` is the new row of ``GGᵀ``, computed once as in the official ``update_mul``) plus O(m²)
for the solves, and O(dm + m³) to slide the window (new row of ``GGᵀ``, Cholesky).

Where gradtx differs:
  * ``blocks='leaf'`` keeps one window per leaf (block-diagonal Fisher); ``'model'`` is the official whole-model
    Fisher. Either way the buffer is a tree of ``(m, *leaf.shape)`` arrays that keep the params' sharding; the
    m × m Gram matrix is replicated. Under ``jit`` the products reduce over sharded dimensions automatically.
  * No ``sparse`` mode (the official one restricts the optimizer to the initially non-zero weights).
  * The buffer is float32 (float64 for f64 params) unless ``buffer_dtype`` says otherwise; like the official
    float32 code, with a tiny δ the result ``(x − GᵀS⁻¹Gx)/δ`` cancels digits for ``x`` inside the window's span.
  * A finite gradient so large that ``GGᵀ`` overflows (entries beyond ~1e19 in float32) gives a zero output
    while it is in the window (the limit of ``F̂⁻¹g`` as ``|g| → ∞``) where the official code returns NaN;
    ``optax.adamw``'s step is 0 there too (``m/√v`` with ``v = inf``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import alias, numerics, reduce, tree, validation

Blocks = Literal["model", "leaf"]


class ScaleByMFACState(NamedTuple):
  """State of :func:`scale_by_mfac`: steps, the gradient ring buffer (row ``count % m`` is the next to go), its
  Gram matrix ``GGᵀ`` (one for the model, or a tree of one per leaf) and the momentum ``mu`` of the output."""

  count: jax.Array
  grads: optax.Updates
  dots: Any
  mu: optax.Updates


def _buffer_dtype(dtype: Any, buffer_dtype: Any) -> Any:
  return buffer_dtype if buffer_dtype is not None else jnp.promote_types(dtype, jnp.float32)


def _row(buffer: jax.Array, g: jax.Array) -> jax.Array:
  """``G g`` for one leaf: (m,). A fused multiply-and-reduce rather than ``tensordot``, which on explicit meshes
  refuses to contract sharded dimensions without an output sharding."""
  return jnp.sum(buffer * g[None], axis=tuple(range(1, buffer.ndim)))


def _solve(dots: jax.Array, r: jax.Array, last: jax.Array, num_grads: int, damping: Any):
  """Inserts row/column ``last`` = r into GGᵀ and returns (new GGᵀ, c = (GGᵀ + m δ I)⁻¹ r)."""
  dots = dots.at[last, :].set(r).at[:, last].set(r)
  s = dots + (num_grads * damping) * jnp.eye(num_grads, dtype=dots.dtype)
  c = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(s, lower=True), r)
  return dots, c


def scale_by_mfac(
    num_grads: int = 1024,
    damping: float = 1e-5,
    momentum: float = 0.0,
    *,
    blocks: Blocks = "model",
    buffer_dtype: Any = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Preconditions by the inverse of the damped empirical Fisher of the last ``num_grads`` gradients (M-FAC).

  .. math::

    G_t = [g_{t-m+1}, \dots, g_t]^\top \ (\text{zeros before step } m), \qquad
    u_t = \left(\delta I + \tfrac{1}{m} G_t^\top G_t\right)^{-1} g_t
        = \frac{1}{\delta}\left(g_t - G_t^\top (G_t G_t^\top + m\delta I)^{-1} G_t g_t\right),
    \qquad v_t = \mu v_{t-1} + (1-\mu) u_t

  Args:
    num_grads: m, the window length (official default 1024).
    damping: δ > 0 (official ``damp``, default 1e-5).
    momentum: μ in [0, 1), the official EMA of the output (0: ``v_t = u_t``).
    blocks: ``'model'`` (one Fisher over all leaves, official) or ``'leaf'`` (one per leaf).
    buffer_dtype: dtype of the window; ``None`` is float32, or float64 for f64 params.
    axis_name: inside ``shard_map``, the axis across which the leaves are split (FSDP): the products
      ``G g`` are summed across it, so the Gram matrix is that of the whole gradients.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; its state holds ``m`` gradients (m × #params floats).

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_mfac(num_grads=2, damping=1.0)
    >>> g = jnp.array([1.0, 0.0, 0.0])
    >>> u, state = tx.update(g, tx.init(g))
    >>> u  # (I + g gᵀ / 2)⁻¹ g = g / 1.5
    Array([0.6666667, 0.       , 0.       ], dtype=float32)

  References:
    Frantar et al., `M-FAC <https://arxiv.org/abs/2107.03356>`_, 2021.
  """
  validation.check_int("num_grads", num_grads, low=1)
  validation.check_positive("damping", damping)
  validation.check_beta("momentum", momentum)
  validation.check_choice("blocks", blocks, ("model", "leaf"))
  buffer_dtype = tree.canonical_dtype(buffer_dtype)

  def init_fn(params):
    def buffer(p):
      dtype = _buffer_dtype(p.dtype, buffer_dtype)
      return jnp.broadcast_to(jnp.zeros_like(p, dtype=dtype)[None], (num_grads, *p.shape))

    grads = jax.tree.map(buffer, params)
    leaves = jax.tree.leaves(params)
    if blocks == "model":
      dtype = _buffer_dtype(jnp.result_type(*[p.dtype for p in leaves]) if leaves else jnp.float32, buffer_dtype)
      dots = jnp.zeros((num_grads, num_grads), dtype)
    else:
      dots = jax.tree.map(lambda p: jnp.zeros((num_grads, num_grads), _buffer_dtype(p.dtype, buffer_dtype)), params)
    return ScaleByMFACState(count=jnp.zeros([], jnp.int32), grads=grads, dots=dots, mu=tree.zeros_like(params))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    with jax.named_scope("gradtx/mfac"):
      last = state.count % num_grads
      g = jax.tree.map(lambda u, b: u.astype(b.dtype), updates, state.grads)
      buffers = jax.tree.map(lambda b, x: jax.lax.dynamic_update_index_in_dim(b, x, last, 0), state.grads, g)
      rows = jax.tree.map(lambda b, x: reduce.psum(_row(b, x), axis_name), buffers, g)

      def apply(buffer, x, c, u):
        # HIGHEST: no TF32 on GPUs (the official code disables it too; the result cancels digits).
        back = jnp.tensordot(c.astype(buffer.dtype), buffer, axes=1, precision=jax.lax.Precision.HIGHEST)
        return ((x - back) / damping).astype(u.dtype)

      def overflow_to_zero(u, x, d):
        # A finite gradient whose squares overflow (|g| beyond ~1e19 in float32) makes GGᵀ inf and the solve
        # NaN; F̂⁻¹g → 0 as |g| → ∞, so the output is 0 there. Non-finite inputs still come out non-finite.
        return jnp.where(jnp.any(jnp.isinf(d)) & jnp.isfinite(x) & ~jnp.isfinite(u), jnp.zeros_like(u), u)

      if blocks == "model":
        r = sum(jax.tree.leaves(rows), jnp.zeros((num_grads,), state.dots.dtype)).astype(state.dots.dtype)
        dots, c = _solve(state.dots, r, last, num_grads, damping)
        new_updates = jax.tree.map(lambda b, x, u: overflow_to_zero(apply(b, x, c, u), x, dots), buffers, g, updates)
      else:
        solved = jax.tree.map(lambda d, r: _solve(d, r, last, num_grads, damping), state.dots, rows)
        dots = jax.tree.map(lambda d, s: s[0], state.dots, solved)
        cs = jax.tree.map(lambda d, s: s[1], state.dots, solved)
        new_updates = jax.tree.map(
            lambda b, x, c, u, d: overflow_to_zero(apply(b, x, c, u), x, d), buffers, g, cs, updates, dots
        )
      decay = jnp.asarray(momentum, jnp.float32)
      # Without momentum the output is u itself (so a past non-finite step does not linger in mu as 0 · NaN).
      mu = jax.tree.map(
          lambda m, u: jnp.where(decay > 0, m, u.astype(m.dtype)), numerics.ema(state.mu, new_updates, decay), new_updates
      )
      out = jax.tree.map(lambda m, u: m.astype(u.dtype), mu, updates)
      return out, ScaleByMFACState(count=tree.safe_increment(state.count), grads=buffers, dots=dots, mu=mu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def mfac(
    learning_rate: optax.ScalarOrSchedule,
    num_grads: int = 1024,
    damping: float = 1e-5,
    momentum: float = 0.0,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    blocks: Blocks = "model",
    buffer_dtype: Any = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The M-FAC optimizer in the official order: coupled decay, window + inverse Fisher, momentum, step.

  .. math::

    \tilde g_t = g_t + \lambda \theta_{t-1}, \quad u_t = \hat F_t^{-1} \tilde g_t, \quad
    v_t = \mu v_{t-1} + (1-\mu) u_t, \quad \theta_t = \theta_{t-1} - \eta_t v_t

  The weight decay is L2-style (added to the gradient *before* the window, as ``MFAC.step`` does), not
  decoupled (:func:`gradtx.core.alias.coupled`); the momentum is the official EMA form, no debiasing.

  Args:
    learning_rate: η, a float or an optax schedule (official default 1e-3).
    num_grads: see :func:`scale_by_mfac`.
    damping: see :func:`scale_by_mfac`.
    momentum: μ in [0, 1) (official default 0).
    weight_decay: λ, coupled (official).
    mask: tree of booleans (or a function of the params giving one) selecting the params that decay.
    blocks: see :func:`scale_by_mfac`.
    buffer_dtype: see :func:`scale_by_mfac`.
    axis_name: see :func:`scale_by_mfac`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> f = lambda p: jnp.sum((p - 3.0) ** 2)
    >>> tx = gradtx.mfac(learning_rate=0.5, num_grads=4, damping=1.0)
    >>> params = jnp.zeros(3)
    >>> state = tx.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...   updates, state = tx.update(jax.grad(f)(params), state, params)
    ...   return optax.apply_updates(params, updates), state
    >>> for _ in range(100):
    ...   params, state = step(params, state)
    >>> bool(f(params) < 1e-3)
    True

  References:
    Frantar et al., `M-FAC <https://arxiv.org/abs/2107.03356>`_, 2021.
  """
  direction = scale_by_mfac(
      num_grads, damping, momentum, blocks=blocks, buffer_dtype=buffer_dtype, axis_name=axis_name
  )
  return alias.coupled(direction, learning_rate, weight_decay, mask)


registry.register(
    registry.OptimizerSpec(
        name="mfac",
        factory=mfac,
        test_kwargs={"learning_rate": 0.3, "num_grads": 8, "damping": 1.0},
        family="curvature",
        paper="Frantar et al., M-FAC: Efficient Matrix-Free Approximations of Second-Order Information, 2021, arXiv:2107.03356",
        reference="IST-DASLab/M-FAC@8116367 optim.py (NumPy transcription of HInvFastUpMulti)",
        static_args=("num_grads", "blocks", "buffer_dtype", "mask", "axis_name"),
        shard_axis_arg="axis_name",
        state_per_param="m + 1 (gradient window, momentum) + m²/d",
        elementwise=False,
    )
)
