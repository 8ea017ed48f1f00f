"""AdaBelief: Adam with the second moment of the gradient's deviation from its EMA ("belief").

Paper: Zhuang, Tang, Ding, Tatikonda, Dvornek, Papademetris, Duncan. "AdaBelief Optimizer: Adapting
Stepsizes by the Belief in Observed Gradients", NeurIPS 2020. https://arxiv.org/abs/2010.07468

Reference implementation: juntang-zhuang/Adabelief-Optimizer@2855178e,
``pypi_packages/adabelief_pytorch0.2.1/adabelief_pytorch/AdaBelief.py`` (the PyPI package
``adabelief-pytorch`` 0.2.1, defaults of versions >= 0.1.0). gradtx follows it step for step:

  * ``eps`` is added to the stored ``s`` every step (the official in-place ``exp_avg_var.add_(eps)``), so it
    accumulates in the state, and ``eps`` is added again in the denominator. ``eps_root`` (default: ``eps``)
    sets the first of the two separately.
  * With ``amsgrad=True`` the running maximum is taken of ``s`` after its ``+ eps``; the official code adds
    ``eps`` once per step in either branch (the in-place add merely moves into the ``torch.max`` call).
  * ``rectify=True`` (default) is RAdam's rectification with the official constants, threshold ``ρ_t >= 5``
    and ``degenerated_to_sgd``. The rectified update divides by ``sqrt(s_t) + eps`` with the bias correction
    of ``s`` folded into ``r_t`` (not ``sqrt(s_t / (1 - β2^t)) + eps`` as the unrectified update), and it
    uses ``s_t`` even when ``amsgrad=True``: in the official code ``amsgrad`` only changes the unrectified
    update, so ``rectify=True, amsgrad=True`` moves exactly like ``rectify=True``. gradtx keeps this.
  * :func:`adabelief` decays weights as the official ``weight_decouple`` / ``fixed_decay`` flags do:
    ``θ(1 − ηλ)`` (default), ``θ(1 − λ)``, or L2 ``g + λθ`` added before the moments.

Numerics: updates are computed in at least float32 and the moments stored in ``mu_dtype`` / ``nu_dtype``.
Scalars (``1 − β``, ``1 − β^t``, the rectification) are float32 and all derived from the float32 ``β`` (as
under ``optax.inject_hyperparams``); ``1 − β^t`` is ``−expm1(t log β)`` and ``ρ_t`` comes from a series, to
avoid the cancellation in ``ρ_∞ − 2tβ2^t/(1−β2^t)`` (about 2000 − 1995 at step 5 for β2 = 0.999). The
branch ``ρ_t >= 5`` is thus taken at the same steps as in the official float64 code, and updates match it
to about 1e-6 relative (1e-5 where ``eps`` dominates ``s``, since float32 0.999 is not 0.999).
A NaN or Inf gradient element makes that element's moments NaN from then on (as in the official code);
other elements are unaffected. Wrap the optimizer in ``optax.apply_if_finite`` to skip such steps.

Where peers differ:
  * ``optax.scale_by_belief`` / ``optax.adabelief`` have no rectification, no amsgrad and no weight-decay
    flags; they match gradtx's ``rectify=False`` with ``eps_root=eps`` (composed with
    ``optax.add_decayed_weights`` for the default decoupled decay). optax#440: its defaults ``eps=1e-16,
    eps_root=1e-16`` are two separate constants, the paper's Algorithm 2 writes one ε (1e-8 in the paper's
    experiments); a docs note was added in optax#1264, the defaults are unchanged.
  * pytorch-optimizer 4.1.0 ``AdaBelief`` defaults ``rectify=False`` (official: True), and its
    ``ams_bound=True`` uses the running maximum in the rectified update too.
  * torch-optimizer ``AdaBelief`` keeps the old v0.0.5 defaults (``eps=1e-8``, coupled decay, no rectify).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import alias, numerics, tree, validation


class ScaleByBeliefState(NamedTuple):
  """State of :func:`scale_by_belief`.

  Attributes:
    count: number of updates so far (int32).
    mu: EMA of the gradient, ``m``.
    nu: EMA of the squared deviation ``(g − m)²`` plus the accumulated ``eps_root``, ``s``.
    nu_max: running maximum of ``nu`` when ``amsgrad=True``; ``()`` otherwise.
  """

  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates
  nu_max: optax.Updates


def _bernoulli_gap(z: jax.Array) -> jax.Array:
  """``1/expm1(z) − 1/z`` for ``z >= 0``, accurate in float32 (series below 0.5, where both terms blow up)."""
  small = z < 0.5
  zs = jnp.where(small, z, 1.0)
  series = -0.5 + zs / 12.0 - zs**3 / 720.0 + zs**5 / 30240.0
  zl = jnp.where(small, 1.0, z)
  return jnp.where(small, series, 1.0 / jnp.expm1(zl) - 1.0 / zl)


def rectification(b2: Any, count: jax.Array) -> tuple[jax.Array, jax.Array]:
  """RAdam's ``(ρ_t, r_t)`` in float32, with ``r_t`` including ``sqrt(1 − β2^t)`` as in the official code.

  ``ρ_t = ρ_∞ − 2tβ2^t / (1 − β2^t)`` with ``ρ_∞ = 2 / (1 − β2) − 1``; with ``y = −log β2`` this is
  ``1 + 2G(y) − 2tG(ty)``, ``G(z) = 1/(e^z − 1) − 1/z``, which has no cancellation.
  """
  b2 = jnp.asarray(b2, jnp.float32)
  t = count.astype(jnp.float32)
  y = -jnp.log1p(-(1.0 - b2))
  rho_inf = 2.0 / (1.0 - b2) - 1.0
  rho = 1.0 + 2.0 * _bernoulli_gap(y) - 2.0 * t * _bernoulli_gap(t * y)
  bc2 = -jnp.expm1(-t * y)
  ratio = bc2 * (rho - 4.0) / (rho_inf - 4.0) * (rho - 2.0) / rho * rho_inf / (rho_inf - 2.0)
  return rho, jnp.sqrt(jnp.maximum(ratio, 0.0))


def scale_by_belief(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    *,
    eps_root: float | None = None,
    rectify: bool = True,
    degenerated_to_sgd: bool = True,
    amsgrad: bool = False,
    n_sma_threshold: float = 5,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Rescales updates by the AdaBelief rule, with the official rectification and amsgrad options.

  AdaBelief replaces Adam's EMA of ``g²`` by the EMA of ``(g − m)²``: the step is large where the gradient
  agrees with its running mean (the "belief") and small where it deviates from it.

  .. math::

    m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
    s_t &= \beta_2 s_{t-1} + (1-\beta_2) (g_t - m_t)^2 + \epsilon_{root} \\
    u_t &= \frac{m_t / (1-\beta_1^t)}{\sqrt{s_t / (1-\beta_2^t)} + \epsilon}
      \quad\text{(rectify=False; amsgrad uses } \max_{\tau\le t} s_\tau) \\
    u_t &= \begin{cases}
      r_t\, m_t / (\sqrt{s_t} + \epsilon) & \rho_t \ge 5 \\
      m_t / (1-\beta_1^t) & \text{otherwise, if degenerated\_to\_sgd (else 0)}
    \end{cases} \quad\text{(rectify=True)}

  with :math:`\rho_\infty = 2/(1-\beta_2) - 1`, :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)` and
  :math:`r_t = \sqrt{(1-\beta_2^t)\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}
  / (1-\beta_1^t)`.

  Args:
    b1: decay rate of the gradient EMA, in [0, 1).
    b2: decay rate of the belief EMA, in [0, 1).
    eps: added to the denominator, > 0 (>= 0 when ``eps_root > 0``; official default 1e-16; the paper's experiments use 1e-8 for
      CNNs, 1e-16 for transformers and GANs).
    eps_root: added to the stored ``s`` every step (it accumulates); ``None`` uses ``eps`` as the official
      code does.
    rectify: RAdam rectification (official default True).
    degenerated_to_sgd: while ``ρ_t < n_sma_threshold``, take the bias-corrected momentum step (True) or
      no step (False). Only used with ``rectify``.
    amsgrad: use the running maximum of ``s`` in the unrectified denominator.
    n_sma_threshold: the ``ρ_t`` from which the rectified step is taken, >= 4 (official: 5).
    mu_dtype: dtype of ``m``; ``None`` keeps each param's dtype.
    nu_dtype: dtype of ``s`` (and its maximum); ``None``: at least float32 (pass the params' dtype to keep
      it; note that float16 cannot hold ``eps=1e-16``).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_belief()
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.array([0.5, -1.0])}, state, params)
    >>> updates["w"].round(4)  # the first steps are SGD with momentum, until rho_t >= 5
    Array([ 0.5, -1. ], dtype=float32)

  References:
    Zhuang et al., `AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients
    <https://arxiv.org/abs/2010.07468>`_, 2020.
    Liu et al., `On the Variance of the Adaptive Learning Rate and Beyond <https://arxiv.org/abs/1908.03265>`_
    (RAdam), 2020.
  """
  validation.check_beta("b1", b1)
  validation.check_beta("b2", b2)
  if eps_root is not None:
    validation.check_nonnegative("eps_root", eps_root)
  # s (the EMA of (g - m)^2) is 0 on a coordinate whose gradient is 0 unless the added root (eps_root, or
  # eps when it is None) keeps it positive: eps = 0 then divides 0 by 0.
  validation.check_eps("eps", eps, guarded=validation.may_be_positive(eps_root))
  validation.check_range("n_sma_threshold", n_sma_threshold, low=4.0)
  for name, flag in (("rectify", rectify), ("degenerated_to_sgd", degenerated_to_sgd), ("amsgrad", amsgrad)):
    validation.check_bool(name, flag)
  mu_dtype = tree.canonical_dtype(mu_dtype)
  nu_dtype = tree.canonical_dtype(nu_dtype)
  root = eps if eps_root is None else eps_root

  def init_fn(params):
    return ScaleByBeliefState(
        count=jnp.zeros([], jnp.int32),
        mu=tree.zeros_like(params, dtype=mu_dtype),
        nu=numerics.stats_zeros_like(params, nu_dtype),
        nu_max=numerics.stats_zeros_like(params, nu_dtype) if amsgrad else (),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    with jax.named_scope("gradtx/adabelief"):
      up = numerics.upcast
      count = tree.safe_increment(state.count)
      bc1 = numerics.bias_correction_accurate(b1, count)
      bc2 = numerics.bias_correction_accurate(b2, count)
      mu = numerics.ema_upcast(state.mu, updates, b1)
      residual = jax.tree.map(lambda g, m: up(g) - m, updates, mu)
      nu = jax.tree.map(lambda s: s + root, numerics.ema_upcast(state.nu, residual, b2, order=2))
      nu_max = jax.tree.map(lambda a, s: jnp.maximum(up(a), s), state.nu_max, nu) if amsgrad else ()
      nu_den = nu_max if amsgrad else nu

      if rectify:
        rho, r = rectification(b2, count)
        adaptive = rho >= n_sma_threshold
        early = (1.0 / bc1) if degenerated_to_sgd else 0.0

        def direction(m, s_den, s):
          del s_den  # the official rectified step uses s_t, not the amsgrad maximum
          return jnp.where(adaptive, r / bc1 * m / (jnp.sqrt(s) + eps), early * m)

      else:

        def direction(m, s_den, s):
          del s
          return m / bc1 / (jnp.sqrt(s_den) / jnp.sqrt(bc2) + eps)

      new_updates = jax.tree.map(lambda g, m, d, s: direction(m, d, s).astype(g.dtype), updates, mu, nu_den, nu)
      new_state = ScaleByBeliefState(
          count=count,
          mu=tree.cast_like(mu, state.mu),
          nu=tree.cast_like(nu, state.nu),
          nu_max=tree.cast_like(nu_max, state.nu_max) if amsgrad else (),
      )
      return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def adabelief(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    weight_decouple: bool = True,
    fixed_decay: bool = False,
    rectify: bool = True,
    degenerated_to_sgd: bool = True,
    amsgrad: bool = False,
    eps_root: float | None = None,
    n_sma_threshold: float = 5,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The AdaBelief optimizer with the official defaults (rectified, decoupled weight decay).

  .. math::

    \theta_t = \begin{cases}
      \theta_{t-1}(1 - \eta_t\lambda) - \eta_t u_t & \text{weight\_decouple (default)} \\
      \theta_{t-1}(1 - \lambda) - \eta_t u_t & \text{weight\_decouple and fixed\_decay} \\
      \theta_{t-1} - \eta_t u_t(g_t + \lambda\theta_{t-1}) & \text{otherwise (L2)}
    \end{cases}

  with :math:`u_t` the direction of :func:`scale_by_belief`. ``fixed_decay`` decay is not multiplied by the
  learning rate, so it is applied after the learning-rate scaling in the chain.

  Args:
    learning_rate: η, a float or an optax schedule.
    b1: see :func:`scale_by_belief`.
    b2: see :func:`scale_by_belief`.
    eps: see :func:`scale_by_belief`.
    weight_decay: λ, a float or an optax schedule.
    mask: tree of booleans (or a function of the params giving one) selecting the params that decay.
    weight_decouple: decoupled decay of the params (True) or L2 added to the gradient (False).
    fixed_decay: decoupled decay ``θ(1 − λ)``, not multiplied by the learning rate. Requires
      ``weight_decouple=True`` (the official code silently ignores it otherwise; gradtx raises).
    rectify: see :func:`scale_by_belief`.
    degenerated_to_sgd: see :func:`scale_by_belief`.
    amsgrad: see :func:`scale_by_belief`.
    eps_root: see :func:`scale_by_belief`.
    n_sma_threshold: see :func:`scale_by_belief`.
    mu_dtype: see :func:`scale_by_belief`.
    nu_dtype: see :func:`scale_by_belief`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> f = lambda p: jnp.sum((p - 3.0) ** 2)
    >>> tx = gradtx.adabelief(learning_rate=0.1)
    >>> params = jnp.zeros(3)
    >>> state = tx.init(params)
    >>> for _ in range(100):
    ...   updates, state = tx.update(jax.grad(f)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(f(params) < 0.01)
    True

  References:
    Zhuang et al., `AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients
    <https://arxiv.org/abs/2010.07468>`_, 2020.
  """
  validation.check_bool("weight_decouple", weight_decouple)
  validation.check_bool("fixed_decay", fixed_decay)
  if fixed_decay and not weight_decouple:
    raise ValueError("`fixed_decay` must be False when weight_decouple=False (L2 decay has no fixed form), got True.")
  direction = scale_by_belief(
      b1,
      b2,
      eps,
      eps_root=eps_root,
      rectify=rectify,
      degenerated_to_sgd=degenerated_to_sgd,
      amsgrad=amsgrad,
      n_sma_threshold=n_sma_threshold,
      mu_dtype=mu_dtype,
      nu_dtype=nu_dtype,
  )
  if fixed_decay:
    return alias.fixed(direction, learning_rate, weight_decay, mask)
  if weight_decouple:
    return alias.decoupled(direction, learning_rate, weight_decay, mask)
  return alias.coupled(direction, learning_rate, weight_decay, mask)


registry.register(
    registry.OptimizerSpec(
        name="adabelief",
        factory=adabelief,
        test_kwargs={"learning_rate": 0.1, "rectify": False},
        family="moment_scaling",
        paper=(
            "Zhuang et al., AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients, "
            "NeurIPS 2020, arXiv:2010.07468"
        ),
        reference=(
            "juntang-zhuang/Adabelief-Optimizer@2855178e "
            "pypi_packages/adabelief_pytorch0.2.1/adabelief_pytorch/AdaBelief.py"
        ),
        static_args=(
            "weight_decouple",
            "fixed_decay",
            "rectify",
            "degenerated_to_sgd",
            "amsgrad",
            "mask",
            "mu_dtype",
            "nu_dtype",
        ),
        state_per_param="2 (m, s); 3 with amsgrad",
        optax_counterpart=(optax.adabelief, {"learning_rate": 0.1}),
    )
)
