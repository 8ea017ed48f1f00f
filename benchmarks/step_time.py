"""Update time of each registered elementwise optimizer beside its optax counterpart, on a LLaMA-like tree.

Every transformation runs as one jitted step ``(params, state, grads) -> (params + updates, new state)`` with
params and state donated, on the same >=10M-parameter tree (2-D kernels and 1-D norm scales). Repetitions
are interleaved (each repetition times every candidate once, in a rotated order), so machine noise hits all
candidates alike; the table gives medians and, for gradtx rows, the median of the per-repetition ratio to
the optax counterpart. Effective bandwidth counts the bytes each step must read and write (params read and
written, grads read, state read and written) and is compared with a donated in-place ``x + 1`` over as many
bytes (the practical roofline for elementwise updates), timed in the same rotation.

Candidates: optax.adamw (baseline), every registered optimizer that is elementwise or names an optax
counterpart, and those counterparts. Optimizers that need extra update arguments other than ``value`` are
skipped (their cost depends on the model: see the demo's ms/step).

  python benchmarks/step_time.py [--size 12] [--reps 15] [--inner 3] [--only lion,signum] [--out PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout without install

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import gradtx  # noqa: E402
from llama_shapes import header, llama_params, num_params  # noqa: E402

PROVIDED_EXTRA_ARGS = {"value": 1.0}  # a scalar loss is all an elementwise step can be given without a model


@dataclasses.dataclass
class Candidate:
  """One jitted, donated step and its buffers."""

  name: str
  kind: str  # "gradtx", "optax" or "roofline"
  step: Callable[..., Any]
  buffers: tuple
  nbytes: int
  counterpart: str = ""
  times: list[float] = dataclasses.field(default_factory=list)

  def run(self, grads: Any, inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
      self.buffers = self.step(*self.buffers, grads) if self.kind != "roofline" else (self.step(*self.buffers),)
    jax.block_until_ready(self.buffers)
    return (time.perf_counter() - start) / inner

  @property
  def median_s(self) -> float:
    return statistics.median(self.times)


def optimizer_candidate(name: str, kind: str, tx: optax.GradientTransformation, params: Any, counterpart: str = ""
                        ) -> Candidate:
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params, **PROVIDED_EXTRA_ARGS)
    return optax.apply_updates(params, updates), state

  own_params = jax.tree.map(jnp.copy, params)  # each candidate donates its own buffers
  state = jax.jit(tx.init)(own_params)
  state_bytes = gradtx.state_nbytes(state)
  param_bytes = gradtx.state_nbytes(params)
  return Candidate(name=name, kind=kind, step=jax.jit(step, donate_argnums=(0, 1)), buffers=(own_params, state),
                   nbytes=3 * param_bytes + 2 * state_bytes, counterpart=counterpart)


def build_candidates(params: Any, only: list[str]) -> tuple[list[Candidate], list[str]]:
  cands = [optimizer_candidate("optax.adamw", "optax", optax.adamw(1e-3), params)]
  skipped = []
  for name, spec in gradtx.OPTIMIZERS.items():
    if only and name not in only:
      continue
    if not only and not (spec.elementwise or spec.optax_counterpart):
      skipped.append(f"{name}: not elementwise and no optax counterpart (run it with --only {name})")
      continue
    missing = [a for a in spec.required_extra_args if a not in PROVIDED_EXTRA_ARGS]
    if missing:
      skipped.append(f"{name}: needs extra update argument(s) {missing} that depend on a model")
      continue
    counterpart = ""
    if spec.optax_counterpart:
      factory, kwargs = spec.optax_counterpart
      counterpart = f"optax.{factory.__name__}"
      label = f"{counterpart} (for {name})"
      cands.append(optimizer_candidate(label, "optax", factory(**kwargs), params))
      counterpart = label
    cands.append(optimizer_candidate(name, "gradtx", spec.build(), params, counterpart))
  # As many bytes as the AdamW step moves, in a length that is a multiple of 1024: XLA's CPU backend runs an
  # elementwise op on an odd-length array ~10x slower (jax 0.10.2), which would fake a low roofline.
  length = cands[0].nbytes // 8 // 1024 * 1024
  roofline = jax.jit(lambda x: x + 1, donate_argnums=0)
  cands.append(Candidate(name="donated x + 1 (roofline)", kind="roofline", step=roofline,
                         buffers=(jnp.zeros(length, jnp.float32),), nbytes=8 * length))
  return cands, skipped


def measure(cands: list[Candidate], grads: Any, reps: int, inner: int) -> list[str]:
  """Fills each candidate's ``times``, interleaved; returns the names of steps that compiled twice."""
  for c in cands:  # compile and warm up
    c.run(grads, 1)
  for rep in range(reps):
    shift = rep % len(cands)
    for c in cands[shift:] + cands[:shift]:
      c.times.append(c.run(grads, inner))
  return [c.name for c in cands if c.step._cache_size() > 1]


def format_table(cands: list[Candidate]) -> str:
  by_name = {c.name: c for c in cands}
  roofline = next(c for c in cands if c.kind == "roofline")
  roof_gbs = roofline.nbytes / roofline.median_s / 1e9
  rows = ["| transformation | median ms/step | vs optax (median of paired ratios) | MB moved/step | GB/s | % of roofline |",
          "|---|---|---|---|---|---|"]
  for c in cands:
    ratio = "-"
    if c.counterpart:
      ref = by_name[c.counterpart]
      paired = statistics.median(a / b for a, b in zip(c.times, ref.times))
      ratio = f"{paired:.3f}x {ref.name.split(' ')[0]}"
    gbs = c.nbytes / c.median_s / 1e9
    rows.append(f"| {c.name} | {1e3 * c.median_s:.2f} | {ratio} | {c.nbytes / 1e6:.0f} | {gbs:.1f} | "
                f"{100 * gbs / roof_gbs:.0f}% |")
  return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", type=float, default=12.0, help="minimum parameter count, in millions")
  parser.add_argument("--reps", type=int, default=15, help="interleaved repetitions (median reported)")
  parser.add_argument("--inner", type=int, default=3, help="steps per timed repetition")
  parser.add_argument("--only", default="", help="comma-separated registry names (the AdamW baseline always runs)")
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "results" / "step_time.md")
  args = parser.parse_args(argv)
  only = [n.strip() for n in args.only.split(",") if n.strip()]
  if unknown := [n for n in only if n not in gradtx.OPTIMIZERS]:
    parser.error(f"unknown optimizer(s) {unknown}: choose from {list(gradtx.OPTIMIZERS)}")
  if args.reps < 1 or args.inner < 1 or args.size <= 0:
    parser.error("--reps and --inner must be at least 1 and --size positive")

  # LLaMA-60M widths with a 4096 vocabulary: 2-D kernels dominate, 1-D norm scales mixed in.
  d, f, vocab = 512, 1376, 4096
  layers = max(1, math.ceil((args.size * 1e6 - 2 * vocab * d - d) / (4 * d * d + 3 * d * f + 2 * d)))
  abstract = llama_params(d, f, layers, vocab=vocab)
  keys = iter(jax.random.split(jax.random.key(0), 2 * len(jax.tree.leaves(abstract))))
  make = lambda a: jax.random.normal(next(keys), a.shape, a.dtype) * 0.02
  params, grads = jax.tree.map(make, abstract), jax.tree.map(make, abstract)

  cands, skipped = build_candidates(params, only)
  recompiled = measure(cands, grads, args.reps, args.inner)

  notes = [
      f"params: {num_params(abstract) / 1e6:.2f}M f32 in {len(jax.tree.leaves(abstract))} leaves "
      f"(LLaMA widths d={d}, f={f}, {layers} layers, vocabulary {vocab}); grads fixed, params and state donated",
      f"{args.reps} interleaved repetitions of {args.inner} steps each; medians reported",
      "bytes moved per step = 3 x params (read, write, grads read) + 2 x optimizer state (read, write)",
      "the machine is shared (2 cores, ~8 engineers running tests): absolute times and GB/s are noisy and "
      "pessimistic; the side-by-side ratios are the figure of merit",
  ]
  text = header("Optimizer step time", notes) + "\n" + format_table(cands) + "\n"
  if skipped:
    text += "\nSkipped:\n\n" + "".join(f"- {s}\n" for s in skipped)
  if recompiled:
    text += "\nRecompiled after the first call (contract failure): " + ", ".join(recompiled) + "\n"
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(text)
  print(text)
  print(f"wrote {args.out}")
  return 1 if recompiled else 0


if __name__ == "__main__":
  sys.exit(main())
