"""NumPy (float64) transcriptions of the official low-rank optimizers, in PyTorch layout (W is (out, in)).

Each follows the official code line by line (sources in the gradtx module docstrings); they are written for
the tests and share nothing with gradtx.
"""

from __future__ import annotations

import math

import numpy as np


#: gradtx's sign rule (``gradtx.lowrank.svd``), transcribed: entries within 1% of a vector's largest magnitude
#: are tied, the first of them is made positive.
SIGN_TIE_RTOL = 1e-2
#: The data of a test must keep every entry's ratio ``|v_i| / max |v|`` this far from the tie band's edge
#: ``1 - SIGN_TIE_RTOL``, so the float32 SVD under test (whose vectors differ from float64 ones by 1e-6 to
#: 1e-5 for singular values that are not nearly repeated) takes the same sign decisions as this reference.
SIGN_MARGIN = 1e-4


def sign_margin(vectors, axis=-2):
  """The smallest distance of an entry's ``|v_i| / max |v|`` from the tie band's edge ``1 - SIGN_TIE_RTOL``
  (``inf`` for all-zero vectors): how far the data keeps every sign decision from flipping."""
  mag = np.abs(vectors)
  top = mag.max(axis=axis, keepdims=True)
  ratio = mag / np.where(top > 0, top, 1.0)
  return float(np.min(np.where(top > 0, np.abs(ratio - (1 - SIGN_TIE_RTOL)), np.inf)))


def canonical_signs(vectors, axis=-2):
  """``vectors`` with each vector along ``axis`` negated when its pivot (first entry within the tie band of
  the largest magnitude) is negative. Raises if an entry sits within ``SIGN_MARGIN`` of the band's edge."""
  margin = sign_margin(vectors, axis)
  if margin < SIGN_MARGIN:
    raise ValueError(f"sign decision {margin:.2g} from the tie band's edge (< {SIGN_MARGIN}): change the test data")
  mag = np.abs(vectors)
  tied = mag >= (1 - SIGN_TIE_RTOL) * mag.max(axis=axis, keepdims=True)
  pivot = np.take_along_axis(vectors, np.expand_dims(np.argmax(tied, axis=axis), axis), axis)
  return vectors * np.where(pivot < 0, -1.0, 1.0)


def svd_projector(g, rank, side):
  """Official ``get_orthogonal_matrix`` (right -> Vh[:r] (r, n); left -> U[:, :r] (m, r)) with gradtx's
  canonical signs instead of LAPACK's (the official trajectory depends on its LAPACK's signs)."""
  u, _, vh = np.linalg.svd(g, full_matrices=False)
  return canonical_signs(vh[:rank], axis=1) if side == "right" else canonical_signs(u[:, :rank], axis=0)


def std_side(g):
  return "right" if g.shape[0] >= g.shape[1] else "left"


def project(g, p, side):
  return g @ p.T if side == "right" else p.T @ g


def project_back_std(n, p):
  """GaLore's ``project_back`` for 'std': chooses the product by the low-rank matrix's shape."""
  return n @ p if n.shape[0] >= n.shape[1] else p @ n


def galore(w0, grads, *, rank, gap, scale, lr, b1=0.9, b2=0.999, eps=1e-6, wd=0.0):
  """jiaweizzhao/GaLore galore_torch/adamw.py + galore_projector.py ('std'). Returns the weights per step."""
  w, p, m, v, step = w0.copy(), None, None, None, 0
  out = [w.copy()]
  for g in grads:
    side = std_side(g)
    if p is None or step % gap == 0:
      p = svd_projector(g, rank, side)
    r = project(g, p, side)
    if m is None:
      m, v = np.zeros_like(r), np.zeros_like(r)
    step += 1
    m = b1 * m + (1 - b1) * r
    v = b2 * v + (1 - b2) * r * r
    n = m / (np.sqrt(v) + eps)
    step_size = lr * math.sqrt(1 - b2**step) / (1 - b1**step)
    w = w - step_size * project_back_std(n, p) * scale
    w = w - lr * wd * w
    out.append(w.copy())
  return out


def rounding_margin(w, group, bits):
  """The smallest distance, in code steps, of ``w / s`` from a rounding boundary ``k + 1/2`` (per block's ``s``)."""
  x = w.reshape(-1, group)
  s = np.maximum(x.max(axis=1, keepdims=True) - x.min(axis=1, keepdims=True), 1e-5) / (2**bits - 1)
  return float(np.min(np.abs(np.mod(x / s, 1.0) - 0.5)))


def quantize_official(w, group, bits):
  """Q-GaLore ``_quantize`` (clamped zero point). Returns the dequantized values."""
  shape = w.shape
  x = w.reshape(-1, group)
  top = 2**bits - 1
  hi, lo = x.max(axis=1, keepdims=True), x.min(axis=1, keepdims=True)
  s = np.maximum(hi - lo, 1e-5) / top
  z = np.clip(-np.round(lo / s), 0, top)
  q = np.clip(np.round(x / s) + z, 0, top)
  return (s * (q - z)).reshape(shape)


def q_galore_projector(grads, *, rank, gap, group, bits, queue_size=5, threshold=0.4, gamma=2.0):
  """Q-GaLore ``GaLoreProjector.project`` ('std', quant), with canonical SVD signs.

  Returns per step the dequantized projector in use, its float projector and the gap, and the queue means
  that were compared with ``threshold`` (one per refresh with a full queue).
  """
  p, f, past, queue, used, floats, gaps, means = None, None, None, [], [], [], [], []
  for it, g in enumerate(grads):
    side = std_side(g)
    if p is None or it % gap == 0:
      f = svd_projector(g, rank, side)
      vec = f[:1, :].ravel() if side == "right" else f[:, :1].ravel()
      if past is not None:
        if len(queue) == queue_size:
          queue.pop(0)
        queue.append(float(vec @ past / max(np.linalg.norm(vec) * np.linalg.norm(past), 1e-8)))
        if len(queue) == queue_size:
          means.append(sum(queue) / queue_size)
          if means[-1] >= threshold:
            gap = int(gap * gamma)
      past = vec
      p = quantize_official(f, group, bits)
    used.append(p)
    floats.append(f)
    gaps.append(gap)
  return used, floats, gaps, means


def adam_standard_step(m, v, g, step, b1, b2, eps):
  """bitsandbytes / DCT-AdamW Adam: ``m / (sqrt(v) + eps sqrt(bc2)) * sqrt(bc2) / bc1``."""
  m = b1 * m + (1 - b1) * g
  v = b2 * v + (1 - b2) * g * g
  sqrt_bc2 = math.sqrt(1 - b2**step)
  return m, v, m / (eps * sqrt_bc2 + np.sqrt(v)) * sqrt_bc2 / (1 - b1**step)


def dct3_matrix(n):
  """ISTA-DASLab ``utils/dct.py``."""
  i = np.arange(n, dtype=np.float64)
  q = math.sqrt(2 / n) * np.cos(np.pi * (i[:, None] * (2.0 * i[None, :] + 1.0)) / (2.0 * n))
  q[0, :] *= math.sqrt(0.5)
  return q


#: A test's data must keep the r-th and (r+1)-th DCT column scores this far apart (relative to the largest),
#: so float32 scores (relative error ~1e-6) select the same columns as this reference.
SELECTION_MARGIN = 1e-4


def selection_margin(scores, rank):
  """Relative gap between the r-th and (r+1)-th largest scores: how far a top-r selection is from a tie."""
  ordered = np.sort(scores)[::-1]
  return (ordered[rank - 1] - ordered[rank]) / ordered[0] if rank < len(ordered) else np.inf


def dct_adamw(w0, grads, *, rank, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, rotate=False):
  """ISTA-DASLab ``DCTAdamW`` with ``update_proj_gap=1``, ``ell_norm=1``, matmul similarity; indices sorted.
  Raises if a selection is within ``SELECTION_MARGIN`` of a tie."""
  w, m, v, prev = w0.copy(), None, None, None
  q = dct3_matrix(min(w0.shape))
  right = w0.shape[0] >= w0.shape[1]
  out = [w.copy()]
  for step, a in enumerate(grads, start=1):
    w = w * (1 - lr * wd)
    s = a @ q if right else q.T @ a
    norms = np.abs(s).sum(axis=0 if right else 1)
    if selection_margin(norms, rank) < SELECTION_MARGIN:
      raise ValueError(f"step {step}: DCT column scores within {SELECTION_MARGIN} of a tie: change the test data")
    idx = np.sort(np.argsort(-norms, kind="stable")[:rank])
    low = s[:, idx] if right else s[idx, :]
    if m is None:
      m, v = np.zeros_like(low), np.zeros_like(low)
    if rotate and prev is not None:
      if right:
        rot = q[:, prev].T @ q[:, idx]
        m, v = m @ rot, np.abs(v @ rot)
      else:
        rot = q[:, idx].T @ q[:, prev]
        m, v = rot @ m, np.abs(rot @ v)
    prev = idx
    m, v, u = adam_standard_step(m, v, low, step, b1, b2, eps)
    w = w - lr * (u @ q[:, idx].T if right else q[:, idx] @ u)
    out.append(w.copy())
  return out


def apollo(w0, grads, projections, *, lr, scale=1.0, scale_type="channel", b1=0.9, b2=0.999, eps=1e-6, wd=0.0,
           scale_front=False, limiter=True):
  """zhuhanqing/APOLLO apollo_torch/apollo.py with the projections given (official layout, one per step)."""
  w, m, v, phi = w0.copy(), None, None, None
  out = [w.copy()]
  for step, (g, p) in enumerate(zip(grads, projections), start=1):
    norm_dim = 0 if g.shape[0] < g.shape[1] else 1
    side = std_side(g)
    r = project(g, p, side)
    if m is None:
      m, v = np.zeros_like(r), np.zeros_like(r)
    m = b1 * m + (1 - b1) * r
    v = b2 * v + (1 - b2) * r * r
    n = m / (np.sqrt(v) + eps)
    step_size = lr * math.sqrt(1 - b2**step) / (1 - b1**step)
    if scale_type == "channel":
      s = np.linalg.norm(n, axis=norm_dim) / (np.linalg.norm(r, axis=norm_dim) + 1e-8)
      if norm_dim == 1:
        s = s[:, None]
    else:
      s = np.linalg.norm(n) / (np.linalg.norm(r) + 1e-8)
    scaled = g * s
    if scale_front:
      scaled = scaled * np.sqrt(scale)
    if limiter:
      if phi is not None:
        norm = np.linalg.norm(scaled)
        lim = max(norm / (phi + 1e-8), 1.01) / 1.01
        scaled = scaled / lim
        phi = norm / lim
      else:
        phi = np.linalg.norm(scaled)
    if not scale_front:
      scaled = scaled * np.sqrt(scale)
    w = w - step_size * scaled
    w = w - lr * wd * w
    out.append(w.copy())
  return out


def frugal(w0, grads, *, rho, gap, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, reset=True, rule="sign_sgd",
           inactive_scale=1.0, proj_scale=1.0, columns=None):
  """FRUGAL supplementary code: GaloreAdamW ('svd', 'std') or CoordAdamW ('columns', indices given per refresh)."""
  w, p, m, v, step, t_global = w0.copy(), None, None, None, 0, 0
  out = [w.copy()]
  for g in grads:
    if p is None or step % gap == 0:  # _update_states_if_necessary, before the step
      if columns is None:
        side = std_side(g)
        k = round((g.shape[1] if side == "right" else g.shape[0]) * rho)
        p = (side, svd_projector(g, k, side))
      else:
        p = ("columns", columns[t_global])
      down = _down(g, p)
      if m is None or reset:
        m, v, step = np.zeros_like(down), np.zeros_like(down), 0
    w = w * (1 - lr * wd)
    step += 1
    down = _down(g, p)
    m = b1 * m + (1 - b1) * down
    v = b2 * v + (1 - b2) * down * down
    active_lr = lr * proj_scale
    denom = np.sqrt(v) / math.sqrt(1 - b2**step) + eps
    update = _up(-(active_lr / (1 - b1**step)) * m / denom, p, g.shape)
    inactive = g - _up(down, p, g.shape)
    if rule == "sign_sgd":
      update = update - active_lr * inactive_scale * np.sign(inactive)
    elif rule == "sgd":
      update = update - active_lr * inactive_scale * inactive
    w = w + update
    out.append(w.copy())
    t_global += 1
  return out


def _down(g, p):
  kind, q = p
  if kind == "columns":
    return g[:, q]
  return project(g, q, kind)


def _up(x, p, shape):
  kind, q = p
  if kind == "columns":
    full = np.zeros(shape)
    full[:, q] = x
    return full
  return x @ q if kind == "right" else q @ x


def gradnorm_lorp(w0, grads, *, rank, gap, scale, lr, b1=0.9, b2=0.999, eps=1e-6, wd=0.0):
  """GradNormLoRP/LowRankWeightNormAdamW.py for a 2-D weight (norm_dim = 1) with a GaLore 'std' projector."""
  v, p, step = w0.copy(), None, 0
  mv = vv = None
  mg, vg = np.zeros((w0.shape[0], 1)), np.zeros((w0.shape[0], 1))
  out = [w0.copy()]
  for grad in grads:
    norm_v = np.linalg.norm(v, axis=1, keepdims=True)
    g = norm_v
    grad_v = grad * g / norm_v
    grad_g = np.sum(grad * (v / norm_v), axis=1, keepdims=True)
    side = std_side(grad_v)
    if p is None or step % gap == 0:
      p = svd_projector(grad_v, rank, side)
    r = project(grad_v, p, side)
    if mv is None:
      mv, vv = np.zeros_like(r), np.zeros_like(r)
    step += 1
    mv, vv = b1 * mv + (1 - b1) * r, b2 * vv + (1 - b2) * r * r
    mg, vg = b1 * mg + (1 - b1) * grad_g, b2 * vg + (1 - b2) * grad_g * grad_g
    step_size = lr * math.sqrt(1 - b2**step) / (1 - b1**step)
    v = v - step_size * project_back_std(mv / (np.sqrt(vv) + eps), p) * scale
    g = g - step_size * mg / (np.sqrt(vg) + eps)
    if wd:
      v, g = v - lr * wd * v, g - lr * wd * g
    out.append(g * v / np.linalg.norm(v, axis=1, keepdims=True))
  return out
