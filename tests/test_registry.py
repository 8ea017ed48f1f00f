"""The registry table: names, exports, ranks and citations.

Citations are checked offline only for their form; that every cited commit exists in its repository (and
holds the cited files) was checked against snapshots of the repositories, recorded in
``tests/fidelity/README.md`` ("Citations").
"""

import pathlib
import re

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


#: What a reference starts with: a repository at a commit, or a package at a version.
_SOURCE = r"(?:[A-Za-z0-9][\w.-]*/[\w.-]+@[0-9a-f]{7,40}|[A-Za-z0-9][\w.-]*==[0-9][\w.+-]*)"
#: Any ``something@...`` token in a citation: must be ``owner/repo@<hex commit>``.
_AT = re.compile(r"(\S*)@(\S*)")
_REPO_AT_COMMIT = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+@[0-9a-f]{7,40}")


def _citation_problems(reference: str) -> list[str]:
  problems = [] if re.match(_SOURCE + r"(\s|$)", reference) else ["does not start with owner/repo@<commit> or pkg==version"]
  for before, after in _AT.findall(reference):
    token = f"{before}@{re.match(r'[0-9a-zA-Z]*', after).group()}"
    if not _REPO_AT_COMMIT.fullmatch(token):
      problems.append(f"{token!r} is not owner/repo@<7-40 hex digits>")
  return problems


@pytest.mark.parametrize(
    "reference",
    ["jiaweizzhao/GaLore galore_torch/adamw.py", "bitsandbytes@95f9af30 optim/adamw.py", "owner/repo@main x.py",
     "owner/repo@95f9af x.py", "paper Algorithm 2; optax==0.2.8 lamb", "FRUGAL code (owner/repo) x.py",
     "owner/repo@95f9af30 x.py; other@1234567 y.py"],
)
def test_citation_check_rejects_malformed(reference):
  assert _citation_problems(reference)


def test_every_reference_names_a_commit_or_a_version():
  """``owner/repo@<7-40 hex>`` (or ``package==version``) first, and every ``@`` in it a commit."""
  bad = {n: _citation_problems(s.reference) for n, s in gradtx.OPTIMIZERS.items() if _citation_problems(s.reference)}
  assert not bad, bad
  assert _citation_problems("optax==0.2.8 lamb; owner/repo@95f9af30 x.py") == []


def test_module_docstring_commits_name_their_repository():
  """A ``name@<hex>`` in the package's sources is ``owner/repo@<hex>`` (GitHub needs the owner to resolve it)."""
  root = pathlib.Path(gradtx.__file__).parent
  bad = []
  for path in sorted(root.rglob("*.py")):
    for match in re.finditer(r"(?<![\w./-])([\w.-]+(?:/[\w.-]+)?)@[0-9a-f]{7,40}\b", path.read_text()):
      if "/" not in match.group(1):
        bad.append(f"{path.relative_to(root)}: {match.group()}")
  assert not bad, bad
