"""Sophia: clipped, diagonally preconditioned momentum with a Hessian estimate refreshed every k steps.

Paper: Liu, Li, Hall, Liang, Ma. "Sophia: A Scalable Stochastic Second-order Optimizer for Language Model
Pre-training", ICLR 2024. https://arxiv.org/abs/2305.14342 (Algorithm 3; Sophia-H and Sophia-G)

Reference implementation: Liuhong99/Sophia@a7e1572 ``sophia.py`` (``SophiaG``) and ``train_sophiag.py``:
``θ ← θ(1 − lr·wd)``; ``m ← β1 m + (1−β1) g``; ``θ ← θ − lr · sign(m) · min(|m| / (ρ · bs · h + 1e-15), 1)``,
no bias correction on ``m`` or ``h``. gradtx's update is the paper's ``clip(m / max(γ h, ε), 1)`` with
``γ h`` = the code's ``ρ · bs · h`` (the GNB estimator returns ``B · ĝ ⊙ ĝ``; see :mod:`gradtx.curvature.gnb`),
so ``sophia_g``'s ``rho`` is the code's ``rho`` and ``batch_tokens`` its ``bs``. The code's ``lr`` is gradtx's
learning rate; the v1 paper's ``η · clip(m / max(h, ε), ρ)`` (pytorch-optimizer's ``SophiaH(lr, p, eps)``) is
gradtx's with learning rate ``lr · p``, ``gamma = p``, ``eps = p · eps`` (and weight decay ``wd / p``).

When the estimate is refreshed. Algorithm 3 refreshes ``h`` at steps ``t ≡ 1 (mod k)`` (1-based) and uses it in
the same step; pytorch-optimizer does the same. The official script refreshes after steps ``k−1, 2k−1, …`` on
the *next* batch at the *next* params, so the estimate first used at step ``k`` is taken at the params and batch
of step ``k`` (0-based): that is gradtx's schedule too (refresh at ``count % k == 0``, then step), except that the
script makes no estimate before step ``k`` (``h = 0``: the first ``k`` steps are ``lr · sign(m)``). Pass
``estimate_at_start=False`` for that.

Negative curvature. With Hutchinson (Sophia-H) ``h`` can be negative. The paper's ``max(γ h, ε)`` then divides by
``ε`` and the clip gives a sign step; the first official commit's ``SophiaH`` (``relu(h)`` in the denominator)
did the same, and so does gradtx. The released official ``SophiaG`` computes ``|m| / (ρ·bs·h + 1e-15)``, which is
negative for ``h < 0`` and is not clipped from below (``clamp(None, 1)``), so it steps uphill by an unbounded
amount (Liuhong99/Sophia#34; harmless for GNB, whose ``h ≥ 0``).

Where gradtx differs from peers:
  * optax 0.2.8 ``contrib.sophia``: bias-corrected ``m``, Hutchinson only (no GNB), ``eps = 1e-8``, a default
    estimator built at import that starts from ``PRNGKey(0)``, ``jax.debug.print`` of the win rate inside
    ``update``, no averaging across devices, and failure on mixed f32/bf16 trees. gradtx keeps the fraction of clipped coordinates in the state.
  * levanter: bias-corrected ``m``; ``sophia_g`` raises ``NotImplementedError``.
  * ``max(γ h, ε)`` (paper) rather than the code's ``γ h + 1e-15``; they differ only where ``γ h`` is ~``ε``.
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
from gradtx.curvature import gnb, hutchinson


class ScaleBySophiaState(NamedTuple):
  """State of :func:`scale_by_sophia`.

  Attributes:
    count: steps taken.
    mu: momentum ``m``.
    nu: EMA ``h`` of the Hessian-diagonal estimate.
    estimator_state: state of the estimator.
    clip_fraction: fraction of coordinates clipped at the last step (1 − the official ``win_rate``; the
      official README advises tuning ρ so that the win rate stays in 0.1–0.5).
  """

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  estimator_state: Any
  clip_fraction: jax.Array


def _wide(x: jax.Array) -> jax.Array:
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def scale_by_sophia(
    b1: float = 0.965,
    b2: float = 0.99,
    gamma: float = 0.01,
    eps: float = 1e-12,
    *,
    hessian_diag: optax.GradientTransformation,
    update_interval: int = 10,
    estimate_at_start: bool = True,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Sophia's direction: momentum over a clipped, refreshed-every-k Hessian-diagonal EMA.

  .. math::

    m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
    h_t &= \beta_2 h_{t-1} + (1-\beta_2) \hat h_t \ \text{ if } t \bmod k = 0, \ \text{else } h_{t-1} \\
    u_t &= \operatorname{clip}\!\left(m_t / \max(\gamma h_t, \epsilon),\ 1\right)

  The estimate runs under ``lax.cond``, so it costs nothing on the other ``k − 1`` steps.

  Args:
    b1: momentum decay β1.
    b2: decay β2 of the Hessian EMA (per refresh).
    gamma: γ, the paper's scale of ``h`` (the official code's ``rho``, with the estimate carrying ``bs``).
    eps: ε, the floor of the denominator.
    hessian_diag: the estimator, a transformation whose ``update`` returns a diagonal estimate, e.g.
      :func:`~gradtx.estimate_hessian_diag_hutchinson` (Sophia-H) or :func:`~gradtx.estimate_hessian_diag_gnb`
      (Sophia-G). Extra arguments of ``update`` (``loss_fn``, ``logits_fn``) are passed on to it.
    update_interval: k, steps between refreshes.
    estimate_at_start: refresh at step 0 (Algorithm 3, pytorch-optimizer); False keeps ``h = 0`` for the first
      k steps as the official GPT-2 script does.
    mu_dtype: dtype of ``m``; ``None`` keeps each param's dtype.
    nu_dtype: dtype of ``h``; ``None``: at least float32 (pass the params' dtype to keep it).
    axis_name: the clip fraction counts coordinates across this axis (params sharded over it).

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params`` and the estimator's extra arguments.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_sophia(hessian_diag=gradtx.estimate_hessian_diag_hutchinson(seed=0), b1=0.0)
    >>> params = jnp.array([1.0, 1.0])
    >>> loss_fn = lambda p: jnp.sum(jnp.array([50.0, 50000.0]) * p**2)  # diag(H) = (100, 100000)
    >>> u, state = tx.update(jnp.array([1.0, 1.0]), tx.init(params), params, loss_fn=loss_fn)
    >>> # m / (γ h) with h = (1 - b2) diag(H) = (1, 1000): 100 is clipped to 1, 0.1 is kept
    >>> bool(jnp.allclose(u, jnp.array([1.0, 0.1])))
    True
    >>> state.clip_fraction
    Array(0.5, dtype=float32)

  References:
    Liu et al., `Sophia <https://arxiv.org/abs/2305.14342>`_, 2024.
  """
  validation.check_beta("b1", b1)
  validation.check_beta("b2", b2)
  validation.check_positive("gamma", gamma)
  # max(γ h, ε) is 0 where the Hessian estimate is 0: ε = 0 gives m / 0 (and 0 / 0 where m = 0 too).
  validation.check_eps("eps", eps)
  validation.check_int("update_interval", update_interval, low=1)
  validation.check_bool("estimate_at_start", estimate_at_start)
  if not isinstance(hessian_diag, optax.GradientTransformation):
    raise ValueError(f"`hessian_diag` must be an optax.GradientTransformation, got {hessian_diag!r}.")
  estimator = optax.with_extra_args_support(hessian_diag)
  mu_dtype, nu_dtype = tree.canonical_dtype(mu_dtype), tree.canonical_dtype(nu_dtype)

  def init_fn(params):
    return ScaleBySophiaState(
        count=jnp.zeros([], jnp.int32),
        mu=tree.zeros_like(params, dtype=mu_dtype),
        nu=numerics.stats_zeros_like(params, nu_dtype),
        estimator_state=estimator.init(params),
        clip_fraction=jnp.zeros([], jnp.float32),
    )

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError("`params` must be given to Sophia's update (the estimator differentiates at them).")
    with jax.named_scope("gradtx/sophia"):
      # Decays rounded to the moments' (at least float32) precision before 1 - b is formed, so a Python float and
      # an injected float32 hyperparameter give the same moments.
      wide = jnp.result_type(jnp.float32, *[x.dtype for x in jax.tree.leaves((state.mu, state.nu))])
      d1, d2 = jnp.asarray(b1, wide), jnp.asarray(b2, wide)

      def refresh(nu, est_state):
        est, est_state = estimator.update(updates, est_state, params, **extra_args)
        return numerics.ema(nu, est, d2), est_state

      due = state.count % update_interval == 0
      if not estimate_at_start:
        due = due & (state.count > 0)
      nu, est_state = jax.lax.cond(due, refresh, lambda n, s: (n, s), state.nu, state.estimator_state)
      mu = numerics.ema(state.mu, updates, d1)

      ratios = jax.tree.map(lambda m, h: _wide(m) / jnp.maximum(gamma * _wide(h), eps), mu, nu)
      clipped = sum((jnp.sum(jnp.abs(r) >= 1.0, dtype=jnp.float32) for r in jax.tree.leaves(ratios)), jnp.float32(0))
      size = float(sum(r.size for r in jax.tree.leaves(ratios)))
      fraction = reduce.psum(clipped, axis_name) / jnp.maximum(reduce.psum(jnp.float32(size), axis_name), 1.0)
      new_updates = jax.tree.map(lambda r, g: jnp.clip(r, -1.0, 1.0).astype(g.dtype), ratios, updates)
      return new_updates, ScaleBySophiaState(
          count=tree.safe_increment(state.count),
          mu=mu,
          nu=nu,
          estimator_state=est_state,
          clip_fraction=fraction,
      )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sophia_h(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.965,
    b2: float = 0.99,
    gamma: float = 0.01,
    eps: float = 1e-12,
    weight_decay: optax.ScalarOrSchedule = 0.1,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    update_interval: int = 10,
    estimate_at_start: bool = True,
    n_probes: int = 1,
    distribution: hvp_lib.Distribution = "gaussian",
    seed: int = 0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Sophia-H: Sophia with Hutchinson's Hessian-diagonal estimate (needs ``loss_fn``).

  .. math::

    \theta_t = \theta_{t-1} - \eta_t \left(\operatorname{clip}(m_t / \max(\gamma h_t, \epsilon), 1)
    + \lambda \theta_{t-1}\right), \qquad \hat h = u \odot \nabla^2 L(\theta) u,\ u \sim \mathcal N(0, I)

  ``tx.update(grads, state, params, loss_fn=lambda p: loss(p, batch))``. Defaults: paper γ = 0.01, ε = 1e-12,
  k = 10, Gaussian probes; β = (0.965, 0.99) and λ = 0.1 of the official code and levanter.

  Args:
    learning_rate: η (the largest per-coordinate step), a float or an optax schedule.
    b1: see :func:`scale_by_sophia`.
    b2: see :func:`scale_by_sophia`.
    gamma: see :func:`scale_by_sophia`.
    eps: see :func:`scale_by_sophia`.
    weight_decay: λ, decoupled and multiplied by the learning rate.
    mask: tree of booleans (or a function of the params giving one) selecting the params that decay.
    update_interval: see :func:`scale_by_sophia`.
    estimate_at_start: see :func:`scale_by_sophia`.
    n_probes: probes per estimate.
    distribution: ``'gaussian'`` (paper, levanter, pytorch-optimizer) or ``'rademacher'`` (optax).
    seed: seed of the probes' PRNG key (kept in the state).
    mu_dtype: see :func:`scale_by_sophia`.
    nu_dtype: see :func:`scale_by_sophia`.
    axis_name: average Hessian-vector products across this axis (data parallelism). Required inside named axes:
      ``update`` raises inside ``pmap`` / ``shard_map`` / ``vmap(axis_name=...)`` with ``None``;
      :data:`gradtx.NO_DATA_AXIS` keeps per-device estimates on purpose.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``loss_fn``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> loss = lambda p: jnp.sum(jnp.array([1.0, 100.0]) * (p - 1.0) ** 2)
    >>> tx = gradtx.sophia_h(learning_rate=optax.cosine_decay_schedule(0.05, 200), weight_decay=0.0)
    >>> params = jnp.zeros(2)
    >>> state = tx.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...   updates, state = tx.update(jax.grad(loss)(params), state, params, loss_fn=loss)
    ...   return optax.apply_updates(params, updates), state
    >>> for _ in range(200):
    ...   params, state = step(params, state)
    >>> bool(loss(params) < 1e-2)
    True

  References:
    Liu et al., `Sophia <https://arxiv.org/abs/2305.14342>`_, 2024.
  """
  estimator = hutchinson.estimate_hessian_diag_hutchinson(
      seed=seed, n_probes=n_probes, distribution=distribution, axis_name=axis_name
  )
  direction = scale_by_sophia(
      b1,
      b2,
      gamma,
      eps,
      hessian_diag=estimator,
      update_interval=update_interval,
      estimate_at_start=estimate_at_start,
      mu_dtype=mu_dtype,
      nu_dtype=nu_dtype,
      axis_name=None,
  )
  return reduce.with_data_axis_check(
      alias.decoupled(direction, learning_rate, weight_decay, mask), axis_name, owner="sophia_h", uses="loss_fn"
  )


def sophia_g(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.965,
    b2: float = 0.99,
    rho: float = 0.05,
    eps: float = 1e-12,
    weight_decay: optax.ScalarOrSchedule = 0.1,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    batch_tokens: float | None = None,
    update_interval: int = 10,
    estimate_at_start: bool = True,
    clip_norm: float | None = None,
    seed: int = 0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Sophia-G: Sophia with the Gauss-Newton-Bartlett estimate (needs ``logits_fn``), in the official code's terms.

  .. math::

    \theta_t = \theta_{t-1}(1 - \eta_t \lambda) - \eta_t\, \operatorname{sign}(m_t)
    \min\!\left(\frac{|m_t|}{\max(\rho\, \mathrm{bs}\, h_t, \epsilon)}, 1\right), \qquad
    \mathrm{bs}\, h = \mathrm{EMA}(\mathrm{bs} \cdot \hat g \odot \hat g)

  ``tx.update(grads, state, params, logits_fn=lambda p: model_logits(p, batch))``. ``rho`` is the official
  ``rho`` and the paper's γ; ``batch_tokens`` the official ``bs`` (``None``: the number of label positions in the
  logits). Defaults: β = (0.965, 0.99), λ = 0.1 (official class); ρ = 0.05 (paper γ for Sophia-G, GPT-2 small
  config); k = 10.

  Args:
    learning_rate: η (the official ``lr``; the largest per-coordinate step), a float or an optax schedule.
    b1: see :func:`scale_by_sophia`.
    b2: see :func:`scale_by_sophia`.
    rho: ρ (γ), the scale of ``bs · h``.
    eps: see :func:`scale_by_sophia`.
    weight_decay: λ, decoupled and multiplied by the learning rate.
    mask: tree of booleans (or a function of the params giving one) selecting the params that decay.
    batch_tokens: see :func:`~gradtx.estimate_hessian_diag_gnb`.
    update_interval: see :func:`scale_by_sophia`.
    estimate_at_start: see :func:`scale_by_sophia`.
    clip_norm: see :func:`~gradtx.estimate_hessian_diag_gnb` (the official script clips ``ĝ`` at 1.0).
    seed: seed of the label-sampling PRNG key (kept in the state).
    mu_dtype: see :func:`scale_by_sophia`.
    nu_dtype: see :func:`scale_by_sophia`.
    axis_name: average ``ĝ`` across this axis and count its label positions (data parallelism). Required inside
      named axes: ``update`` raises inside ``pmap`` / ``shard_map`` / ``vmap(axis_name=...)`` with ``None``;
      :data:`gradtx.NO_DATA_AXIS` keeps per-device estimates on purpose.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``logits_fn``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> x = jax.random.normal(jax.random.key(0), (128, 5))
    >>> y = jnp.argmax(x @ jax.random.normal(jax.random.key(1), (5, 3)), axis=-1)
    >>> logits_fn = lambda p: x @ p
    >>> loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(logits_fn(p), y).mean()
    >>> tx = gradtx.sophia_g(learning_rate=0.1, weight_decay=0.0)
    >>> params = jnp.zeros((5, 3))
    >>> state, first = tx.init(params), loss(params)
    >>> @jax.jit
    ... def step(params, state):
    ...   updates, state = tx.update(jax.grad(loss)(params), state, params, logits_fn=logits_fn)
    ...   return optax.apply_updates(params, updates), state
    >>> for _ in range(50):
    ...   params, state = step(params, state)
    >>> bool(loss(params) < 0.5 * first)
    True

  References:
    Liu et al., `Sophia <https://arxiv.org/abs/2305.14342>`_, 2024. Official code: Liuhong99/Sophia.
  """
  validation.check_positive("rho", rho)  # checked under the official name, before scale_by_sophia sees it as gamma
  estimator = gnb.estimate_hessian_diag_gnb(
      seed=seed, batch_tokens=batch_tokens, clip_norm=clip_norm, axis_name=axis_name
  )
  direction = scale_by_sophia(
      b1,
      b2,
      rho,
      eps,
      hessian_diag=estimator,
      update_interval=update_interval,
      estimate_at_start=estimate_at_start,
      mu_dtype=mu_dtype,
      nu_dtype=nu_dtype,
      axis_name=None,
  )
  return reduce.with_data_axis_check(
      alias.decoupled(direction, learning_rate, weight_decay, mask), axis_name, owner="sophia_g", uses="logits_fn"
  )


_STATIC = (
    "update_interval",
    "estimate_at_start",
    "seed",
    "mu_dtype",
    "nu_dtype",
    "axis_name",
    "mask",
)
_PAPER = "Liu et al., Sophia: A Scalable Stochastic Second-order Optimizer for Language Model Pre-training, 2023, arXiv:2305.14342"

registry.register(
    registry.OptimizerSpec(
        name="sophia_h",
        factory=sophia_h,
        test_kwargs={"learning_rate": 0.03, "weight_decay": 0.0},
        family="curvature",
        paper=_PAPER,
        reference="Liuhong99/Sophia@a7e1572 sophia.py (update rule); pytorch-optimizer 4.1.0 SophiaH (fixtures)",
        required_extra_args=("loss_fn",),
        static_args=(*_STATIC, "n_probes", "distribution"),
        data_axis_arg="axis_name",
        state_per_param="2 (m, h)",
    )
)

registry.register(
    registry.OptimizerSpec(
        name="sophia_g",
        factory=sophia_g,
        test_kwargs={"learning_rate": 0.03, "weight_decay": 0.0},
        family="curvature",
        paper=_PAPER,
        reference="Liuhong99/Sophia@a7e1572 sophia.py SophiaG + train_sophiag.py (NumPy transcription)",
        required_extra_args=("logits_fn",),
        static_args=_STATIC,
        data_axis_arg="axis_name",
        state_per_param="2 (m, h)",
    )
)
