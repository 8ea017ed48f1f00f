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
