"""Which leaves of a parameter tree form the layers of a model: stacked ``(L, ...)`` leaves or one module per
layer found by its parameter path (``layers_3``, ``blocks/3``, ``h.3``).

Layer sampling (:func:`gradtx.lowrank.sample_layers`) and the layer outlier ratios of OwLore
(:func:`gradtx.lowrank.outlier_ratios`) share this plan, so a probability vector made by one indexes the
layers of the other in the same order.

A leaf's path is its keys joined by ``/`` (``'params/layers_3/Dense_0/kernel'`` in linen,
``'blocks/3/attn/kernel'`` for an nnx list of blocks). ``layer_groups`` finds its layer:

- ``'auto'``: the first path component named like a layer container followed by an index: a name ending in
  ``layer``, ``layers``, ``block`` or ``blocks`` (any case: ``layers_3``, ``Block_3``, ``DecoderLayer_3``,
  ``encoder_layers/3``) or GPT-2's ``h``, joined to the index by ``_``, ``/`` or ``.``.
- a regular expression with one capture group, searched in the path; the group must capture the index.
- a callable ``path -> int | None``.
- ``None``: no leaf is a per-module layer (only stacked leaves are).

With a pattern, a layer is named by the path up to its index plus the index (``encoder/layers_3`` and
``decoder/layers_3`` are two layers); layers are ordered by that name, indices numerically. The leaves of
one kind (the same path around the index, the same shape and dtype) across the layers are handled together
as a virtual ``(k, ...)`` stack; with a callable, the j-th leaf of each layer (in tree order) of one shape
and dtype is the kind. By default (``stacked=None``) the leaves of rank >= 3 are stacked layers when no leaf
is in a per-module layer, and no leaf is stacked otherwise; a model may have both kinds (an explicit
``stacked``) only with one layer count: row ``l`` of a stacked leaf is then per-module layer ``l``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any, Union

import jax
import numpy as np

from gradtx.core.matrix import leaf_mask

LayerGroups = Union[str, "re.Pattern[str]", Callable[[str], Any], None]

_AUTO = re.compile(r"(?:^|[/.])(?:[A-Za-z0-9_]*?(?:layers?|blocks?)|h)[_/.](\d+)(?=[/.]|$)", re.IGNORECASE)


def check_layer_groups(value: Any) -> None:
  """Construction-time check of a ``layer_groups`` argument."""
  if value is None or callable(value) or (isinstance(value, str) and value == "auto"):
    return
  if not isinstance(value, (str, re.Pattern)):
    raise ValueError(f"`layer_groups` must be 'auto', None, a regular expression with one capture group or a "
                     f"callable path -> int | None, got {value!r}.")
  try:
    groups = re.compile(value).groups
  except re.error as e:
    raise ValueError(f"`layer_groups` is not a valid regular expression: {value!r} ({e}).") from None
  if groups != 1:
    raise ValueError(f"`layer_groups` must be a regular expression with exactly one capture group (the layer "
                     f"index), got {value!r} with {groups}.")


def path_string(path: tuple[Any, ...]) -> str:
  """``'params/layers_3/Dense_0/kernel'``: the keys of a ``jax.tree_util`` key path joined by ``/``."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


@dataclasses.dataclass(frozen=True)
class Kind:
  """Leaves of one kind across the layers: ``leaves[j]`` (a flat leaf index) belongs to layer ``layers[j]``."""

  leaves: tuple[int, ...]
  layers: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Plan:
  """The layers of a tree: ``num_layers`` (``None`` when it has none), its stacked leaves and per-module kinds."""

  num_layers: int | None
  stacked: tuple[int, ...]
  kinds: tuple[Kind, ...]
  names: tuple[str, ...]

  def in_layers(self) -> set[int]:
    return set(self.stacked) | {i for k in self.kinds for i in k.leaves}


def _locate(layer_groups, path):
  """(layer name, sort key, kind name) of the leaf at ``path``, or ``None``."""
  if callable(layer_groups):
    index = layer_groups(path)
    if index is None:
      return None
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
      raise ValueError(f"`layer_groups` must return an int layer index or None, got {index!r} for path {path!r}.")
    return str(int(index)), ("", int(index)), None
  pattern = _AUTO if layer_groups == "auto" else re.compile(layer_groups)
  m = pattern.search(path)
  if m is None:
    return None
  try:
    index = int(m.group(1))
  except (TypeError, ValueError):
    raise ValueError(f"`layer_groups` {layer_groups!r} must capture an integer layer index, captured "
                     f"{m.group(1)!r} in path {path!r}.") from None
  prefix = path[:m.start(1)]
  return path[:m.end(1)], (prefix, index), prefix + "{}" + path[m.end(1):]


def plan(tree: Any, layer_groups: LayerGroups, stacked: Any = None) -> Plan:
  """The :class:`Plan` of ``tree``'s leaves (``jax.tree.leaves`` order); errors name the argument at fault."""
  with_path, _ = jax.tree_util.tree_flatten_with_path(tree)
  paths = [path_string(p) for p, _ in with_path]
  leaves = [x for _, x in with_path]
  explicit = [False] * len(leaves) if stacked is None else leaf_mask(stacked, tree)
  located = {i: (None if explicit[i] or layer_groups is None else _locate(layer_groups, paths[i]))
             for i in range(len(leaves))}
  located = {i: loc for i, loc in located.items() if loc is not None}
  if layer_groups not in (None, "auto") and not located:
    shown = ", ".join(repr(p) for p in paths[:4])
    raise ValueError(f"`layer_groups`={layer_groups!r} matched no parameter path; the paths look like {shown}.")
  # Default: leaves of rank >= 3 are stacked layers, unless the model has per-module layers (then a rank-3
  # leaf outside them is a conv stem or attention kernel, not a stack).
  is_stacked = explicit if stacked is not None else [len(x.shape) >= 3 and not located for x in leaves]
  stacked_idx = tuple(i for i, s in enumerate(is_stacked) if s)
  sizes = {leaves[i].shape[0] for i in stacked_idx}
  if len(sizes) > 1:
    raise ValueError(f"`stacked` leaves must share their number of layers, got leading sizes {sorted(sizes)}.")
  keys = sorted({loc[1]: loc[0] for loc in located.values()}.items())
  position = {key: p for p, (key, _) in enumerate(keys)}
  names = tuple(name for _, name in keys)
  if sizes and names and sizes != {len(names)}:
    raise ValueError(f"`layer_groups` found {len(names)} per-module layers ({names[0]!r}, ...) but the `stacked` "
                     f"leaves have {sizes.pop()}; the two must agree or one of them must select nothing.")
  groups: dict[Any, list[tuple[int, int]]] = {}
  ordinal: dict[tuple[int, Any], int] = {}
  for i, (_, key, kind) in located.items():
    sig = (tuple(leaves[i].shape), np.dtype(leaves[i].dtype))
    if kind is None:  # a callable: the j-th leaf of this shape and dtype in the layer
      j = ordinal[(position[key], sig)] = ordinal.get((position[key], sig), -1) + 1
      kind = j
    groups.setdefault((kind, sig), []).append((position[key], i))
  kinds = tuple(Kind(leaves=tuple(i for _, i in sorted(m)), layers=tuple(p for p, _ in sorted(m)))
                for m in groups.values())
  num_layers = len(names) or (sizes.pop() if sizes else None)
  return Plan(num_layers=num_layers, stacked=stacked_idx, kinds=kinds,
              names=names or tuple(str(l) for l in range(num_layers or 0)))
