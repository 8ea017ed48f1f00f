"""gradtx reproduces the recorded trajectories of Lion, AdaBelief, diffGrad, AdamP and SGDP.

Fixtures: ``tests/fidelity/fixtures/<case>.npz``, made by ``make fixtures`` from the cases in
:mod:`tests.fidelity.cases_first_order` (oracles and their deviations: ``tests/fidelity/README.md``).
Each replay runs the gradtx full optimizer in float32 from the recorded initial params, with gradients from
``jax.grad`` of the shared loss, and must stay within ``|got − want| <= ATOL + RTOL |want|`` at every one of
the 50 steps, for every entry. ``RTOL = 1e-5``; ``ATOL = 1e-6`` only matters for entries near zero (the
params are O(0.01–1)). Accurate float32 scalars stay within a third of this bound on every case. Bias
corrections ``1 − β^t`` taken from float32(β) while the EMA's ``1 − β`` comes from the Python float exceed
it by about 2× (float32(0.999) is off by 1.3e-5 of ``1 − β2``). RAdam's ``ρ_t`` from the textbook float32
formula (which cancels ~2000 − 1994) exceeds it by 80× (README.md, "Tolerance").
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import gradtx
from tests.fidelity import cases_first_order, common

RTOL, ATOL = cases_first_order.RTOL, cases_first_order.ATOL
CASES = {case.name: case for case in cases_first_order.CASES}
PROJECTION_CASES = [name for name, case in CASES.items() if case.gradtx in ("adamp", "sgdp")]


def _fixture(name: str) -> common.Fixture:
  path = common.FIXTURE_DIR / f"{name}.npz"
  assert path.exists(), f"{path} is missing: run `make fixtures` (tests/fidelity/README.md)"
  return common.load_fixture(path)


def _optimizer(fixture: common.Fixture, **overrides):
  factory = getattr(gradtx, fixture.meta["gradtx"], None)
  if factory is None:
    pytest.fail(f"gradtx.{fixture.meta['gradtx']} does not exist (yet), so {fixture.name} cannot be replayed",
                pytrace=False)
  return common.build(factory, {**fixture.meta["gradtx_kwargs"], **overrides})


def _json(value):
  return json.loads(json.dumps(value))


@pytest.mark.parametrize("name", CASES)
def test_fixture_is_current(name):
  """The stored fixture was made from the case as defined now, by the pinned oracle, with full shapes."""
  fixture, case = _fixture(name), CASES[name]
  meta = fixture.meta
  assert meta["module"] == "cases_first_order"
  assert (meta["gradtx"], meta["gradtx_kwargs"], meta["mutations"], meta["oracle_kwargs"]) == (
      case.gradtx, _json(case.gradtx_kwargs), _json(case.mutations), _json(case.oracle_kwargs)
  ), "the case changed since its fixture was recorded: run `make fixtures`"
  assert meta["versions"]["torch"].split("+")[0] == "2.13.0"
  assert meta["versions"]["pytorch_optimizer"] == "4.1.0"
  assert meta["steps"] == cases_first_order.STEPS
  for k in common.PARAM_NAMES:
    assert fixture.trajectory[k].shape == (meta["steps"], *fixture.init[k].shape)
  assert np.isfinite(fixture.losses).all() and fixture.losses[-1] < fixture.losses[0]


@pytest.mark.parametrize("name", CASES)
def test_shared_loss_is_the_oracles(name):
  """:func:`common.loss` (what the replay differentiates) gives the losses the oracle recorded."""
  fixture = _fixture(name)
  steps = fixture.meta["steps"]
  before = [fixture.init] + [{k: v[t] for k, v in fixture.trajectory.items()} for t in range(steps - 1)]
  data64 = {k: v.astype(np.float64) for k, v in fixture.data.items()}
  losses = [common.loss({k: v.astype(np.float64) for k, v in p.items()}, data64, np) for p in before]
  np.testing.assert_allclose(losses, fixture.losses, rtol=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_gradtx_reproduces_trajectory(name):
  fixture = _fixture(name)
  got = common.replay(fixture, _optimizer(fixture))
  mismatch = common.first_mismatch(fixture, got, RTOL, ATOL)
  assert mismatch is None, f"{mismatch}; oracle: {fixture.meta['oracle']}"


MUTATIONS = [(name, m) for name, case in CASES.items() for m in case.mutations]


@pytest.mark.parametrize(("name", "mutation"), MUTATIONS, ids=[f"{n}-{m}" for n, m in MUTATIONS])
def test_fixture_rejects_flipped_option(name, mutation):
  """With one option changed (``case.mutations``) the replay leaves the tolerance: the fixture pins it down."""
  fixture = _fixture(name)
  got = common.replay(fixture, _optimizer(fixture, **mutation))
  assert common.first_mismatch(fixture, got, RTOL, ATOL) is not None, mutation


@pytest.mark.parametrize("name", PROJECTION_CASES)
def test_projection_takes_every_branch(name):
  """The scale-invariant-ish w1 is projected in the channel view, in the layer view, and not at all."""
  fixture = _fixture(name)
  codes = fixture.diagnostics["projection/w1"]
  assert {0, 1, 2} <= set(codes.tolist()), codes
  counts = {k: int((fixture.diagnostics[f"projection/{k}"] > 0).sum()) for k in ("w1", "w2")}
  assert counts == fixture.meta["projected_steps"]
  assert 0 < counts["w1"] < fixture.meta["steps"]
  assert fixture.meta["projection_margin"] >= cases_first_order.MIN_PROJECTION_MARGIN


def test_discontinuities_have_margin():
  """Lion's sign and AMSGrad's max: the recorded guards that make a float32 replay well defined."""
  assert _fixture("lion").meta["sign_margin"] >= cases_first_order.MIN_SIGN_MARGIN
  assert _fixture("adabelief_amsgrad").meta["amsgrad_active_entries"] > 0


def test_pytorch_optimizer_deviations_as_documented():
  """README: pytorch_optimizer's AdamP (ε placement) and SGDP without nesterov (projects a copy of the
  buffer) leave the tolerance; its diffGrad (√(v + 1e-15)) does not."""
  key = f"within_rtol_{RTOL:g}_atol_{ATOL:g}"
  assert not _fixture("adamp").meta["peer"][key]
  assert not _fixture("adamp_nesterov").meta["peer"][key]
  assert not _fixture("sgdp_dampening").meta["peer"][key]
  assert _fixture("diffgrad").meta["peer"][key]
