"""Regenerates ``tests/fidelity/fixtures/<case>.npz`` from the reference implementations.

Usage (from anywhere; ``make fixtures`` runs the first form)::

    python tests/fidelity/make_fixtures.py                      # every tests/fidelity/cases_*.py module
    python tests/fidelity/make_fixtures.py --only first_order   # just cases_first_order.py
    ORACLE_PYTHON=/path/to/python python tests/fidelity/make_fixtures.py

The oracle (PyTorch 2.13.0 CPU, pytorch-optimizer 4.1.0, NumPy) is never a dependency of gradtx or of its
tests: this script installs it only when run, into ``.venv-oracle`` at the repository root (or uses the
interpreter named by ``ORACLE_PYTHON``), then runs itself again inside it with ``--worker``, which imports
each ``cases_<name>.py`` module beside this file and calls its ``generate(out_dir)``. A case module exposes
``generate(out_dir) -> list of written paths`` and imports PyTorch only inside it. CI only reads the stored
fixtures.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
TORCH_VERSION = "2.13.0"
PYTORCH_OPTIMIZER_VERSION = "4.1.0"
REQUIREMENTS = (f"torch=={TORCH_VERSION}", f"pytorch-optimizer=={PYTORCH_OPTIMIZER_VERSION}", "numpy")


def case_modules(only: list[str] | None) -> list[str]:
  found = sorted(p.stem.removeprefix("cases_") for p in HERE.glob("cases_*.py"))
  unknown = sorted(set(only or ()) - set(found))
  if unknown:
    raise SystemExit(f"--only: unknown case module(s) {unknown}; available: {found}")
  return [name for name in found if not only or name in only]


def oracle_python() -> str:
  """The oracle interpreter: ``$ORACLE_PYTHON``, else ``.venv-oracle`` (created and filled on first use)."""
  if os.environ.get("ORACLE_PYTHON"):
    return os.environ["ORACLE_PYTHON"]
  venv = REPO / ".venv-oracle"
  python = venv / "bin" / "python"
  if not python.exists():
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
  probe = (f"import torch, importlib.metadata as m; assert torch.__version__.split('+')[0] == '{TORCH_VERSION}'; "
           f"assert m.version('pytorch-optimizer') == '{PYTORCH_OPTIMIZER_VERSION}'")
  if subprocess.run([str(python), "-c", probe], capture_output=True).returncode != 0:
    with tempfile.TemporaryDirectory() as tmp:
      constraints = pathlib.Path(tmp) / "constraints.txt"
      # The constraint keeps every transitive resolution (pytorch-optimizer requires torch) on the pin.
      constraints.write_text(f"torch=={TORCH_VERSION}\n")
      subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(constraints), *REQUIREMENTS],
                     check=True)
  return str(python)


def check_oracle() -> None:
  import importlib.metadata

  import torch

  got = (torch.__version__.split("+")[0], importlib.metadata.version("pytorch-optimizer"))
  if got != (TORCH_VERSION, PYTORCH_OPTIMIZER_VERSION):
    raise SystemExit(f"oracle must be torch {TORCH_VERSION} + pytorch-optimizer {PYTORCH_OPTIMIZER_VERSION}, "
                     f"got {got} in {sys.executable}")
  torch.set_num_threads(1)
  torch.use_deterministic_algorithms(True)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--only", nargs="+", metavar="NAME", help="case modules to run (cases_NAME.py)")
  parser.add_argument("--out", default=str(HERE / "fixtures"), help="output folder (default: %(default)s)")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  names = case_modules(args.only)
  if not args.worker:
    cmd = [oracle_python(), str(pathlib.Path(__file__).resolve()), "--worker", "--out", args.out, "--only", *names]
    raise SystemExit(subprocess.run(cmd).returncode)
  check_oracle()
  sys.path.insert(0, str(REPO))
  for name in names:
    module = importlib.import_module(f"tests.fidelity.cases_{name}")
    for path in module.generate(pathlib.Path(args.out)):
      print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
  main()
