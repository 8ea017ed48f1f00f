"""Gradient-regularized Newton with a diagonal Hessian estimate and the adaptive search of Gradient-Normalized
Smoothness (experimental: several loss evaluations per step).

Paper: Semenov, Jaggi, Doikov. "Gradient-Normalized Smoothness for Optimization with Approximate Hessians",
ICLR 2026. https://arxiv.org/abs/2506.13710 (Algorithm 1)

Reference implementation: epfml/grad-norm-smooth@9f4ca00 ``src/methods.py`` (``grad_norm_smooth``), NumPy:
``λ = ‖g‖ / (γ + ε)``; ``Δ = −(H + λ B)⁻¹ g`` (Cholesky); accept when ``f(x) − f(x + Δ) ≥ ‖∇f(x + Δ)‖² / (8λ)``
and then ``γ ← max(2γ, γ_min)``, else ``γ ← γ / 2`` and solve again; after 40 rejected tries the last ``Δ`` is
taken anyway; ``x ← x + Δ``. Defaults γ₀ = 1, γ_min = 1e-9, ε = 1e-8, B = I.

gradtx replaces the dense ``H`` by a diagonal estimate (Hutchinson, via :mod:`gradtx.core.hvp`), clipped at 0 so
that ``H + λ I`` stays positive, which makes the step ``Δ_i = −g_i / (h_i + λ)`` (adaptively damped diagonal
Newton). The search runs in ``lax.while_loop``; every try evaluates ``loss_fn`` and its gradient at the trial
point (the reference reuses that gradient for the next step; an optax transformation cannot, so a step costs one
Hessian-vector product per probe plus one to ``max_tries`` loss-and-gradient evaluations). The acceptance test
assumes the step is applied as is: use learning rate 1 and no weight decay to keep the method's guarantee.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import alias, reduce, tree, validation
from gradtx.core import hvp as hvp_lib
from gradtx.curvature import hutchinson


class ScaleByRegularizedNewtonState(NamedTuple):
  """State of :func:`scale_by_regularized_newton`.

  Attributes:
    count: steps taken.
    gamma: γ, the current estimate of the gradient-normalized smoothness constant's inverse.
    tries: trial points evaluated at the last step (diagnostic; ``max_tries`` means none was accepted).
    estimator_state: state of the Hutchinson estimator.
  """

  count: jax.Array
  gamma: jax.Array
  tries: jax.Array
  estimator_state: hutchinson.HutchinsonState


def _norm(tree: Any) -> jax.Array:
  """Global L2 norm in the leaves' own (float32 or wider) precision."""
  return jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(tree)))


def scale_by_regularized_newton(
    gamma_init: float = 1.0,
    gamma_min: float = 1e-9,
    eps: float = 1e-8,
    *,
    max_tries: int = 40,
    n_probes: int = 1,
    distribution: hvp_lib.Distribution = "rademacher",
    seed: int = 0,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Experimental. The gradient-regularized Newton direction with a diagonal Hessian and an adaptive γ.

  .. math::

    \lambda = \frac{\|g\|}{\gamma + \epsilon}, \quad d_i = \frac{g_i}{\max(\hat h_i, 0) + \lambda}, \quad
    \text{accept if } f(\theta) - f(\theta - d) \ge \frac{\|\nabla f(\theta - d)\|^2}{8 \lambda}
    \ (\gamma \leftarrow \max(2\gamma, \gamma_{\min})), \ \text{else } \gamma \leftarrow \gamma / 2 \text{ and retry}

  ``update(grads, state, params, *, value, loss_fn)``: ``value`` is the loss at ``params`` and ``loss_fn`` the
  batch loss (evaluated at up to ``max_tries`` trial points per step, hence *experimental*: one Hessian-vector
  product per probe and at least one extra loss-and-gradient evaluation per step). The direction is meant for a
  learning rate of 1.

  Args:
    gamma_init: γ₀ > 0.
    gamma_min: floor of γ after an accepted step.
    eps: ε in λ = ‖g‖ / (γ + ε).
    max_tries: trial points per step before the last one is taken anyway (reference: 40).
    n_probes: Hutchinson probes per step.
    distribution: ``'rademacher'`` (exact for a diagonal Hessian) or ``'gaussian'``.
    seed: seed of the probes' PRNG key (kept in the state).
    axis_name: average Hessian-vector products, ``value`` and the trial losses and gradients across this axis
      (data parallelism). Required inside named axes: ``update`` raises inside ``pmap`` / ``shard_map`` /
      ``vmap(axis_name=...)`` with ``None``; :data:`gradtx.NO_DATA_AXIS` keeps per-device estimates on purpose.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``params``, ``value`` and ``loss_fn``.

  Examples:
    >>> import jax, jax.numpy as jnp, gradtx
    >>> loss = lambda p: jnp.sum(jnp.array([1.0, 100.0]) * (p - 1.0) ** 2)
    >>> tx = gradtx.scale_by_regularized_newton()
    >>> params = jnp.zeros(2)
    >>> state = tx.init(params)
    >>> step = jax.jit(lambda p, s: tx.update(jax.grad(loss)(p), s, p, value=loss(p), loss_fn=loss))
    >>> for _ in range(10):
    ...   d, state = step(params, state)
    ...   params = params - d
    >>> bool(loss(params) < 1e-6)
    True

  References:
    Semenov et al., `Gradient-Normalized Smoothness for Optimization with Approximate Hessians
    <https://arxiv.org/abs/2506.13710>`_, 2026.
  """
  validation.check_positive("gamma_init", gamma_init)
  validation.check_nonnegative("gamma_min", gamma_min)
  # λ = ‖g‖ / (γ + ε) enters only the guarded d = g / (h + λ) (0 where h + λ is not > 0): with eps = 0 and γ
  # halved towards 0, λ is inf or NaN and the step 0, never non-finite, so eps = 0 is allowed.
  validation.check_eps("eps", eps, guarded=True)
  validation.check_int("max_tries", max_tries, low=1)
  estimator = hutchinson.estimate_hessian_diag_hutchinson(
      seed=seed, n_probes=n_probes, distribution=distribution, axis_name=axis_name
  )
  requested_axis, axis_name = axis_name, reduce.resolve_data_axis(axis_name)

  def init_fn(params):
    return ScaleByRegularizedNewtonState(
        count=jnp.zeros([], jnp.int32),
        gamma=jnp.asarray(gamma_init, jnp.float32),
        tries=jnp.zeros([], jnp.int32),
        estimator_state=estimator.init(params),
    )

  def update_fn(updates, state, params=None, *, value, loss_fn, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("`params` must be given to the regularized Newton update (it evaluates trial points).")
    reduce.check_data_axis(requested_axis, owner="scale_by_regularized_newton", uses="loss_fn and value")
    with jax.named_scope("gradtx/regularized_newton"):
      wide = jnp.result_type(jnp.float32, *[x.dtype for x in jax.tree.leaves(updates)])
      h, est_state = estimator.update(updates, state.estimator_state, params, loss_fn=loss_fn)
      h = jax.tree.map(lambda x: jnp.maximum(x.astype(wide), 0.0), h)
      g = jax.tree.map(lambda x: x.astype(wide), updates)
      g_norm = _norm(g)
      f0 = reduce.pmean(jnp.asarray(value).astype(wide), axis_name)

      def trial(gamma):
        lam = g_norm / (gamma.astype(wide) + eps)
        d = jax.tree.map(lambda gi, hi: jnp.where(hi + lam > 0, gi / (hi + lam), 0.0), g, h)
        point = jax.tree.map(lambda p, di: (p - di.astype(p.dtype)).astype(p.dtype), params, d)
        f1, g1 = jax.value_and_grad(loss_fn)(reduce.as_varying(point, axis_name))
        f1 = reduce.pmean(f1.astype(wide), axis_name)
        g1 = reduce.pmean(jax.tree.map(lambda x: x.astype(wide), g1), axis_name)
        ok = f0 - f1 >= _norm(g1) ** 2 / (8.0 * lam)
        return d, ok

      def body(carry):
        i, gamma, _, _ = carry
        d, ok = trial(gamma)
        gamma = jnp.where(ok, jnp.maximum(2.0 * gamma, gamma_min), 0.5 * gamma).astype(jnp.float32)
        return i + 1, gamma, ok, d

      start = (jnp.zeros([], jnp.int32), state.gamma, jnp.zeros([], bool), jax.tree.map(jnp.zeros_like, g))
      tries, gamma, _, d = jax.lax.while_loop(lambda c: (~c[2]) & (c[0] < max_tries), body, start)
      new_updates = jax.tree.map(lambda di, u: di.astype(u.dtype), d, updates)
      return new_updates, ScaleByRegularizedNewtonState(
          count=tree.safe_increment(state.count), gamma=gamma, tries=tries, estimator_state=est_state
      )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def regularized_newton(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    gamma_init: float = 1.0,
    gamma_min: float = 1e-9,
    eps: float = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    max_tries: int = 40,
    n_probes: int = 1,
    distribution: hvp_lib.Distribution = "rademacher",
    seed: int = 0,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Experimental. Gradient-regularized Newton (GNS Algorithm 1) with a diagonal Hessian estimate.

  .. math::

    \theta_t = \theta_{t-1} - \eta_t\,(d_t + \lambda_{\mathrm{wd}} \theta_{t-1})

  with :func:`scale_by_regularized_newton` giving ``d_t``; the method is defined for ``η = 1`` and no decay (its
  acceptance test checks the step ``−d_t``). Needs ``value`` and ``loss_fn``; several loss evaluations per step.

  Args:
    learning_rate: η (1 for the method as published), a float or an optax schedule.
    gamma_init: see :func:`scale_by_regularized_newton`.
    gamma_min: see :func:`scale_by_regularized_newton`.
    eps: see :func:`scale_by_regularized_newton`.
    weight_decay: decoupled decay (0 for the method as published).
    mask: tree of booleans (or a function of the params giving one) selecting the params that decay.
    max_tries: see :func:`scale_by_regularized_newton`.
    n_probes: see :func:`scale_by_regularized_newton`.
    distribution: see :func:`scale_by_regularized_newton`.
    seed: see :func:`scale_by_regularized_newton`.
    axis_name: see :func:`scale_by_regularized_newton`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``value`` and ``loss_fn``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> loss = lambda p: jnp.sum(jnp.log(jnp.cosh(p - 2.0)))
    >>> tx = gradtx.regularized_newton()
    >>> params = jnp.zeros(3)
    >>> state = tx.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...   value, grads = jax.value_and_grad(loss)(params)
    ...   updates, state = tx.update(grads, state, params, value=value, loss_fn=loss)
    ...   return optax.apply_updates(params, updates), state
    >>> for _ in range(20):
    ...   params, state = step(params, state)
    >>> bool(loss(params) < 1e-6)
    True

  References:
    Semenov et al., `Gradient-Normalized Smoothness for Optimization with Approximate Hessians
    <https://arxiv.org/abs/2506.13710>`_, 2026.
  """
  direction = scale_by_regularized_newton(
      gamma_init,
      gamma_min,
      eps,
      max_tries=max_tries,
      n_probes=n_probes,
      distribution=distribution,
      seed=seed,
      axis_name=axis_name,
  )
  return reduce.with_data_axis_check(
      alias.decoupled(direction, learning_rate, weight_decay, mask),
      axis_name,
      owner="regularized_newton",
      uses="loss_fn and value",
  )


registry.register(
    registry.OptimizerSpec(
        name="regularized_newton",
        factory=regularized_newton,
        test_kwargs={"learning_rate": 1.0},
        family="curvature",
        paper="Semenov, Jaggi, Doikov, Gradient-Normalized Smoothness for Optimization with Approximate Hessians, 2025, arXiv:2506.13710",
        reference="epfml/grad-norm-smooth@9f4ca00 src/methods.py grad_norm_smooth (NumPy transcription, diagonal H)",
        required_extra_args=("value", "loss_fn"),
        static_args=("max_tries", "n_probes", "distribution", "seed", "axis_name", "mask"),
        data_axis_arg="axis_name",
        state_per_param="0 (scalars only)",
        elementwise=False,
    )
)
