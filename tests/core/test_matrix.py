"""Matrix views of n-D leaves, Explicit-mesh layout helpers and metadata-box stripping (gradtx/core)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from gradtx.core import layout, tree
from gradtx.core.matrix import MatrixDims, MatrixView, leaf_dims, leaf_mask


@pytest.mark.parametrize(
    "shape,dims,matrix",
    [((4, 6), MatrixDims(0, 1), (4, 6)), ((4, 6), MatrixDims(1, 0), (6, 4)),
     ((5, 2, 3), MatrixDims(0, (1, 2)), (5, 6)), ((7, 4, 6), MatrixDims(1, 2), (7, 4, 6)),
     ((4, 2, 3, 5), MatrixDims((0, 1), -1), (3, 8, 5))],
)
def test_view_round_trip(shape, dims, matrix):
  x = jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape)
  view = MatrixView.of(shape, dims)
  m = view.to_matrix(x)
  assert m.shape == matrix == view.matrix_shape
  np.testing.assert_array_equal(view.from_matrix(m), x)


def test_view_of_pytorch_layout_is_the_transpose():
  x = jnp.arange(12.0).reshape(3, 4)
  np.testing.assert_array_equal(MatrixView.of((3, 4), MatrixDims(1, 0)).to_matrix(x), x.T)


@pytest.mark.parametrize("dims", [MatrixDims(0, 0), MatrixDims(0, 2), MatrixDims((), 1), MatrixDims(0, (1, 5))])
def test_bad_dims_name_the_argument(dims):
  with pytest.raises(ValueError, match="dimension_numbers"):
    MatrixView.of((3, 4), dims)


def test_optax_dimension_numbers_are_accepted():
  dn = optax.contrib.GaLoreDimensionNumbers(reduction_axis=1, output_axis=2)
  assert leaf_dims(dn, {"w": jnp.zeros((2, 3, 4)), "b": jnp.zeros(3)}) == [None, MatrixDims(1, 2)]


def test_leaf_dims_and_mask_resolution():
  params = {"a": jnp.zeros((2, 3)), "b": jnp.zeros(3), "c": {"d": jnp.zeros((2, 3, 4)), "e": None}}
  assert leaf_dims(None, params) == [MatrixDims(0, 1), None, None]
  assert leaf_dims({"a": None, "b": None, "c": MatrixDims(0, 2)}, params) == [None, None, MatrixDims(0, 2)]
  assert leaf_dims(lambda p: MatrixDims(0, 1), params) == [MatrixDims(0, 1), None, MatrixDims(0, 1)]
  assert leaf_mask({"a": True, "b": False, "c": False}, params) == [True, False, False]
  assert leaf_mask(None, params) == [True] * 3
  with pytest.raises(ValueError, match="dimension_numbers"):
    leaf_dims({"a": MatrixDims(0, 1)}, params)


def test_matrix_spec_keeps_major_axis_of_merged_groups():
  view = MatrixView.of((8, 2, 3), MatrixDims(0, (1, 2)))
  assert view.matrix_spec(P("x", "y", None)) == ("x", "y")
  assert view.matrix_spec(P(None, None, "y")) == (None, None)
  assert MatrixView.of((4, 6, 8), MatrixDims(1, 2)).matrix_spec(P("x")) == ("x", None, None)


def test_layout_helpers_follow_explicit_meshes_only():
  mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Explicit,))
  like = jax.device_put(jnp.zeros((16, 4)), NamedSharding(mesh, P("x", None)))
  assert layout.spec_of(like) == P("x", None) and layout.spec_of(jnp.zeros(3)) is None
  assert layout.zeros((16, 2), jnp.float32, like, ("x", None)).sharding.spec == P("x", None)
  with jax.set_mesh(mesh):
    out = jax.jit(lambda l: layout.constrain(jnp.ones((16, 2)), l, ("x", None)))(like)
  assert out.sharding.spec == P("x", None)
  auto = jax.device_put(jnp.zeros((16, 4)), NamedSharding(jax.make_mesh((8,), ("x",), axis_types=(AxisType.Auto,)),
                                                          P("x", None)))
  assert layout.spec_of(auto) is None and layout.zeros((2,), jnp.float32, auto, (None,)).shape == (2,)


def test_unboxed_map_strips_nnx_metadata():
  model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  out = tree.unboxed_map(lambda x: x.shape, params)
  assert jax.tree.leaves(out, is_leaf=lambda x: isinstance(x, tuple)) == [(3,), (2, 3)]
  assert not any(isinstance(x, nnx.Variable) for x in jax.tree.leaves(out, is_leaf=lambda v: isinstance(v, nnx.Variable)))
  assert tree.unboxed_map(lambda x: x + 1, {"a": jnp.zeros(2), "b": None})["b"] is None
