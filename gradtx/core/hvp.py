"""Hessian-vector products and the probes that feed them: the one module every curvature method uses.

``loss_fn`` is the extra argument that maps params to the scalar batch loss. Products are forward-over-reverse
(``jax.jvp`` of ``jax.grad``): one extra forward and backward pass, no Hessian materialised.

Params may mix dtypes (f32 kernels beside bf16 embeddings): every tangent is made in its own leaf's dtype, which
``jax.jvp`` requires. optax 0.2.8's ``contrib.hutchinson_estimator_diag_hessian`` casts all probes to the
*lowest* dtype of the tree and so fails on such trees.

Masked leaves. Inside ``optax.masked`` / ``optax.partition`` a transformation sees params with
``optax.MaskedNode`` (or ``None``) where leaves are masked out, and ``loss_fn`` is called with exactly that tree:
products are taken with respect to the visible leaves only, the others held fixed. A ``loss_fn`` written for the
full tree is adapted with :func:`fill_masked_leaves` (it fills the holes from the full params).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

from gradtx.core import reduce

Distribution = Literal["rademacher", "gaussian"]


def is_hole(x: Any) -> bool:
  """True for the placeholders of masked-out leaves (``None`` and ``optax.MaskedNode``)."""
  return x is None or isinstance(x, optax.MaskedNode)


def fill_masked_leaves(fn: Callable[[Any], Any], full_params: Any) -> Callable[[Any], Any]:
  """Adapts ``fn`` (a ``loss_fn`` or ``logits_fn`` of the full params) to trees with masked-out leaves.

  The returned function takes a tree of the structure of ``full_params`` in which some leaves may be
  ``optax.MaskedNode`` or ``None`` (what a transformation inside ``optax.masked`` / ``optax.partition`` sees) and
  calls ``fn`` with those holes filled from ``full_params``. Given a tree without holes it is ``fn``. Derivatives
  through it are taken with respect to the visible leaves only; the filled ones are constants.

  Args:
    fn: a function of the full params tree.
    full_params: the full params (the values the masked-out leaves keep).

  Returns:
    A function of the possibly masked params tree.

  Examples:
    >>> import jax.numpy as jnp, optax, gradtx
    >>> params = {"w": jnp.ones(3), "b": jnp.ones(2)}
    >>> loss = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2)
    >>> float(gradtx.fill_masked_leaves(loss, params)({"w": 2 * jnp.ones(3), "b": optax.MaskedNode()}))
    14.0
  """

  def filled(params):
    return jax.tree.map(lambda full, p: full if is_hole(p) else p, full_params, params, is_leaf=is_hole)

  return lambda params: fn(filled(params))


def hvp(loss_fn: Callable[[Any], jax.Array], params: Any, tangents: Any) -> Any:
  """The Hessian of ``loss_fn`` at ``params`` times ``tangents`` (forward-over-reverse).

  ``tangents`` has the structure of ``params``; each leaf is cast to its param's dtype. The result has the
  structure and dtypes of ``params`` (holes stay holes).
  """
  tangents = jax.tree.map(lambda t, p: t.astype(p.dtype), tangents, params)
  return jax.jvp(jax.grad(loss_fn), (params,), (tangents,))[1]


def probes(key: jax.Array, params: Any, distribution: Distribution) -> Any:
  """A random tree like ``params``: Rademacher (±1) or standard normal entries, in each leaf's dtype.

  Leaf ``i`` (in ``jax.tree.leaves`` order, holes skipped) draws from ``fold_in(key, i)``, so the probe of a
  leaf does not depend on the other leaves' shapes, and the same key gives the same probe on every replica.
  """
  leaves, treedef = jax.tree.flatten(params)
  out = []
  for i, p in enumerate(leaves):
    k = jax.random.fold_in(key, i)
    if distribution == "rademacher":
      z = jax.random.rademacher(k, p.shape, jnp.float32)
    else:
      z = jax.random.normal(k, p.shape, jnp.float32)
    out.append(z.astype(p.dtype))
  return jax.tree.unflatten(treedef, out)


def averaged_hvp(
    loss_fn: Callable[[Any], jax.Array], params: Any, tangents: Any, axis_name: reduce.AxisName = None
) -> Any:
  """:func:`hvp`, averaged across ``axis_name`` when given.

  With the batch split evenly across the axis, the mean of the per-replica products is the product with the
  Hessian of the full-batch mean loss, so the result equals the single-device full-batch product. Each replica
  differentiates at :func:`~gradtx.core.reduce.as_varying` params, so ``shard_map``'s implicit sum of gradients
  of replicated inputs does not add to the mean.
  """
  params, tangents = reduce.as_varying((params, tangents), axis_name)
  return reduce.pmean(hvp(loss_fn, params, tangents), axis_name)
