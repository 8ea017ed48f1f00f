"""LAMB: Adam's direction plus decoupled decay, rescaled per layer by a trust ratio.

Paper: You, Li, Reddi, Hseu, Kumar, Bhojanapalli, Song, Demmel, Keutzer, Hsieh. "Large Batch Optimization
for Deep Learning: Training BERT in 76 minutes", ICLR 2020. https://arxiv.org/abs/1904.00962 (Algorithm 2).

gradtx follows Algorithm 2: bias-corrected Adam ``r_t = m̂_t / (√v̂_t + ε)``, weight decay added INSIDE the
trust ratio (``r_t + λ x_t`` in the numerator and in the norm; cybertronai/pytorch-lamb#3), and
``x ← x − η φ(‖x‖) / ‖r_t + λ x‖ · (r_t + λ x)`` with ``φ(z) = min(max(z, γ_l), γ_u)``
(``phi_min`` / ``phi_max``; identity by default, as the paper uses in practice).

Relation to optax: ``optax.lamb`` is this chain with φ = identity (``scale_by_adam``,
``add_decayed_weights``, ``scale_by_trust_ratio()``, ``scale_by_learning_rate``), and gradtx reuses
``add_decayed_weights``, ``masked`` and ``scale_by_learning_rate``. It adds φ, ``trust_ratio_mask``,
``mu_dtype`` / ``nu_dtype`` and ``axis_name`` (the norms of a leaf sharded inside ``shard_map``).
Like optax and the TF reference, the ratio is 1 when ``φ(‖x‖) = 0`` or ``‖r + λx‖ = 0`` (a zero-initialized
layer would otherwise never move).

Where peers differ from the paper: pytorch_optimizer 4.1.0 ``Lamb`` decays outside the ratio
(``weight_decouple=True``), clamps ‖x‖ at 10 and does not bias-correct v; torch-optimizer ``Lamb`` does not
debias by default; NUS-HPC-AI-Lab/pytorch-lamb#1 skips the ratio when λ = 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import alias, reduce, validation
from gradtx.geometry import _adam


def scale_by_lamb_trust_ratio(
    phi_min: Any = 0.0,
    phi_max: Any | None = None,
    *,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Rescales each leaf's update ``u`` by ``φ(‖θ‖) / ‖u‖`` (the LAMB trust ratio).

  .. math::

    u \leftarrow \frac{\phi(\|\theta\|)}{\|u\|} \, u, \qquad \phi(z) = \min(\max(z, \gamma_l), \gamma_u)

  and ``u`` unchanged where ``φ(‖θ‖) = 0`` or ``‖u‖ = 0``. Norms are Frobenius norms of whole leaves.

  Args:
    phi_min: γ_l, the lower clip of ‖θ‖ (>= 0; 0 keeps the identity).
    phi_max: γ_u, the upper clip of ‖θ‖ (> 0), or ``None`` for no upper clip.
    axis_name: mesh or pmap axis over which every leaf is sharded; the norms are then the norms of the
      whole leaves. Leaves replicated over that axis must not go through it (use ``optax.partition``).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``params``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.scale_by_lamb_trust_ratio()
    >>> params = {"w": jnp.array([3.0, 4.0])}
    >>> updates, _ = tx.update({"w": jnp.array([0.0, 0.5])}, tx.init(params), params)
    >>> updates["w"]  # ‖θ‖ = 5: the update is rescaled to norm 5
    Array([0., 5.], dtype=float32)

  References:
    You et al., `Large Batch Optimization for Deep Learning: Training BERT in 76 minutes
    <https://arxiv.org/abs/1904.00962>`_, 2020.
  """
  validation.check_nonnegative("phi_min", phi_min)
  if phi_max is not None:
    validation.check_positive("phi_max", phi_max)
    concrete = all(isinstance(v, (int, float)) for v in (phi_min, phi_max))
    if concrete and phi_max < phi_min:
      raise ValueError(f"`phi_max` must be >= phi_min={phi_min!r}, got {phi_max!r}.")

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("scale_by_lamb_trust_ratio needs `params`: call update(updates, state, params).")
    with jax.named_scope("gradtx/lamb_trust_ratio"):

      def one(u, p):
        phi = jnp.maximum(reduce.norm(p, axis_name), phi_min)
        if phi_max is not None:
          phi = jnp.minimum(phi, phi_max)
        u_norm = reduce.norm(u, axis_name)
        ok = jnp.logical_and(phi > 0, u_norm > 0)
        ratio = jnp.where(ok, phi / jnp.where(ok, u_norm, 1.0), 1.0)
        return (u.astype(jnp.promote_types(u.dtype, jnp.float32)) * ratio).astype(u.dtype)

      return jax.tree.map(one, updates, params), state

  return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update_fn)


def lamb(
    learning_rate: optax.ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-6,
    eps_root: Any = 0.0,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    phi_min: Any = 0.0,
    phi_max: Any | None = None,
    trust_ratio_mask: Any | Callable[[optax.Params], Any] | None = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The LAMB optimizer (Algorithm 2 of the paper), weight decay inside the trust ratio.

  .. math::

    r_t &= \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon} \\
    x_t &= x_{t-1} - \eta_t \, \frac{\phi(\|x_{t-1}\|)}{\|r_t + \lambda x_{t-1}\|} \,
    (r_t + \lambda x_{t-1})

  per leaf. Leaves outside ``trust_ratio_mask`` take ``x ← x − η (r + λx)`` (AdamW's step).

  Args:
    learning_rate: η, a float or an optax schedule.
    b1: decay rate of the first moment, in [0, 1).
    b2: decay rate of the second moment, in [0, 1).
    eps: ε outside the square root (> 0; >= 0 when ``eps_root > 0``).
    eps_root: ε inside the square root (>= 0).
    weight_decay: λ (the paper uses 0.01), a float or an optax schedule.
    mask: tree of booleans (or a function of the params giving one) selecting the leaves that decay;
      :func:`gradtx.exclude_bias_and_norm` is the usual choice (BERT excludes biases and LayerNorm).
    phi_min: γ_l of φ (>= 0).
    phi_max: γ_u of φ, or ``None``.
    trust_ratio_mask: tree of booleans (or a function) selecting the leaves rescaled by the trust ratio;
      ``None`` rescales all of them.
    mu_dtype: dtype of the first moment; ``None`` keeps each param's dtype.
    nu_dtype: dtype of the second moment; ``None``: at least float32 (pass the params' dtype to keep it).
    axis_name: see :func:`scale_by_lamb_trust_ratio`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> f = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> tx = gradtx.lamb(learning_rate=0.02, weight_decay=1e-3)
    >>> params = {"w": jnp.full((3, 2), 0.1)}
    >>> state = tx.init(params)
    >>> for _ in range(300):
    ...   updates, state = tx.update(jax.grad(f)(params), state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(f(params) < 0.05)
    True

  References:
    You et al., `Large Batch Optimization for Deep Learning: Training BERT in 76 minutes
    <https://arxiv.org/abs/1904.00962>`_, 2020.
  """
  validation.check_schedule("learning_rate", learning_rate)
  validation.check_beta("b1", b1)
  validation.check_beta("b2", b2)
  validation.check_nonnegative("eps_root", eps_root)
  # sqrt(v + eps_root) is 0 where a coordinate's gradient is 0 unless eps_root > 0: then eps = 0 is safe.
  validation.check_eps("eps", eps, guarded=validation.may_be_positive(eps_root))
  validation.check_schedule("weight_decay", weight_decay)
  trust = scale_by_lamb_trust_ratio(phi_min, phi_max, axis_name=axis_name)
  if trust_ratio_mask is not None:
    trust = optax.masked(trust, trust_ratio_mask)
  return alias.keep_update_dtype(optax.chain(
      _adam.scale_by_adam(b1, b2, eps, eps_root, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
      optax.add_decayed_weights(weight_decay, mask),
      trust,
      optax.scale_by_learning_rate(learning_rate),
  ))


registry.register(
    registry.OptimizerSpec(
        name="lamb",
        factory=lamb,
        test_kwargs={"learning_rate": 0.02},
        family="geometry",
        paper="You et al., Large Batch Optimization for Deep Learning: Training BERT in 76 minutes, ICLR 2020, "
        "arXiv:1904.00962",
        reference="optax==0.2.8 lamb (equal with phi = identity); paper Algorithm 2 (NumPy transcription, "
        "tests/geometry/reference.py)",
        static_args=("mask", "trust_ratio_mask", "mu_dtype", "nu_dtype", "axis_name"),
        shard_axis_arg="axis_name",
        state_per_param="2 (m, v)",
        elementwise=False,
        optax_counterpart=(optax.lamb, {"learning_rate": 0.02}),
    )
)
