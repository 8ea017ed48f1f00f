"""NumPy float64 transcriptions of the official updates the geometry tests compare against.

AdamP / SGDP: clovaai/AdamP@146287bf ``adamp/adamp.py`` and ``adamp/sgdp.py`` (PyTorch layout: the
channel axis is 0). LAMB: Algorithm 2 of arXiv:1904.00962. LARS: Algorithm 1 of arXiv:1708.03888.
Each ``step`` takes and returns dicts of float64 arrays; state lives in the object.
"""

from __future__ import annotations

import math

import numpy as np


def _channel_view(x):
  return x.reshape(x.shape[0], -1)


def _layer_view(x):
  return x.reshape(1, -1)


def _abs_cosine(x, y, eps):
  """``F.cosine_similarity(x, y, dim=1, eps).abs()``: each norm clamped at eps separately (torch 2.x)."""
  x_norm = np.maximum(np.linalg.norm(x, axis=1), eps)
  y_norm = np.maximum(np.linalg.norm(y, axis=1), eps)
  return np.abs(np.sum((x / x_norm[:, None]) * (y / y_norm[:, None]), axis=1))


def projection(p, grad, perturb, delta, wd_ratio, eps):
  """The official ``_projection``: returns (perturb, wd factor, view used or None)."""
  expand = [-1] + [1] * (p.ndim - 1)
  for name, view in (("channel", _channel_view), ("layer", _layer_view)):
    cos = _abs_cosine(view(grad), view(p), eps)
    if cos.max() < delta / math.sqrt(view(p).shape[1]):
      p_n = p / (np.linalg.norm(view(p), axis=1).reshape(expand) + eps)
      perturb = perturb - p_n * np.sum(view(p_n * perturb), axis=1).reshape(expand)
      return perturb, wd_ratio, name
  return perturb, 1.0, None


class AdamP:

  def __init__(self, lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, delta=0.1, wd_ratio=0.1,
               nesterov=False):
    self.__dict__.update(lr=lr, b1=b1, b2=b2, eps=eps, wd=weight_decay, delta=delta, wd_ratio=wd_ratio,
                         nesterov=nesterov)
    self.m, self.v, self.t, self.views = {}, {}, 0, []

  def step(self, params, grads):
    self.t += 1
    bc1, bc2 = 1 - self.b1**self.t, 1 - self.b2**self.t
    out, views = {}, {}
    for k, p in params.items():
      g = grads[k]
      m = self.m[k] = self.b1 * self.m.get(k, 0.0) + (1 - self.b1) * g
      v = self.v[k] = self.b2 * self.v.get(k, 0.0) + (1 - self.b2) * g * g
      denom = np.sqrt(v) / math.sqrt(bc2) + self.eps
      perturb = (self.b1 * m + (1 - self.b1) * g) / denom if self.nesterov else m / denom
      ratio, views[k] = 1.0, None
      if p.ndim > 1:
        perturb, ratio, views[k] = projection(p, g, perturb, self.delta, self.wd_ratio, self.eps)
      if self.wd > 0:
        p = p * (1 - self.lr * self.wd * ratio)
      out[k] = p - self.lr / bc1 * perturb
    self.views.append(views)
    return out


class SGDP:
  """Without nesterov the official ``d_p = buf`` aliases the buffer, and ``_projection``'s in-place
  ``perturb -= ...`` projects the stored buffer too: ``clone_buffer=False`` (default) stores the projected
  ``d_p``. ``clone_buffer=True`` is pytorch_optimizer 4.1.0's ``d_p = buf.clone()`` (buffer unprojected)."""

  def __init__(self, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, eps=1e-8, delta=0.1,
               wd_ratio=0.1, clone_buffer=False):
    self.__dict__.update(lr=lr, mu=momentum, damp=dampening, wd=weight_decay, nesterov=nesterov, eps=eps,
                         delta=delta, wd_ratio=wd_ratio, clone=clone_buffer)
    self.buf, self.views = {}, []

  def step(self, params, grads):
    out, views = {}, {}
    for k, p in params.items():
      g = grads[k]
      buf = self.buf[k] = self.mu * self.buf.get(k, 0.0) + (1 - self.damp) * g
      d_p = g + self.mu * buf if self.nesterov else buf
      ratio, views[k] = 1.0, None
      if p.ndim > 1:
        d_p, ratio, views[k] = projection(p, g, d_p, self.delta, self.wd_ratio, self.eps)
        if not (self.nesterov or self.clone):
          self.buf[k] = d_p
      if self.wd > 0:
        p = p * (1 - self.lr * self.wd * ratio / (1 - self.mu))
      out[k] = p - self.lr * d_p
    self.views.append(views)
    return out


class Lamb:
  """Algorithm 2; ``decay`` / ``trust`` name the leaves that decay / take the ratio (default: all)."""

  def __init__(self, lr, b1=0.9, b2=0.999, eps=1e-6, eps_root=0.0, weight_decay=0.0, phi_min=0.0,
               phi_max=math.inf, decay=None, trust=None):
    self.__dict__.update(lr=lr, b1=b1, b2=b2, eps=eps, eps_root=eps_root, wd=weight_decay, lo=phi_min,
                         hi=phi_max, decay=decay, trust=trust)
    self.m, self.v, self.t = {}, {}, 0

  def step(self, params, grads):
    self.t += 1
    out = {}
    for k, x in params.items():
      g = grads[k]
      m = self.m[k] = self.b1 * self.m.get(k, 0.0) + (1 - self.b1) * g
      v = self.v[k] = self.b2 * self.v.get(k, 0.0) + (1 - self.b2) * g * g
      r = (m / (1 - self.b1**self.t)) / (np.sqrt(v / (1 - self.b2**self.t) + self.eps_root) + self.eps)
      u = r + (self.wd * x if self.decay is None or k in self.decay else 0.0)
      ratio = 1.0
      if self.trust is None or k in self.trust:
        phi = min(max(np.linalg.norm(x), self.lo), self.hi)
        u_norm = np.linalg.norm(u)
        ratio = phi / u_norm if phi > 0 and u_norm > 0 else 1.0
      out[k] = x - self.lr * ratio * u
    return out


class Lars:
  """Algorithm 1 (global lr inside the momentum); nesterov as ``optax.trace``."""

  def __init__(self, lr, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001, eps=0.0, nesterov=False,
               decay=None, trust=None):
    self.__dict__.update(lr=lr, mu=momentum, wd=weight_decay, tc=trust_coefficient, eps=eps, nesterov=nesterov,
                         decay=decay, trust=trust)
    self.v = {}

  def step(self, params, grads):
    out = {}
    for k, w in params.items():
      g = grads[k]
      beta = self.wd if self.decay is None or k in self.decay else 0.0
      local = 1.0
      if self.trust is None or k in self.trust:
        w_norm, denom = np.linalg.norm(w), np.linalg.norm(g) + beta * np.linalg.norm(w) + self.eps
        local = self.tc * w_norm / denom if w_norm > 0 and denom > 0 else 1.0
      step = self.lr * local * (g + beta * w)
      v = self.v[k] = self.mu * self.v.get(k, 0.0) + step
      out[k] = w - (step + self.mu * v if self.nesterov else v)
    return out


def radial_gradient(p, kind, rng):
  """A gradient for ``p`` (PyTorch layout): orthogonal to every row (``'channel'``); orthogonal to the
  whole leaf but not to its rows (``'layer'``); with a whole-leaf cosine of 1.5 δ/√size for δ = 0.1, so the
  layer test fails by a clear margin where a per-row threshold would pass (``'layer_cos'``); or aligned
  with ``p`` (``'free'``: no projection)."""
  a = rng.normal(size=p.shape)
  if kind == "channel":
    rows, prows = _channel_view(a), _channel_view(p)
    coef = np.sum(rows * prows, axis=1, keepdims=True) / np.sum(prows * prows, axis=1, keepdims=True)
    return (rows - coef * prows).reshape(p.shape)
  if kind in ("layer", "layer_cos"):
    ortho = a - p * np.sum(a * p) / np.sum(p * p)
    if kind == "layer":
      return ortho
    cos = 1.5 * 0.1 / math.sqrt(p.size)
    return ortho + cos * np.linalg.norm(ortho) / math.sqrt(1 - cos**2) * p / np.linalg.norm(p)
  return a + 3.0 * p
