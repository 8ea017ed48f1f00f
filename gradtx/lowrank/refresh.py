"""When each leaf's projector is recomputed: every ``update_every`` steps, or Q-GaLore's adaptive gap.

Fixed schedule (GaLore, APOLLO, FRUGAL): a leaf refreshes at steps ``0, T, 2T, ...`` (the official code checks
``step % T == 0`` before incrementing its counter). With ``stagger=True`` leaf ``i`` of ``n`` refreshes at
step 0 and then at ``offset_i + kT`` with ``offset_i = (i T) // n``, so the SVDs of different leaves fall on
different steps instead of all on the same one.

Adaptive schedule (Q-GaLore's "lazy layer-wise subspace exploration", VITA-Group/Q-GaLore@dd09cd3
``q_galore_torch/q_galore_projector.py``): each leaf keeps its own gap (initially ``T``) and refreshes when
``step % gap == 0``. At a refresh it pushes the cosine similarity of the new and the previous first basis
vector into a queue of the last ``queue_size`` (5) values; when the queue is full and its mean is at least
``threshold`` (0.4), the gap is multiplied by ``growth`` (2). The queue is not cleared, so the gap can grow
again at the next refresh. The first basis vector is kept in float32 (before any quantization), as in the
official code. All counters are traced per-leaf arrays, so training stays one compiled program.

gradtx differences: the official similarity is signed (``F.cosine_similarity``) and taken of vectors with
whatever signs its LAPACK returned, so a sign flip between two refreshes makes an unchanged subspace look
dissimilar and the official gaps depend on the machine. gradtx's SVD vectors have canonical signs
(:mod:`gradtx.lowrank.svd`), so the signed cosine (default, as official) measures the change of the vector;
``absolute=True`` compares ``|cos|``, which no sign rule affects. For stacked (batched) leaves the cosine is
averaged over the batch, giving one gap per leaf. Gaps are capped at ``max_gap``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx.core import layout, validation
from gradtx.lowrank.projector import Geometry


class RefreshState(NamedTuple):
  """Per-leaf refresh bookkeeping (diagnostics included).

  Attributes:
    last: step of the last refresh (-1 before the first).
    gap: current refresh period.
    refreshes: number of refreshes so far (Q-GaLore's ``svd_count``).
    cos_queue: adaptive only: the last ``queue_size`` cosine similarities (ring buffer).
    cos_pushes: adaptive only: how many similarities were pushed.
    top: adaptive only: the previous first basis vector, ``batch + (d,)`` float32.
  """

  last: jax.Array
  gap: jax.Array
  refreshes: jax.Array
  cos_queue: jax.Array | None = None
  cos_pushes: jax.Array | None = None
  top: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class AdaptiveRefresh:
  """Q-GaLore's adaptive refresh gap (official defaults)."""

  queue_size: int = 5
  threshold: float = 0.4
  growth: float = 2.0
  absolute: bool = False
  max_gap: int = 2**30

  def __post_init__(self):
    validation.check_int("queue_size", self.queue_size, low=1)
    validation.check_bool("absolute", self.absolute)
    validation.check_range("growth", self.growth, low=1.0)
    validation.check_range("threshold", self.threshold, low=-1.0, high=1.0)  # a cosine similarity
    validation.check_int("max_gap", self.max_gap, low=1)


def init(adaptive: AdaptiveRefresh | None, every: int, geo: Geometry, like: Any, spec: tuple[Any, ...]):
  scalar = lambda v: layout.zeros((), jnp.int32, like, ()) + jnp.int32(v)
  state = RefreshState(last=scalar(-1), gap=scalar(every), refreshes=scalar(0))
  if adaptive is None:
    return state
  return state._replace(
      cos_queue=layout.zeros((adaptive.queue_size,), jnp.float32, like, (None,)),
      cos_pushes=scalar(0),
      top=layout.zeros(geo.batch + (geo.d,), jnp.float32, like, geo.basis_spec(spec)[:-1]),
  )


def due(state: RefreshState, count: jax.Array, offset: int) -> jax.Array:
  """Whether the leaf refreshes at step ``count`` (always before its first refresh)."""
  return (state.last < 0) | ((count - offset) % state.gap == 0)


def after(state: RefreshState, adaptive: AdaptiveRefresh | None, count: jax.Array, basis: jax.Array):
  """The state after a refresh at ``count`` that produced the float32 ``basis``."""
  new = state._replace(last=count.astype(jnp.int32), refreshes=state.refreshes + 1)
  if adaptive is None:
    return new
  top = basis[..., :, 0].astype(jnp.float32)
  dot = jnp.sum(top * state.top, axis=-1)
  norms = jnp.linalg.norm(top, axis=-1) * jnp.linalg.norm(state.top, axis=-1)
  cos = dot / jnp.maximum(norms, 1e-8)  # torch's cosine_similarity clamps the norm product the same way
  cos = jnp.mean(jnp.abs(cos) if adaptive.absolute else cos)
  has_previous = state.last >= 0
  size = adaptive.queue_size
  queue = jnp.where(has_previous, state.cos_queue.at[state.cos_pushes % size].set(cos), state.cos_queue)
  pushes = state.cos_pushes + has_previous.astype(jnp.int32)
  grow = has_previous & (pushes >= size) & (jnp.mean(queue) >= adaptive.threshold)
  grown = jnp.minimum(jnp.floor(state.gap.astype(jnp.float32) * adaptive.growth), adaptive.max_gap)
  gap = jnp.where(grow, grown.astype(jnp.int32), state.gap)
  return new._replace(gap=gap, cos_queue=queue, cos_pushes=jnp.minimum(pushes, 2**30), top=top)
