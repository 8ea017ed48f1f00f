"""Real processes on 127.0.0.1 (jax.distributed), a global mesh, an orbax restart after a SIGKILL.

Each test launches fresh interpreters through benchmarks/multihost.py, with their own CPU device count
(not the 8-device XLA_FLAGS of conftest.py) and under a timeout, so a dead process cannot hang the suite.
"""

import argparse
import os
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))

import multihost  # noqa: E402

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


def _args(tmp_path, **overrides) -> argparse.Namespace:
  args = multihost.parse(["--report", ""])
  args.cache_dir = str(tmp_path / "jax_cache")  # the restarted run reuses the first run's compilations
  args.timeout = 180.0
  for key, value in overrides.items():
    setattr(args, key, value)
  return args


def _dir(tmp_path, name):
  path = tmp_path / name
  path.mkdir()
  return str(path)


def test_two_processes_train_like_one(tmp_path):
  args = _args(tmp_path, optimizers=("lion", "lamb", "mezo_adam"), steps=6)
  single = multihost.run_single(args, _dir(tmp_path, "single"))
  multi = multihost.run_multi(args, _dir(tmp_path, "multi"))
  assert {k.split("[")[0] for k in multi} == {"lion", "lamb", "mezo_adam"}
  assert multihost.max_difference(single, multi) < 1e-5
  # the optimizers trained (differently) from the shared initialization
  assert np.max(np.abs(multi["lion['l1']['kernel']"] - multi["lamb['l1']['kernel']"])) > 1e-3


def test_killed_process_restarts_from_checkpoint_and_ends_exactly(tmp_path):
  args = _args(tmp_path, optimizers=("adabelief",), steps=8, ckpt_every=3, kill_after=7)
  uninterrupted = multihost.run_multi(args, _dir(tmp_path, "multi"))
  restarted, from_step = multihost.run_fault(args, _dir(tmp_path, "fault"))
  assert from_step == 6  # the crash after step 7 lost step 7; the restart redid it from the step-6 checkpoint
  assert multihost.max_difference(uninterrupted, restarted) == 0.0
  assert os.path.isdir(tmp_path / "fault" / "ckpt" / "adabelief" / "6")
