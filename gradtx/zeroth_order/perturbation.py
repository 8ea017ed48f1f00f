"""Seeded perturbations and two-point loss differences, shared by SPSA / MeZO and Just One Byte.

A perturbation ``z`` is never stored: it is regenerated from ``(seed, step, replica, sample)`` whenever it
is needed (to perturb the params, to apply the update, or, in Just One Byte, to apply another replica's
scalar), so the estimate costs no memory beyond a transient param-sized tree and the state holds a key.
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp

Distribution = Literal["normal", "rademacher"]


def perturbation_key(key: jax.Array, step: Any, replica: Any = 0, sample: Any = 0) -> jax.Array:
  """``fold_in(fold_in(fold_in(key, step), replica), sample)``: the key of one perturbation."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, step), replica), sample)


def draw(key: jax.Array, params: Any, distribution: Distribution = "normal") -> Any:
  """A perturbation with the shapes and dtypes of ``params``: N(0, I) or Rademacher, drawn in float32.

  ``None`` / ``optax.MaskedNode`` leaves stay as they are (they are empty subtrees to ``jax.tree``).
  """
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, max(len(leaves), 1))

  def one(k, p):
    if distribution == "normal":
      z = jax.random.normal(k, p.shape, jnp.float32)
    else:
      z = jax.random.rademacher(k, p.shape, jnp.float32)
    return z.astype(p.dtype)

  return treedef.unflatten([one(k, p) for k, p in zip(keys, leaves)])


def spsa_direction(
    params: Any,
    seed: int,
    step: Any,
    *,
    sample: Any = 0,
    replica: Any = 0,
    distribution: Distribution = "normal",
) -> Any:
  """The perturbation ``z`` that :func:`gradtx.scale_by_spsa` / :func:`gradtx.scale_by_just_one_byte` use.

  Args:
    params: the params (arrays or ``jax.ShapeDtypeStruct``): ``z`` has their shapes and dtypes.
    seed: the transformation's ``seed``.
    step: the 0-based step count (the state's ``count`` before the update).
    sample: index of the perturbation within the step (``0 <= sample < num_samples``).
    replica: the replica's index on the data axis (Just One Byte); 0 for shared perturbations.
    distribution: ``'normal'`` or ``'rademacher'``.

  Returns:
    The tree ``z``; on every device and host the same for the same arguments.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> z = gradtx.spsa_direction({"w": jnp.zeros(3)}, seed=0, step=4, distribution="rademacher")
    >>> sorted(set(float(v) for v in abs(z["w"])))
    [1.0]
  """
  return draw(perturbation_key(jax.random.PRNGKey(seed), step, replica, sample), params, distribution)


def perturb(params: Any, z: Any, scale: Any) -> Any:
  """``θ + scale · z`` leaf by leaf, in each param's dtype (holes kept)."""
  return jax.tree.map(lambda p, v: (p + (scale * v.astype(jnp.float32)).astype(p.dtype)).astype(p.dtype), params, z)


def projected_gradient(loss_fn: Any, params: Any, z: Any, eps: Any) -> jax.Array:
  """``(L(θ + εz) − L(θ − εz)) / (2ε)`` in float32: the central difference along ``z``."""
  eps = jnp.asarray(eps, jnp.float32)
  plus = jnp.asarray(loss_fn(perturb(params, z, eps)), jnp.float32)
  minus = jnp.asarray(loss_fn(perturb(params, z, -eps)), jnp.float32)
  return (plus - minus) / (2.0 * eps)


def one_byte(g_hat: jax.Array) -> jax.Array:
  """Just One Byte's codec as written in the reference code: ``sign(ĝ) · exp(p / 16)``,
  ``p = clip(round(16 ln|ĝ|), −127, 127)`` (a relative error under 3.2% for ``e^-7.9 <= |ĝ| <= e^7.9``).
  """
  g_hat = jnp.asarray(g_hat, jnp.float32)
  power = jnp.clip(jnp.round(16.0 * jnp.log(jnp.abs(g_hat))), -127.0, 127.0)
  return jnp.sign(g_hat) * jnp.exp(power / 16.0)
