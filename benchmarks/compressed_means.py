"""Bytes sent per step and convergence of compressed data-parallel means (plain, EF14, EF21, EControl).

Two tables, written to ``benchmarks/results/compressed_means.md``:

1. Distributed least squares (the EControl paper's synthetic setting): ``n`` workers, each with its own rows
   ``A_i`` and targets from its own ``x_i*`` (heterogeneous), gradient descent with the workers' mean taken
   by each method. Every method gets the best learning rate of a small grid (multiples of ``1/L``); the
   table gives the relative optimality gap after ``--steps`` steps, the bytes one worker sends per step,
   and the bytes it sent until the gap first fell below ``--target``. Workers are simulated with
   ``jax.vmap(..., axis_name=...)``: the same collectives as ``pmap`` / ``shard_map``, on one device.
2. Bytes one worker sends per step for whole models (LLaMA shapes of ``llama_shapes.py``), from shapes only.

``python benchmarks/compressed_means.py`` takes about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without install

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gradtx  # noqa: E402
from gradtx.distributed.compressors import dense_bytes  # noqa: E402

AXIS = "workers"
LR_GRID = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003)  # times 1/L


def problem(n: int, m: int, d: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(n, m, d)) / np.sqrt(m)
  b = np.einsum("nmd,nd->nm", a, rng.normal(size=(n, d)))
  x_star = np.linalg.lstsq(a.reshape(-1, d), b.reshape(-1), rcond=None)[0]
  f = lambda x: 0.5 * np.mean(np.sum((np.einsum("nmd,...d->...nm", a, x) - b) ** 2, -1), axis=-1)
  smoothness = float(np.linalg.eigvalsh(np.einsum("nmd,nme->de", a, a) / n).max())
  gap = lambda x: (f(x) - f(x_star)) / (f(np.zeros(d)) - f(x_star))
  return a.astype(np.float32), b.astype(np.float32), gap, smoothness


def methods(ratio: float):
  top, rnd, sign = gradtx.top_k(ratio), gradtx.random_k(ratio), gradtx.scaled_sign()
  dense = gradtx.Compressor("dense", lambda t, c: t, dense_bytes, lambda t: 1.0)
  return [
      ("dense mean (no compression)", dense, gradtx.compress(dense, axis_name=AXIS)),
      (f"top-k {ratio:g}, no feedback", top, gradtx.compress(top, axis_name=AXIS)),
      (f"top-k {ratio:g}, EF14", top, gradtx.compress_with_error_feedback(top, variant="ef14", axis_name=AXIS)),
      (f"top-k {ratio:g}, EF21", top, gradtx.compress_with_error_feedback(top, variant="ef21", axis_name=AXIS)),
      *[(f"top-k {ratio:g}, EControl η={eta:g}", top, gradtx.compress_with_econtrol(top, eta, axis_name=AXIS))
        for eta in (0.01, 0.001)],
      (f"random-k {ratio:g}, EF21", rnd, gradtx.compress_with_error_feedback(rnd, variant="ef21", axis_name=AXIS)),
      ("scaled sign, no feedback", sign, gradtx.compress(sign, axis_name=AXIS)),
      ("scaled sign, EF14", sign, gradtx.compress_with_error_feedback(sign, variant="ef14", axis_name=AXIS)),
      ("scaled sign, EF21", sign, gradtx.compress_with_error_feedback(sign, variant="ef21", axis_name=AXIS)),
  ]


def trajectory(tx, lr: float, steps: int, a, b, record_every: int) -> np.ndarray:
  """Iterates every ``record_every`` steps (identical on all workers), shape (steps // record_every, d)."""
  d = a.shape[-1]

  def worker(ai, bi):
    def body(carry, _):
      x, s = carry
      u, s = tx.update(ai.T @ (ai @ x - bi), s, x)
      return (x - lr * u, s), None

    def chunk(carry, _):
      carry, _ = jax.lax.scan(body, carry, None, record_every)
      return carry, carry[0]

    x = jnp.zeros(d, jnp.float32)
    return jax.lax.scan(chunk, (x, tx.init(x)), None, steps // record_every)[1]

  xs = jax.jit(jax.vmap(worker, axis_name=AXIS))(jnp.asarray(a), jnp.asarray(b))
  return np.asarray(xs[0], np.float64)


def least_squares_table(args) -> list[str]:
  a, b, gap, smoothness = problem(args.workers, args.rows, args.dim)
  record = max(args.steps // 100, 1)
  rows = [
      f"{args.workers} workers x {args.rows} rows, d = {args.dim}, {args.steps} steps of gradient descent; gap = "
      f"(f(x) − f*) / (f(0) − f*); learning rate: the best of {', '.join(f'{g:g}' for g in args.lrs)} × 1/L.",
      "",
      "| method | lr × L | gap after all steps | bytes / worker / step | bytes / worker until gap < "
      f"{args.target:g} |",
      "|---|---|---|---|---|",
  ]
  message = jax.ShapeDtypeStruct((args.dim,), jnp.float32)
  for name, compressor, tx in methods(args.ratio):
    best = None
    for factor in args.lrs:
      gaps = gap(trajectory(tx, factor / smoothness, args.steps, a, b, record))
      final = gaps[-1] if np.isfinite(gaps[-1]) else np.inf
      if best is None or final < best[1]:
        best = (factor, final, gaps)
    factor, final, gaps = best
    per_step = compressor.message_bytes(message)
    reached = np.nonzero(gaps < args.target)[0]
    until = f"{(reached[0] + 1) * record * per_step:,}" if reached.size else "never"
    rows.append(f"| {name} | {factor:g} | {final:.2e} | {per_step:,} | {until} |")
  return rows


def _llama_shapes():
  spec = importlib.util.spec_from_file_location("llama_shapes", HERE / "llama_shapes.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def model_bytes_table(ratio: float) -> list[str]:
  llama_shapes = _llama_shapes()

  rows = [
      "| model | dense f32 | top-k " + f"{ratio:g}" + " (value + int32 index) | random-k " + f"{ratio:g}"
      + " (values; indices from the seed) | scaled sign (1 bit + 1 float / tensor) |",
      "|---|---|---|---|---|",
  ]
  mib = lambda n: f"{n / 2**20:,.1f} MiB"
  for name in ("60M", "350M", "1B", "7B"):
    tree = llama_shapes.llama_params(*llama_shapes.LLAMA_CONFIGS[name][:3])
    tree = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), tree)
    dense = dense_bytes(tree)
    cells = [mib(dense)]
    for c in (gradtx.top_k(ratio), gradtx.random_k(ratio), gradtx.scaled_sign()):
      n = c.message_bytes(tree)
      cells.append(f"{mib(n)} ({dense / n:,.0f}x less)")
    rows.append(f"| LLaMA-{name} | " + " | ".join(cells) + " |")
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workers", type=int, default=8)
  p.add_argument("--rows", type=int, default=100)
  p.add_argument("--dim", type=int, default=200)
  p.add_argument("--ratio", type=float, default=0.01)
  p.add_argument("--steps", type=int, default=2000)
  p.add_argument("--target", type=float, default=1e-4)
  p.add_argument("--lrs", type=lambda v: tuple(float(x) for x in v.split(",")), default=LR_GRID,
                 help="learning rates to try, in units of 1/L (comma-separated)")
  p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compressed_means.md"))
  args = p.parse_args(argv)
  start = time.monotonic()
  lines = ["# Compressed data-parallel means", "", "## Distributed least squares", ""]
  lines += least_squares_table(args)
  lines += ["", "## Bytes one worker sends per step", ""]
  lines += model_bytes_table(args.ratio)
  lines += [
      "",
      "An all-reduce of a dense message moves about 2 (n−1)/n times its size per worker; top-k messages with",
      "different supports are all-gathered instead (n−1 times their size), random-k messages with a shared seed",
      "have one support and all-reduce like a dense message of k values.",
      "",
      f"(generated by `python benchmarks/compressed_means.py` in {time.monotonic() - start:.0f} s)",
  ]
  text = "\n".join(lines) + "\n"
  print(text)
  pathlib.Path(args.out).write_text(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
