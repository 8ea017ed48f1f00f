# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv with the system's python3 if missing and installs what is missing into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gradtx-installed

.PHONY: demo test test-slow test-all bench install fixtures

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v "Location" || true
	$(PY) -m pip install -q -e '.[test,demo,benchmarks]' 2>&1 | grep -v "Location" || true
	$(PY) -c "import gradtx, jax, optax, flax, orbax.checkpoint, tqdm, matplotlib, sklearn"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m gradtx.demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow"

# The multi-process tests, the registry-wide matrix of wrapper checks (nnx, orbax, meshes, float16/float64)
# for the optimizers that do not represent their family in `make test` (tests/conformance/problems.py), and
# the three longest notebooks (notebooks/conftest.py).
test-slow: $(STAMP)
	$(PY) -m pytest -q -n 2 -m slow

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2

bench: $(STAMP)
	$(PY) benchmarks/step_time.py
	$(PY) benchmarks/memory.py

# Regenerates tests/fidelity/fixtures/*.npz and tests/quantization/fixtures/; installs the PyTorch oracle
# into .venv-oracle only when run.
fixtures:
	$(PYTHON) tests/fidelity/make_fixtures.py
	$$($(PYTHON) -c "import sys; sys.path.insert(0, 'tests/fidelity'); import make_fixtures; print(make_fixtures.oracle_python())") tests/quantization/make_fixtures.py
