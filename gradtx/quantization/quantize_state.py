"""``quantize_state``: keep chosen fields of any optax transformation's state in block-wise 8 bits.

Paper: Dettmers, Lewis, Shleifer, Zettlemoyer. "8-bit Optimizers via Block-wise Quantization", ICLR 2022.
https://arxiv.org/abs/2110.02861

Reference implementation: bitsandbytes-foundation/bitsandbytes@95f9af30
``optim/optimizer.py::Optimizer2State`` (which state is
quantized with which map, ``min_8bit_size``) and ``backends/triton/kernels_optim.py::
optimizer_update_8bit_blockwise_pytorch`` (the step): dequantize the states to float32, run the float32
update, requantize with the new per-block absmax. bitsandbytes hard-codes this loop into each optimizer's
kernel; gradtx wraps any optax transformation instead, so the 8-bit state of AdamW, Lion, AdaBelief (or of
a user's chain) comes from the same wrapper.

What is quantized: every floating-point leaf of at least ``min_size`` elements found under a state field
named in ``fields`` (``mu`` and ``nu`` by default), at any depth of the state (``chain``, ``masked``,
``partition``, ``inject_hyperparams``, ``MultiSteps`` and ``apply_if_finite`` states alike). Fields named
in ``unsigned_fields`` (second moments: ``nu``, ``nu_max``) use the unsigned map, the others the signed
map, as bitsandbytes does for its state1 / state2. Smaller leaves stay in full precision, as bitsandbytes
keeps tensors under ``min_8bit_size = 4096`` in 32 bits.

Where gradtx differs from bitsandbytes:
  * The inner transformation sees its quantized fields and the incoming updates in (at least) float32
    whatever the params' dtype, as bitsandbytes computes in float32 (so ``g²`` of a float16 gradient above
    256 does not overflow); the updates are cast back to the dtype of the incoming updates, and the fields
    kept in full precision back to their own dtype.
  * The parameter update uses the freshly computed (not yet requantized) moments, as in bitsandbytes; only
    the stored state is 8-bit.
  * A block that the inner update returns unchanged keeps its codes and scale (bitsandbytes requantizes
    every step, but its state always changes); requantizing an unchanged block is not idempotent, so
    wrappers that hold the state still for some steps (``MultiSteps``, ``apply_if_finite``) would otherwise
    shrink it or, with stochastic rounding, let it wander.
  * bitsandbytes' CUDA kernel skips elements whose gradient is NaN/Inf and zeroes their moments; gradtx
    leaves that decision to the inner transformation (see :mod:`gradtx.quantization.blockwise` for what a
    non-finite moment does to its block).

State and sharding: :class:`QuantizeStateState` holds the step ``count`` (for stochastic rounding), the PRNG
``key`` made from ``seed``, the inner state with each quantized leaf replaced by its uint8 ``codes`` (the
leaf's shape, hence its sharding and, under Flax nnx, its variable and metadata), and ``absmax``: a tree with
the inner state's structure holding each quantized leaf's float32 per-block scales and ``None`` for the others
(laid out and sharded as described in :mod:`gradtx.quantization.blockwise`). The scales are stored bare,
without the wrapper of their leaf (an nnx variable), so that metadata made for the param, such as sharding
names, is never applied to an array of another shape; they sit beside the codes rather than in a NamedTuple at
the leaf so that wrappers which wrap every state leaf (nnx's ``Optimizer``) still find arrays there. All are
arrays, so orbax round trips them exactly, and ``optax.tree_map_params`` maps both the codes and the scales of
a param-shaped field. ``optax.tree.get(state, "mu")`` finds two ``mu``: the codes and the scales. ``init``
quantizes the inner state's initial values through the same function as ``update``, so the shardings after
``init``, ``jit(init)`` and ``update`` agree. To place the state yourself, give ``jax.jit(tx.init,
out_shardings=...)`` a tree built from ``jax.eval_shape(tx.init, params)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx.core import numerics, tree, validation
from gradtx.quantization import blockwise, maps


class QuantizeStateState(NamedTuple):
  """State of :func:`quantize_state`.

  Attributes:
    count: steps taken (folded into the stochastic-rounding key).
    key: PRNG key made from ``seed``.
    inner_state: the inner transformation's state, each quantized leaf replaced by its uint8 codes (same
      shape, so the param's sharding and Flax nnx metadata still fit it).
    absmax: a tree with the structure of ``inner_state``: the float32 per-block scales of each quantized
      leaf, ``None`` where a leaf is kept in full precision.
  """

  count: jax.Array
  key: jax.Array
  inner_state: Any
  absmax: Any


def _field_index(path: tuple[Any, ...], fields: tuple[str, ...]) -> int | None:
  """Position in ``path`` of the outermost attribute named in ``fields`` (a state field such as ``mu``)."""
  for i, entry in enumerate(path):
    if isinstance(entry, jax.tree_util.GetAttrKey) and entry.name in fields:
      return i
  return None


def _is_unit(node: Any) -> bool:
  """A state leaf, or a wrapper of at most one leaf (an nnx variable, optax.MaskedNode): one slot of state.

  The scales of a quantized slot are stored bare, without the wrapper, so that metadata made for the param
  (an nnx variable's sharding names) is never applied to an array of another shape.
  """
  if node is None or isinstance(node, (tuple, list, dict)):
    return False
  return len(jax.tree.leaves(node)) <= 1


def _mask_allows(mask_entries: list[tuple[tuple[Any, ...], Any]], param_path: tuple[Any, ...]) -> bool:
  """The boolean of the mask entry whose path is a prefix of ``param_path`` (True when there is none)."""
  for path, value in mask_entries:
    if param_path[: len(path)] == path:
      return bool(value)
  return True


def quantize_state(
    inner: optax.GradientTransformation,
    *,
    fields: Sequence[str] = ("mu", "nu"),
    bits: int = 8,
    block_size: int = 256,
    min_size: int = 4096,
    unsigned_fields: Sequence[str] = ("nu", "nu_max"),
    quantize_mask: Any | Callable[[optax.Params], Any] | None = None,
    stochastic_rounding: bool = False,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""Keeps the named fields of ``inner``'s state in block-wise 8-bit codes between steps.

  Each step dequantizes the fields, runs ``inner.update`` in float32 and requantizes the new values with
  fresh per-block scales (bitsandbytes' 8-bit optimizer step, for any optax transformation):

  .. math::

    s_{t-1} = Q^{-1}(c_{t-1}, a_{t-1}), \quad (u_t, s_t) = \mathrm{inner}(g_t, s_{t-1}), \quad
    a_t = \max_{\text{block}} |s_t|, \quad c_t = \operatorname{round}_{\text{map}}(s_t / a_t)

  Args:
    inner: any optax transformation whose state has NamedTuple fields named in ``fields``.
    fields: state field names whose floating-point leaves are quantized (at any depth of the state).
    bits: bits per code; only 8 is implemented.
    block_size: elements per block sharing one float32 scale (bitsandbytes >= 0.44: 256; paper: 2048).
    min_size: leaves with fewer elements stay in full precision (bitsandbytes' ``min_8bit_size``).
    unsigned_fields: fields (non-negative statistics) quantized with the unsigned map; the rest use the
      signed map. The unsigned map stores negative values as 0.
    quantize_mask: a tree of booleans with the structure of the params (or a prefix of it), or a function
      of the params returning one; ``False`` keeps that param's state in full precision (bitsandbytes'
      per-parameter ``optim_bits=32`` override, used for :class:`gradtx.StableEmbedding`).
    stochastic_rounding: round each requantized value up or down at random, unbiased, instead of to the
      nearest map value.
    seed: seed of the stochastic-rounding key (folded with the step and the leaf index).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`QuantizeStateState`.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> tx = gradtx.quantize_state(optax.adam(1e-2), min_size=0)
    >>> params = {"w": jnp.ones((4, 300))}
    >>> state = tx.init(params)
    >>> codes, absmax = state.inner_state[0].mu["w"], state.absmax[0].mu["w"]
    >>> codes.dtype, codes.shape, absmax.shape
    (dtype('uint8'), (4, 300), (5,))
    >>> updates, state = tx.update({"w": jnp.full((4, 300), 0.5)}, state, params)
    >>> round(float(updates["w"][0, 0]), 6)
    -0.01

  References:
    Dettmers et al., `8-bit Optimizers via Block-wise Quantization <https://arxiv.org/abs/2110.02861>`_,
    2022.
  """
  fields = _check_names("fields", fields)
  unsigned_fields = _check_names("unsigned_fields", unsigned_fields, allow_empty=True)
  validation.check_transformation("inner", inner)
  validation.check_choice("bits", bits, (8,))
  validation.check_int("block_size", block_size, low=1)
  validation.check_int("min_size", min_size, low=0)
  validation.check_int("seed", seed)
  validation.check_bool("stochastic_rounding", stochastic_rounding)

  # A plain optax.GradientTransformation (scale_by_adam) rejects keyword arguments; this one forwards them.
  inner = optax.with_extra_args_support(inner)

  def code_for(path: tuple[Any, ...]) -> Any:
    name = path[_field_index(path, fields)].name
    return maps.unsigned_map() if name in unsigned_fields else maps.signed_map()

  def init_fn(params):
    inner_state = inner.init(params)
    mask = quantize_mask(params) if callable(quantize_mask) else quantize_mask
    mask_entries = [] if mask is None else jax.tree_util.tree_flatten_with_path(mask)[0]
    units, treedef = jax.tree_util.tree_flatten_with_path(inner_state, is_leaf=_is_unit)
    stored, absmax = [], []
    for path, unit in units:
      leaves = jax.tree.leaves(unit)
      i = _field_index(path, fields)
      chosen = (
          bool(leaves)
          and i is not None
          and jnp.issubdtype(leaves[0].dtype, jnp.floating)
          and leaves[0].size >= min_size
          and _mask_allows(mask_entries, path[i + 1 :])
      )
      if not chosen:
        stored.append(unit)
        absmax.append(unit if not leaves else None)
        continue
      # The barrier keeps XLA from constant-folding the quantization of init's zeros under jit, which takes
      # seconds per million elements at compile time.
      q = blockwise.quantize_blockwise(jax.lax.optimization_barrier(leaves[0]), code_for(path), block_size)
      stored.append(jax.tree.map(lambda _, c=q.codes: c, unit))
      absmax.append(q.absmax)
    return QuantizeStateState(
        count=jnp.zeros([], jnp.int32),
        key=jax.random.PRNGKey(seed),
        inner_state=treedef.unflatten(stored),
        absmax=treedef.unflatten(absmax),
    )

  def update_fn(updates, state, params=None, **extra_args):
    with jax.named_scope("gradtx/quantize_state"):
      units, treedef = jax.tree_util.tree_flatten_with_path(state.inner_state, is_leaf=_is_unit)
      try:
        scales = treedef.flatten_up_to(state.absmax)
      except (ValueError, TypeError) as e:
        raise ValueError(f"`state` does not come from this transformation's init: {e}") from None
      quantized = [isinstance(a, jax.Array) for a in scales]
      full = [
          jax.tree.map(
              lambda c, a=a, path=path: blockwise.dequantize_blockwise(
                  blockwise.QuantizedArray(c, a), code_for(path), block_size
              ),
              unit,
          )
          if q
          else unit
          for (path, unit), a, q in zip(units, scales, quantized)
      ]
      wide_updates = jax.tree.map(numerics.upcast, updates)
      new_updates, new_inner = inner.update(wide_updates, treedef.unflatten(full), params, **extra_args)
      step_key = jax.random.fold_in(state.key, state.count)
      stored, absmax = [], []
      for i, ((path, unit), a, q, new) in enumerate(
          zip(units, scales, quantized, treedef.flatten_up_to(new_inner))
      ):
        if not q:
          stored.append(jax.tree.map(lambda n, o: n if n.dtype == o.dtype else n.astype(o.dtype), new, unit))
          absmax.append(a)
          continue
        key = jax.random.fold_in(step_key, i) if stochastic_rounding else None
        # Blocks the inner update left as they were (MultiSteps between updates, apply_if_finite skipping
        # a step) keep their codes: requantizing is not idempotent.
        r = blockwise.requantize_blockwise(
            jax.tree.leaves(new)[0],
            blockwise.QuantizedArray(jax.tree.leaves(unit)[0], a),
            code_for(path),
            block_size,
            key=key,
        )
        stored.append(jax.tree.map(lambda _, c=r.codes: c, new))
        absmax.append(r.absmax)
      new_updates = jax.tree.map(lambda u, g: u.astype(g.dtype), new_updates, updates)
      return new_updates, QuantizeStateState(
          count=tree.safe_increment(state.count),
          key=state.key,
          inner_state=treedef.unflatten(stored),
          absmax=treedef.unflatten(absmax),
      )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_names(name: str, value: Any, allow_empty: bool = False) -> tuple[str, ...]:
  ok = isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value)
  if not ok or (not allow_empty and not value):
    raise ValueError(f"`{name}` must be a {'' if allow_empty else 'non-empty '}sequence of field names, "
                     f"got {value!r}.")
  return tuple(value)
