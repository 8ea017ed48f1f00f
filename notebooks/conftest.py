"""Notebooks run as tests (``pytest --nbmake``, enabled in pyproject.toml).

The paired jupytext ``.py`` files are the reviewable copies of the notebooks, not test modules: importing
them (``--doctest-modules``) would run the notebooks, so they are not collected. The kernels nbmake starts
inherit this environment, so the repository root goes on their ``PYTHONPATH`` (a checkout that has not
``pip install``-ed gradtx still imports its own copy), and they share the test suite's persistent
compilation cache (a second ``make test`` compiles less).
"""

import os

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_ROOT, ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

collect_ignore_glob = ["*.py"]

#: Notebooks that take 45-60 s of CPU each on 2 cores: ``make test-slow`` executes them (and ``make test``
#: the others), which keeps ``make test`` within its 15-minute budget; ``tests/test_notebooks.py`` still checks
#: every notebook's pairing, stripped outputs and install cell in ``make test``.
SLOW_NOTEBOOKS = frozenset({"memory_efficient_training.ipynb", "curvature.ipynb", "scale_out.ipynb"})


def pytest_collection_modifyitems(config, items):
  del config
  import pytest  # noqa: PLC0415  (pytest is only there when the suite runs)

  for item in items:
    if item.path.suffix == ".ipynb" and item.path.name in SLOW_NOTEBOOKS:
      item.add_marker(pytest.mark.slow)
