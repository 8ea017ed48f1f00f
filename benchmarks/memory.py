"""Optimizer-state bytes of every registered optimizer at LLaMA sizes (60M to 7B), allocating nothing.

Each optimizer is built from its registry ``test_kwargs`` (with GaLore's pre-training rank for the size where
the factory takes a ``rank`` argument), and ``gradtx.memory_report`` runs its ``init`` under
``jax.eval_shape`` on ``jax.ShapeDtypeStruct`` params. Writes ``benchmarks/results/memory.md``.

  python benchmarks/memory.py [--sizes 60M,130M,350M,1B,7B] [--only lion,signum] [--out PATH]
"""

from __future__ import annotations

import argparse
import inspect
import pathlib
import sys
from collections.abc import Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout without install

import optax  # noqa: E402

import gradtx  # noqa: E402
from llama_shapes import LLAMA_CONFIGS, header, llama_params, num_params  # noqa: E402

BASELINE = "optax.adamw (fp32)"
GIB = 1024**3


def candidates(only: list[str] | None) -> list[tuple[str, str, Callable[[int], optax.GradientTransformation]]]:
  """(name, registry state_per_param, rank -> transformation) for the baseline and each registered optimizer."""
  rows = [(BASELINE, "2 (mu, nu)", lambda rank: optax.adamw(1e-3))]
  for name, spec in gradtx.OPTIMIZERS.items():
    if only and name not in only:
      continue
    takes_rank = "rank" in inspect.signature(spec.factory).parameters
    build = (lambda rank, spec=spec: spec.build(rank=rank)) if takes_rank else (lambda rank, spec=spec: spec.build())
    rows.append((name + (" (rank: GaLore's)" if takes_rank else ""), spec.state_per_param, build))
  return rows


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", default=",".join(LLAMA_CONFIGS), help="comma-separated, from " + ", ".join(LLAMA_CONFIGS))
  parser.add_argument("--only", default="", help="comma-separated registry names (the AdamW baseline always runs)")
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "results" / "memory.md")
  args = parser.parse_args(argv)
  sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
  unknown = [s for s in sizes if s not in LLAMA_CONFIGS]
  only = [n.strip() for n in args.only.split(",") if n.strip()]
  unknown += [n for n in only if n not in gradtx.OPTIMIZERS]
  if unknown:
    parser.error(f"unknown size or optimizer {unknown}: sizes {list(LLAMA_CONFIGS)}, optimizers {list(gradtx.OPTIMIZERS)}")

  trees = {s: llama_params(*LLAMA_CONFIGS[s][:3]) for s in sizes}
  reports, failures, rows = {}, [], candidates(only)
  for name, _, build in rows:
    for s in sizes:
      try:
        reports[name, s] = gradtx.memory_report(build(LLAMA_CONFIGS[s][3]), trees[s])
      except Exception as e:  # noqa: BLE001  a contract failure is a result to report, not a crash
        failures.append(f"{name} at {s}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")

  def cell(name, s, fmt):
    report = reports.get((name, s))
    return fmt(report, reports[BASELINE, s]) if report else "failed"

  sizes_line = ", ".join(f"{s}: {num_params(trees[s]) / 1e6:,.1f}M params (d={LLAMA_CONFIGS[s][0]}, "
                         f"f={LLAMA_CONFIGS[s][1]}, {LLAMA_CONFIGS[s][2]} layers)" for s in sizes)
  out = [header("Optimizer-state memory at LLaMA sizes", [
      "computed with `gradtx.memory_report` (`jax.eval_shape(tx.init, abstract_params)`): nothing allocated, "
      "so the machine's load does not matter",
      f"shapes: GaLore's LLaMA configs, fp32 params, vocabulary 32000, untied lm head; {sizes_line}",
      "each optimizer is built from its registry `test_kwargs`; a factory with a `rank` argument gets GaLore's "
      "pre-training rank (60M: 128, 130M/350M: 256, 1B: 512, 7B: 1024)",
  ])]
  out += ["## State bytes per parameter (ratio to fp32 AdamW)", "",
          "| optimizer | registry state/param | " + " | ".join(sizes) + " |",
          "|---|---|" + "---|" * len(sizes)]
  for name, per_param, _ in rows:
    out.append(f"| {name} | {per_param or '-'} | " + " | ".join(
        cell(name, s, lambda r, a: f"{r.bytes_per_param:.3f} B ({r.state_bytes / a.state_bytes:.3f}x)")
        for s in sizes) + " |")
  out += ["", "## Total state", "", "| optimizer | " + " | ".join(sizes) + " |", "|---|" + "---|" * len(sizes)]
  for name, _, _ in rows:
    out.append(f"| {name} | " + " | ".join(cell(name, s, lambda r, a: f"{r.state_bytes / GIB:.3f} GiB")
                                           for s in sizes) + " |")
  if failures:
    out += ["", "## Failures (init under `jax.eval_shape` on `ShapeDtypeStruct` params)", ""]
    out += [f"- {f}" for f in failures]
  text = "\n".join(out) + "\n"
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(text)
  print(text)
  print(f"wrote {args.out}")
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
