"""gradtx.galore against recorded pytorch-optimizer 4.1.0 GaLore trajectories (official 'std' side rule).

The fixtures are written by ``tests/fidelity/cases_lowrank.py`` (``make fixtures``) in the oracle
environment, whose SVD is given gradtx's canonical signs (LAPACK's depend on the machine); this test only
reads them.
"""

import numpy as np
import pytest

import gradtx
from tests.fidelity import common
from tests.lowrank import _reference
from tests.lowrank._helpers import assert_trajectory

FIXTURES = {f.meta["case"]: f for f in common.fixtures_of("cases_lowrank")}


def test_every_case_is_stored():
  assert sorted(FIXTURES) == ["square_gap100", "tall_gap1", "tall_gap100", "wide_gap1"]
  for fixture in FIXTURES.values():  # recorded with canonical signs, every decision clear of a tie
    assert fixture.meta["svd_signs"] == "canonical" and fixture.meta["sign_margin"] >= _reference.SIGN_MARGIN


@pytest.mark.parametrize("case", sorted(FIXTURES))
def test_galore_matches_pytorch_optimizer(case):
  fixture = FIXTURES[case]
  kw = fixture.meta["oracle_kwargs"]
  tx = gradtx.galore(learning_rate=kw["lr"], rank=kw["rank"], update_every=kw["update_proj_gap"], scale=kw["scale"],
                     eps=kw["eps"], dimension_numbers=gradtx.MatrixDims(reduction_axes=1, output_axes=0))
  trajectory = [fixture.init["w"]] + list(fixture.trajectory["w"])
  # Both SVDs run in float32 (pytorch-optimizer casts the float64 gradient for its SVD) in different LAPACKs,
  # the oracle's Adam in float64. Measured: at most 4.7e-6 of the largest step (square_gap100, where a random
  # 6x6 matrix's close singular values amplify the SVD's rounding), 7.6e-7 elsewhere; atol 1e-4 of the
  # largest step leaves 20x for another CPU's float32 summation order.
  assert_trajectory(tx, trajectory, list(fixture.data["grads"]), atol=1e-4)
  assert np.asarray(fixture.data["grads"]).shape[0] == fixture.meta["steps"]
