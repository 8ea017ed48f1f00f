"""Fidelity cases for Lion, AdaBelief, diffGrad, AdamP and SGDP (method notes sections 1–5).

Each case records a 50-step float trajectory on :mod:`tests.fidelity.common`'s problem from an oracle that
computes the OFFICIAL update:

* ``pytorch_optimizer`` 4.1.0 (PyTorch 2.13.0 CPU, float32) where it does, configured with explicit flags
  (Lion, AdaBelief, SGDP with nesterov);
* a float64 NumPy transcription of the official code, below, where it cannot be configured to
  (diffGrad, AdamP, SGDP without nesterov). ``pytorch_optimizer``'s trajectory is then stored beside it as ``diag/peer/*`` with its
  distance from the official one in ``meta['peer']``.

Where ``pytorch_optimizer`` 4.1.0 differs from the official code (checked against its source):

* Lion (google/automl@6a54c874 ``lion/lion_pytorch.py``): same update (``lerp`` instead of ``mul``+``add``).
* AdaBelief (juntang-zhuang/Adabelief-Optimizer@2855178e ``adabelief_pytorch0.2.1``): same update, ε added
  in place to the stored ``s`` included, but ``rectify`` defaults to False (official True): pass it.
  With ``rectify=True`` and ``ams_bound=True`` it rectifies with ``√max(s)``, where the official code
  ignores the max in the rectified branch (``exp_avg_var.sqrt()``); no case records that combination.
* diffGrad (shivram1987/diffGrad@73233ba4 ``diffGrad_v2.py``): ``weight_decouple`` defaults to True (official
  coupled L2: pass False), and the denominator is ``√(v + 1e-15) + ε`` (official ``√v + ε``), which no flag
  removes: NumPy transcription. The difference is far below the test tolerance on this problem
  (``meta['peer']``); it matters only where ``v ≲ 1e-13``.
* AdamP (clovaai/AdamP@7f6f0383 ``adamp/adamp.py``): the denominator is ``(√v + ε) / √(1 − β2^t)``, i.e. ε is
  scaled by ``1/√(1 − β2^t)`` (official ``√v / √(1 − β2^t) + ε``): NumPy transcription. Even at ε = 1e-8 the
  two placements end 1.8e-5 (of the largest entry) apart here, beyond the tolerance; ``adamp_nesterov`` uses
  ε = 1e-5, where they end 4% apart (``meta['peer']``).
* SGDP (clovaai/AdamP@7f6f0383 ``adamp/sgdp.py``): ``lr`` defaults to 1e-3 where the official code
  requires it: pass it. With nesterov, the same update (``sgdp``). Without nesterov, the official
  ``d_p = buf`` aliases the momentum buffer and the projection subtracts in place, so the stored buffer is
  projected too; pytorch_optimizer projects ``buf.clone()`` and keeps the radial part: NumPy transcription
  for ``sgdp_dampening`` (the two end ``meta['peer']`` apart, beyond the tolerance).

The problem's first-layer weight is scale-invariant-ish (κ = :data:`KAPPA`), so AdamP/SGDP's projection
fires in the channel view on some steps, in the layer view on others and not at all on the rest; the
generator records each decision (``diag/projection/<param>``: 0 none, 1 channel, 2 layer) and refuses to
write a fixture whose decisions come closer than :data:`MIN_PROJECTION_MARGIN` (relative) to the threshold
``δ/√n``, so a float32 replay cannot take the other branch by rounding. Lion's sign gets the same guard.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np

from tests.fidelity import common

STEPS = 50
SEED = 3
KAPPA = 0.1
#: Smallest allowed relative distance of a projection statistic from its threshold: |cos/thr − 1|.
MIN_PROJECTION_MARGIN = 1e-3
#: Smallest allowed |c| / (β1|m| + (1−β1)|g|) for Lion's interpolation c, whose sign is the update.
MIN_SIGN_MARGIN = 1e-4
#: Tolerance the replays are held to; used here to report whether a peer is within it.
RTOL, ATOL = 1e-5, 1e-6

Record = Callable[["Case", dict, dict], tuple[dict, np.ndarray, dict, dict]]


@dataclasses.dataclass(frozen=True)
class Case:
  """One fixture: what produces it and how gradtx must be configured to reproduce it.

  Attributes:
    name: fixture file stem.
    gradtx: name of the gradtx full optimizer that replays it.
    gradtx_kwargs: its arguments.
    mutations: overrides of ``gradtx_kwargs`` (each flips one option) under which the replay must NOT
      match: evidence that the fixture pins those options down.
    oracle: what computed the trajectory.
    oracle_kwargs: the oracle's arguments.
    record: ``(case, data, init) -> (trajectory, losses, diagnostics, extra meta)``.
  """

  name: str
  gradtx: str
  gradtx_kwargs: dict[str, Any]
  mutations: tuple[dict[str, Any], ...]
  oracle: str
  oracle_kwargs: dict[str, Any]
  record: Record


# --- projection (AdamP / SGDP), float64 NumPy transcription of clovaai/AdamP ``_projection`` ----------------


def _abs_cosine(a: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
  # torch.nn.functional.cosine_similarity(dim=1, eps): each row norm is clamped at eps.
  na = np.maximum(np.linalg.norm(a, axis=1, keepdims=True), eps)
  nb = np.maximum(np.linalg.norm(b, axis=1, keepdims=True), eps)
  return np.abs(((a / na) * (b / nb)).sum(1))


def _projection(p, grad, perturb, delta, wd_ratio, eps):
  """Official projection: ``(perturb, wd_ratio, decision, margin)``; decision 0 none, 1 channel, 2 layer."""
  margin = math.inf
  for code, rows in ((1, p.shape[0]), (2, 1)):  # channel view (out, -1), then layer view (1, -1)
    pv, gv = p.reshape(rows, -1), grad.reshape(rows, -1)
    cos = _abs_cosine(gv, pv, eps).max()
    threshold = delta / math.sqrt(pv.shape[1])
    margin = min(margin, abs(cos / threshold - 1.0))
    if cos < threshold:
      p_n = pv / (np.linalg.norm(pv, axis=1, keepdims=True) + eps)
      u = perturb.reshape(pv.shape)
      u = u - p_n * (p_n * u).sum(1, keepdims=True)
      return u.reshape(p.shape), wd_ratio, code, margin
  return perturb, 1.0, 0, margin


def _projection_diagnostics(params, grads, delta, eps) -> dict[str, Any]:
  out = {}
  for k in common.PARAM_NAMES:
    if params[k].ndim > 1:
      p, g = params[k].astype(np.float64), grads[k].astype(np.float64)
      _, _, code, margin = _projection(p, g, np.zeros_like(p), delta, 1.0, eps)
      out[f"projection/{k}"], out[f"projection_margin/{k}"] = np.int8(code), margin
  return out


def _check_projection(case: Case, diags: dict) -> dict[str, Any]:
  codes = diags["projection/w1"]
  margin = min(float(diags[k].min()) for k in diags if k.startswith("projection_margin/"))
  if not {0, 1, 2} <= set(codes.tolist()) or margin < MIN_PROJECTION_MARGIN:
    raise SystemExit(
        f"{case.name}: w1's projection decisions {codes.tolist()} must include none, channel and layer, "
        f"at a margin >= {MIN_PROJECTION_MARGIN} (got {margin:.3g}); adjust SEED/KAPPA or the hyperparameters."
    )
  counts = {k.partition("/")[2]: int((diags[k] > 0).sum()) for k in diags if k.startswith("projection/")}
  return {"projected_steps": counts, "projection_margin": margin}


# --- NumPy transcriptions of official updates (float64) ----------------------------------------------------


def _adamp_step(lr, betas, eps, weight_decay, delta, wd_ratio, nesterov):
  """clovaai/AdamP@7f6f0383 ``adamp/adamp.py``: ``denom = √v/√(1−β2^t) + ε``, projection with the raw grad."""
  b1, b2 = betas

  def step(params, grads, state, t):
    new, diag = {}, {}
    for k in common.PARAM_NAMES:
      p, g = params[k], grads[k]
      m = state[k][0] = b1 * state[k][0] + (1 - b1) * g
      v = state[k][1] = b2 * state[k][1] + (1 - b2) * g * g
      denom = np.sqrt(v) / math.sqrt(1 - b2**t) + eps
      perturb = (b1 * m + (1 - b1) * g) / denom if nesterov else m / denom
      ratio = 1.0
      if p.ndim > 1:
        perturb, ratio, code, margin = _projection(p, g, perturb, delta, wd_ratio, eps)
        diag[f"projection/{k}"], diag[f"projection_margin/{k}"] = np.int8(code), margin
      if weight_decay > 0:
        p = p * (1 - lr * weight_decay * ratio)
      new[k] = p - lr / (1 - b1**t) * perturb
    return new, state, diag

  return step


def _sgdp_step(lr, momentum, dampening, weight_decay, nesterov, eps, delta, wd_ratio):
  """clovaai/AdamP@7f6f0383 ``adamp/sgdp.py``: without nesterov ``d_p = buf`` is projected in place, so the
  stored buffer is the projected one; with nesterov ``d_p = grad + momentum * buf`` is a new tensor."""

  def step(params, grads, state, t):
    new, diag = {}, {}
    for k in common.PARAM_NAMES:
      p, g = params[k], grads[k]
      buf = state[k][0] = momentum * state[k][0] + (1 - dampening) * g
      d_p = g + momentum * buf if nesterov else buf
      ratio = 1.0
      if p.ndim > 1:
        d_p, ratio, code, margin = _projection(p, g, d_p, delta, wd_ratio, eps)
        diag[f"projection/{k}"], diag[f"projection_margin/{k}"] = np.int8(code), margin
        if not nesterov:
          state[k][0] = d_p
      if weight_decay > 0:
        p = p * (1 - lr * weight_decay * ratio / (1 - momentum))
      new[k] = p - lr * d_p
    return new, state, diag

  return step


def _diffgrad_step(lr, betas, eps, weight_decay):
  """shivram1987/diffGrad@73233ba4 ``diffGrad_v2.py``: coupled L2, ``ξ = sigmoid(|g_prev − g|)``, ``√v + ε``."""
  b1, b2 = betas

  def step(params, grads, state, t):
    new = {}
    for k in common.PARAM_NAMES:
      p = params[k]
      g = grads[k] + weight_decay * p if weight_decay != 0 else grads[k]
      m = state[k][0] = b1 * state[k][0] + (1 - b1) * g
      v = state[k][1] = b2 * state[k][1] + (1 - b2) * g * g
      dfc = 1.0 / (1.0 + np.exp(-np.abs(state[k][2] - g)))
      state[k][2] = g.copy()
      new[k] = p - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * (m * dfc) / (np.sqrt(v) + eps)
    return new, state, {}

  return step


def _zeros_state(init, n):
  return {k: [np.zeros(np.shape(v), np.float64) for _ in range(n)] for k, v in init.items()}


# --- recorders ----------------------------------------------------------------------------------------------


def _torch_optimizer(name: str, kwargs: dict[str, Any]):
  import pytorch_optimizer  # only the oracle environment has it

  cls = getattr(pytorch_optimizer, name)
  return lambda params: cls(params, **{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})


def _from_torch(cls_name: str, probe=None, check=None) -> Record:
  def record(case, data, init):
    traj, losses, diags = common.torch_trajectory(
        _torch_optimizer(cls_name, case.oracle_kwargs), data, init, STEPS, probe and probe(case)
    )
    return traj, losses, diags, (check(case, diags) if check else {})

  return record


def _from_numpy(make_step, n_state: int, peer_cls: str, peer_kwargs: dict[str, Any], check=None) -> Record:
  def record(case, data, init):
    traj, losses, diags = common.numpy_trajectory(
        make_step(**case.oracle_kwargs), _zeros_state(init, n_state), data, init, STEPS
    )
    peer, _, _ = common.torch_trajectory(_torch_optimizer(peer_cls, peer_kwargs), data, init, STEPS)
    diags.update({f"peer/{k}": v for k, v in peer.items()})
    rel = max(float(np.abs(peer[k] - traj[k]).max() / np.abs(traj[k]).max()) for k in traj)
    within = all(np.all(np.abs(peer[k] - traj[k]) <= ATOL + RTOL * np.abs(traj[k])) for k in traj)
    extra = {"peer": {"oracle": f"pytorch_optimizer.{peer_cls}", "kwargs": peer_kwargs,
                      "max_abs_diff_over_max_abs": rel, f"within_rtol_{RTOL:g}_atol_{ATOL:g}": bool(within)}}
    extra.update(check(case, diags) if check else {})
    return traj, losses, diags, extra

  return record


def _projection_probe(case):
  delta, eps = case.oracle_kwargs["delta"], case.oracle_kwargs["eps"]
  return lambda params, grads, opt, tparams: _projection_diagnostics(params, grads, delta, eps)


def _lion_probe(case):
  b1 = case.oracle_kwargs["betas"][0]

  def probe(params, grads, opt, tparams):
    out = {}
    for k, p in tparams.items():
      m = opt.state[p]["exp_avg"].numpy() if "exp_avg" in opt.state[p] else np.zeros_like(grads[k])
      c = b1 * m + (1 - b1) * grads[k]
      out[f"sign_margin/{k}"] = float((np.abs(c) / (b1 * np.abs(m) + (1 - b1) * np.abs(grads[k]))).min())
    return out

  return probe


def _check_lion(case, diags):
  margin = min(float(v.min()) for v in diags.values())
  if margin < MIN_SIGN_MARGIN:
    raise SystemExit(f"{case.name}: Lion's sign margin {margin:.3g} < {MIN_SIGN_MARGIN}; change the case.")
  return {"sign_margin": margin}


def _amsgrad_probe(case):
  def probe(params, grads, opt, tparams):
    # State after the previous step: entries where the running max exceeds the current s.
    active = 0
    for p in tparams.values():
      state = opt.state[p]
      if "max_exp_avg_var" in state:
        active += int((state["max_exp_avg_var"] > state["exp_avg_var"]).sum())
    return {"amsgrad_active": active}

  return probe


def _check_amsgrad(case, diags):
  active = int(diags["amsgrad_active"].sum())
  if active == 0:
    raise SystemExit(f"{case.name}: the AMSGrad max never differs from s; the case does not exercise it.")
  return {"amsgrad_active_entries": active}


# --- the cases ------------------------------------------------------------------------------------------------

_ADABELIEF = dict(lr=1e-2, betas=[0.9, 0.999], eps=1e-16, weight_decay=1e-2, weight_decouple=True,
                  fixed_decay=False, rectify=True, degenerated_to_sgd=True, ams_bound=False, foreach=False)


def _adabelief_case(name, mutations, check=None, probe=None, **overrides):
  torch_kwargs = {**_ADABELIEF, **overrides}
  gradtx_kwargs = dict(
      learning_rate=torch_kwargs["lr"], b1=torch_kwargs["betas"][0], b2=torch_kwargs["betas"][1],
      eps=torch_kwargs["eps"], weight_decay=torch_kwargs["weight_decay"],
      weight_decouple=torch_kwargs["weight_decouple"], fixed_decay=torch_kwargs["fixed_decay"],
      rectify=torch_kwargs["rectify"], degenerated_to_sgd=torch_kwargs["degenerated_to_sgd"],
      amsgrad=torch_kwargs["ams_bound"],
  )
  return Case(name, "adabelief", gradtx_kwargs, mutations, "pytorch_optimizer.AdaBelief", torch_kwargs,
              _from_torch("AdaBelief", probe=probe, check=check))


def _adamp_case(name, mutations, **overrides):
  kwargs = {**dict(lr=1e-2, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.1, delta=0.1, wd_ratio=0.1,
                   nesterov=False), **overrides}
  gradtx_kwargs = dict(learning_rate=kwargs["lr"], b1=kwargs["betas"][0], b2=kwargs["betas"][1],
                       eps=kwargs["eps"], weight_decay=kwargs["weight_decay"], delta=kwargs["delta"],
                       wd_ratio=kwargs["wd_ratio"], nesterov=kwargs["nesterov"], channel_axis=0)
  peer = {**kwargs, "weight_decouple": True, "foreach": False}
  return Case(name, "adamp", gradtx_kwargs, mutations,
              "NumPy transcription of clovaai/AdamP@7f6f0383 adamp/adamp.py (float64)", kwargs,
              _from_numpy(_adamp_step, 2, "AdamP", peer, check=_check_projection))


def _sgdp_case(name, mutations, **overrides):
  """With nesterov pytorch_optimizer is the oracle; without, the NumPy transcription (its buffer aliasing)."""
  kwargs = {**dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=1e-2, nesterov=True, eps=1e-8, delta=0.1,
                   wd_ratio=0.1), **overrides}
  gradtx_kwargs = dict(learning_rate=kwargs["lr"], momentum=kwargs["momentum"], dampening=kwargs["dampening"],
                       weight_decay=kwargs["weight_decay"], nesterov=kwargs["nesterov"], eps=kwargs["eps"],
                       delta=kwargs["delta"], wd_ratio=kwargs["wd_ratio"], channel_axis=0)
  torch_kwargs = {**kwargs, "weight_decouple": True, "foreach": False}
  if kwargs["nesterov"]:
    return Case(name, "sgdp", gradtx_kwargs, mutations, "pytorch_optimizer.SGDP", torch_kwargs,
                _from_torch("SGDP", probe=_projection_probe, check=_check_projection))
  return Case(name, "sgdp", gradtx_kwargs, mutations,
              "NumPy transcription of clovaai/AdamP@7f6f0383 adamp/sgdp.py (float64)", kwargs,
              _from_numpy(_sgdp_step, 1, "SGDP", torch_kwargs, check=_check_projection))


_DIFFGRAD = dict(lr=1e-2, betas=[0.9, 0.999], eps=1e-8, weight_decay=1e-2)
_LION = dict(lr=3e-3, betas=[0.9, 0.99], weight_decay=0.5, weight_decouple=True, fixed_decay=False, foreach=False)

CASES: tuple[Case, ...] = (
    Case("lion", "lion", dict(learning_rate=3e-3, b1=0.9, b2=0.99, weight_decay=0.5), ({"b1": 0.99, "b2": 0.9},),
         "pytorch_optimizer.Lion", _LION, _from_torch("Lion", probe=_lion_probe, check=_check_lion)),
    # Official defaults (rectify on, SGD steps while ρ_t < 5, i.e. steps 1–5), decoupled decay.
    _adabelief_case("adabelief_rectify", ({"rectify": False},)),
    # No update at all while ρ_t < 5 (decay only).
    _adabelief_case("adabelief_rectify_no_sgd", ({"degenerated_to_sgd": True},), degenerated_to_sgd=False),
    # The README's CIFAR recipe: ε = 1e-8, coupled L2 decay, no rectification.
    _adabelief_case("adabelief_l2", ({"weight_decouple": True},), eps=1e-8, weight_decay=5e-2,
                    weight_decouple=False, rectify=False),
    # AMSGrad (the max of the ε-accumulated s), decay not scaled by the learning rate; β2 = 0.9 so that s
    # falls below its running max within 50 steps.
    _adabelief_case("adabelief_amsgrad", ({"amsgrad": False}, {"fixed_decay": False}), betas=[0.9, 0.9], weight_decay=1e-3,
                    fixed_decay=True, rectify=False, ams_bound=True, probe=_amsgrad_probe,
                    check=_check_amsgrad),
    Case("diffgrad", "diffgrad",
         dict(learning_rate=1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2, weight_decouple=False),
         ({"weight_decouple": True},),
         "NumPy transcription of shivram1987/diffGrad@73233ba4 diffGrad_v2.py (float64)", _DIFFGRAD,
         _from_numpy(_diffgrad_step, 3, "DiffGrad", {**_DIFFGRAD, "weight_decouple": False, "foreach": False})),
    # delta=1e-6: projection never fires; channel_axis=-1: the wrong (Flax) layout for these torch weights.
    _adamp_case("adamp", ({"delta": 1e-6}, {"channel_axis": -1})),
    _adamp_case("adamp_nesterov", ({"nesterov": False},), nesterov=True, eps=1e-5, wd_ratio=0.5),
    _sgdp_case("sgdp", ({"nesterov": False}, {"delta": 1e-6}, {"channel_axis": -1})),
    _sgdp_case("sgdp_dampening", ({"dampening": 0.0},), nesterov=False, dampening=0.5, wd_ratio=0.5),
)


def generate(out_dir: pathlib.Path | str) -> list[pathlib.Path]:
  """Records every case into ``out_dir/<case>.npz``; run by ``make_fixtures.py`` in the oracle environment."""
  data, init = common.make_problem(seed=SEED, kappa=KAPPA)
  versions = common.oracle_versions()
  written = []
  for case in CASES:
    traj, losses, diags, extra = case.record(case, data, init)
    if not losses[-1] < losses[0]:
      raise SystemExit(f"{case.name}: the loss did not decrease ({losses[0]:.4g} -> {losses[-1]:.4g}).")
    meta = dict(
        case=case.name, module=__name__.rpartition(".")[2], steps=STEPS, seed=SEED, kappa=KAPPA,
        oracle=case.oracle, oracle_kwargs=case.oracle_kwargs, gradtx=case.gradtx,
        gradtx_kwargs=case.gradtx_kwargs, mutations=case.mutations, versions=versions,
        dtype=str(traj["w1"].dtype), **extra,
    )
    written.append(common.save_fixture(out_dir, case.name, meta=meta, data=data, init=init, trajectory=traj,
                                       losses=losses, diagnostics=diags))
  return written
