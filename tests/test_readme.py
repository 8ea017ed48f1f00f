"""The README stays true: its optimizer table is the registry's, its Python examples run, and it names
exactly the two set-up commands."""

import pathlib
import re

import gradtx
from gradtx import registry

README = (pathlib.Path(__file__).parents[1] / "README.md").read_text()


def test_table_matches_registry():
  assert registry.markdown_table() in README, "regenerate the table with `python -m gradtx.registry`"


def test_two_setup_commands():
  setup = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
  commands = re.findall(r"^(make \w+)$", setup, flags=re.M)
  assert commands == ["make demo", "make test"]


def test_python_blocks_run():
  blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
  assert blocks, "the README has a quickstart"
  for block in blocks:
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102
  assert gradtx.OPTIMIZERS
