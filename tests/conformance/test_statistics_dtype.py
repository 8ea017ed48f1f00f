"""Statistics in at least float32 whatever the param dtype, unless the user opts out (DESIGN.md).

Construction-only (``jax.eval_shape`` of ``init``), so it runs for every registered optimizer in ``make test``;
what the rule buys (no overflow of float16 statistics on gradients of 1e3) is checked by running each
optimizer in ``test_contract.py::test_dtypes``.
"""

import inspect

import jax
import jax.numpy as jnp
import pytest

import gradtx
from tests.conformance import problems

# State fields that hold statistics (second moments, their maxima, sums of squares, Gram matrices).
STATISTICS = {"nu", "nu_max", "sum_of_squares", "norm_sq_ema", "dots"}


def _statistics(state):
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    fields = {k.name for k in path if isinstance(k, jax.tree_util.GetAttrKey)}
    if fields & STATISTICS and jnp.issubdtype(leaf.dtype, jnp.floating):
      yield jax.tree_util.keystr(path), leaf.dtype


@pytest.mark.parametrize("name", problems.all_names())
def test_float16_params_get_float32_statistics(name):
  state = jax.eval_shape(gradtx.OPTIMIZERS[name].build().init, problems.mixed_params(jnp.float16))
  low = [(path, str(dtype)) for path, dtype in _statistics(state) if jnp.finfo(dtype).bits < 32]
  assert not low, f"{name} keeps statistics of float16 params in {low}"


@pytest.mark.parametrize("name", [n for n in problems.all_names()
                                  if "nu_dtype" in inspect.signature(gradtx.OPTIMIZERS[n].factory).parameters])
def test_nu_dtype_opts_out(name):
  state = jax.eval_shape(gradtx.OPTIMIZERS[name].build(nu_dtype=jnp.bfloat16).init, problems.mixed_params())
  nus = [dtype for path, dtype in _statistics(state) if ".nu" in path]
  assert nus and all(dtype == jnp.bfloat16 for dtype in nus), f"{name} ignores nu_dtype: {nus}"
