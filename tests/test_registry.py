import pytest

import gradtx
from gradtx import registry


def test_names_are_flat_exports_and_unique():
  for name, spec in gradtx.OPTIMIZERS.items():
    assert spec.name == name
    assert getattr(gradtx, name) is spec.factory
    assert name in gradtx.__all__


def test_register_rejects_duplicates_and_missing_lr():
  spec = gradtx.OPTIMIZERS["lion"]
  with pytest.raises(ValueError, match="name"):
    registry.register(registry.OptimizerSpec(**{**spec.__dict__, "factory": lambda **k: None}))
  with pytest.raises(ValueError, match="learning_rate"):
    registry.register(registry.OptimizerSpec(**{**spec.__dict__, "name": "other", "test_kwargs": {}}))


def test_get_lists_names():
  assert registry.get("lion") is gradtx.OPTIMIZERS["lion"]
  with pytest.raises(ValueError, match="lion"):
    registry.get("nope")


def test_all_lists_every_reexport():
  import pathlib
  import re

  src = pathlib.Path(gradtx.__file__).read_text()
  reexported = set(re.findall(r" as (\w+)$", src, flags=re.M))
  assert reexported == set(gradtx.__all__)
  assert all(hasattr(gradtx, n) for n in gradtx.__all__)


def test_rank_arg_names_a_factory_keyword():
  """Tools (demo, benchmarks, notebooks) scale exactly these ranks with the model; a method's own rank stays."""
  import inspect

  with_rank = {n for n, s in gradtx.OPTIMIZERS.items() if s.rank_arg}
  for name in with_rank:
    spec = gradtx.OPTIMIZERS[name]
    assert spec.rank_arg in inspect.signature(spec.factory).parameters, name
  assert {"galore", "galore_dct", "q_galore", "apollo"} <= with_rank
  assert "apollo_mini" not in with_rank  # rank 1 is APOLLO-Mini's definition
