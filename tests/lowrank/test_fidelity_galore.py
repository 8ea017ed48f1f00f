"""gradtx.galore against recorded pytorch-optimizer 4.1.0 GaLore trajectories (official 'std' side rule).

The fixtures are written by ``tests/fidelity/cases_lowrank.py`` (``make fixtures``) in the oracle
environment; this test only reads them.
"""

import numpy as np
import pytest

import gradtx
from tests.fidelity import common
from tests.lowrank._helpers import assert_trajectory

FIXTURES = {f.meta["case"]: f for f in common.fixtures_of("cases_lowrank")}


def test_every_case_is_stored():
  assert sorted(FIXTURES) == ["square_gap100", "tall_gap1", "tall_gap100", "wide_gap1"]


@pytest.mark.parametrize("case", sorted(FIXTURES))
def test_galore_matches_pytorch_optimizer(case):
  fixture = FIXTURES[case]
  kw = fixture.meta["oracle_kwargs"]
  tx = gradtx.galore(learning_rate=kw["lr"], rank=kw["rank"], update_every=kw["update_proj_gap"], scale=kw["scale"],
                     eps=kw["eps"], dimension_numbers=gradtx.MatrixDims(reduction_axes=1, output_axes=0))
  trajectory = [fixture.init["w"]] + list(fixture.trajectory["w"])
  # float32 SVD against PyTorch's float64 one: a random 6x6 matrix can have close singular values, which moves
  # the rank-2 subspace by ~1e-4 of the step; hence atol 1e-4 (relative to the largest step).
  assert_trajectory(tx, trajectory, list(fixture.data["grads"]), atol=1e-4)
  assert np.asarray(fixture.data["grads"]).shape[0] == fixture.meta["steps"]
