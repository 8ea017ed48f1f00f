"""Quantized storage of a projector's basis (Q-GaLore's INT4 projection matrices), packed for real.

Paper: Zhang, Jaiswal, Yin, Liu, Zhao, Tian, Wang, "Q-GaLore: Quantized GaLore with INT4 Projection and
Layer-Adaptive Low-Rank Gradients", 2024. https://arxiv.org/abs/2407.08296

Reference: VITA-Group/Q-GaLore@dd09cd3 ``q_galore_torch/q_galore_projector.py`` (``_quantize``): the basis
in its official storage layout (``U[:, :r]`` ``(m, r)`` or ``Vh[:r]`` ``(r, n)``, row-major) is cut into blocks of
``block_size`` (official 256) elements, each quantized asymmetrically with min-max statistics:
``s = max(max - min, 1e-5) / (2^b - 1)``, ``z = -round(min / s)``, ``q = clip(round(P / s) + z, 0, 2^b - 1)``,
dequantized as ``s (q - z)`` before every projection.

gradtx differences:
  * Two 4-bit codes are packed per byte (low nibble first, as the GaLore repository's
    ``pack_uint8_to_int4``); Q-GaLore keeps one code per uint8, so its INT4 saving is nominal.
  * The zero point is not clipped to ``[0, 2^b - 1]`` (stored as int32): the official clip collapses every
    block whose values share one sign (unslothai/unsloth#10841 describes the same quantizer form). For
    blocks that contain both signs (or zero) the codes are identical to the official ones.
  * The basis quantized is the SVD's with canonical signs (:mod:`gradtx.lowrank.svd`); the official codes
    are those of whatever signs its LAPACK returned. Negating a vector changes its codes, and also its
    dequantized values beyond the sign where a code or the (official, clipped) zero point hits the end of
    the code range.
  * A basis whose size is not a multiple of ``block_size`` is padded by repeating its last element (the
    official code asserts divisibility); the padding does not change any block's min or max.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradtx.core import layout, validation
from gradtx.lowrank.projector import Geometry, Projector


class QuantizedState(NamedTuple):
  """Packed codes ``batch + (blocks, block_size * bits / 8)`` uint8, per-block ``scale`` (f32), ``zero`` (int32)."""

  codes: jax.Array
  scale: jax.Array
  zero: jax.Array


def _blocks(geo: Geometry, block_size: int) -> int:
  return math.ceil(geo.d * geo.rank / block_size)


def _to_storage(basis: jax.Array, geo: Geometry) -> jax.Array:
  """Flattened official storage layout, row-major: an input-side basis as ``Vh[:r]`` ``(r, d)``, an
  output-side basis as ``U[:, :r]`` ``(d, r)`` (the official code sees ``(out, in)`` weights)."""
  stored = jnp.swapaxes(basis, -1, -2) if geo.left else basis
  return stored.reshape(geo.batch + (geo.d * geo.rank,))


def _from_storage(flat: jax.Array, geo: Geometry) -> jax.Array:
  if geo.left:
    return jnp.swapaxes(flat.reshape(geo.batch + (geo.rank, geo.d)), -1, -2)
  return flat.reshape(geo.basis_shape)


def quantize(flat: jax.Array, bits: int, block_size: int) -> QuantizedState:
  """Block-wise min-max quantization of ``batch + (n,)`` values (see the module docstring)."""
  n = flat.shape[-1]
  blocks = math.ceil(n / block_size)
  pad = blocks * block_size - n
  x = flat.astype(jnp.float32)
  if pad:
    x = jnp.concatenate([x, jnp.broadcast_to(x[..., -1:], x.shape[:-1] + (pad,))], axis=-1)
  x = x.reshape(x.shape[:-1] + (blocks, block_size))
  top = 2**bits - 1
  lo, hi = jnp.min(x, axis=-1), jnp.max(x, axis=-1)
  scale = jnp.maximum(hi - lo, 1e-5) / top
  zero = -jnp.round(lo / scale)
  codes = jnp.clip(jnp.round(x / scale[..., None]) + zero[..., None], 0, top).astype(jnp.uint8)
  if bits == 4:
    codes = codes[..., 0::2] | (codes[..., 1::2] << 4)
  return QuantizedState(codes, scale, zero.astype(jnp.int32))


def dequantize(state: QuantizedState, bits: int, n: int) -> jax.Array:
  """Inverse of :func:`quantize` up to rounding: ``batch + (n,)`` float32."""
  codes = state.codes
  if bits == 4:
    codes = jnp.stack([codes & 0x0F, codes >> 4], axis=-1).reshape(codes.shape[:-1] + (-1,))
  values = state.scale[..., None] * (codes.astype(jnp.float32) - state.zero[..., None].astype(jnp.float32))
  return values.reshape(values.shape[:-2] + (-1,))[..., :n]


@dataclasses.dataclass(frozen=True)
class QuantizedProjector(Projector):
  """Stores the basis of ``base`` (a projector that stores one, e.g. ``SVDProjector``) in ``bits`` bits.

  Attributes:
    base: the projector whose basis is quantized.
    bits: 4 (two codes per byte; Q-GaLore's default) or 8.
    block_size: elements per quantization block (official 256); even for 4 bits.
  """

  base: Projector = None  # type: ignore[assignment]
  bits: int = 4
  block_size: int = 256
  name: str = "quantized"

  def __post_init__(self):
    if not isinstance(self.base, Projector) or not self.base.stores_basis:
      raise ValueError(
          f"`projector` to quantize must store its basis (e.g. 'svd'); got {self.base!r}: 'dct' keeps only r"
          " int32 indices and 'random' stores nothing."
      )
    validation.check_choice("bits", self.bits, (4, 8))
    if not isinstance(self.block_size, int) or self.block_size < 2 or self.block_size % 2:
      raise ValueError(f"`block_size` must be an even int >= 2, got {self.block_size!r}.")

  def init(self, geo, dtype, like, spec):
    del dtype
    blocks, batch_spec = _blocks(geo, self.block_size), geo.basis_spec(spec)[:-2]
    width = self.block_size * self.bits // 8
    return QuantizedState(
        layout.zeros(geo.batch + (blocks, width), jnp.uint8, like, batch_spec + (None, None)),
        layout.zeros(geo.batch + (blocks,), jnp.float32, like, batch_spec + (None,)),
        layout.zeros(geo.batch + (blocks,), jnp.int32, like, batch_spec + (None,)),
    )

  def refresh(self, g, state, geo, key):
    return self.refresh_with_basis(g, state, geo, key)[0]

  def refresh_with_basis(self, g, state, geo, key):
    """The quantized state and the float basis it encodes (Q-GaLore compares float top vectors)."""
    del state
    no_spec = (None,) * (len(geo.batch) + 2)
    base_state = self.base.refresh(g, self.base.init(geo, jnp.float32, g, no_spec), geo, key)
    basis = self.base.basis(base_state, geo, key, jnp.float32)
    return self.encode(basis, geo), basis

  def encode(self, basis: jax.Array, geo: Geometry) -> QuantizedState:
    """The quantized state of a float ``basis``."""
    return quantize(_to_storage(basis, geo), self.bits, self.block_size)

  def basis(self, state, geo, key, dtype):
    del key
    return _from_storage(dequantize(state, self.bits, geo.d * geo.rank), geo).astype(dtype)
