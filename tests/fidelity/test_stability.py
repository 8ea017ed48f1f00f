"""gradtx's SPAM and Stable-SPAM replay the recorded reference trajectories (``cases_stability.py``) in float32.

Each fixture holds the initial params, the gradient of every step and the reference params after every
step; gradtx must match them for ``config['steps']`` steps (rtol 1e-5). Fixtures marked ``differs_after``
record a documented deviation (README_stability.md): the test also checks that the deviation is really
there, so a change on either side is noticed.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
CASES = sorted(p.stem for p in FIXTURES.glob("stability_*.npz"))


def _load(name):
  data = np.load(FIXTURES / f"{name}.npz")
  config = json.loads(str(data["config"]))
  keys = sorted(k[len("params0_"):] for k in data.files if k.startswith("params0_"))
  params0 = {k: data[f"params0_{k}"] for k in keys}
  grads = {k: data[f"grads_{k}"] for k in keys}
  traj = {k: data[f"traj_{k}"] for k in keys}
  clips = data["clip_counts"] if "clip_counts" in data.files else None
  return config, params0, grads, traj, clips


def _replay(config, params0, grads):
  tx = getattr(gradtx, config["factory"])(**config["kwargs"])
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params0)
  state = tx.init(params)
  steps = next(iter(grads.values())).shape[0]

  @jax.jit
  def step(params, state, g):
    updates, state = tx.update(g, state, params)
    return optax.apply_updates(params, updates), state

  out = []
  for t in range(steps):
    params, state = step(params, state, {k: jnp.asarray(v[t], jnp.float32) for k, v in grads.items()})
    out.append(jax.tree.map(np.asarray, params))
  return {k: np.stack([p[k] for p in out]) for k in params0}


def test_fixtures_present():
  assert len(CASES) == 6, f"regenerate with the oracle: python tests/fidelity/cases_stability.py ({CASES})"


@pytest.mark.parametrize("name", CASES)
def test_replay(name):
  config, params0, grads, traj, clips = _load(name)
  if clips is not None:
    assert clips.sum() > 0, "the case must exercise the clipping"
  ours = _replay(config, params0, grads)
  n = config["steps"]
  for k in traj:
    np.testing.assert_allclose(ours[k][:n], traj[k][:n], rtol=1e-5, atol=1e-6, err_msg=f"{name}: {k}")
  if config.get("differs_after"):
    gap = max(np.abs(ours[k][n:] - traj[k][n:]).max() for k in traj)
    assert gap > 1e-3, f"{name}: the documented deviation after step {n} has disappeared ({gap:.2e})"
