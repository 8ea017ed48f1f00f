"""Cost of one projector refresh: SVD (GaLore) vs DCT column selection vs seeded random (APOLLO).

``python benchmarks/projector_refresh.py`` times, for square gradients of size 1024 and 4096 and ranks 128
and 256, one jitted refresh of each projector (the work done every ``update_every`` steps: an SVD, a ``G Q``
product plus a top-k, or a Gaussian draw), plus the INT4 encoding that Q-GaLore adds to the SVD. Results
(median of ``--repeats`` compiled runs) go to ``benchmarks/results/projector_refresh.md``. The SVD does not
depend on the rank; it is timed once per size. ``--sizes`` / ``--max-seconds`` bound the run on a slow
machine: once one run takes longer than ``--max-seconds`` its series stops and the table says how many ran.
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

PROJECTORS = {"svd": SVDProjector(), "dct": DCTProjector(), "random": RandomProjector()}


def _geometry(d, rank):
  return Geometry.of(MatrixView.of((d, d), MatrixDims(0, 1)), "official", rank)


def _time(fn, args, repeats, max_seconds):
  """Median seconds of ``repeats`` runs of a compiled ``fn`` (fewer if one run exceeds ``max_seconds``)."""
  compiled = jax.jit(fn).lower(*args).compile()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
    if times[-1] > max_seconds:
      break
  return statistics.median(times), len(times)


def time_refresh(projector, d, rank, repeats, max_seconds):
  geo = _geometry(d, rank)
  g = jax.random.normal(jax.random.PRNGKey(0), (d, d), jnp.float32)
  state = projector.init(geo, jnp.float32, g, (None, None))
  return _time(lambda g, s, k: projector.refresh_with_basis(g, s, geo, k), (g, state, jax.random.PRNGKey(1)),
               repeats, max_seconds)


def time_int4_encode(d, rank, repeats, max_seconds):
  """What Q-GaLore adds to an SVD refresh: block-wise INT4 quantization and packing of the basis."""
  geo = _geometry(d, rank)
  basis = jax.random.normal(jax.random.PRNGKey(0), geo.basis_shape, jnp.float32)
  return _time(lambda b: quantized("svd").encode(b, geo), (basis,), repeats, max_seconds)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
  parser.add_argument("--ranks", type=int, nargs="+", default=[128, 256])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--max-seconds", type=float, default=60.0)
  parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" / "projector_refresh.md"))
  args = parser.parse_args()

  rows = []
  for d in args.sizes:
    svd = None
    for rank in args.ranks:
      row = {"d": d, "rank": rank}
      for name, projector in PROJECTORS.items():
        if name == "svd" and svd is not None:  # an SVD does not depend on the rank
          row[name] = svd
          continue
        row[name] = time_refresh(projector, d, rank, args.repeats, args.max_seconds)
        svd = row[name] if name == "svd" else svd
        print(f"d={d} r={rank} {name}: {row[name]}", flush=True)
      row["int4"] = time_int4_encode(d, rank, args.repeats, args.max_seconds)
      rows.append(row)

  device = jax.devices()[0]
  lines = [
      "# Projector refresh cost",
      "",
      f"One compiled refresh, median of {args.repeats} runs (n = runs when fewer: a run over {args.max_seconds:.0f} s"
      " stops the series), float32, square gradient d x d. 'int4 encode' is what Q-GaLore adds to an SVD refresh.",
      f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, JAX {jax.__version__} "
      f"on {device.platform} ({device.device_kind}). CPU timings on a shared machine are noisy: compare ratios.",
      "",
      "| d | r | svd (s) | int4 encode (s) | dct (s) | random (s) | svd / dct | svd / random |",
      "|---|---|---|---|---|---|---|---|",
  ]
  fmt = lambda v: f"{v[0]:.4g}" + ("" if v[1] == args.repeats else f" (n={v[1]})")
  ratio = lambda a, b: f"{a[0] / b[0]:.0f}x"
  for r in rows:
    lines.append(f"| {r['d']} | {r['rank']} | {fmt(r['svd'])} | {fmt(r['int4'])} | {fmt(r['dct'])} | "
                 f"{fmt(r['random'])} | {ratio(r['svd'], r['dct'])} | {ratio(r['svd'], r['random'])} |")
  lines += ["", "The SVD's cost does not depend on r (one reduced SVD per refresh); DCT's is one d x d x d product "
            "plus a top-k; the random projector's is a d x r Gaussian draw, and APOLLO regenerates it at every "
            "step instead of storing it (the draw is also what each step pays)."]
  pathlib.Path(args.out).write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
