"""An orbax round trip of the state resumes bit for bit (DESIGN.md item 9)."""

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import gradtx
from tests.conformance import problems


@pytest.mark.parametrize("name", problems.sampled_names())
def test_orbax_round_trip_resumes_exactly(name, tmp_path):
  spec = gradtx.OPTIMIZERS[name]
  tx, loss = spec.build(), problems.mixed_loss

  @jax.jit
  def step(p, s):
    u, s = tx.update(jax.grad(loss)(p), s, p, **problems.extra_args(spec, loss, p))
    return optax.apply_updates(p, u), s

  params = problems.mixed_params()
  state = tx.init(params)
  for _ in range(3):
    params, state = step(params, state)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
    ckpt.wait_until_finished()
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": tx.init(params)})
    restored = ckpt.restore(tmp_path / "ckpt", target)
  r_params, r_state = restored["params"], restored["opt_state"]
  assert jax.tree.structure(r_state) == jax.tree.structure(state)
  for _ in range(3):
    params, state = step(params, state)
    r_params, r_state = step(r_params, r_state)
  for a, b in zip(jax.tree.leaves((params, state)), jax.tree.leaves((r_params, r_state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
