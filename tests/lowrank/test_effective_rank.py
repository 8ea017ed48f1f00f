"""A rank larger than a matrix allows is clipped to min(rows, cols), and the state records what each leaf uses."""

import jax
import jax.numpy as jnp
import optax

import gradtx
from gradtx import MatrixDims
from gradtx.lowrank import effective_ranks

PARAMS = {
    "large": jnp.ones((8, 6)),  # allows rank 6
    "small": jnp.ones((3, 2)),  # allows rank 2
    "stacked": jnp.ones((4, 5, 3)),  # four (5, 3) layers: rank 3 each
    "bias": jnp.ones(6),  # not a matrix: not projected, not listed
}
DIMS = {"large": MatrixDims(0, 1), "small": MatrixDims(0, 1), "stacked": MatrixDims(1, 2), "bias": None}


def test_clipped_ranks_are_recorded_and_kept_through_updates_and_refreshes():
  tx = gradtx.project_low_rank(optax.sgd(1e-2), rank=4, update_every=1, dimension_numbers=DIMS)
  state = tx.init(PARAMS)
  expected = {".leaves['large']": 4, ".leaves['small']": 2, ".leaves['stacked']": 3}
  assert effective_ranks(state) == expected
  _, state = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, PARAMS), state, PARAMS)  # a refresh step
  assert effective_ranks(state) == expected
  assert state.leaves["small"].rank.dtype == jnp.int32


def test_found_inside_registered_optimizers_and_inject_hyperparams():
  # galore is chain(project_low_rank(...), decay, learning rate); inject_hyperparams nests it once more.
  tx = optax.inject_hyperparams(gradtx.galore, static_args=gradtx.OPTIMIZERS["galore"].static_args)(
      learning_rate=0.1, rank=100, dimension_numbers=DIMS
  )
  ranks = effective_ranks(tx.init(PARAMS))
  assert {path.rsplit(".", 1)[-1]: r for path, r in ranks.items()} == {
      "leaves['large']": 6, "leaves['small']": 2, "leaves['stacked']": 3}


def test_a_state_without_low_rank_leaves_lists_nothing():
  assert effective_ranks(optax.adam(1e-2).init(PARAMS)) == {}
