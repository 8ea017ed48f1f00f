"""NumPy transcriptions of bitsandbytes' PyTorch reference step (backends/triton/kernels_optim.py @95f9af30).

``quantize`` / ``dequantize`` follow ``_quantize_blockwise_pytorch`` / ``_dequantize_blockwise_pytorch``:
row-major blocks of ``block_size`` (last one zero-padded), float32 absmax per block (1.0 where a block is all
zero), code = argmin over the whole map of ``|x / absmax - map|``. ``adam_step`` / ``lion_step`` follow
``optimizer_update_8bit_blockwise_pytorch``: dequantize, float32 update, requantize with new absmax. The
scalars ``1 - beta`` are float32 arithmetic on the float32 beta, as in the CUDA kernel (``1.0f - beta1``);
the bias corrections are computed in float64, as the host code does.
"""

import numpy as np


def quantize(x, code, block_size):
  x = np.asarray(x, np.float32)
  flat = x.reshape(-1)
  n = flat.size
  flat = np.pad(flat, (0, -n % block_size)).reshape(-1, block_size)
  absmax = np.abs(flat).max(axis=1, keepdims=True)
  absmax[absmax == 0] = 1.0
  idx = np.argmin(np.abs((flat / absmax)[:, :, None] - code[None, None, :]), axis=2)
  return idx.reshape(-1)[:n].reshape(x.shape).astype(np.uint8), absmax[:, 0]


def dequantize(codes, absmax, code, block_size):
  flat = code[codes.reshape(-1).astype(np.int64)]
  n = flat.size
  flat = np.pad(flat, (0, -n % block_size)).reshape(-1, block_size) * absmax[:, None]
  return flat.reshape(-1)[:n].reshape(codes.shape).astype(np.float32)


def adam_step(p, g, s1, s2, step, *, lr, b1, b2, eps, wd, signed, unsigned, block_size):
  """One AdamW8bit step; ``s1``/``s2`` are (codes, absmax) pairs. Returns new p, s1, s2."""
  f32 = np.float32
  m = dequantize(*s1, signed, block_size)
  v = dequantize(*s2, unsigned, block_size)
  g = g.astype(f32)
  m = m * f32(b1) + g * (f32(1) - f32(b1))
  v = v * f32(b2) + g * g * (f32(1) - f32(b2))
  bc1 = 1 - b1**step
  bc2 = 1 - b2**step
  denom = np.sqrt(v) / f32(np.sqrt(bc2)) + f32(eps)
  p = p.astype(f32)
  if wd > 0:
    p = p * f32(1 - lr * wd)
  p = p - f32(lr / bc1) * m / denom
  return p, quantize(m, signed, block_size), quantize(v, unsigned, block_size)


def lion_step(p, g, s1, *, lr, b1, b2, wd, signed, block_size):
  """One Lion8bit step; ``s1`` is a (codes, absmax) pair. Returns new p, s1."""
  f32 = np.float32
  m = dequantize(*s1, signed, block_size)
  g = g.astype(f32)
  p = p.astype(f32)
  if wd > 0:
    p = p * f32(1 - lr * wd)
  p = p - f32(lr) * np.sign(m * f32(b1) + g * (f32(1) - f32(b1)))
  m = m * f32(b2) + g * (f32(1) - f32(b2))
  return p, quantize(m, signed, block_size)
