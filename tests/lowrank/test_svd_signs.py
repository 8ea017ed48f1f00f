"""Canonical SVD signs: the rule itself, and trajectories that do not depend on the signs an SVD returns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx.lowrank import svd
from gradtx.lowrank.svd import canonical_signs
from tests.lowrank import _reference as ref
from tests.lowrank._helpers import gradients

STACKED = gradtx.MatrixDims(reduction_axes=1, output_axes=2)  # (L, m, n): axis 0 is a batch of layers


def test_sign_rule_ties_and_zero_columns():
  v = jnp.array([
      [0.5, -0.5, 0.3, 0.0],
      [-0.5, 0.5, -0.6, 0.0],
      [0.1, -0.4955, 0.5, 0.0],
  ])  # columns: exact tie; tie within 1% (first wins); largest decides; all zero
  got = np.asarray(canonical_signs(v))
  x = np.asarray(v)
  np.testing.assert_array_equal(got[:, 0], x[:, 0])  # exact tie: the first entry (+0.5) decides
  np.testing.assert_array_equal(got[:, 1], -x[:, 1])  # |-0.4955| is within 1% of 0.5: the first (-0.5) decides
  np.testing.assert_array_equal(got[:, 2], -x[:, 2])  # 0.5 < 0.99 * 0.6: the largest (-0.6) decides
  np.testing.assert_array_equal(got[:, 3], x[:, 3])
  # The rule reads magnitudes only and negation is exact, so it is bitwise independent of the input signs.
  np.testing.assert_array_equal(canonical_signs(-v), got)
  np.testing.assert_array_equal(np.asarray(ref.canonical_signs(np.asarray(v, np.float64))), got)


def test_sign_rule_is_batched_jittable_and_independent_of_input_signs():
  rng = np.random.default_rng(0)
  v = jnp.asarray(rng.normal(size=(3, 2, 10, 4)), jnp.float32)
  flips = jnp.asarray(rng.choice([-1.0, 1.0], size=(3, 2, 1, 4)), jnp.float32)
  got = jax.jit(canonical_signs)(v * flips)
  # Only multiplications by ±1 and a selection: exact, so the jitted batch of flipped inputs, the eager
  # call and the per-vector NumPy transcription agree bitwise.
  np.testing.assert_array_equal(got, canonical_signs(v))
  np.testing.assert_array_equal(got, ref.canonical_signs(np.asarray(v, np.float64)))


def _sign_switches(monkeypatch):
  """Patches gradtx's SVD with two runtime switches and returns ``run(tx, params, grads)(flip, canonical)``.

  ``flip``: the SVD's singular pairs get data-dependent sign flips (``u_k -> -u_k``, ``vh_k -> -vh_k``: still
  an SVD of the same matrix), different at each refresh because they depend on the gradient. ``canonical``:
  whether :func:`canonical_signs` is applied. The switches are traced arguments, so one compiled program
  (``len(grads)`` steps in a scan) serves every combination and the runs differ only in these inputs.
  """
  switches = {}
  original_svd, original_canonical = jnp.linalg.svd, svd.canonical_signs

  def flipping_svd(a, *args, **kwargs):
    u, s, vh = original_svd(a, *args, **kwargs)
    k = jnp.arange(s.shape[-1], dtype=jnp.float32)
    phase = jnp.sum(a, axis=(-2, -1))[..., None] * 1e3 + 0.37 * k
    signs = jnp.where(switches["flip"] & (jnp.mod(phase, 1.0) < 0.5), -1.0, 1.0).astype(u.dtype)
    return u * signs[..., None, :], s, vh * signs[..., :, None]

  monkeypatch.setattr(jnp.linalg, "svd", flipping_svd)
  monkeypatch.setattr(svd, "canonical_signs", lambda v: jnp.where(switches["canonical"], original_canonical(v), v))

  def run(tx, params, grads):
    def body(carry, g):
      p, s = carry
      u, s = tx.update(g, s, p)
      return (jax.tree.map(jnp.add, p, u), s), (u, s)

    def trajectory(flip, canonical):
      switches.update(flip=flip, canonical=canonical)
      return jax.lax.scan(body, (params, tx.init(params)), grads)[1]

    compiled = jax.jit(trajectory)
    return lambda flip, canonical: compiled(jnp.asarray(flip), jnp.asarray(canonical))

  return run


def _problem(steps=20):
  """A tall (8, 6) matrix (right projector: columns of U) and 3 stacked wide (6, 8) layers (left: rows of Vh)."""
  w = np.stack(gradients((8, 6), steps=steps, seed=1))
  stack = np.stack([np.stack(gradients((6, 8), steps=steps, seed=s)) for s in (2, 3, 4)], axis=1)
  grads = {"w": jnp.asarray(w, jnp.float32), "stack": jnp.asarray(stack, jnp.float32)}
  params = jax.tree.map(lambda g: jnp.zeros(g.shape[1:], jnp.float32), grads)
  return params, grads


_DIMS = {"w": gradtx.MatrixDims(0, 1), "stack": STACKED}
_CASES = {
    # refresh every 3 steps: 7 SVDs per matrix over 20 steps, the moments carried across each
    "galore": lambda: gradtx.galore(learning_rate=0.1, rank=2, update_every=3, dimension_numbers=_DIMS),
    # INT4 projector codes and the adaptive gap (signed cosines of successive top vectors) from refresh 1 on
    "q_galore": lambda: gradtx.q_galore(learning_rate=0.1, rank=2, update_every=2, block_size=4, stagger=False,
                                        adaptive_refresh=gradtx.lowrank.AdaptiveRefresh(queue_size=2),
                                        dimension_numbers=_DIMS),
}


@pytest.mark.parametrize("name", sorted(_CASES))
def test_trajectory_does_not_depend_on_the_svds_signs(name, monkeypatch):
  params, grads = _problem()
  run = _sign_switches(monkeypatch)(_CASES[name](), params, grads)
  plain, flipped = run(False, True), run(True, True)
  # Exact: the flipped SVD's vectors are the plain ones times ±1 (exact), and the canonical rule picks its
  # pivot from magnitudes only, so both runs see bitwise the same basis in the same compiled program.
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(flipped)):
    np.testing.assert_array_equal(a, b)
  for leaf in plain[1][0].leaves.values():  # the run exercises what signs could change
    assert int(leaf.refresh.refreshes[-1]) >= 4
    if name == "q_galore":
      assert int(leaf.refresh.gap[-1]) > 2
  # Without the canonical rule the same flips change the trajectory: the test can see a sign dependence.
  raw = run(True, False)
  for key in grads:
    assert float(jnp.max(jnp.abs(raw[0][key] - plain[0][key]))) > 1e-3, key
