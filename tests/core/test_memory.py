"""gradtx.state_nbytes / gradtx.memory_report count bytes from shapes and dtypes, allocating nothing."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx

PARAMS = {"kernel": jnp.zeros((8, 6)), "bias": jnp.zeros(6, jnp.bfloat16)}


class _OddState(NamedTuple):
  key: jax.Array
  packed: jax.Array
  count: int


def test_state_nbytes_counts_dtypes_keys_and_scalars():
  state = _OddState(key=jax.random.key(0), packed=jnp.zeros(7, jnp.int4), count=3)
  # threefry key data is 2 uint32; 7 int4 take 3.5 bytes, rounded up; a Python int is stored as int32.
  assert gradtx.state_nbytes(state) == 8 + 4 + 4
  assert gradtx.state_nbytes(jax.eval_shape(lambda: state)) == 16
  assert gradtx.state_nbytes({"a": None, "b": optax.MaskedNode()}) == 0


@pytest.mark.parametrize(
    "tx, expected",
    [
        (optax.sgd(0.1), 0),
        (optax.adamw(1e-3), 4 + 2 * (48 * 4 + 6 * 2)),
        (optax.adam(1e-3, mu_dtype=jnp.bfloat16), 4 + (48 * 2 + 6 * 2) + (48 * 4 + 6 * 2)),
        (gradtx.lion(1e-3), 4 + 48 * 4 + 6 * 2),
    ],
)
def test_memory_report_matches_the_real_state(tx, expected):
  report = gradtx.memory_report(tx, PARAMS)
  assert report.state_bytes == expected
  assert report.state_bytes == gradtx.state_nbytes(tx.init(PARAMS))
  assert report.state_bytes == sum(leaf.nbytes for leaf in report.leaves)
  assert report.num_params == 54
  assert report.param_bytes == 48 * 4 + 6 * 2
  assert report.bytes_per_param == pytest.approx(expected / 54)


def test_memory_report_on_abstract_params_allocates_nothing():
  huge = {"w": jax.ShapeDtypeStruct((1 << 20, 1 << 14), jnp.float32)}  # 2**34 params, 64 GiB
  report = gradtx.memory_report(optax.adamw(1e-3), huge)
  assert report.num_params == 1 << 34
  assert report.state_bytes == 4 + 2 * 4 * (1 << 34)
  assert report.bytes_per_param == pytest.approx(8.0)
  paths = {leaf.path: leaf for leaf in report.leaves}
  assert paths["[0].mu['w']"].shape == (1 << 20, 1 << 14)
  assert paths["[0].mu['w']"].dtype == "float32"


def test_memory_report_skips_none_and_masked_leaves():
  params = {"w": jnp.zeros((3, 4)), "frozen": None}
  tx = optax.masked(optax.adam(1e-3), {"w": True, "frozen": False})
  report = gradtx.memory_report(tx, params)
  assert report.num_params == 12
  assert report.state_bytes == gradtx.state_nbytes(tx.init(params)) == 4 + 2 * 12 * 4
  assert np.all([leaf.nbytes > 0 for leaf in report.leaves])
