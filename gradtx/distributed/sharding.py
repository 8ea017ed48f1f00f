"""Shardings of an optimizer state, derived from the shardings of the params (DESIGN.md, contract item 7).

``jax.jit(tx.init)`` on an Auto mesh puts state that does not depend on the params' values (zeros,
counters) on one device; ``jax.jit(tx.init, out_shardings=state_shardings(tx, params, shardings))`` puts
every state leaf where it belongs. The rules, first match wins:

1. ``rule(path, leaf)``, when given and not ``None``: the user's choice for that state leaf.
2. On an Explicit mesh, the sharding type ``jax.eval_shape(tx.init, params)`` gives the leaf: the sharding
   that ``tx.init`` and ``tx.update`` themselves produce.
3. A leaf inside a subtree with the params' structure (``mu``, ``nu``, per-param projectors, quantized
   blocks, ...; masked-out ``None`` / ``optax.MaskedNode`` holes allowed), or inside a per-param record (a
   ``NamedTuple`` at a param's position of a params container, as ``project_low_rank``'s
   ``leaves[...]``) mirrors its param: the param's
   sharding when the shapes agree; a stack ``(k, *param.shape)`` (ring buffers of past gradients) adds
   unsharded leading axes; otherwise, dimension by dimension, the param's mesh axis where the
   state leaf's dimension has the size of the param's dimension at the same position, and no axis
   elsewhere. A low-rank projector ``(m, r)`` of a kernel ``(m, n)`` sharded ``P('x', None)`` gets
   ``P('x', None)``; its ``(r, n)`` twin of a kernel sharded ``P(None, 'x')`` gets ``P(None, 'x')``; a
   ``(m, 1)`` projector of a ``P(None, 'x')`` kernel is replicated.
4. Anything else (step counters, keys, scalars, buffers of unrelated shape) is replicated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

Rule = Callable[[tuple[Any, ...], jax.ShapeDtypeStruct], "jax.sharding.Sharding | PartitionSpec | None"]


def _is_hole(x: Any) -> bool:
  return x is None or isinstance(x, optax.MaskedNode)


def _holes_structure(tree: Any) -> Any:
  return jax.tree.structure(tree, is_leaf=_is_hole)


def _is_namedtuple(x: Any) -> bool:
  return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _spec(sharding: Any, ndim: int) -> PartitionSpec:
  spec = sharding.spec if isinstance(sharding, NamedSharding) else sharding
  return PartitionSpec(*tuple(spec) + (None,) * (ndim - len(spec)))


def _mirror(leaf: Any, param: Any, sharding: Any) -> Any:
  """The spec of a state leaf that belongs to ``param`` (rule 3)."""
  if _is_hole(leaf) or _is_hole(param):
    return leaf
  spec = _spec(sharding, param.ndim)
  if tuple(leaf.shape) == tuple(param.shape):
    return spec
  lead = leaf.ndim - param.ndim
  if lead > 0 and tuple(leaf.shape[lead:]) == tuple(param.shape):  # a stack of param-shaped buffers
    return PartitionSpec(*(None,) * lead, *spec)
  axes = [
      spec[i] if i < param.ndim and leaf.shape[i] == param.shape[i] else None for i in range(leaf.ndim)
  ]
  return PartitionSpec(*axes)


def _find_mesh(shardings: list[Any], mesh: Any) -> Any:
  meshes = {s.mesh for s in shardings if isinstance(s, NamedSharding)}
  if mesh is not None:
    return mesh
  if len(meshes) > 1:
    raise ValueError(f"`param_shardings` must all live on one mesh, got {len(meshes)} meshes.")
  return next(iter(meshes), None)


def state_shardings(
    tx: optax.GradientTransformation,
    params: Any,
    param_shardings: Any = None,
    *,
    mesh: jax.sharding.Mesh | None = None,
    rule: Rule | None = None,
) -> Any:
  """The sharding of every leaf of ``tx``'s state, for params sharded by ``param_shardings``.

  Args:
    tx: any optax transformation (a gradtx optimizer, a chain, a wrapper).
    params: the params, as arrays or ``jax.ShapeDtypeStruct`` leaves (``None`` / ``optax.MaskedNode``
      leaves allowed).
    param_shardings: a tree like ``params`` of ``jax.sharding.NamedSharding`` or ``PartitionSpec`` leaves;
      ``None`` reads each param's own ``.sharding``.
    mesh: the mesh of ``PartitionSpec`` leaves; with ``NamedSharding`` leaves, their mesh.
    rule: ``(path, abstract_leaf) -> Sharding | PartitionSpec | None``, consulted first for every state
      leaf (``path`` is the leaf's ``jax.tree_util`` key path); ``None`` falls through to the rules of the
      module docstring.

  Returns:
    A tree with the structure of ``tx.init(params)``: ``NamedSharding`` leaves when a mesh is known (from
    ``param_shardings`` or ``mesh``), ``PartitionSpec`` leaves otherwise (for ``jax.shard_map`` specs).

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> from jax.sharding import PartitionSpec as P
    >>> params = {"b": jnp.zeros(8), "w": jnp.zeros((8, 4))}
    >>> specs = gradtx.state_shardings(optax.adam(1e-3), params, {"b": P("x"), "w": P(None, "x")})
    >>> specs[0].count, specs[0].mu["w"]
    (P(), P(None, 'x'))
  """
  if param_shardings is None:
    param_shardings = jax.tree.map(lambda p: p.sharding, params)
  with_paths, params_def = jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_hole)
  param_paths = [path for path, _ in with_paths]
  flat_params = [p for _, p in with_paths]
  flat_shardings = params_def.flatten_up_to(param_shardings)
  mesh = _find_mesh(flat_shardings, mesh)

  def abstract(p, s):
    if _is_hole(p):
      return p
    named = s if isinstance(s, NamedSharding) or mesh is None else NamedSharding(mesh, _spec(s, p.ndim))
    return jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=named if isinstance(named, NamedSharding) else None)

  abstract_params = params_def.unflatten([abstract(p, s) for p, s in zip(flat_params, flat_shardings)])
  abstract_state = jax.eval_shape(tx.init, abstract_params)
  explicit = mesh is not None and AxisType.Explicit in tuple(getattr(mesh, "axis_types", ()))

  def per_param_records(x):
    """``x``'s subtrees at the params' positions, when ``x`` is a params container of per-param records."""
    if isinstance(x, jax.ShapeDtypeStruct) or x is abstract_state:
      return None
    try:
      subtrees = params_def.flatten_up_to(x)
    except (TypeError, ValueError):
      return None
    if all(_is_hole(t) or isinstance(t, jax.ShapeDtypeStruct) or _is_namedtuple(t) for t in subtrees):
      return subtrees
    return None

  def is_param_tree(x):
    return _is_hole(x) or _holes_structure(x) == params_def or per_param_records(x) is not None

  def finish(path, leaf, fallback):
    if _is_hole(leaf):
      return leaf
    chosen = rule(path, leaf) if rule is not None else None
    if chosen is None and explicit and isinstance(getattr(leaf, "sharding", None), NamedSharding):
      chosen = leaf.sharding.spec
    if chosen is None:
      chosen = fallback
    if isinstance(chosen, jax.sharding.Sharding) or mesh is None:
      return chosen
    return NamedSharding(mesh, chosen)

  def one(path, node):
    if _is_hole(node):
      return node
    if _holes_structure(node) != params_def:
      records = per_param_records(node)
      if records is None:
        return finish(path, node, PartitionSpec())
      mirrored = [
          jax.tree_util.tree_map_with_path(
              lambda sub, leaf, p=p, s=s, pp=pp: finish(path + pp + sub, leaf, _mirror(leaf, p, s)),
              record, is_leaf=_is_hole)
          for record, p, s, pp in zip(records, flat_params, flat_shardings, param_paths)
      ]
      return params_def.unflatten(mirrored)
    flat_nodes = params_def.flatten_up_to(node)
    leaves = [
        finish(path + param_path, leaf, _mirror(leaf, p, s))
        for leaf, p, s, param_path in zip(flat_nodes, flat_params, flat_shardings, param_paths)
    ]
    return params_def.unflatten(leaves)

  return jax.tree_util.tree_map_with_path(one, abstract_state, is_leaf=is_param_tree)
