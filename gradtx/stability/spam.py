"""SPAM: spike-aware clipping, momentum reset with a cosine warm-up, and the full SPAM optimizer.

Paper: Huang, Zhu, Jin, Liu, Wang, Liu. "SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM
Training", ICLR 2025. https://arxiv.org/abs/2501.06842

Reference implementation: TianjinYellow/SPAM-Optimizer@e8185fbe ``galore_torch/SPAM.py`` (class
``AdamW``), followed step for step (``t`` is the 1-based global step):

* reset: if ``t % ΔT == 0``, ``m, v ← 0`` before the update; the bias-correction step keeps counting;
* spike clipping, when ``θ ≠ 0``, ``t ≥ N_a`` and ``t % ΔT ≥ N_a``: where ``g² > θ v_{t-1}``,
  ``g ← sign(g) sqrt(θ v_{t-1})``;
* Adam with the original paper's ε placement: ``θ ← θ − η s_t sqrt(1−β2^t)/(1−β1^t) · m / (sqrt(v) + ε)``,
  ``s_t`` the warm-up multiplier of :func:`gradtx.reset_state_every`;
* then decoupled decay of the moved params, not scaled by ``s_t``: ``θ ← θ − η λ θ``.

Sparse momentum (``density < 1``, the official param groups with a ``density`` key): moments only for
``int(density · N)`` random coordinates of each matrix, redrawn at every reset, zero update elsewhere; see
:mod:`gradtx.stability.spam_sparse`. The official weight decay of such a group is a no-op
(``p.data[mask].add_(...)`` decays a copy made by boolean indexing), and :func:`spam` reproduces that by
default (``decay_sparse=False``).

Where gradtx differs:
  * Sparse mode: every redraw keeps exactly ``int(density · N)`` coordinates (the official redraws are
    Bernoulli masks of varying size), and any leaf can be sampled, not only matrices (see
    :mod:`gradtx.stability.spam_sparse`). The official scripts also put the attention and MLP weights in a
    ``density = 1.0`` group, whose decay is a no-op too; gradtx's ``density=1`` is the plain dense optimizer
    (pass a ``mask`` without those weights to reproduce the scripts).
  * pytorch-optimizer 4.1.0 ``SPAM``: warm-up one step ahead and default W = 50 (see
    :mod:`gradtx.stability.reset`); otherwise the same update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import alias, matrix, numerics, reduce, topk, tree, validation
from gradtx.stability import spam_sparse
from gradtx.stability.reset import reset_state_every


class ClipSpikesState(NamedTuple):
  """State of :func:`clip_spikes`.

  Attributes:
    count: number of updates so far.
    nu: own EMA of squared (clipped) gradients; ``()`` when the second moment of ``inner`` is used.
    clip_fraction: fraction of coordinates clipped at the last step (diagnostic).
    inner_state: state of the wrapped transformation (``optax.EmptyState()`` when there is none).
  """

  count: jax.Array
  nu: optax.Updates
  clip_fraction: jax.Array
  inner_state: optax.OptState


def clip_spikes(
    inner: optax.GradientTransformation | None = None,
    threshold: float = 5000.0,
    *,
    b2: float = 0.999,
    accumulation_steps: int = 20,
    reset_period: int | None = None,
    nu_field: str = "nu",
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Clips gradient spikes: coordinates with ``g² > θ v`` become ``sign(g) sqrt(θ v)``.

  ``v`` is the second-moment estimate of ``inner`` before this step (its state field ``nu_field``), or,
  without ``inner``, an EMA of squared clipped gradients kept here with rate ``b2``. Clipping waits
  ``accumulation_steps`` steps at the start and after each reset, while ``v`` is still small.

  .. math::

    \tilde g_j = \operatorname{sign}(g_j) \sqrt{\theta v_j} \ \text{ if } g_j^2 > \theta v_j
    \ \text{ else } g_j, \qquad \text{when } \theta \ne 0,\ t \ge N_a,\ t \bmod \Delta T \ge N_a

  Args:
    inner: the optimizer to clip for; it receives the clipped gradient. ``None`` returns the clipped
      gradient and keeps its own ``v``.
    threshold: θ >= 0; 0 disables clipping (official default 5000).
    b2: decay rate of the own ``v`` (unused with ``inner``).
    accumulation_steps: N_a, steps without clipping at the start and after each reset (official
      ``grad_accu_steps``, default 20). With N_a <= 1 the first step sees ``v = 0`` and every nonzero
      coordinate is clipped to 0, as in the official code.
    reset_period: ΔT when the moments are reset by :func:`gradtx.reset_state_every` (pass the same
      period); ``None`` when they are never reset.
    nu_field: name of ``inner``'s second-moment field (``'nu'`` for optax's Adam family).
    axis_name: mapped axis for the ``clip_fraction`` diagnostic (the clip itself is elementwise).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Raises:
    ValueError: at ``init``, when ``inner``'s state has no ``nu_field`` field.

  Examples:
    >>> import jax.numpy as jnp, optax, gradtx
    >>> tx = gradtx.clip_spikes(optax.scale_by_adam(), threshold=5000.0, accumulation_steps=2)
    >>> state = tx.init(jnp.zeros(2))
    >>> u, state = tx.update(jnp.array([1.0, 1.0]), state)
    >>> u, state = tx.update(jnp.array([1.0, 100.0]), state)  # v = 0.001: 100 becomes sqrt(5000 v)
    >>> float(state.clip_fraction)
    0.5

  References:
    Huang et al., `SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM Training
    <https://arxiv.org/abs/2501.06842>`_, 2025.
  """
  validation.check_transformation("inner", inner, allow_none=True)
  validation.check_nonnegative("threshold", threshold)
  validation.check_beta("b2", b2)
  validation.check_int("accumulation_steps", accumulation_steps, low=0)
  if reset_period is not None:
    validation.check_int("reset_period", reset_period, low=1)
  if inner is not None:
    inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    if inner is None:
      return ClipSpikesState(jnp.zeros([], jnp.int32), numerics.stats_zeros_like(params), jnp.zeros([], jnp.float32),
                             optax.EmptyState())
    inner_state = inner.init(params)
    if optax.tree.get(inner_state, nu_field, default=None) is None:
      raise ValueError(f"`nu_field` {nu_field!r} is not a field of the inner state {inner_state!r:.200}.")
    return ClipSpikesState(jnp.zeros([], jnp.int32), (), jnp.zeros([], jnp.float32), inner_state)

  def update_fn(updates, state, params=None, **extra_args):
    with jax.named_scope("gradtx/clip_spikes"):
      count = tree.safe_increment(state.count)
      active = (jnp.asarray(threshold) != 0) & (count >= accumulation_steps)
      if reset_period is not None:
        active = active & (count % reset_period >= accumulation_steps)
      nu = state.nu if inner is None else optax.tree.get(state.inner_state, nu_field)
      limit_sq = jax.tree.map(lambda v: jnp.asarray(threshold, jnp.float32) * v.astype(jnp.float32), nu)
      spikes = jax.tree.map(lambda g, lim: active & (jnp.square(g.astype(jnp.float32)) > lim), updates, limit_sq)
      clipped = jax.tree.map(
          lambda g, lim, s: jnp.where(s, jnp.sign(g) * jnp.sqrt(lim).astype(g.dtype), g), updates, limit_sq, spikes
      )
      n_spikes = sum((jnp.sum(s, dtype=jnp.int32) for s in jax.tree.leaves(spikes)), jnp.zeros((), jnp.int32))
      total = max(topk.size(updates, axis_name), 1)
      fraction = reduce.psum(n_spikes, axis_name).astype(jnp.float32) / total
      if inner is None:
        return clipped, ClipSpikesState(count, numerics.ema(state.nu, clipped, jnp.asarray(b2, jnp.float32), order=2), fraction, state.inner_state)
      new_updates, inner_state = inner.update(clipped, state.inner_state, params, **extra_args)
      return new_updates, ClipSpikesState(count, (), fraction, inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _scale_by_adam_eps_outside(
    b1: float, b2: float, eps: float, nu_dtype: Any = None
) -> optax.GradientTransformationExtraArgs:
  """Adam with ε added to ``sqrt(v)`` before bias correction (official SPAM, Adam paper's Algorithm 1 end).

  State is ``optax.ScaleByAdamState`` so ``optax.tree.get(state, 'nu')`` finds the second moment.
  """

  def init_fn(params):
    return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=tree.zeros_like(params),
                                  nu=numerics.stats_zeros_like(params, nu_dtype))

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    beta1, beta2 = jnp.asarray(b1, jnp.float32), jnp.asarray(b2, jnp.float32)  # round like the corrections
    mu = numerics.ema(state.mu, updates, beta1)
    nu = numerics.ema(state.nu, updates, beta2, order=2)
    count = tree.safe_increment(state.count)
    step = jnp.sqrt(numerics.bias_correction(beta2, count)) / numerics.bias_correction(beta1, count)

    def one(g, m, v):
      return (step * m.astype(jnp.float32) / (jnp.sqrt(v.astype(jnp.float32)) + eps)).astype(g.dtype)

    return jax.tree.map(one, updates, mu, nu), optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_density(density: Any, density_mask: Any) -> None:
  if isinstance(density, bool) or not isinstance(density, (int, float)):
    raise ValueError(
        f"`density` must be a Python float in (0.0, 1.0] (it sets the state's shape: list it in static_args "
        f"under optax.inject_hyperparams), got {density!r} of type {type(density).__name__}."
    )
  validation.check_range("density", density, low=0.0, high=1.0, low_inclusive=False)
  if density_mask is not None and density == 1:
    raise ValueError(f"`density_mask` selects the sparse leaves and needs `density` < 1, got density={density!r}.")


def scale_by_spam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    threshold: float = 5000.0,
    *,
    reset_period: int | None = 500,
    warmup_steps: int = 150,
    accumulation_steps: int = 20,
    density: float = 1.0,
    density_mask: Any | Callable[[optax.Params], Any] | None = None,
    seed: int = 0,
    axis_name: reduce.AxisName = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""SPAM's direction: spike clipping, Adam, and momentum reset with a cosine warm-up.

  ``reset_state_every(clip_spikes(adam), reset_period, warmup_steps=warmup_steps)`` with the official
  Adam (``sqrt(1−β2^t)/(1−β1^t) · m/(sqrt(v) + ε)``, bias-correction step not reset).

  With ``density < 1`` (the official sparse momentum) the leaves selected by ``density_mask`` keep their
  moments for ``k = int(density · size)`` random coordinates only, redrawn at every reset step (where the
  moments are zeroed anyway); those coordinates are clipped and stepped as above and the others get a zero
  update (:mod:`gradtx.stability.spam_sparse`).

  Args:
    b1: decay rate of the first moment, in [0, 1).
    b2: decay rate of the second moment, in [0, 1).
    eps: ε > 0, added to ``sqrt(v)`` before bias correction (official default 1e-6).
    threshold: θ of :func:`clip_spikes` (official 5000; 0 disables clipping).
    reset_period: ΔT (official 500); ``None`` never resets.
    warmup_steps: W (official 150; pytorch-optimizer's default is 50).
    accumulation_steps: N_a (official ``grad_accu_steps`` 20).
    density: fraction of coordinates with moments, in (0, 1], a static Python float (official param-group
      ``density``); 1 is the dense optimizer.
    density_mask: the leaves with sparse moments when ``density < 1`` (a prefix tree of booleans or a
      callable of the params); ``None``: every 2-D leaf (the official group holds the attention and MLP
      weight matrices). Only allowed with ``density < 1``.
    seed: seed of the coordinate draws (used when ``density < 1``); the same on every replica.
    axis_name: mapped axis for the clip-fraction diagnostic.
    nu_dtype: dtype of ``v``; ``None``: at least float32 (pass the params' dtype to keep it).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_spam()
    >>> state = tx.init(jnp.zeros(3))
    >>> u, state = tx.update(jnp.array([0.5, -2.0, 0.0]), state)
    >>> u.round(3)
    Array([ 1., -1.,  0.], dtype=float32)
    >>> sparse = gradtx.scale_by_spam(density=0.25)
    >>> state = sparse.init({"w": jnp.zeros((4, 8))})
    >>> u, state = sparse.update({"w": jnp.ones((4, 8))}, state)
    >>> int((u["w"] != 0).sum())  # moments and steps for int(0.25 * 32) coordinates
    8

  References:
    Huang et al., `SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM Training
    <https://arxiv.org/abs/2501.06842>`_, 2025.
  """
  validation.check_beta("b1", b1)
  validation.check_beta("b2", b2)
  # eps = 0 divides 0 by 0 where a coordinate's gradient is 0 (m = v = 0), so eps > 0.
  validation.check_eps("eps", eps)
  _check_density(density, density_mask)
  validation.check_int("seed", seed)
  direction = clip_spikes(
      _scale_by_adam_eps_outside(b1, b2, eps, nu_dtype),
      threshold,
      accumulation_steps=accumulation_steps,
      reset_period=reset_period,
      axis_name=axis_name,
  )
  if density < 1:
    direction = spam_sparse.sample_coordinates(direction, density, mask=density_mask, every=reset_period, seed=seed)
  if reset_period is None:
    return direction
  return reset_state_every(direction, reset_period, warmup_steps=warmup_steps, fields=("mu", "nu"))


def spam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    threshold: float = 5000.0,
    reset_period: int | None = 500,
    warmup_steps: int = 150,
    accumulation_steps: int = 20,
    density: float = 1.0,
    density_mask: Any | Callable[[optax.Params], Any] | None = None,
    seed: int = 0,
    decay_sparse: bool = False,
    axis_name: reduce.AxisName = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The SPAM optimizer (official defaults), with weight decay after the step as in the official code.

  .. math::

    \theta \leftarrow \left(\theta - \eta_t s_t\, \mathrm{SPAM}(g_t)\right)(1 - \eta_t \lambda)

  with :func:`scale_by_spam` giving the direction and ``s_t`` the post-reset warm-up multiplier.

  .. note::
    With ``density < 1`` the leaves with sparse moments are not decayed by default: the official
    ``p.data[mask].add_(p.data[mask], alpha=-lr * wd)`` adds to the copy that boolean indexing makes, so
    the decay of a ``density`` group is a no-op. ``decay_sparse=True`` decays them like the other leaves
    (every coordinate, as AdamW would); the official line seems to mean the masked coordinates only, which
    gradtx does not offer.

  Args:
    learning_rate: η, a float or an optax schedule.
    b1: see :func:`scale_by_spam`.
    b2: see :func:`scale_by_spam`.
    eps: see :func:`scale_by_spam`.
    weight_decay: λ, applied to the moved params and not warmed up (official order).
    mask: tree of booleans (or a function of the params) selecting the params that decay.
    threshold: see :func:`scale_by_spam`.
    reset_period: see :func:`scale_by_spam`.
    warmup_steps: see :func:`scale_by_spam`.
    accumulation_steps: see :func:`scale_by_spam`.
    density: see :func:`scale_by_spam`.
    density_mask: see :func:`scale_by_spam`.
    seed: see :func:`scale_by_spam`.
    decay_sparse: decay the leaves with sparse moments too (False: the official no-op; no effect when
      ``density == 1``).
    axis_name: see :func:`scale_by_spam`.
    nu_dtype: see :func:`scale_by_spam`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> f = lambda p: jnp.sum((p - 1.0) ** 2)
    >>> tx = gradtx.spam(learning_rate=0.05, reset_period=50, warmup_steps=10)
    >>> params = jnp.zeros(3)
    >>> state = tx.init(params)
    >>> update = jax.jit(tx.update)
    >>> for _ in range(200):
    ...   updates, state = update(jax.grad(f)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(f(params) < 1e-2)
    True

  References:
    Huang et al., `SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM Training
    <https://arxiv.org/abs/2501.06842>`_, 2025.
  """
  direction = scale_by_spam(
      b1,
      b2,
      eps,
      threshold,
      reset_period=reset_period,
      warmup_steps=warmup_steps,
      accumulation_steps=accumulation_steps,
      density=density,
      density_mask=density_mask,
      seed=seed,
      axis_name=axis_name,
      nu_dtype=nu_dtype,
  )
  validation.check_bool("decay_sparse", decay_sparse)
  if density < 1 and not decay_sparse:
    mask = _without_sparse_leaves(mask, density_mask)
  return alias.decoupled_after_step(direction, learning_rate, weight_decay, mask)


def _without_sparse_leaves(mask: Any, density_mask: Any) -> Callable[[optax.Params], Any]:
  """The decay mask ``mask`` minus the leaves with sparse moments (the official no-op decay)."""

  def combined(params):
    treedef = jax.tree.structure(params)
    unboxed = tree.unboxed_map(lambda x: x, params)
    keep = matrix.leaf_mask(mask, params)
    sparse = spam_sparse.sampled_leaves(density_mask, unboxed)
    return treedef.unflatten([k and not s for k, s in zip(keep, sparse)])

  return combined


registry.register(
    registry.OptimizerSpec(
        name="spam",
        factory=spam,
        test_kwargs={"learning_rate": 0.05, "reset_period": 100, "warmup_steps": 20},
        family="stability",
        paper="Huang et al., SPAM: Spike-Aware Adam with Momentum Reset for Stable LLM Training, 2025, "
        "arXiv:2501.06842",
        reference="TianjinYellow/SPAM-Optimizer@e8185fbe galore_torch/SPAM.py; pytorch-optimizer 4.1.0 SPAM",
        static_args=("reset_period", "warmup_steps", "accumulation_steps", "density", "density_mask", "seed",
                     "decay_sparse", "axis_name", "mask", "nu_dtype"),
        shard_axis_arg="axis_name",
        state_per_param="2 (m, v)",
        optax_counterpart=(optax.adamw, {"learning_rate": 0.05, "weight_decay": 0.0}),
    )
)
