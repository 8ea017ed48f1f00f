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
