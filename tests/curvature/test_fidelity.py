"""gradtx against recorded pytorch-optimizer 4.1.0 SophiaH / AdaHessian trajectories
(``tests/fidelity/fixtures/curvature_*.npz``, made by ``tests/fidelity/cases_curvature.py``).

The loss is separable, so one Rademacher probe gives the exact Hessian diagonal in both libraries and the probe
does not matter. pytorch-optimizer's SophiaH is the v1 parametrization ``lr · clamp(m / max(h, eps), ±p)``:
gradtx with learning rate ``lr · p``, ``gamma = p``, ``eps = p · eps`` and weight decay ``wd / p``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from tests.fidelity import cases_curvature, common

CASES = {**cases_curvature.SOPHIA_CASES, **cases_curvature.ADAHESSIAN_CASES}


def _fixture(case):
  path = common.FIXTURE_DIR / f"curvature_{case}.npz"
  assert path.exists(), f"{path} is missing: run `make fixtures` (tests/fidelity/README.md)"
  fixture = common.load_fixture(path)
  assert fixture.meta["oracle_kwargs"] == {**CASES[case], "hessian_distribution": "rademacher"} | {
      k: list(v) for k, v in CASES[case].items() if isinstance(v, tuple)
  }, "the case changed since its fixture was recorded: run `make fixtures`"
  assert fixture.meta["versions"]["pytorch-optimizer"] == "4.1.0"
  return fixture


def _replay(fixture, tx):
  keys = sorted(fixture.init)

  def loss(p):
    a = {k: jnp.asarray(fixture.data[f"a_{k}"], p[k].dtype) for k in keys}
    c = {k: jnp.asarray(fixture.data[f"c_{k}"], p[k].dtype) for k in keys}
    return sum(jnp.sum(a[k] * (p[k] - c[k]) ** 2 + 0.25 * (p[k] - c[k]) ** 4) for k in keys)

  @jax.jit
  def step(p, s):
    u, s = tx.update(jax.grad(loss)(p), s, p, loss_fn=loss)
    return optax.apply_updates(p, u), s

  params = {k: jnp.asarray(fixture.init[k]) for k in keys}
  state, out = tx.init(params), []
  for _ in range(cases_curvature.STEPS):
    params, state = step(params, state)
    out.append(params)
  return {k: np.stack([np.asarray(p[k]) for p in out]) for k in keys}


def _check(fixture, tx):
  got = _replay(fixture, tx)
  for k, want in fixture.trajectory.items():
    np.testing.assert_allclose(got[k], want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", sorted(cases_curvature.SOPHIA_CASES))
def test_sophia_h_matches_pytorch_optimizer(case):
  kw, fixture = CASES[case], _fixture(case)
  p = kw["p"]
  with jax.enable_x64(True):
    tx = gradtx.sophia_h(
        learning_rate=kw["lr"] * p,
        b1=kw["betas"][0],
        b2=kw["betas"][1],
        gamma=p,
        eps=p * kw["eps"],
        weight_decay=kw["weight_decay"] / p,
        update_interval=kw["update_period"],
        distribution="rademacher",
    )
    _check(fixture, tx)


@pytest.mark.parametrize("case", sorted(cases_curvature.ADAHESSIAN_CASES))
def test_adahessian_matches_pytorch_optimizer(case):
  kw, fixture = CASES[case], _fixture(case)
  with jax.enable_x64(True):
    tx = gradtx.adahessian(
        kw["lr"],
        b1=kw["betas"][0],
        b2=kw["betas"][1],
        eps=kw["eps"],
        hessian_power=kw["hessian_power"],
        weight_decay=kw["weight_decay"],
        spatial_average=None,
    )
    _check(fixture, tx)
