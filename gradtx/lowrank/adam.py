"""Adam in the form the official GaLore, Q-GaLore and APOLLO code uses (Hugging Face transformers' AdamW).

``M ← β1 M + (1−β1) g``, ``V ← β2 V + (1−β2) g²``, direction ``sqrt(1−β2^t)/(1−β1^t) · M / (sqrt(V) + ε)``:
the bias corrections multiply the step, and ε is added to the *uncorrected* ``sqrt(V)``. ``optax.scale_by_adam``
adds ε to the corrected ``sqrt(V̂)``, i.e. uses ``ε sqrt(1−β2^t)`` here; the two differ in early steps and
wherever ``V`` is tiny.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from gradtx.core import numerics, tree, validation


def step_factor(b1: Any, b2: Any, count: jax.Array) -> jax.Array:
  """``sqrt(1 - b2^t) / (1 - b1^t)`` in float32 for ``t = count`` (>= 1)."""
  return jnp.sqrt(numerics.bias_correction_accurate(b2, count)) / numerics.bias_correction_accurate(b1, count)


def scale_by_adam_hf(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6, *, correct_bias: bool = True, eps_corrected: bool = False
) -> optax.GradientTransformationExtraArgs:
  r"""Adam with the bias corrections folded into the step and ε on the uncorrected root (HF AdamW).

  .. math::

    u_t = \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t} \, \frac{m_t}{\sqrt{v_t} + \epsilon}

  Args:
    b1: decay rate of the first moment.
    b2: decay rate of the second moment.
    eps: added to ``sqrt(v)`` (official GaLore/APOLLO default 1e-6).
    correct_bias: multiply by ``sqrt(1-β2^t)/(1-β1^t)`` (the official ``correct_bias`` flag); APOLLO
      applies that factor to its full-rank update instead, so its auxiliary Adam runs without it.
    eps_corrected: add ``ε sqrt(1-β2^t)`` instead of ε: the standard Adam form (optax, bitsandbytes,
      DCT-AdamW), computed from float32 scalars so it gives the same numbers under
      ``optax.inject_hyperparams`` (``optax.scale_by_adam`` does not: its Python-float ``1 - b2**t`` differs
      from the traced float32 one by ~1e-5 relative).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with ``optax.ScaleByAdamState``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gradtx.lowrank import scale_by_adam_hf
    >>> tx = scale_by_adam_hf()
    >>> u, _ = tx.update(jnp.array([2.0, -0.5]), tx.init(jnp.zeros(2)))
    >>> u.round(3)
    Array([ 1., -1.], dtype=float32)

  References:
    Zhao et al., `GaLore <https://arxiv.org/abs/2403.03507>`_, 2024 (``galore_torch/adamw.py``).
  """
  validation.check_beta("b1", b1)
  validation.check_beta("b2", b2)
  # eps = 0 divides 0 by 0 where a coordinate's gradient is 0 (m = v = 0), so eps > 0.
  validation.check_eps("eps", eps)
  validation.check_bool("correct_bias", correct_bias)
  validation.check_bool("eps_corrected", eps_corrected)

  def init_fn(params):
    return optax.ScaleByAdamState(
        count=jnp.zeros([], jnp.int32), mu=tree.zeros_like(params), nu=numerics.stats_zeros_like(params)
    )

  def update_fn(updates, state, params=None, **extra_args):
    del params, extra_args
    mu = numerics.ema_upcast(state.mu, updates, b1)
    nu = numerics.ema_upcast(state.nu, updates, b2, order=2)
    count = tree.safe_increment(state.count)
    step = step_factor(b1, b2, count) if correct_bias else jnp.float32(1.0)
    eps32 = jnp.asarray(eps, jnp.float32)
    if eps_corrected:
      eps32 = eps32 * jnp.sqrt(numerics.bias_correction_accurate(b2, count))
    new = jax.tree.map(lambda m, v, g: (step * m / (jnp.sqrt(v) + eps32)).astype(g.dtype), mu, nu, updates)
    return new, optax.ScaleByAdamState(count=count, mu=tree.cast_like(mu, state.mu), nu=tree.cast_like(nu, state.nu))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
