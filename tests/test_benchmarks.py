"""The benchmark scripts run on whatever the registry holds (tiny inputs; the real runs live in benchmarks/)."""

import pathlib
import subprocess
import sys

import jax.numpy as jnp
import optax
import pytest

import gradtx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

import llama_shapes  # noqa: E402
import memory as memory_bench  # noqa: E402
import step_time  # noqa: E402


def test_llama_shapes_match_the_published_sizes():
  counts = {name: llama_shapes.num_params(llama_shapes.llama_params(*cfg[:3]))
            for name, cfg in llama_shapes.LLAMA_CONFIGS.items()}
  assert round(counts["60M"] / 1e6) == 58 and round(counts["130M"] / 1e6) == 134
  assert round(counts["350M"] / 1e6) == 368 and round(counts["1B"] / 1e9, 2) == 1.34
  assert round(counts["7B"] / 1e9, 2) == 6.74  # LLaMA-7B


@pytest.mark.slow  # runs a benchmark script end to end (10-20 s of CPU); make test-slow
def test_memory_benchmark_covers_every_registered_optimizer(tmp_path):
  out = tmp_path / "memory.md"
  assert memory_bench.main(["--sizes", "60M,7B", "--out", str(out)]) == 0
  text = out.read_text()
  assert "| optax.adamw (fp32) | 2 (mu, nu) | 8.000 B (1.000x) | 8.000 B (1.000x) |" in text
  for name in gradtx.OPTIMIZERS:
    assert f"| {name}" in text
  # GaLore (rank 1024), APOLLO (256) and APOLLO-Mini at LLaMA-7B: measured within bookkeeping of the formulas.
  rows = [line.split(" | ") for line in text.splitlines()
          if line.startswith(("| galore | 7B |", "| apollo | 7B |", "| apollo_mini | 7B |"))]
  assert {(r[0], r[2]) for r in rows} >= {("| galore", "1024"), ("| apollo", "256"), ("| apollo_mini", "1")}
  for row in rows:
    assert 0 <= int(row[6].strip(" |B+").replace(",", "")) < 100_000, row


@pytest.mark.slow  # runs a benchmark script end to end (10-20 s of CPU); make test-slow
def test_step_time_measures_side_by_side_and_reports_ratios():
  params = {"kernel": jnp.ones((64, 32)), "scale": jnp.ones(32)}
  cands, skipped = step_time.build_candidates(params, [])
  assert cands[0].name == "optax.adamw" and cands[-1].kind == "roofline"
  measured = {c.name for c in cands}
  for name, spec in gradtx.OPTIMIZERS.items():
    benchable = (spec.elementwise or spec.optax_counterpart) and set(spec.required_extra_args) <= {"value"}
    assert (name in measured) == bool(benchable), name
  assert step_time.measure(cands, {"kernel": jnp.ones((64, 32)), "scale": jnp.ones(32)}, reps=2, inner=1) == []
  assert all(len(c.times) == 2 for c in cands)
  table = step_time.format_table(cands)
  assert "| optax.adamw |" in table and "| donated x + 1 (roofline) |" in table and "100% |" in table
  adamw = cands[0]
  assert adamw.nbytes == 3 * (64 * 32 + 32) * 4 + 2 * gradtx.state_nbytes(optax.adamw(1e-3).init(params))
  if "lion" in measured:
    assert "x optax.lion" in table


def test_no_benchmark_script_shadows_a_module():
  """``python benchmarks/x.py`` puts benchmarks/ first on sys.path: a script named like a module that the
  dependencies import, even optionally (``compression``, Python 3.14's, is tried by fsspec under jax), would
  be executed in its place and break every benchmark. Import the dependencies from there."""
  here = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
  assert not {p.stem for p in here.glob("*.py")} & set(sys.stdlib_module_names)
  code = "import jax, jax.numpy, optax, flax.nnx, orbax.checkpoint, matplotlib.pyplot, tqdm, sklearn.datasets"
  done = subprocess.run([sys.executable, "-c", code], cwd=here, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
