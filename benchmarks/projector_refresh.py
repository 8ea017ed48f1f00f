"""Cost of one projector refresh: SVD (GaLore) vs DCT column selection vs seeded random (APOLLO).

``python benchmarks/projector_refresh.py`` times, for square gradients of size 1024 and 4096 and ranks 128
and 256, one jitted refresh of each projector (the work done every ``update_every`` steps: an SVD, a ``G Q``
product plus a top-k, or a Gaussian draw), plus the INT4 quantization that Q-GaLore adds to the SVD. Results
(median of ``--repeats`` runs after one warm-up) go to ``benchmarks/results/projector_refresh.md``. The SVD
does not depend on the rank; it is timed once per size. ``--sizes`` / ``--max-seconds`` bound the run on a
slow machine: a measurement whose warm-up exceeds the limit is reported as skipped.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from gradtx.core.matrix import MatrixDims, MatrixView
from gradtx.lowrank import DCTProjector, RandomProjector, SVDProjector, quantized
from gradtx.lowrank.projector import Geometry

PROJECTORS = {"svd": SVDProjector(), "svd+int4": quantized("svd"), "dct": DCTProjector(),
              "random": RandomProjector()}


def time_refresh(projector, d, rank, repeats, max_seconds):
  geo = Geometry.of(MatrixView.of((d, d), MatrixDims(0, 1)), "official", rank)
  g = jax.random.normal(jax.random.PRNGKey(0), (d, d), jnp.float32)
  state = projector.init(geo, jnp.float32, g, (None, None))
  fn = jax.jit(lambda g, s, k: projector.refresh_with_basis(g, s, geo, k))
  key = jax.random.PRNGKey(1)
  start = time.perf_counter()
  jax.block_until_ready(fn(g, state, key))  # compile + first run
  first = time.perf_counter() - start
  if first > max_seconds:
    return None, first
  times = []
  for i in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(g, state, jax.random.fold_in(key, i)))
    times.append(time.perf_counter() - start)
  return statistics.median(times), first


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
  parser.add_argument("--ranks", type=int, nargs="+", default=[128, 256])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--max-seconds", type=float, default=300.0)
  parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" / "projector_refresh.md"))
  args = parser.parse_args()

  rows = []
  for d in args.sizes:
    svd_cache = None
    for rank in args.ranks:
      row = {"d": d, "rank": rank}
      for name, projector in PROJECTORS.items():
        if name == "svd" and svd_cache is not None:
          row[name] = svd_cache
          continue
        median, first = time_refresh(projector, d, rank, args.repeats, args.max_seconds)
        row[name] = median if median is not None else f"skipped (first run {first:.0f} s)"
        if name == "svd":
          svd_cache = row[name]
        print(f"d={d} r={rank} {name}: {row[name]}", flush=True)
      rows.append(row)

  device = jax.devices()[0]
  lines = [
      "# Projector refresh cost",
      "",
      f"One jitted refresh, median of {args.repeats} runs after a warm-up, float32, square gradient d x d.",
      f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, JAX {jax.__version__} "
      f"on {device.platform} ({device.device_kind}). CPU timings on a shared machine are noisy: compare ratios.",
      "",
      "| d | r | svd (s) | svd+int4 (s) | dct (s) | random (s) | svd / dct | svd / random |",
      "|---|---|---|---|---|---|---|---|",
  ]
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
  ratio = lambda a, b: f"{a / b:.1f}x" if isinstance(a, float) and isinstance(b, float) else "–"
  for r in rows:
    lines.append(f"| {r['d']} | {r['rank']} | {fmt(r['svd'])} | {fmt(r['svd+int4'])} | {fmt(r['dct'])} | "
                 f"{fmt(r['random'])} | {ratio(r['svd'], r['dct'])} | {ratio(r['svd'], r['random'])} |")
  lines += ["", "The SVD's cost does not depend on r (one reduced SVD per refresh); DCT's is one d x d x d product "
            "plus a top-k; the random projector's is a d x r Gaussian draw, and APOLLO regenerates it at every "
            "step instead of storing it (the draw is also what each step pays)."]
  pathlib.Path(args.out).write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
