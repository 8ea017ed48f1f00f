"""Fidelity fixtures for the clipping-and-stability family: SPAM and Stable-SPAM.

``generate(out_dir)`` runs inside the oracle environment (torch + pytorch-optimizer 4.1.0) and writes one
``<case>.npz`` per case: the initial params, the gradient fed at every step (a fixed sequence with injected
spikes, so the trajectories do not depend on how each framework computes gradients), the params after
every step, and a JSON ``config`` naming the gradtx factory, its arguments and how many steps gradtx must
reproduce. ``tests/fidelity/test_stability.py`` replays them with gradtx in float32.

Two kinds of reference:
  * pytorch-optimizer 4.1.0 ``SPAM`` / ``StableSPAM`` (float64), where they follow the official code;
  * NumPy (float64) transcriptions of the official code, below, where pytorch-optimizer deviates from it
    (see ``README_stability.md``). They were checked against the official files (TianjinYellow/
    SPAM-Optimizer@e8185fbe ``galore_torch/SPAM.py``, TianjinYellow/StableSPAM@6a66da1e
    ``galore_torch/stablespam.py``) run in float64: identical to the last bit or within 1e-15.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

STEPS = 36
SHAPES = {"w": (4, 3), "b": (3,)}


def problem(seed: int = 0):
  """Initial params and a gradient sequence with spikes (x100 on a few coordinates at some steps)."""
  rng = np.random.default_rng(seed)
  params = {k: rng.normal(size=s) for k, s in SHAPES.items()}
  grads = {k: rng.normal(size=(STEPS, *s)) for k, s in SHAPES.items()}
  for t in range(STEPS):
    if t % 7 == 6:
      grads["w"][t].flat[rng.integers(0, 12, size=2)] *= 100.0
    if t % 11 == 8:
      grads["b"][t][rng.integers(0, 3)] *= 300.0
  return params, grads


def _spam_dr(k: int, warmup: int) -> float:
  """Official CosineDecay(0.99, warmup).get_dr(k): closed form of CosineAnnealingLR(T_max=warmup + 1)."""
  return 0.0 if k >= warmup else 0.99 * (1.0 + math.cos(math.pi * k / (warmup + 1))) / 2.0


def official_spam(params, grads, *, lr, betas, eps, weight_decay, warmup_steps, threshold, delta_t,
                  grad_accu_steps):
  """NumPy transcription of the official SPAM step (dense params); returns (trajectory, clip counts)."""
  b1, b2 = betas
  p = {k: v.copy() for k, v in params.items()}
  st = {k: {"step": 0, "m": np.zeros_like(v), "v": np.zeros_like(v)} for k, v in params.items()}
  total_step, current_step = 0, warmup_steps + 1
  traj = {k: [] for k in p}
  clipped = []
  for t in range(STEPS):
    scale = 1.0 - _spam_dr(current_step, warmup_steps)
    n_clip = 0
    for k in p:
      g = grads[k][t].copy()
      s = st[k]
      if (total_step + 1) % delta_t == 0:
        s["m"], s["v"] = np.zeros_like(g), np.zeros_like(g)
      s["step"] += 1
      cur = total_step + 1
      if threshold != 0 and cur >= grad_accu_steps and cur % delta_t >= grad_accu_steps:
        mask = g**2 > threshold * s["v"]
        g[mask] = np.sign(g[mask]) * np.sqrt(s["v"][mask] * threshold)
        n_clip += int(mask.sum())
      s["m"] = b1 * s["m"] + (1 - b1) * g
      s["v"] = b2 * s["v"] + (1 - b2) * g * g
      denom = np.sqrt(s["v"]) + eps
      step_size = lr * math.sqrt(1 - b2 ** s["step"]) / (1 - b1 ** s["step"])
      p[k] = p[k] - step_size * scale * (s["m"] / denom)
      if weight_decay > 0:
        p[k] = p[k] - lr * weight_decay * p[k]
      traj[k].append(p[k].copy())
    clipped.append(n_clip)
    total_step += 1
    current_step += 1
    if total_step != 0 and (total_step + 1) % delta_t == 0:
      current_step = 0
  return {k: np.stack(v) for k, v in traj.items()}, np.array(clipped)


def official_spam_sparse(params, grads, masks, *, lr, betas, eps, weight_decay, warmup_steps, threshold, delta_t,
                         grad_accu_steps):
  """NumPy transcription of the official SPAM step with a ``density`` group; returns the trajectory.

  ``masks[k][t]`` is the boolean mask of param ``k`` that the official code holds at 0-based step ``t``; the
  params in ``masks`` form the ``density`` group, the others the regular group. The official code draws
  its masks with torch's RNG (``randperm`` at init, ``torch.rand(shape) < density`` at each redraw), so a
  test feeds the masks gradtx drew; only ``masks[k][0]`` and the masks at the official redraw points are
  read. Checked against the official file run in float64 with these masks injected (its ``state['mask']``
  set after construction, ``torch.rand`` patched inside ``update_masks``): equal within 1e-13 over 36
  steps and three redraws, the no-op decay of the density group included.
  """
  b1, b2 = betas
  p = {k: v.copy() for k, v in params.items()}
  st = {k: {"step": 0} for k in p}
  mask = {k: m[0] for k, m in masks.items()}
  total_step, current_step = 0, warmup_steps + 1
  traj = {k: [] for k in p}
  for t in range(STEPS):
    scale = 1.0 - _spam_dr(current_step, warmup_steps)
    for k in p:
      s = st[k]
      g = grads[k][t].copy()
      if k in mask:
        g = g[mask[k]]  # row-major copy of the masked coordinates
      if "m" not in s or (total_step + 1) % delta_t == 0:
        s["m"], s["v"] = np.zeros_like(g), np.zeros_like(g)
      s["step"] += 1
      cur = total_step + 1
      if threshold != 0 and cur >= grad_accu_steps and cur % delta_t >= grad_accu_steps:
        clip = g**2 > threshold * s["v"]
        g[clip] = np.sign(g[clip]) * np.sqrt(s["v"][clip] * threshold)
      s["m"] = b1 * s["m"] + (1 - b1) * g
      s["v"] = b2 * s["v"] + (1 - b2) * g * g
      step_size = lr * math.sqrt(1 - b2 ** s["step"]) / (1 - b1 ** s["step"])
      norm = s["m"] / (np.sqrt(s["v"]) + eps)
      if k in mask:
        full = np.zeros_like(p[k])
        full[mask[k]] = norm
        p[k] = p[k] - step_size * (full * scale)  # and no decay: p.data[mask].add_ writes to a copy
      else:
        p[k] = p[k] - step_size * scale * norm
        if weight_decay > 0:
          p[k] = p[k] - lr * weight_decay * p[k]
      traj[k].append(p[k].copy())
    total_step += 1
    current_step += 1
    if (total_step + 1) % delta_t == 0:  # update_masks: new mask, overlap of the moments copied over
      for k, old in mask.items():
        new = masks[k][total_step]
        both = new & old
        m_new, v_new = np.zeros(new.sum()), np.zeros(new.sum())
        m_new[both[new]] = st[k]["m"][both[old]]
        v_new[both[new]] = st[k]["v"][both[old]]
        st[k]["m"], st[k]["v"], mask[k] = m_new, v_new, new
      current_step = 0
  return {k: np.stack(v) for k, v in traj.items()}


def official_stable_spam(params, grads, *, lr, betas, eps, weight_decay, gamma1, gamma2, gamma3, total_t,
                         eta_min, update_proj_gap, fix_reset_aliasing=False):
  """NumPy transcription of the official Stable-SPAM step; returns (trajectory, AdaClip counts).

  ``fix_reset_aliasing=True`` zeroes the moments in place on a reset step (what the code means to do);
  ``False`` reproduces the official rebinding, where the reset step still updates and uses the old moments.
  """
  b1, b2 = betas
  p = {k: v.copy() for k, v in params.items()}
  st = {k: {"step": 0, "m": np.zeros_like(v), "v": np.zeros_like(v), "m_norm": 0.0, "v_norm": 0.0,
            "m_max": 0.0} for k, v in params.items()}
  traj = {k: [] for k in p}
  clipped = []
  for t in range(STEPS):
    total = t + 1
    scale = 1.0
    if total_t is not None:
      scale = eta_min + (1.0 - eta_min) * (1.0 + math.cos(math.pi * total / (total_t + 1))) / 2.0
    n_clip = 0
    for k in p:
      s = st[k]
      p[k] = p[k] * (1 - lr * weight_decay)
      g = grads[k][t].copy()
      s["step"] += 1
      max_g = np.max(np.abs(g))
      s["m_max"] = gamma3 * s["m_max"] + (1 - gamma3) * max_g
      m_max_hat = s["m_max"] / (1 - gamma3 ** s["step"])
      mask = np.abs(g) > m_max_hat
      if mask.sum() > 0:
        g[mask] = g[mask] / max_g * m_max_hat
      n_clip += int(mask.sum())
      norm = np.linalg.norm(g)
      s["m_norm"] = gamma1 * scale * s["m_norm"] + (1 - gamma1 * scale) * norm
      s["v_norm"] = gamma2 * s["v_norm"] + (1 - gamma2) * norm**2
      m_hat = s["m_norm"] / (1 - (gamma1 * scale) ** s["step"])
      v_hat = s["v_norm"] / (1 - gamma2 ** s["step"])
      c = m_hat / (np.sqrt(v_hat) + eps)
      if norm > 0:
        g = g / norm * c
      reset = update_proj_gap != 0 and total % update_proj_gap == 0
      m, v = s["m"], s["v"]
      if reset:
        s["step"] = 1
        if fix_reset_aliasing:
          m, v = np.zeros_like(g), np.zeros_like(g)
      beta1 = b1 * scale
      bc1 = 1 - beta1 ** s["step"]
      bc2 = 1 - b2 ** s["step"]
      m = beta1 * m + (1 - beta1) * g
      v = b2 * v + (1 - b2) * g * g
      if reset and not fix_reset_aliasing:  # the state holds fresh zeros; the updated old moments are dropped
        s["m"], s["v"] = np.zeros_like(g), np.zeros_like(g)
      else:
        s["m"], s["v"] = m, v
      denom = np.sqrt(v) / math.sqrt(bc2) + eps
      p[k] = p[k] - lr / bc1 * (m / denom)
      traj[k].append(p[k].copy())
    clipped.append(n_clip)
  return {k: np.stack(v) for k, v in traj.items()}, np.array(clipped)


def _torch_run(make_optimizer, params, grads):
  import torch  # pylint: disable=import-outside-toplevel

  tensors = {k: torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for k, v in params.items()}
  opt = make_optimizer(list(tensors.values()))
  traj = {k: [] for k in tensors}
  for t in range(STEPS):
    for k, p in tensors.items():
      p.grad = torch.tensor(grads[k][t], dtype=torch.float64).clone()
    opt.step()
    for k, p in tensors.items():
      traj[k].append(p.detach().numpy().copy())
  return {k: np.stack(v) for k, v in traj.items()}


SPAM_HP = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.1, "threshold": 1000, "delta_t": 10,
           "grad_accu_steps": 3}
STABLE_HP = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1, "gamma1": 0.7, "gamma2": 0.9,
             "gamma3": 0.999, "eta_min": 0.5, "update_proj_gap": 10}


def _spam_gradtx(warmup):
  h = SPAM_HP
  return {"learning_rate": h["lr"], "b1": h["betas"][0], "b2": h["betas"][1], "eps": h["eps"],
          "weight_decay": h["weight_decay"], "threshold": float(h["threshold"]), "reset_period": h["delta_t"],
          "warmup_steps": warmup, "accumulation_steps": h["grad_accu_steps"]}


def _stable_gradtx(total_t, bias_correction):
  h = STABLE_HP
  return {"learning_rate": h["lr"], "b1": h["betas"][0], "b2": h["betas"][1], "eps": h["eps"],
          "weight_decay": h["weight_decay"], "gamma1": h["gamma1"], "gamma2": h["gamma2"], "theta": h["gamma3"],
          "reset_period": h["update_proj_gap"], "total_steps": total_t, "eta_min": h["eta_min"],
          "bias_correction": bias_correction}


def cases(params, grads):
  """name -> (reference trajectory, diagnostic counts or None, gradtx config)."""
  from pytorch_optimizer import SPAM, StableSPAM  # pylint: disable=import-outside-toplevel

  h, s = SPAM_HP, STABLE_HP
  out = {}
  traj, clips = official_spam(params, grads, warmup_steps=4, **h)
  out["stability_spam_official"] = (traj, clips, {"factory": "spam", "kwargs": _spam_gradtx(4), "steps": STEPS})

  def pt_spam(warmup):
    return lambda ps: SPAM(ps, lr=h["lr"], betas=h["betas"], weight_decay=h["weight_decay"], warmup_epoch=warmup,
                           threshold=h["threshold"], grad_accu_steps=h["grad_accu_steps"],
                           update_proj_gap=h["delta_t"], eps=h["eps"])

  out["stability_spam_pytorch_optimizer_w0"] = (
      _torch_run(pt_spam(0), params, grads), None, {"factory": "spam", "kwargs": _spam_gradtx(0), "steps": STEPS})
  # pytorch-optimizer's warm-up runs one step ahead of the official one: equal until the first reset (step 10).
  out["stability_spam_pytorch_optimizer_w4"] = (
      _torch_run(pt_spam(4), params, grads), None,
      {"factory": "spam", "kwargs": _spam_gradtx(4), "steps": h["delta_t"] - 1, "differs_after": True})

  common = {k: s[k] for k in ("lr", "betas", "eps", "weight_decay", "gamma1", "gamma2", "gamma3", "eta_min",
                              "update_proj_gap")}
  traj, clips = official_stable_spam(params, grads, total_t=25, fix_reset_aliasing=True, **common)
  out["stability_stable_spam_official_fixed_reset"] = (
      traj, clips, {"factory": "stable_spam", "kwargs": _stable_gradtx(25, "per_reset"), "steps": STEPS})
  traj, clips = official_stable_spam(params, grads, total_t=25, fix_reset_aliasing=False, **common)
  out["stability_stable_spam_official"] = (
      traj, clips,
      {"factory": "stable_spam", "kwargs": _stable_gradtx(25, "per_reset"), "steps": s["update_proj_gap"] - 1,
       "differs_after": True})

  def pt_stable(ps):
    return StableSPAM(ps, lr=s["lr"], betas=s["betas"], gamma1=s["gamma1"], gamma2=s["gamma2"], theta=s["gamma3"],
                      t_max=None, eta_min=s["eta_min"], weight_decay=s["weight_decay"],
                      update_proj_gap=s["update_proj_gap"], eps=s["eps"])

  out["stability_stable_spam_pytorch_optimizer"] = (
      _torch_run(pt_stable, params, grads), None,
      {"factory": "stable_spam", "kwargs": _stable_gradtx(None, "global"), "steps": STEPS})
  return out


def generate(out_dir: str) -> list[str]:
  """Writes ``<case>.npz`` for every case into ``out_dir``; returns the paths written."""
  os.makedirs(out_dir, exist_ok=True)
  params, grads = problem()
  written = []
  for name, (traj, clips, config) in cases(params, grads).items():
    path = os.path.join(out_dir, f"{name}.npz")
    arrays = {f"params0_{k}": v for k, v in params.items()}
    arrays.update({f"grads_{k}": v for k, v in grads.items()})
    arrays.update({f"traj_{k}": v for k, v in traj.items()})
    if clips is not None:
      arrays["clip_counts"] = clips
    np.savez(path, config=np.array(json.dumps(config)), **arrays)
    written.append(path)
  return written


if __name__ == "__main__":
  generate(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
