"""Fidelity fixtures for the low-rank family: pytorch-optimizer 4.1.0 GaLore trajectories ('std' side rule).

``generate(out_dir)`` runs inside the oracle environment (``make fixtures``, or
``python tests/fidelity/make_fixtures.py --only lowrank``) and writes one ``lowrank_galore_<case>.npz`` per
case in the format of :mod:`tests.fidelity.common`; ``tests/lowrank/test_fidelity_galore.py`` replays them.
The gradients are given (``data/grads``, one per step) rather than computed from a loss, so the replay feeds
the same matrices to gradtx. pytorch-optimizer counts steps from 1 and so computes its SVDs at 1-based steps
1, T, 2T; the cases use ``update_proj_gap`` 1 (an SVD every step) and 100 (only the first), where that agrees
with the official cadence (0-based 0, T, 2T). Trajectories are float64 (the SVD itself runs in float32: the
projector casts non-float32 gradients); weights are PyTorch ``(out, in)``.

SVD signs: the oracle's projector is given gradtx's canonical signs (``tests.lowrank._reference
.canonical_signs``: the first entry within 1% of a vector's largest magnitude is made positive) in place of
the signs its LAPACK returns, which depend on the machine and do change the gap-1 trajectories (moments are
carried across refreshes). Nothing else of pytorch-optimizer is touched. ``meta['sign_margin']`` records how
far every sign decision stayed from the tie band's edge (the generator refuses less than
``_reference.SIGN_MARGIN``) and ``meta['lapack_signs_canonical']`` whether the unpatched LAPACK signs would
have agreed.
"""

from __future__ import annotations

import pathlib

import numpy as np

STEPS, RANK, SCALE, LR, EPS = 10, 2, 0.25, 0.01, 1e-6
CASES = {  # name: (weight shape (out, in), update_proj_gap)
    "tall_gap1": ((8, 6), 1), "wide_gap1": ((6, 8), 1), "square_gap100": ((6, 6), 100), "tall_gap100": ((8, 6), 100),
}


def _canonical_projector(projector_class, record):
  """Wraps ``GaLoreProjector.get_orthogonal_matrix`` so its singular vectors get the canonical signs."""
  import torch

  from tests.lowrank import _reference

  original = projector_class.get_orthogonal_matrix

  def get_orthogonal_matrix(self, weights, projection_type, from_random_matrix=False):
    out = original(self, weights, projection_type, from_random_matrix)
    axis = {"right": 1, "left": 0}[projection_type]  # right: rows of Vh; left: columns of U
    lapack = out.detach().numpy()
    canonical = _reference.canonical_signs(lapack, axis=axis)
    record["margins"].append(_reference.sign_margin(lapack, axis=axis))
    record["agree"].append(bool(np.array_equal(canonical, lapack)))
    return torch.tensor(canonical, dtype=out.dtype)

  return get_orthogonal_matrix


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
  from importlib import metadata

  import pytorch_optimizer
  import torch
  from pytorch_optimizer.optimizer.utils import galore as galore_utils

  from tests.fidelity import common

  versions = {"torch": torch.__version__, "pytorch-optimizer": metadata.version("pytorch-optimizer")}
  original = galore_utils.GaLoreProjector.get_orthogonal_matrix
  paths = []
  for seed, (name, (shape, gap)) in enumerate(CASES.items()):
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=shape)
    grads = np.stack([rng.normal(size=shape) * 0.9**t for t in range(STEPS)])
    p = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    group = {"params": [p], "rank": RANK, "update_proj_gap": gap, "scale": SCALE, "projection_type": "std"}
    opt = pytorch_optimizer.GaLore([group], lr=LR, eps=EPS, foreach=False)
    record = {"margins": [], "agree": []}
    galore_utils.GaLoreProjector.get_orthogonal_matrix = _canonical_projector(galore_utils.GaLoreProjector, record)
    try:
      traj = []
      for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        traj.append(p.detach().numpy().copy())
    finally:
      galore_utils.GaLoreProjector.get_orthogonal_matrix = original
    meta = {
        "case": name,
        "module": "cases_lowrank",
        "steps": STEPS,
        "oracle": "pytorch_optimizer.GaLore",
        "oracle_kwargs": {"lr": LR, "eps": EPS, "rank": RANK, "update_proj_gap": gap, "scale": SCALE,
                          "projection_type": "std"},
        "svd_signs": "canonical",
        "sign_margin": min(record["margins"]),
        "lapack_signs_canonical": all(record["agree"]),
        "versions": versions,
    }
    paths.append(common.save_fixture(out_dir, f"lowrank_galore_{name}", meta=meta, data={"grads": grads},
                                     init={"w": w0}, trajectory={"w": np.stack(traj)}, losses=np.zeros(STEPS)))
  return paths
