"""Block-wise quantization of arrays to 8-bit codes of a sorted map, with one float32 scale per block.

Paper: Dettmers, Lewis, Shleifer, Zettlemoyer. "8-bit Optimizers via Block-wise Quantization", ICLR 2022.
https://arxiv.org/abs/2110.02861

Reference implementation: bitsandbytes@95f9af30 ``backends/triton/kernels_optim.py``
(``_quantize_blockwise_pytorch`` / ``_dequantize_blockwise_pytorch``, the readable twins of the CUDA
kernels in ``csrc/kernels.cu``). The array is read in row-major order and cut into blocks of ``block_size``
contiguous elements (the last one padded); each block keeps ``absmax = max |x|`` in float32 and every element
the index (uint8) of the map value nearest to ``x / absmax``::

    codes[i] = argmin_j |x_i / absmax_b − map_j|        x̂_i = map[codes[i]] · absmax_b

Nearest-code rounding is a binary search over the midpoints between map values, unrolled into 8 vectorized
compare-and-select steps, so quantizing is one fused elementwise pass after the per-block max, and
dequantizing is one gather-and-multiply pass. Stochastic rounding (the CUDA ``dQuantize<STOCHASTIC=1>``
rule) picks the upper of the two neighbouring map values with probability proportional to the distance from
the lower one, which makes the rounding unbiased.

Where gradtx differs:
  * A block whose elements are all zero keeps ``absmax = 0`` (the PyTorch reference stores 1.0, the CUDA
    kernel divides 0 by 0); dequantized, it is exactly zero either way.
  * The CUDA optimizer kernels move a negative first moment that rounds to the map's 0 one code down
    (``signbit`` check in ``kOptimizerStatic8bit2StateBlockwise``); the PyTorch reference and gradtx
    round to nearest, so a zero code always means an exact zero.
  * A NaN in a block makes its absmax NaN, so the whole block (not one element) dequantizes to NaN; Inf
    likewise turns its block to NaN/Inf. Neither is hidden: wrap the optimizer in ``optax.apply_if_finite``
    to skip such steps.

Layout and sharding: ``codes`` has the shape of the array it encodes (so ``jnp.zeros_like`` and ``jit``
give it the same sharding), ``absmax`` has shape ``shape[:k] + (prod(shape[k:]) // block_size,)`` where
``k`` is the last axis such that ``prod(shape[k:])`` is a multiple of ``block_size`` (``(4096, 4096)`` with
blocks of 256 gives ``(4096, 16)``); when no such axis exists the whole array is one padded run of blocks
and ``absmax`` has shape ``(ceil(size / block_size),)``. Both layouts hold exactly bitsandbytes' blocks;
the first keeps the leading axes, so ``absmax`` is sharded like the array on ``shape[:k]`` and, on its last
axis, like axis ``k``. Under an explicit mesh, a sharding that would split a block (axis ``k`` sharded into
pieces that are not whole blocks, an axis after ``k`` sharded, or any sharding of a padded array) is
gathered along the blocked axes before quantizing; the codes are put back on the array's sharding and the
``absmax`` of such an array is replicated on its block axis. Under auto meshes XLA chooses. Pick
``block_size`` so that each shard holds whole blocks to keep every step local.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from gradtx.core import validation


class QuantizedArray(NamedTuple):
  """An array stored as uint8 ``codes`` (its own shape) and one float32 ``absmax`` per block."""

  codes: jax.Array
  absmax: jax.Array


def _split_axis(shape: tuple[int, ...], block_size: int) -> int | None:
  """The last axis ``k`` with ``prod(shape[k:]) % block_size == 0``; ``None`` when the array needs padding."""
  for k in range(len(shape) - 1, -1, -1):
    if math.prod(shape[k:]) % block_size == 0:
      return k
  return None


def absmax_shape(shape: tuple[int, ...], block_size: int) -> tuple[int, ...]:
  """Shape of the per-block scales of an array of ``shape`` (see the module docstring for the layout)."""
  shape = tuple(shape)
  k = _split_axis(shape, block_size)
  if k is None:
    return (-(-math.prod(shape) // block_size),)
  return shape[:k] + (math.prod(shape[k:]) // block_size,)


def _mesh_axes_size(entry: Any, mesh: Any) -> int:
  if entry is None:
    return 1
  names = entry if isinstance(entry, tuple) else (entry,)
  return math.prod(mesh.shape[n] for n in names)


def _blockable(x: jax.Array, block_size: int) -> tuple[jax.Array, Any]:
  """``x`` resharded, under an explicit mesh, so that no shard splits a block; and its original sharding."""
  spec = _explicit_spec(x)
  if spec is None:
    return x, None
  mesh = jax.typeof(x).sharding.mesh
  spec = tuple(spec) + (None,) * (x.ndim - len(spec))
  k = _split_axis(x.shape, block_size)
  if k is None:
    keep = 0
  else:
    n_blocks = math.prod(x.shape[k:]) // block_size
    whole = n_blocks % _mesh_axes_size(spec[k], mesh) == 0
    keep = k + 1 if whole and all(e is None for e in spec[k + 1 :]) else k
  if all(e is None for e in spec[keep:]):
    return x, None
  target = PartitionSpec(*(spec[:keep] + (None,) * (x.ndim - keep)))
  return jax.sharding.reshard(x, target), PartitionSpec(*spec)


def _to_blocks(x: jax.Array, block_size: int) -> jax.Array:
  k = _split_axis(x.shape, block_size)
  if k is None:
    flat = x.reshape(-1)
    flat = jnp.pad(flat, (0, -flat.shape[0] % block_size))
    return flat.reshape(-1, block_size)
  lead = x.shape[:k]
  merged = math.prod(x.shape[k:])
  # Merge, then split: explicit meshes allow each step when the sharded axis is the leading one.
  return x.reshape(lead + (merged,)).reshape(lead + (merged // block_size, block_size))


def _from_blocks(blocks: jax.Array, shape: tuple[int, ...], block_size: int) -> jax.Array:
  k = _split_axis(shape, block_size)
  if k is None:
    return blocks.reshape(-1)[: math.prod(shape)].reshape(shape)
  return blocks.reshape(shape[:k] + (math.prod(shape[k:]),)).reshape(shape)


def _explicit_spec(x: jax.Array) -> PartitionSpec | None:
  """``x``'s PartitionSpec when it is sharded over explicit mesh axes, else None."""
  spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
  return spec if spec is not None and any(e is not None for e in spec) else None


def _lookup(table: jax.Array, idx: jax.Array) -> jax.Array:
  """``table[idx]`` for a small replicated table; the result has ``idx``'s sharding."""
  spec = _explicit_spec(idx)
  if spec is None:
    return table[idx]
  return table.at[idx].get(out_sharding=spec)


def _count_below(table: jax.Array, x: jax.Array, inclusive: bool) -> jax.Array:
  """Number of entries of the sorted ``table`` that are < x (``<=`` when ``inclusive``), as int32.

  An unrolled binary search: ``log2(len)`` compare-and-select steps, each a gather from a table of at most
  256 constants, so the whole search fuses into one elementwise pass.
  """
  size = table.shape[0]
  steps = max(1, math.ceil(math.log2(size + 1)))
  padded = jnp.concatenate([table, jnp.full((2**steps - size,), jnp.inf, table.dtype)])
  idx = jnp.zeros_like(x, dtype=jnp.int32)
  for s in range(steps - 1, -1, -1):
    candidate = idx + 2**s
    probe = _lookup(padded, candidate - 1)
    below = probe <= x if inclusive else probe < x
    idx = jnp.where(below, candidate, idx)
  return idx


def _code_table(code: Any) -> jax.Array:
  table = jnp.asarray(code, jnp.float32)
  if table.ndim != 1 or not 2 <= table.shape[0] <= 256:
    raise ValueError(f"`code` must be a sorted 1-D map of 2 to 256 values, got shape {table.shape}.")
  return table


def quantize_blockwise(
    x: jax.Array,
    code: Any,
    block_size: int = 256,
    *,
    key: jax.Array | None = None,
) -> QuantizedArray:
  """Quantizes ``x`` block-wise to uint8 indices of the sorted map ``code``.

  Args:
    x: a floating-point array of any shape.
    code: the sorted map (e.g. :func:`gradtx.quantization.maps.signed_map`), at most 256 values.
    block_size: elements per block (bitsandbytes >= 0.44: 256; the paper: 2048).
    key: a PRNG key for stochastic rounding; ``None`` rounds to the nearest map value.

  Returns:
    A :class:`QuantizedArray` (``codes`` uint8 with the shape of ``x``, ``absmax`` float32).

  Examples:
    >>> import jax.numpy as jnp
    >>> from gradtx.quantization import blockwise, maps
    >>> x = jnp.linspace(-1.0, 2.0, 1000)
    >>> q = blockwise.quantize_blockwise(x, maps.signed_map(), block_size=256)
    >>> q.codes.dtype, q.codes.shape, q.absmax.shape
    (dtype('uint8'), (1000,), (4,))
    >>> y = blockwise.dequantize_blockwise(q, maps.signed_map(), block_size=256)
    >>> bool(jnp.max(jnp.abs(y - x)) < 0.02)
    True
  """
  validation.check_int("block_size", block_size, low=1)
  return _quantize(x, _code_table(code), block_size, key)


# Jitted so that eager calls compile once rather than op by op; inlined when traced inside a caller's jit.
@functools.partial(jax.jit, static_argnums=(2,))
def _quantize(x: jax.Array, table: jax.Array, block_size: int, key: jax.Array | None) -> QuantizedArray:
  with jax.named_scope("gradtx/quantize_blockwise"):
    xb, original = _blockable(x, block_size)
    blocks = _to_blocks(xb.astype(jnp.float32), block_size)
    absmax = jnp.max(jnp.abs(blocks), axis=-1)
    scale = jnp.where(absmax > 0, absmax, 1.0)
    normed = blocks / scale[..., None]
    if key is None:
      idx = _count_below((table[1:] + table[:-1]) * 0.5, normed, inclusive=False)
    else:
      lower = jnp.clip(_count_below(table, normed, inclusive=True) - 1, 0, table.shape[0] - 2)
      low, high = _lookup(table, lower), _lookup(table, lower + 1)
      p_up = jnp.clip((normed - low) / (high - low), 0.0, 1.0)
      idx = lower + (jax.random.uniform(key, normed.shape) < p_up).astype(jnp.int32)
    codes = _from_blocks(idx.astype(jnp.uint8), x.shape, block_size)
    if original is not None:
      codes = jax.sharding.reshard(codes, original)
    return QuantizedArray(codes=codes, absmax=absmax)


def dequantize_blockwise(
    q: QuantizedArray,
    code: Any,
    block_size: int = 256,
    dtype: Any = jnp.float32,
) -> jax.Array:
  """The array that :func:`quantize_blockwise` encoded into ``q`` (up to rounding), in ``dtype``."""
  validation.check_int("block_size", block_size, low=1)
  return _dequantize(q, _code_table(code), block_size, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _dequantize(q: QuantizedArray, table: jax.Array, block_size: int, dtype: Any) -> jax.Array:
  with jax.named_scope("gradtx/dequantize_blockwise"):
    codes, original = _blockable(q.codes, block_size)
    values = _lookup(table, codes.astype(jnp.int32))
    blocks = _to_blocks(values, block_size) * q.absmax[..., None]
    out = _from_blocks(blocks, q.codes.shape, block_size).astype(dtype)
    if original is not None:
      out = jax.sharding.reshard(out, original)
    return out


__all__ = [
    "QuantizedArray",
    "absmax_shape",
    "dequantize_blockwise",
    "quantize_blockwise",
]
