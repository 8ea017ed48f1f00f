"""Masks for the layer-wise methods: which leaves decay and which take a trust ratio.

LARS and LAMB as used in practice (the official TF LAMB/LARS, TF-addons, pytorch_optimizer) exclude biases
and normalization parameters from weight decay and from the trust ratio (frgfm/holocron#107); optax's
``lars`` / ``lamb`` include every leaf by default. :func:`exclude_bias_and_norm` gives the usual mask.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax

_EXCLUDED_NAMES = ("bias", "scale")


def _key_name(key: Any) -> Any:
  for attr in ("key", "name"):
    if hasattr(key, attr):
      return getattr(key, attr)
  return None


def exclude_bias_and_norm(params: Any, *, names: Iterable[str] = _EXCLUDED_NAMES) -> Any:
  """A boolean tree: False for biases and normalization parameters, True for weights.

  A leaf is excluded when it has at most one dimension (biases, LayerNorm/BatchNorm scales and offsets,
  scalars) or when any key on its path is one of ``names`` (Flax names biases ``bias`` and norm scales
  ``scale``, which also catches 2-D biases such as those of ``MultiHeadDotProductAttention``).

  Pass the function itself as a mask (``mask=gradtx.exclude_bias_and_norm``), or
  ``functools.partial(exclude_bias_and_norm, names=(...))`` for other naming schemes.

  Args:
    params: a parameter (or update) tree; leaves may be arrays or ``jax.ShapeDtypeStruct``.
    names: path keys that mark a leaf as excluded.

  Returns:
    A tree of Python bools with the structure of ``params``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)},
    ...           "ln": {"scale": jnp.ones(2)}}
    >>> gradtx.exclude_bias_and_norm(params)
    {'dense': {'bias': False, 'kernel': True}, 'ln': {'scale': False}}
  """
  names = frozenset(names)

  def keep(path, leaf):
    if len(leaf.shape) <= 1:
      return False
    return not any(_key_name(k) in names for k in path)

  return jax.tree_util.tree_map_with_path(keep, params)


def resolve_mask(mask: Any | Callable[[Any], Any] | None, params: Any) -> Any:
  """``mask`` (a tree, a prefix tree or a function of ``params``) as a Python-bool tree shaped like ``params``.

  ``None`` selects every leaf. Package-internal: the geometry blocks that mix masked and unmasked leaves in
  one computation use it where ``optax.masked`` cannot express the rule.
  """
  if mask is None:
    return jax.tree.map(lambda _: True, params)
  mask_tree = mask(params) if callable(mask) else mask
  return jax.tree.map(lambda m, sub: jax.tree.map(lambda _: bool(m), sub), mask_tree, params)
