"""benchmarks/compressed_means.py runs on tiny inputs and reports bytes and gaps for every method."""

import importlib.util
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "compressed_means.py"


@pytest.mark.slow  # runs a benchmark script end to end (10-20 s of CPU); make test-slow
def test_compressed_means_benchmark_report(tmp_path):
  spec = importlib.util.spec_from_file_location("compressed_means_benchmark", _PATH)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  out = tmp_path / "compression.md"
  argv = ["--workers", "4", "--rows", "30", "--dim", "100", "--steps", "100", "--ratio", "0.05", "--lrs", "0.5",
          "--out", str(out)]
  assert bench.main(argv) == 0
  text = out.read_text()
  assert "| top-k 0.05, EF21 |" in text and "| scaled sign, EF14 |" in text
  assert "| dense mean (no compression) | 0.5 |" in text
  # 5 of 100 coordinates: value + index = 40 bytes; dense: 400 bytes
  assert "| 40 |" in text and "| 400 |" in text
  assert "| LLaMA-7B |" in text
