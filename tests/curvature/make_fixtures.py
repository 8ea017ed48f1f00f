"""Records pytorch-optimizer 4.1.0 SophiaH and AdaHessian trajectories for tests/curvature/test_fidelity.py.

Run: ``python tests/curvature/make_fixtures.py``. Without torch and pytorch_optimizer importable, it creates
``.venv-oracle`` (torch==2.13.0 CPU, pytorch-optimizer==4.1.0) and re-runs itself there; CI only reads the
stored ``fixtures/pytorch_optimizer_curvature.npz``.

The probe is made irrelevant rather than fixed: the loss is separable (diagonal Hessian everywhere), so one
Rademacher Hutchinson probe gives the exact Hessian diagonal in both libraries. Some coordinates start in a
region of negative curvature, which exercises Sophia's handling of h < 0.
"""

import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "fixtures" / "pytorch_optimizer_curvature.npz"
STEPS = 25

SOPHIA_CASES = {
    "sophia_p3": dict(lr=0.1, betas=(0.9, 0.95), weight_decay=0.1, p=0.05, update_period=3, eps=1e-12),
    "sophia_p1": dict(lr=0.05, betas=(0.96, 0.99), weight_decay=0.0, p=0.2, update_period=1, eps=1e-12),
}
ADAHESSIAN_CASES = {
    "adahessian_k1": dict(lr=0.1, betas=(0.9, 0.99), weight_decay=0.05, hessian_power=1.0, eps=1e-4),
    "adahessian_k05": dict(lr=0.05, betas=(0.8, 0.999), weight_decay=0.0, hessian_power=0.5, eps=1e-4),
}


def _ensure_oracle():
  try:
    import pytorch_optimizer  # noqa: F401
    import torch  # noqa: F401
  except ImportError:
    venv = HERE.parents[1] / ".venv-oracle"
    py = venv / "bin" / "python"
    if not py.exists():
      subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
      subprocess.check_call([str(py), "-m", "pip", "install", "-q", "torch==2.13.0", "pytorch-optimizer==4.1.0", "numpy"])
    os.execv(str(py), [str(py), __file__])


def problem(np):
  """Separable loss: sum a (θ - c)² + 0.25 (θ - c)⁴ over two leaves; a < 0 on some coordinates."""
  rng = np.random.default_rng(0)
  shapes = {"b": (5,), "w": (3, 4)}
  a = {k: rng.choice([-0.5, 0.5, 2.0], size=s) for k, s in shapes.items()}
  c = {k: rng.normal(size=s) for k, s in shapes.items()}
  x0 = {k: c[k] + rng.normal(scale=0.3, size=s) for k, s in shapes.items()}
  return a, c, x0


def main():
  _ensure_oracle()
  from importlib import metadata

  import numpy as np
  import pytorch_optimizer
  import torch

  version = metadata.version("pytorch-optimizer")

  torch.manual_seed(0)
  a, c, x0 = problem(np)
  out = {f"{n}_{k}": v[k] for n, v in (("a", a), ("c", c), ("x0", x0)) for k in a}

  def run(make):
    params = {k: torch.tensor(x0[k], dtype=torch.float64, requires_grad=True) for k in sorted(x0)}
    opt = make(list(params.values()))
    traj = {k: [] for k in params}
    for _ in range(STEPS):
      opt.zero_grad()
      loss = sum(
          (torch.tensor(a[k]) * (p - torch.tensor(c[k])) ** 2 + 0.25 * (p - torch.tensor(c[k])) ** 4).sum()
          for k, p in params.items()
      )
      loss.backward(create_graph=True)
      opt.step()
      for k, p in params.items():
        traj[k].append(p.detach().numpy().copy())
    return {k: np.stack(v) for k, v in traj.items()}

  for name, kw in SOPHIA_CASES.items():
    traj = run(lambda ps, kw=kw: pytorch_optimizer.SophiaH(ps, hessian_distribution="rademacher", **kw))
    out.update({f"{name}_{k}": v for k, v in traj.items()})
  for name, kw in ADAHESSIAN_CASES.items():
    traj = run(lambda ps, kw=kw: pytorch_optimizer.AdaHessian(ps, hessian_distribution="rademacher", **kw))
    out.update({f"{name}_{k}": v for k, v in traj.items()})
  OUT.parent.mkdir(exist_ok=True)
  np.savez(OUT, version=np.array(version), **out)
  print(f"wrote {OUT} (pytorch-optimizer {version}, torch {torch.__version__})")


if __name__ == "__main__":
  main()
