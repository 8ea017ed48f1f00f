"""The per-leaf machinery shared by every low-rank method: plan, refresh, project, run the inner transform,
combine. ``project_low_rank`` (GaLore), ``scale_by_apollo`` and ``frugal`` differ only in how a leaf's update
is formed from the gradient ``G``, its projection ``R`` and the inner transformation's output ``N`` (a
:class:`Combine`).

State layout (documented for users in :func:`gradtx.project_low_rank`):
  * ``leaves`` mirrors the params' containers (without nnx/linen metadata boxes) with a
    :class:`LowRankLeafState` at each projected leaf and ``None`` elsewhere. Its arrays never inherit a
    parameter's sharding annotation; on an Explicit mesh low-rank arrays take the parameter's batch and
    kept-dimension sharding with the rank dimension unsharded, projectors take the batch sharding only.
  * ``full_rank`` is the state of the transformation that handles the other leaves, over the params with
    the projected leaves replaced by ``optax.MaskedNode``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx.core import layout, numerics, reduce, tree
from gradtx.core.matrix import MatrixView, leaf_dims, leaf_mask
from gradtx.lowrank import refresh
from gradtx.lowrank.projector import Geometry, Projector


class LowRankLeafState(NamedTuple):
  """State of one projected leaf: projector, refresh bookkeeping, inner state on ``R``, combine's state.

  ``rank`` (int32 scalar) records the rank the leaf is projected to: the requested rank clipped to
  ``min(rows, cols)`` of its matrix view, so a rank larger than a small matrix allows is visible (see
  :func:`effective_ranks`) instead of silently shrunk. It never changes.
  """

  projector: Any
  refresh: refresh.RefreshState
  inner: Any
  extra: Any
  rank: jax.Array


class ProjectLowRankState(NamedTuple):
  """State of a low-rank transformation.

  Attributes:
    count: steps taken.
    key: PRNG key data made from ``seed`` (random projectors fold in the leaf index and refresh step).
    leaves: the params' containers with a :class:`LowRankLeafState` at each projected leaf, None elsewhere.
    full_rank: state of the full-rank transformation on the leaves that are not projected.
  """

  count: jax.Array
  key: jax.Array
  leaves: Any
  full_rank: Any


@dataclasses.dataclass(frozen=True)
class Context:
  """What a :class:`Combine` sees for one leaf (matrices in at least float32)."""

  g: jax.Array  # the gradient as batched matrices
  r: jax.Array  # its projection
  n: jax.Array  # the inner transformation's output on r
  geo: Geometry
  back: Callable[[jax.Array], jax.Array]  # projection back to the full matrix
  like: Any  # the gradient leaf (for layouts)
  spec: tuple[Any, ...]  # the gradient's matrix-view sharding entries
  count: jax.Array  # steps taken before this one


class Combine:
  """How a leaf's full-size update is formed; GaLore's default is ``scale * back(N)``."""

  def init(self, geo: Geometry, like: Any, spec: tuple[Any, ...]) -> Any:
    del geo, like, spec
    return ()

  def __call__(self, ctx: Context, extra: Any, hyper: Any) -> tuple[jax.Array, Any]:
    return hyper * ctx.back(ctx.n), extra


def _switch(mode, inner, inner_state, old_basis, new_basis, geo, zeros_low):
  """The inner state after the subspace changed from ``old_basis`` to ``new_basis``."""
  if mode == "carry":
    return inner_state
  if mode == "reset":
    return inner.init(zeros_low)
  rot = jnp.einsum("...dr,...ds->...rs", new_basis, old_basis, precision=jax.lax.Precision.HIGHEST)

  def rotate(path, x):
    if getattr(x, "shape", None) != geo.lowrank_shape or not jnp.issubdtype(x.dtype, jnp.floating):
      return x
    m = rot * rot if any(getattr(k, "name", None) == "nu" for k in path) else rot  # variances rotate with R∘R
    xf = numerics.upcast(x)
    y = jnp.einsum("...rs,...sc->...rc", m, xf) if geo.left else jnp.einsum("...cs,...rs->...cr", xf, m)
    return y.astype(x.dtype)

  return jax.tree_util.tree_map_with_path(rotate, inner_state)


def _agree(tree_: Any, axis_name: reduce.AxisName) -> Any:
  """Every replica takes replica 0's values, so projector choices agree bit for bit."""
  if axis_name is None:
    return tree_
  first = jax.lax.axis_index(axis_name) == 0
  return jax.tree.map(lambda x: reduce.psum(jnp.where(first, x, jnp.zeros_like(x)), axis_name), tree_)


def _is_leaf_state(x: Any) -> bool:
  return isinstance(x, LowRankLeafState)


def effective_ranks(opt_state: Any) -> dict[str, int]:
  """The rank each projected leaf uses, read from a (concrete) optimizer state.

  A rank larger than a leaf's matrix allows is clipped to ``min(rows, cols)`` of its matrix view (an SVD has
  no more singular vectors; the leaf is then projected losslessly). This lists what every low-rank
  transformation anywhere in ``opt_state`` (inside chains, ``inject_hyperparams``, wrappers) actually uses,
  by the path of the leaf's :class:`LowRankLeafState` in ``opt_state``.

  Args:
    opt_state: a state from ``tx.init`` or ``tx.update`` (arrays, not ``jax.eval_shape`` shapes).

  Returns:
    ``{path: rank}``, in tree order; empty when ``opt_state`` holds no low-rank transformation.

  Examples:
    >>> import jax.numpy as jnp, optax, gradtx
    >>> tx = gradtx.project_low_rank(optax.adam(1e-2), rank=4)
    >>> state = tx.init({"small": jnp.ones((3, 2)), "large": jnp.ones((8, 6))})
    >>> gradtx.lowrank.effective_ranks(state)  # (3, 2) allows rank 2 at most
    {".leaves['large']": 4, ".leaves['small']": 2}
  """
  found = jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=_is_leaf_state)[0]
  return {jax.tree_util.keystr(path): int(ls.rank) for path, ls in found if _is_leaf_state(ls)}


def lowrank_transformation(
    inner: optax.GradientTransformation,
    *,
    rank: int | Callable[[int], int],
    projector: Projector,
    update_every: int,
    side: str,
    on_switch: str,
    dimension_numbers: Any,
    projection_mask: Any,
    full_rank: optax.GradientTransformation | None,
    adaptive: refresh.AdaptiveRefresh | None,
    stagger: bool,
    seed: int,
    axis_name: reduce.AxisName,
    combine: Combine,
    hyper: Any,
    name: str,
) -> optax.GradientTransformationExtraArgs:
  """The shared low-rank transformation; arguments are validated by the public factories."""
  inner = optax.with_extra_args_support(inner)
  full_tx = optax.with_extra_args_support(full_rank if full_rank is not None else inner)

  def plan(unboxed) -> list[Geometry | None]:
    leaves = jax.tree.leaves(unboxed)
    dims, mask = leaf_dims(dimension_numbers, unboxed), leaf_mask(projection_mask, unboxed)
    return [
        None if d is None or not m else Geometry.of(MatrixView.of(x.shape, d), side, rank)
        for x, d, m in zip(leaves, dims, mask)
    ]

  def split(unboxed, geos):
    """(projected leaves, tree with MaskedNode at projected leaves) of an unboxed tree."""
    leaves, treedef = jax.tree.flatten(unboxed)
    full = treedef.unflatten([optax.MaskedNode() if geo else x for x, geo in zip(leaves, geos)])
    return [x for x, geo in zip(leaves, geos) if geo], full, treedef

  def spec_entries(x, geo):
    return geo.view.matrix_spec(layout.spec_of(x))

  def init_leaf(x, geo):
    spec = spec_entries(x, geo)
    zeros_low = layout.zeros(geo.lowrank_shape, x.dtype, x, geo.lowrank_spec(spec))
    return LowRankLeafState(
        projector=projector.init(geo, x.dtype, x, spec),
        refresh=refresh.init(adaptive, update_every, geo, x, spec),
        inner=inner.init(zeros_low),
        extra=combine.init(geo, x, spec),
        rank=layout.zeros((), jnp.int32, x, ()) + jnp.int32(geo.rank),
    )

  def init_fn(params):
    unboxed = tree.unboxed_map(lambda x: x, params)
    geos = plan(unboxed)
    projected, full, treedef = split(unboxed, geos)
    states = iter([init_leaf(x, geo) for x, geo in zip(projected, [g for g in geos if g])])
    leaves = treedef.unflatten([next(states) if geo else None for geo in geos])
    return ProjectLowRankState(
        count=jnp.zeros([], jnp.int32),
        key=jax.random.PRNGKey(seed),
        leaves=leaves,
        full_rank=full_tx.init(full),
    )

  def update_leaf(j, n_proj, geo, g, p, ls, count, key, extra_args):
    view, spec = geo.view, spec_entries(g, geo)
    gf = numerics.upcast(view.to_matrix(g))
    leaf_key = jax.random.fold_in(key, j)
    offset = (j * update_every) // n_proj if stagger else 0
    zeros_low = layout.zeros(geo.lowrank_shape, g.dtype, g, geo.lowrank_spec(spec))

    def do_refresh(ls):
      source = reduce.pmean(layout.constrain(gf, g, geo.basis_spec(spec)), axis_name)
      old_basis = projector.basis(ls.projector, geo, jax.random.fold_in(leaf_key, ls.refresh.last), jnp.float32)
      new_key = jax.random.fold_in(leaf_key, count)
      new_proj, float_basis = _agree(projector.refresh_with_basis(source, ls.projector, geo, new_key), axis_name)
      new_basis = projector.basis(new_proj, geo, new_key, jnp.float32)
      new = LowRankLeafState(
          projector=new_proj,
          refresh=refresh.after(ls.refresh, adaptive, count, float_basis),
          inner=_switch(on_switch, inner, ls.inner, old_basis, new_basis, geo, zeros_low),
          extra=ls.extra,
          rank=ls.rank,
      )
      return layout.match(new, ls)

    ls = jax.lax.cond(refresh.due(ls.refresh, count, offset), do_refresh, lambda s: s, ls)
    basis_key = jax.random.fold_in(leaf_key, ls.refresh.last)
    r = layout.constrain(projector.project(gf, ls.projector, geo, basis_key), g, geo.lowrank_spec(spec))
    p_low = None
    if p is not None:
      p_low = projector.project(numerics.upcast(view.to_matrix(p)), ls.projector, geo, basis_key).astype(p.dtype)
    n, inner_state = inner.update(r.astype(g.dtype), ls.inner, p_low, **extra_args)
    ctx = Context(
        g=gf, r=r, n=numerics.upcast(n), geo=geo, like=g, spec=spec, count=count,
        back=lambda x: projector.back(x, ls.projector, geo, basis_key),
    )
    u, extra = combine(ctx, ls.extra, hyper)
    u = layout.constrain(view.from_matrix(u.astype(g.dtype)), g, layout.spec_of(g))
    return u, ls._replace(inner=inner_state, extra=extra)

  def update_fn(updates, state, params=None, **extra_args):
    with jax.named_scope(f"gradtx/{name}"):
      g_leaves, g_treedef = jax.tree.flatten(updates)
      unboxed = tree.unboxed_map(lambda x: x, updates)
      geos = plan(unboxed)
      projected, full_g, _ = split(unboxed, geos)
      p_leaves = [None] * len(g_leaves)
      full_p = None
      if params is not None:
        p_unboxed = tree.unboxed_map(lambda x: x, params)
        p_leaves = jax.tree.leaves(p_unboxed)
        full_p = split(p_unboxed, geos)[1]
      leaf_states = jax.tree.leaves(state.leaves, is_leaf=_is_leaf_state)
      leaves_def = jax.tree.structure(state.leaves, is_leaf=_is_leaf_state)
      full_u, full_state = full_tx.update(full_g, state.full_rank, full_p, **extra_args)
      full_u_leaves = iter(jax.tree.leaves(full_u))

      proj_geos = [geo for geo in geos if geo]
      proj_p = [p for p, geo in zip(p_leaves, geos) if geo]
      results = [
          update_leaf(j, len(proj_geos), geo, g, p, ls, state.count, state.key, extra_args)
          for j, (geo, g, p, ls) in enumerate(zip(proj_geos, projected, proj_p, leaf_states))
      ]
      new_leaf_states = [ls for _, ls in results]
      proj_u = iter([u for u, _ in results])
      out = [next(proj_u) if geo else next(full_u_leaves) for geo in geos]
      return g_treedef.unflatten(out), ProjectLowRankState(
          count=tree.safe_increment(state.count),
          key=state.key,
          leaves=leaves_def.unflatten(new_leaf_states),
          full_rank=full_state,
      )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
