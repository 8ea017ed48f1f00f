"""Cross-device reductions for statistics that reduce across elements (DESIGN.md, contract item 8).

With ``axis_name=None`` these are plain local reductions; given an axis name (inside ``pmap`` or
``shard_map``) the partial results are combined with ``lax.psum`` / ``lax.pmax`` so the statistic equals the
single-device statistic on the full (concatenated) data.

The data axis of updates that use per-device data (:func:`check_data_axis`): an estimate made from each
device's own batch (``loss_fn``, ``logits_fn``, ``value``, ``per_example_grads``, ``layer_inputs``) must be
averaged across the data-parallel axis or the replicas drift apart. Such an update refuses to run inside named
axes (``pmap``, ``shard_map``, ``vmap(axis_name=...)``) with ``axis_name=None``; the user passes the axis, or
:data:`NO_DATA_AXIS` to keep per-device estimates on purpose. Plain ``jit`` on sharded arrays binds no named
axis (its reductions are already global) and is never refused. JAX has no public API that lists the bound
axes; :func:`bound_axis_names` reads them through ``jax.extend.core`` (falling back to ``jax._src.core``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

AxisName = Hashable | Sequence[Hashable] | None


def psum(x: Any, axis_name: AxisName) -> Any:
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def pmax(x: Any, axis_name: AxisName) -> Any:
  return x if axis_name is None else jax.lax.pmax(x, axis_name)


def pmean(x: Any, axis_name: AxisName) -> Any:
  return x if axis_name is None else jax.lax.pmean(x, axis_name)


def sum_of_squares(x: jax.Array, axis_name: AxisName = None) -> jax.Array:
  """Sum of squares of one array in float32, summed across ``axis_name`` when given."""
  x = x.astype(jnp.float32)
  return psum(jnp.sum(x * x), axis_name)


def norm(x: jax.Array, axis_name: AxisName = None) -> jax.Array:
  """L2 (Frobenius) norm of one array, over its shards on ``axis_name`` when given."""
  return jnp.sqrt(sum_of_squares(x, axis_name))


def norm_without_overflow(x: jax.Array, axis_name: AxisName = None) -> jax.Array:
  """:func:`norm` that stays finite up to float32's largest number (the plain sum of squares overflows once an
  entry passes ~1.8e19). Above 2^60 the entries are scaled by a power of two (exactly) before squaring; below,
  it is :func:`norm` bit for bit."""
  x = x.astype(jnp.float32)
  big = pmax(jnp.max(jnp.abs(x)), axis_name) if x.size else jnp.zeros((), jnp.float32)
  # 2^-k with k <= 126 is a normal float32 (no flush to zero), and the scaled maximum lies in [1, 4).
  k = jnp.where(big > 2.0**60, jnp.frexp(big)[1] - 2, 0)
  return jnp.ldexp(norm(x * jnp.ldexp(jnp.float32(1.0), -k), axis_name), k)


def global_norm(tree: Any, axis_name: AxisName = None) -> jax.Array:
  """L2 norm of a whole tree, reduced across ``axis_name`` when given."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.zeros((), jnp.float32)
  total = sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves)
  return jnp.sqrt(psum(total, axis_name))


def as_varying(tree: Any, axis_name: AxisName) -> Any:
  """Marks replicated (axis-invariant) leaves as varying over ``axis_name``; identity when ``axis_name`` is None.

  Inside ``shard_map`` (with ``check_vma``), differentiating a per-replica loss with respect to replicated params
  sums the gradient over the axis implicitly. Differentiating at ``as_varying(params)`` gives each replica its
  own gradient instead, so a following ``pmean`` yields the full-batch mean under ``shard_map`` and ``pmap``
  alike.
  """
  if axis_name is None:
    return tree
  axes = tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)

  def one(x):
    missing = tuple(a for a in axes if a not in getattr(jax.typeof(x), "vma", frozenset()))
    return jax.lax.pcast(x, missing, to="varying") if missing else x

  return jax.tree.map(one, tree)


# --- The data axis of optimizers that use per-device data (DESIGN.md, contract item 8) -----------------------

#: Pass as the data axis (``axis_name=gradtx.NO_DATA_AXIS``, or simply ``axis_name=False``) of an optimizer that
#: uses per-device data to keep its estimates per device on purpose inside ``pmap`` / ``shard_map`` / a named
#: ``vmap`` (independent replicas, an ensemble under ``vmap``); without it, such a step raises.
NO_DATA_AXIS = False

# ``jax.pmap`` without ``axis_name`` binds this name: the caller can name no axis, so it cannot average the
# gradients either, and every replica is an independent run.
_UNNAMED_PMAP_AXIS = "_internal_pmap_axis_name"


def _axis_names_getter() -> Callable[[], Any] | None:
  # JAX has no public API listing the named axes bound at trace time; jax.extend exposes the core's accessor.
  try:
    from jax.extend.core import unsafe_get_axis_names_DO_NOT_USE as getter  # pylint: disable=import-outside-toplevel
  except ImportError:
    try:
      from jax._src.core import unsafe_get_axis_names as getter  # pylint: disable=import-outside-toplevel
    except ImportError:
      return None
  return getter


_GET_AXIS_NAMES = _axis_names_getter()


def bound_axis_names() -> tuple[Hashable, ...]:
  """The named axes bound where this runs: those of ``pmap``, of ``shard_map`` (its manual axes) and of ``vmap``
  with ``axis_name``; empty under plain ``jit`` (also on sharded arrays) and outside any transformation."""
  if _GET_AXIS_NAMES is None:
    return ()
  return tuple(n for n in _GET_AXIS_NAMES() if n != _UNNAMED_PMAP_AXIS)


def resolve_data_axis(axis_name: AxisName | bool) -> AxisName:
  """The axis to average per-device estimates over: ``None`` for :data:`NO_DATA_AXIS`."""
  return None if axis_name is NO_DATA_AXIS else axis_name


def check_data_axis(axis_name: AxisName | bool, *, owner: str, uses: str, arg: str = "axis_name") -> None:
  """Raises at trace time when per-device data is used inside named axes while no data axis was chosen.

  An update that estimates something from per-device data (``loss_fn``, ``logits_fn``, ``value``,
  ``per_example_grads``, ``layer_inputs``) must average the estimate across the data-parallel axis, or each
  replica keeps its own and the replicas' params drift apart with no message. Called at the top of such an
  ``update``: ``axis_name=None`` inside ``pmap`` / ``shard_map`` / ``vmap(axis_name=...)`` raises a
  ``ValueError`` naming ``owner``, the argument ``arg`` to pass and the opt-out :data:`NO_DATA_AXIS`.
  A given axis or :data:`NO_DATA_AXIS` passes, and so does ``None`` outside named axes (plain ``jit``).
  """
  if axis_name is not None:
    return
  bound = bound_axis_names()
  if not bound:
    return
  example = bound[0] if len(bound) == 1 else bound
  raise ValueError(
      f"{owner} uses per-device `{uses}`, and its update runs inside the named axes {bound!r} (pmap, shard_map or"
      f" vmap with axis_name) with `{arg}=None`: each replica would keep its own estimate and the replicas'"
      f" params would drift apart silently. Pass the data-parallel axis, e.g. `{owner}(..., {arg}={example!r})`,"
      f" to average the estimate across it (the step then equals the full-batch step), or"
      f" `{arg}=gradtx.NO_DATA_AXIS` (False) to keep per-device estimates on purpose."
  )


def with_data_axis_check(
    tx: optax.GradientTransformation, axis_name: AxisName | bool, *, owner: str, uses: str, arg: str = "axis_name"
) -> optax.GradientTransformationExtraArgs:
  """``tx`` whose ``update`` first runs :func:`check_data_axis` (same ``init`` and state), so that the error
  names the full optimizer ``owner`` the user called rather than the piece inside it."""
  tx = optax.with_extra_args_support(tx)

  def update_fn(updates, state, params=None, **extra_args):
    check_data_axis(axis_name, owner=owner, uses=uses, arg=arg)
    return tx.update(updates, state, params, **extra_args)

  return optax.GradientTransformationExtraArgs(tx.init, update_fn)


def check_replicas_agree(tree: Any, axis_name: AxisName, *, atol: float = 0.0) -> tuple[Any, jax.Array]:
  """How far apart the replicas of ``tree`` are across ``axis_name`` (a debugging aid for data parallelism).

  Call it inside ``pmap`` / ``shard_map`` on a tree every replica should hold identically (params, optimizer
  state). Each leaf's deviation is ``max(pmax(x) − pmin(x))`` over its elements, in at least float32 (integer
  leaves and PRNG keys count any difference as at least 1); ``agree`` is True when every deviation is
  ``<= atol``. A NaN anywhere makes its leaf's deviation NaN and ``agree`` False. Both results are the same on
  every replica.

  Args:
    tree: a pytree of arrays (``None`` and ``optax.MaskedNode`` leaves are skipped).
    axis_name: the mapped axis to compare across.
    atol: the largest deviation still counted as agreement (0: bit-identical values).

  Returns:
    ``(deviation, agree)``: a tree of float32 scalars with the structure of ``tree``, and a boolean scalar.

  Examples:
    >>> import jax, jax.numpy as jnp, gradtx
    >>> n = jax.local_device_count()
    >>> def check(i):
    ...   return gradtx.check_replicas_agree({"same": jnp.ones(3), "own": i * jnp.ones(2)}, "batch")
    >>> deviation, agree = jax.pmap(check, axis_name="batch")(jnp.arange(n, dtype=jnp.float32))
    >>> float(deviation["same"][0]), float(deviation["own"][0]) == n - 1, bool(agree[0]) == (n == 1)
    (0.0, True, True)
  """

  def spread(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    if x.size == 0:
      return jnp.zeros((), jnp.float32)
    if jnp.issubdtype(x.dtype, jnp.inexact):
      x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
      hi, lo = jax.lax.pmax(x, axis_name), jax.lax.pmin(x, axis_name)
      # XLA:CPU's cross-replica max/min skip NaNs (pmax of all-NaN is -inf): count them separately.
      nan = jax.lax.pmax(jnp.isnan(x).astype(jnp.int32), axis_name) > 0
      gap = jnp.where(nan, jnp.nan, jnp.where(hi == lo, 0.0, hi - lo))  # equal infinities agree
      return jnp.max(gap).astype(jnp.float32)
    x = x.astype(jnp.int32) if x.dtype == jnp.bool_ else x
    hi, lo = jax.lax.pmax(x, axis_name), jax.lax.pmin(x, axis_name)
    gap = jnp.maximum(hi.astype(jnp.float32) - lo.astype(jnp.float32), 1.0)  # float32 may round a gap of 1 to 0
    return jnp.max(jnp.where(hi != lo, gap, 0.0))

  deviation = jax.tree.map(spread, tree)
  agree = jnp.all(jnp.asarray([d <= atol for d in jax.tree.leaves(deviation)], bool))
  return deviation, agree
