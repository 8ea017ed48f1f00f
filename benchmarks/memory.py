"""Optimizer-state bytes of every registered optimizer at LLaMA sizes (60M to 7B), allocating nothing.

Each optimizer is built from its registry ``test_kwargs`` (with GaLore's pre-training rank for the size where
the factory takes a ``rank`` argument; APOLLO's and APOLLO-Mini's own ranks), and ``gradtx.memory_report`` runs its ``init`` under
``jax.eval_shape`` on ``jax.ShapeDtypeStruct`` params. Writes ``benchmarks/results/memory.md``.

  python benchmarks/memory.py [--sizes 60M,130M,350M,1B,7B] [--only lion,signum] [--out PATH]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout without install

import jax  # noqa: E402
import optax  # noqa: E402

import gradtx  # noqa: E402
from llama_shapes import LLAMA_CONFIGS, header, llama_params, num_params  # noqa: E402

BASELINE = "optax.adamw (fp32)"
GIB = 1024**3


#: The rank each paper uses at each LLaMA size: GaLore's scripts (``LLAMA_CONFIGS``' last entry) for every
#: optimizer with a ``rank_arg``, except APOLLO's: a quarter of the hidden size up to 256 (256 for 1B and 7B).
PAPER_RANKS = {"apollo": lambda size: min(LLAMA_CONFIGS[size][0] // 4, 256)}


def paper_rank(name: str, size: str) -> int:
  return PAPER_RANKS.get(name, lambda s: LLAMA_CONFIGS[s][3])(size)


def candidates(only: list[str] | None) -> list[tuple[str, str, Callable[[str], optax.GradientTransformation]]]:
  """(name, registry state_per_param, size -> transformation) for the baseline and each registered optimizer."""
  rows = [(BASELINE, "2 (mu, nu)", lambda size: optax.adamw(1e-3))]
  for name, spec in gradtx.OPTIMIZERS.items():
    if only and name not in only:
      continue
    if spec.rank_arg:
      label = f"{name} (rank: {'APOLLO' if name in PAPER_RANKS else 'GaLore'}'s)"
      rows.append((label, spec.state_per_param,
                   lambda size, spec=spec: spec.build(**{spec.rank_arg: paper_rank(spec.name, size)})))
    else:
      rows.append((name, spec.state_per_param, lambda size, spec=spec: spec.build()))
  return rows


#: The papers' state per projected (m, n) matrix in float32 values, r the rank: GaLore's projector and two
#: low-rank moments, APOLLO's two moments (its projection is regenerated), APOLLO-Mini's rank-1 moments and
#: one norm. Vectors keep Adam's two full-size moments.
PAPER_FORMULAS = {
    "galore": ("r·min(m,n) + 2r·max(m,n)", lambda m, n, r: r * min(m, n) + 2 * r * max(m, n)),
    "apollo": ("2r·max(m,n)", lambda m, n, r: 2 * r * max(m, n)),
    "apollo_mini": ("2·max(m,n) + 1", lambda m, n, r: 2 * r * max(m, n) + 1),
}
#: Ranks fixed by the method, for the formula of an optimizer without a ``rank_arg``.
FIXED_RANKS = {"apollo_mini": 1}


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
        reports[name, s] = gradtx.memory_report(build(s), trees[s])
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
      "pre-training rank (60M: 128, 130M/350M: 256, 1B: 512, 7B: 1024), APOLLO min(d/4, 256), APOLLO-Mini its "
      "rank 1",
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
  out += formula_table(trees, [s for s in sizes if s == "7B"] or sizes[-1:], only)
  if failures:
    out += ["", "## Failures (init under `jax.eval_shape` on `ShapeDtypeStruct` params)", ""]
    out += [f"- {f}" for f in failures]
  text = "\n".join(out) + "\n"
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(text)
  print(text)
  print(f"wrote {args.out}")
  return 1 if failures else 0


def formula_table(trees: dict, sizes: list[str], only: list[str]) -> list[str]:
  """Measured state of the low-rank optimizers against the papers' formulas (every 2-D leaf projected)."""
  names = [n for n in PAPER_FORMULAS if n in gradtx.OPTIMIZERS and (not only or n in only)]
  if not names:
    return []
  out = ["", "## Low-rank state against the papers' formulas", "",
         "Every 2-D leaf projected (embeddings and head included), vectors with Adam's two moments; the "
         "difference is the bookkeeping the formulas leave out (step counts, PRNG keys, per-matrix refresh "
         "counters, APOLLO's norm-growth limiter).", "",
         "| optimizer | size | rank | formula per matrix | formula | measured | difference |",
         "|---|---|---|---|---|---|---|"]
  for name in names:
    text, per_matrix = PAPER_FORMULAS[name]
    for size in sizes:
      spec = gradtx.OPTIMIZERS[name]
      # A rank that is part of the method (APOLLO-Mini's 1) is the factory's own.
      rank = paper_rank(name, size) if spec.rank_arg else FIXED_RANKS[name]
      tx = spec.factory(learning_rate=1e-3, **({spec.rank_arg: rank} if spec.rank_arg else {}))
      leaves = jax.tree.leaves(trees[size])
      formula = 4 * (sum(per_matrix(*x.shape, rank) for x in leaves if x.ndim == 2)
                     + sum(2 * x.size for x in leaves if x.ndim != 2))
      measured = gradtx.memory_report(tx, trees[size]).state_bytes
      out.append(f"| {name} | {size} | {rank} | {text} | {formula / GIB:.4f} GiB | {measured / GIB:.4f} GiB | "
                 f"{measured - formula:+,} B |")
  return out


if __name__ == "__main__":
  sys.exit(main())
