"""Fidelity fixtures for the curvature family: pytorch-optimizer 4.1.0 SophiaH and AdaHessian trajectories.

``generate(out_dir)`` runs inside the oracle environment (``make fixtures``, or
``python tests/fidelity/make_fixtures.py --only curvature``) and writes one ``curvature_<case>.npz`` per case in
the format of :mod:`tests.fidelity.common` (``data/a_*``, ``data/c_*`` hold the loss's constants);
``tests/curvature/test_fidelity.py`` replays them with gradtx.

The probe is made irrelevant rather than fixed: the loss is separable (diagonal Hessian everywhere), so one
Rademacher Hutchinson probe gives the exact Hessian diagonal in both libraries. Some coordinates start in a
region of negative curvature, which exercises Sophia's handling of h < 0. Trajectories are float64.
"""

from __future__ import annotations

import pathlib

import numpy as np

STEPS = 25

SOPHIA_CASES = {
    "sophia_p3": dict(lr=0.1, betas=(0.9, 0.95), weight_decay=0.1, p=0.05, update_period=3, eps=1e-12),
    "sophia_p1": dict(lr=0.05, betas=(0.96, 0.99), weight_decay=0.0, p=0.2, update_period=1, eps=1e-12),
}
ADAHESSIAN_CASES = {
    "adahessian_k1": dict(lr=0.1, betas=(0.9, 0.99), weight_decay=0.05, hessian_power=1.0, eps=1e-4),
    "adahessian_k05": dict(lr=0.05, betas=(0.8, 0.999), weight_decay=0.0, hessian_power=0.5, eps=1e-4),
}


def problem():
  """Separable loss: sum a (θ - c)² + 0.25 (θ - c)⁴ over two leaves; a < 0 on some coordinates."""
  rng = np.random.default_rng(0)
  shapes = {"b": (5,), "w": (3, 4)}
  a = {k: rng.choice([-0.5, 0.5, 2.0], size=s) for k, s in shapes.items()}
  c = {k: rng.normal(size=s) for k, s in shapes.items()}
  x0 = {k: c[k] + rng.normal(scale=0.3, size=s) for k, s in shapes.items()}
  return a, c, x0


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
  from importlib import metadata

  import pytorch_optimizer
  import torch

  from tests.fidelity import common

  a, c, x0 = problem()
  versions = {"torch": torch.__version__, "pytorch-optimizer": metadata.version("pytorch-optimizer")}

  def run(make):
    params = {k: torch.tensor(x0[k], dtype=torch.float64, requires_grad=True) for k in sorted(x0)}
    opt = make(list(params.values()))
    traj, losses = {k: [] for k in params}, []
    for _ in range(STEPS):
      opt.zero_grad()
      loss = sum(
          (torch.tensor(a[k]) * (p - torch.tensor(c[k])) ** 2 + 0.25 * (p - torch.tensor(c[k])) ** 4).sum()
          for k, p in params.items()
      )
      losses.append(float(loss))
      loss.backward(create_graph=True)
      opt.step()
      for k, p in params.items():
        traj[k].append(p.detach().numpy().copy())
    return {k: np.stack(v) for k, v in traj.items()}, np.asarray(losses)

  paths = []
  for oracle, cases in (("SophiaH", SOPHIA_CASES), ("AdaHessian", ADAHESSIAN_CASES)):
    for name, kw in cases.items():
      cls = getattr(pytorch_optimizer, oracle)
      traj, losses = run(lambda ps, cls=cls, kw=kw: cls(ps, hessian_distribution="rademacher", **kw))
      meta = {
          "case": name,
          "module": "cases_curvature",
          "steps": STEPS,
          "oracle": f"pytorch_optimizer.{oracle}",
          "oracle_kwargs": {**kw, "hessian_distribution": "rademacher"},
          "versions": versions,
      }
      data = {**{f"a_{k}": v for k, v in a.items()}, **{f"c_{k}": v for k, v in c.items()}}
      paths.append(
          common.save_fixture(out_dir, f"curvature_{name}", meta=meta, data=data, init=x0, trajectory=traj,
                              losses=losses)
      )
  return paths
