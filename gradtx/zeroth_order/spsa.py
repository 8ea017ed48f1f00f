"""SPSA / MeZO: a gradient estimate from two loss evaluations along a seeded random direction.

Papers: Spall, "Multivariate stochastic approximation using a simultaneous perturbation gradient
approximation", IEEE TAC 1992. Malladi, Gao, Nichani, Damian, Lee, Chen, Arora, "Fine-Tuning Language
Models with Just Forward Passes" (MeZO), NeurIPS 2023, https://arxiv.org/abs/2305.17333.

Reference implementation: princeton-nlp/MeZO@552cb1b ``large_models/trainer.py`` (``zo_perturb_parameters``,
``zo_step``, ``zo_update``): a seed per step, ``z ~ N(0, I)`` regenerated from it param by param,
``ĝ = (L(θ + εz) − L(θ − εz)) / (2ε)`` on the same batch, ``θ ← θ − η (ĝ z + λ θ)`` with λ only on
non-bias, non-LayerNorm params, ``ε = 1e-3``; ``n`` perturbations per step are averaged (``ĝ / n`` unless
``scale_lr_with_samples``: ``zero_order_sample`` in ``medium_models/src/trainer.py``). gradtx follows it with
these differences:

* The perturbation key is ``fold_in(PRNGKey(seed), step, replica=0, sample)``, not a fresh
  ``np.random.randint``: the run is reproducible and every replica draws the same ``z``.
* The params are perturbed functionally (``loss_fn(θ ± εz)``) instead of in place (``θ + εz``, then
  ``− 2εz``, then ``+ εz``), so the params are not moved by rounding; the loss values are the same.
* The incoming gradient is ignored: the direction comes from ``loss_fn`` alone (the update argument only
  gives the output's structure and dtypes). Pass zeros, or anything with the params' structure.
* Data parallelism: each replica evaluates ``loss_fn`` on its own micro-batch and the replicas average
  ``ĝ`` across ``axis_name``: one float per perturbation crosses the network, never a gradient. For a loss
  that is a mean over equal micro-batches the result is the single-device full-batch step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import alias, reduce, tree, validation
from gradtx.geometry import _adam
from gradtx.zeroth_order import perturbation
from gradtx.zeroth_order.perturbation import Distribution


class ScaleBySpsaState(NamedTuple):
  """State of :func:`scale_by_spsa`: the step count and the key made from the seed (no perturbation)."""

  count: jax.Array
  key: jax.Array


def _check(eps, seed, num_samples, distribution):
  validation.check_positive("eps", eps)  # the perturbation scale: the estimate divides by 2ε
  validation.check_int("seed", seed)
  validation.check_int("num_samples", num_samples, low=1)
  validation.check_choice("distribution", distribution, ("normal", "rademacher"))


def _params_or_raise(params, name):
  if params is None:
    raise ValueError(f"{name} perturbs the params: call update(updates, state, params, loss_fn=...).")
  return params


def scale_by_spsa(
    eps: Any = 1e-3,
    *,
    seed: int = 0,
    num_samples: int = 1,
    distribution: Distribution = "normal",
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The SPSA / MeZO gradient estimate: ``ĝ z`` from two evaluations of ``loss_fn``.

  .. math::

    z_s = z(\text{seed}, t, s), \quad
    \hat g_s = \frac{L(\theta + \epsilon z_s) - L(\theta - \epsilon z_s)}{2 \epsilon}, \quad
    u_t = \frac{1}{n} \sum_{s=1}^{n} \langle \hat g_s \rangle_{\text{axis}}\, z_s

  For a smooth loss, ``ĝ_s`` is the directional derivative ``z_sᵀ∇L`` up to ``O(ε²)``, and
  ``E[z zᵀ] = I`` makes ``u_t`` an unbiased estimate of ``∇L`` as ε → 0.

  Args:
    eps: ε > 0, the perturbation scale (MeZO: 1e-3). In bf16/f16 params a perturbation below the dtype's
      spacing rounds away and ``ĝ = 0``: perturb a float32 copy of such params.
    seed: int seed; the ``s``-th perturbation of step ``t`` is :func:`gradtx.spsa_direction` ``(params,
      seed, t, sample=s)``.
    num_samples: n, perturbations averaged per step (2n loss evaluations).
    distribution: ``'normal'`` (MeZO) or ``'rademacher'`` (classic SPSA).
    axis_name: the data-parallel axis; each replica's ``ĝ_s`` (from its own micro-batch) is averaged
      across it, one float per perturbation. Required inside named axes: ``update`` raises inside ``pmap`` /
      ``shard_map`` / ``vmap(axis_name=...)`` with ``None``; :data:`gradtx.NO_DATA_AXIS` keeps per-device
      estimates on purpose.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``params`` and the keyword
    argument ``loss_fn`` (params -> scalar loss on the current batch); the incoming updates are ignored.
    Call it under ``jax.jit``: eagerly, each call traces its loop over the perturbations again.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> loss_fn = lambda p: jnp.sum(p["w"] * jnp.array([1.0, -2.0]))  # linear: ĝ = zᵀ∇L exactly
    >>> params = {"w": jnp.zeros(2)}
    >>> tx = gradtx.scale_by_spsa(seed=0)
    >>> u, state = tx.update(params, tx.init(params), params, loss_fn=loss_fn)
    >>> z = gradtx.spsa_direction(params, seed=0, step=0)
    >>> bool(jnp.allclose(u["w"], (z["w"] @ jnp.array([1.0, -2.0])) * z["w"], rtol=1e-3))
    True

  References:
    Spall, `Multivariate Stochastic Approximation Using a Simultaneous Perturbation Gradient
    Approximation <https://doi.org/10.1109/9.119632>`_, 1992.
    Malladi et al., `Fine-Tuning Language Models with Just Forward Passes
    <https://arxiv.org/abs/2305.17333>`_, 2023.
  """
  _check(eps, seed, num_samples, distribution)
  requested_axis, axis_name = axis_name, reduce.resolve_data_axis(axis_name)

  def init_fn(params):
    del params
    return ScaleBySpsaState(count=jnp.zeros([], jnp.int32), key=jax.random.PRNGKey(seed))

  def update_fn(updates, state, params=None, *, loss_fn, **extra_args):
    del extra_args
    params = _params_or_raise(params, "scale_by_spsa")
    reduce.check_data_axis(requested_axis, owner="scale_by_spsa", uses="loss_fn")
    with jax.named_scope("gradtx/spsa"):

      def body(s, acc):
        key = perturbation.perturbation_key(state.key, state.count, 0, s)
        z = perturbation.draw(key, params, distribution)
        g_hat = reduce.pmean(perturbation.projected_gradient(loss_fn, params, z, eps), axis_name)
        return jax.tree.map(lambda a, v: a + g_hat * v.astype(jnp.float32), acc, z)

      zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
      total = jax.lax.fori_loop(0, num_samples, body, zeros)
      new_updates = jax.tree.map(lambda t, u: (t / num_samples).astype(u.dtype), total, updates)
      return new_updates, ScaleBySpsaState(count=tree.safe_increment(state.count), key=state.key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def mezo(
    learning_rate: optax.ScalarOrSchedule,
    eps: Any = 1e-3,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    seed: int = 0,
    num_samples: int = 1,
    distribution: Distribution = "normal",
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""MeZO: zeroth-order SGD, ``θ ← θ − η (ĝ z + λ θ)``, from two forward passes per step.

  .. math::

    \theta_t = \theta_{t-1} - \eta_t \left(\frac{1}{n}\sum_s \hat g_s z_s + \lambda\, m \odot \theta_{t-1}\right)

  with :func:`scale_by_spsa` giving the first term. The gradient passed to ``update`` is ignored; only
  ``loss_fn`` is used.

  Args:
    learning_rate: η, a float or an optax schedule (MeZO: 1e-6 to 1e-7 for large LMs).
    eps: ε of :func:`scale_by_spsa` (MeZO: 1e-3).
    weight_decay: λ, decoupled and multiplied by η (MeZO: only on non-bias, non-LayerNorm params; say so
      with ``mask``, e.g. :func:`gradtx.exclude_bias_and_norm`).
    mask: tree of booleans (or a function of the params giving one) selecting the params that decay.
    seed: see :func:`scale_by_spsa`.
    num_samples: see :func:`scale_by_spsa`.
    distribution: see :func:`scale_by_spsa`.
    axis_name: see :func:`scale_by_spsa`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``params`` and ``loss_fn``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> loss_fn = lambda p: jnp.sum((p - 3.0) ** 2)
    >>> tx = gradtx.mezo(learning_rate=0.05, num_samples=4)
    >>> params = jnp.zeros(3)
    >>> state = tx.init(params)
    >>> step = jax.jit(lambda p, s: tx.update(p, s, p, loss_fn=loss_fn))  # the gradient argument is unused
    >>> for _ in range(100):
    ...   updates, state = step(params, state)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(loss_fn(params) < 1e-3)
    True

  References:
    Malladi et al., `Fine-Tuning Language Models with Just Forward Passes
    <https://arxiv.org/abs/2305.17333>`_, 2023.
  """
  return reduce.with_data_axis_check(
      alias.decoupled(
          scale_by_spsa(eps, seed=seed, num_samples=num_samples, distribution=distribution, axis_name=axis_name),
          learning_rate,
          weight_decay,
          mask,
      ),
      axis_name,
      owner="mezo",
      uses="loss_fn",
  )


def mezo_adam(
    learning_rate: optax.ScalarOrSchedule,
    eps: Any = 1e-3,
    b1: Any = 0.9,
    b2: Any = 0.999,
    adam_eps: Any = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    seed: int = 0,
    num_samples: int = 1,
    distribution: Distribution = "normal",
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""MeZO-Adam: Adam's moments of the SPSA estimate, from two forward passes per perturbation.

  .. math::

    \hat g_t = \tfrac{1}{n}\textstyle\sum_s \hat g_s z_s, \quad
    m_t = \beta_1 m_{t-1} + (1-\beta_1) \hat g_t, \quad v_t = \beta_2 v_{t-1} + (1-\beta_2) \hat g_t^2, \\
    \theta_t = \theta_{t-1} - \eta_t \left(\frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon_A}
    + \lambda\, m \odot \theta_{t-1}\right)

  The MeZO paper (Section 2 and Appendix B) combines SPSA with Adam and avoids storing the moments by
  recomputing them from the saved ``(seed, ĝ)`` pairs of past steps; gradtx keeps ``m`` and ``v`` in the
  state (2 floats per parameter, the same numbers). Adam's per-coordinate
  scaling makes one learning rate serve stiff and flat problems, which plain :func:`mezo` (SGD) cannot.

  Args:
    learning_rate: η, a float or an optax schedule.
    eps: ε, the perturbation scale of :func:`scale_by_spsa`.
    b1: β1 of Adam, in [0, 1).
    b2: β2 of Adam, in [0, 1).
    adam_eps: ε_A of Adam's denominator.
    weight_decay: λ, decoupled and multiplied by η.
    mask: tree of booleans (or a function of the params giving one) selecting the params that decay.
    seed: see :func:`scale_by_spsa`.
    num_samples: see :func:`scale_by_spsa`.
    distribution: see :func:`scale_by_spsa`.
    axis_name: see :func:`scale_by_spsa`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``params`` and ``loss_fn``; the
    incoming gradient is ignored.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> loss_fn = lambda p: jnp.sum(jnp.array([100.0, 1.0]) * (p - 1.0) ** 2)  # stiff and flat
    >>> tx = gradtx.mezo_adam(learning_rate=0.1, num_samples=4)
    >>> params = jnp.zeros(2)
    >>> state = tx.init(params)
    >>> step = jax.jit(lambda p, s: tx.update(p, s, p, loss_fn=loss_fn))
    >>> for _ in range(200):
    ...   updates, state = step(params, state)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(loss_fn(params) < 1e-2)
    True

  References:
    Malladi et al., `Fine-Tuning Language Models with Just Forward Passes
    <https://arxiv.org/abs/2305.17333>`_, 2023.
  """
  validation.check_beta("b1", b1)
  validation.check_beta("b2", b2)
  validation.check_positive("adam_eps", adam_eps)
  spsa = scale_by_spsa(eps, seed=seed, num_samples=num_samples, distribution=distribution, axis_name=axis_name)
  # gradtx's Adam direction: float32 betas and accurate bias corrections (the same numbers under
  # inject_hyperparams, where optax.scale_by_adam's float32 ``1 - b2`` is off by ~1e-5).
  adam = _adam.scale_by_adam(b1, b2, adam_eps)
  return reduce.with_data_axis_check(
      alias.decoupled(optax.chain(spsa, adam), learning_rate, weight_decay, mask),
      axis_name,
      owner="mezo_adam",
      uses="loss_fn",
  )


# mezo (SGD) is not registered: no single learning rate passes both the stiff Rosenbrock problem and the
# flat quadratics of the contract in 300 steps (exact gradient descent cannot either). In test_kwargs,
# eps=0.1: the contract's quadratics make the central difference exact for any ε, and a larger ε amplifies
# the rounding of L(θ ± εz) less (1/ε) when two implementations are compared at rtol 1e-5.
registry.register(
    registry.OptimizerSpec(
        name="mezo_adam",
        factory=mezo_adam,
        test_kwargs={"learning_rate": 0.1, "eps": 0.1, "num_samples": 8},
        family="scale_out",
        paper="Malladi et al., Fine-Tuning Language Models with Just Forward Passes (MeZO), NeurIPS 2023, "
        "arXiv:2305.17333",
        reference="princeton-nlp/MeZO@552cb1b large_models/trainer.py (zo_step, zo_update) + optax.scale_by_adam; "
        "NumPy transcription in tests/zeroth_order/test_spsa.py",
        required_extra_args=("loss_fn",),
        static_args=("mask", "seed", "num_samples", "distribution", "axis_name"),
        state_per_param="2 (m, v; MeZO-SGD: 0)",
        elementwise=False,
        data_axis_arg="axis_name",
    )
)
