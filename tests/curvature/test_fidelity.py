"""gradtx against recorded pytorch-optimizer 4.1.0 SophiaH / AdaHessian trajectories (make_fixtures.py).

The loss is separable, so one Rademacher probe gives the exact Hessian diagonal in both libraries and the probe
does not matter. pytorch-optimizer's SophiaH is the v1 parametrization ``lr · clamp(m / max(h, eps), ±p)``:
gradtx with learning rate ``lr · p``, ``gamma = p``, ``eps = p · eps`` and weight decay ``wd / p``.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from tests.curvature import make_fixtures

FIXTURES = np.load(pathlib.Path(__file__).parent / "fixtures" / "pytorch_optimizer_curvature.npz")
KEYS = ("b", "w")


def _loss(p):
  a = {k: jnp.asarray(FIXTURES[f"a_{k}"], p[k].dtype) for k in KEYS}
  c = {k: jnp.asarray(FIXTURES[f"c_{k}"], p[k].dtype) for k in KEYS}
  return sum(jnp.sum(a[k] * (p[k] - c[k]) ** 2 + 0.25 * (p[k] - c[k]) ** 4) for k in KEYS)


def _trajectory(tx):
  params = {k: jnp.asarray(FIXTURES[f"x0_{k}"]) for k in KEYS}

  @jax.jit
  def step(p, s):
    u, s = tx.update(jax.grad(_loss)(p), s, p, loss_fn=_loss)
    return optax.apply_updates(p, u), s

  state, out = tx.init(params), []
  for _ in range(make_fixtures.STEPS):
    params, state = step(params, state)
    out.append(params)
  return {k: np.stack([np.asarray(p[k]) for p in out]) for k in KEYS}


def test_fixture_version():
  assert str(FIXTURES["version"]) == "4.1.0"


@pytest.mark.parametrize("case", sorted(make_fixtures.SOPHIA_CASES))
def test_sophia_h_matches_pytorch_optimizer(case):
  kw = make_fixtures.SOPHIA_CASES[case]
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
    got = _trajectory(tx)
  for k in KEYS:
    np.testing.assert_allclose(got[k], FIXTURES[f"{case}_{k}"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", sorted(make_fixtures.ADAHESSIAN_CASES))
def test_adahessian_matches_pytorch_optimizer(case):
  kw = make_fixtures.ADAHESSIAN_CASES[case]
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
    got = _trajectory(tx)
  for k in KEYS:
    np.testing.assert_allclose(got[k], FIXTURES[f"{case}_{k}"], rtol=1e-6, atol=1e-7)
