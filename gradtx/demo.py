"""Train a small character-level transformer with several gradtx optimizers and compare them.

``python -m gradtx.demo`` (or ``make demo``) trains :class:`gradtx.models.CharLM` on the first 2 MB of the
running interpreter's standard-library source (no download) with optax AdamW as the baseline, every
registered optimizer of the foundation families, GaLore (a low-rank optimizer, rank a quarter of the model
width) and 8-bit AdamW, prints a table (final train loss, validation loss,
optimizer-state bytes, ms/step) and writes ``loss_curves.png``, ``results.md`` and ``results.json`` to
``demo_out/``. ``--help`` lists the knobs. Time with the defaults (250 steps of batch 16x64 on a 277k-parameter
model) on 2 otherwise idle CPU cores: about 14 s per optimizer (~2 s of it compiling), so about 50 s for
AdamW + Lion + Signum and under 3 minutes for eleven optimizers; a CPU shared with other work takes longer.

Optimizers come from :data:`gradtx.registry.OPTIMIZERS`: the demo never special-cases a name except in
:data:`DEMO_LEARNING_RATES`, a table of learning rates suited to this model (a demo default only; an
optimizer not in it trains at its registry ``test_kwargs`` learning rate, and ``--lr name=value`` overrides
both). Every update receives the extra arguments of DESIGN.md that a training loop can give:
``loss_fn`` (params -> loss on the current batch), ``logits_fn`` (params -> logits) and ``value`` (the
loss); an optimizer that requires any other extra argument is skipped with a message.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

import gradtx
from gradtx import registry
from gradtx.models import CharLM, CharLMConfig, cross_entropy_loss, load_stdlib_corpus

#: The optax baseline every run is compared with.
BASELINE = "optax.adamw"
#: Families trained by default (DESIGN.md's first three); ``--optimizers all`` trains every family.
DEFAULT_FAMILIES = ("sign_momentum", "moment_scaling", "geometry")
#: Memory-efficient optimizers trained by default beside the families: a low-rank one and an 8-bit one, so
#: the table shows their state bytes next to AdamW's.
DEFAULT_EXTRA = ("galore", "adamw_8bit")
#: Extra ``update`` arguments the demo's training step provides.
PROVIDED_EXTRA_ARGS = ("loss_fn", "logits_fn", "value")
#: Learning rates that suit this model in a few hundred steps (demo defaults, not library defaults).
DEMO_LEARNING_RATES = {
    BASELINE: 3e-3,
    "lion": 1e-3,  # official guidance: 3-10x below AdamW; best of {5e-4, 1e-3, 2e-3} here, as for signum
    "signum": 1e-3,
    "adabelief": 3e-3,
    "diffgrad": 3e-3,
    "exadam": 3e-3,
    "adamp": 3e-3,
    "lamb": 1e-2,  # the trust ratio makes this a relative step per layer
    "sgdp": 0.1,  # SGD with momentum 0.9 (registry test_kwargs) needs a much larger step than Adam
    "lars": 0.1,
    "spam": 3e-3,
    "stable_spam": 3e-3,
    "adam_coordinate_clipped": 3e-3,
    "galore": 1e-2,  # GaLore's LLaMA setting: lr 0.01 with scale 0.25 on the projected update
    "adamw_8bit": 3e-3,
}


@dataclasses.dataclass
class Run:
  """One optimizer to train: how to build it at a learning rate, and what came out."""

  name: str
  make: Callable[[optax.ScalarOrSchedule], optax.GradientTransformation]
  learning_rate: float
  lr_source: str
  train_losses: list[float] = dataclasses.field(default_factory=list)
  val_losses: list[tuple[int, float]] = dataclasses.field(default_factory=list)
  state_bytes: int = 0
  ms_per_step: float = math.nan
  compile_s: float = math.nan
  error: str = ""

  @property
  def final_train_loss(self) -> float:
    """Mean train loss over the last tenth of the steps (single-batch losses are noisy)."""
    tail = self.train_losses[-max(1, len(self.train_losses) // 10):]
    return float(np.mean(tail)) if tail else math.nan

  @property
  def val_loss(self) -> float:
    return self.val_losses[-1][1] if self.val_losses else math.nan

  @property
  def status(self) -> str:
    if self.error:
      return f"error: {self.error}"
    return "ok" if math.isfinite(self.final_train_loss) and math.isfinite(self.val_loss) else "diverged"


def parse_lr_overrides(items: Sequence[str]) -> dict[str, float]:
  """``["lion=3e-4", ...]`` -> ``{"lion": 3e-4}``."""
  overrides = {}
  for item in items:
    name, sep, value = item.partition("=")
    try:
      overrides[name.strip()] = float(value)
    except ValueError:
      raise ValueError(f"`--lr` must look like name=value, got {item!r}.") from None
    if not sep or overrides[name.strip()] <= 0:
      raise ValueError(f"`--lr` must look like name=value with value > 0, got {item!r}.")
  return overrides


def plan_runs(selection: str, lr_overrides: dict[str, float],
              rank: int | None = None) -> tuple[list[Run], list[str]]:
  """The runs for ``--optimizers`` and a message for each optimizer skipped.

  ``selection`` is ``"default"`` (baseline + :data:`DEFAULT_FAMILIES` + :data:`DEFAULT_EXTRA`), ``"all"``
  (baseline + every registered optimizer) or comma-separated names (registry names or :data:`BASELINE`).
  ``rank``, when given, sets the rank of every optimizer with a ``rank_arg`` in the registry.
  """
  registered = gradtx.OPTIMIZERS
  if selection in ("default", "all"):
    names = [BASELINE] + [n for n, s in registered.items()
                          if selection == "all" or s.family in DEFAULT_FAMILIES or n in DEFAULT_EXTRA]
  else:
    names = [n.strip() for n in selection.split(",") if n.strip()]
  unknown = [n for n in list(names) + list(lr_overrides) if n != BASELINE and n not in registered]
  if unknown:
    raise ValueError(f"unknown optimizer(s) {unknown}: choose from {[BASELINE, *registered]}.")
  runs, skipped = [], []
  for name in dict.fromkeys(names):
    if name == BASELINE:
      make, test_lr = (lambda lr: optax.adamw(lr)), None
    else:
      spec = registered[name]
      missing = [a for a in spec.required_extra_args if a not in PROVIDED_EXTRA_ARGS]
      if missing:
        skipped.append(f"skipping {name}: it requires extra update argument(s) {missing}, which the demo's "
                       f"training step cannot provide (it provides {list(PROVIDED_EXTRA_ARGS)}).")
        continue
      kwargs = {spec.rank_arg: rank} if rank and spec.rank_arg else {}
      make = lambda lr, spec=spec, kwargs=kwargs: spec.build(learning_rate=lr, **kwargs)
      test_lr = spec.test_kwargs["learning_rate"]
    if name in lr_overrides:
      lr, source = lr_overrides[name], "--lr"
    elif name in DEMO_LEARNING_RATES:
      lr, source = DEMO_LEARNING_RATES[name], "demo table"
    else:
      lr, source = float(test_lr), "registry test_kwargs"
    runs.append(Run(name=name, make=make, learning_rate=lr, lr_source=source))
  return runs, skipped


def _extra_args(model: CharLM, inputs: jax.Array, targets: jax.Array, loss: jax.Array) -> dict[str, Any]:
  """``loss_fn``, ``logits_fn`` and ``value`` for the current batch (see RECIPES.md, Flax section)."""
  graphdef, _, rest = nnx.split(model, nnx.Param, ...)
  as_model = lambda params: nnx.merge(graphdef, params, rest, copy=True)
  return {
      "loss_fn": lambda params: cross_entropy_loss(as_model(params), inputs, targets),
      "logits_fn": lambda params: as_model(params)(inputs),
      "value": loss,
  }


@nnx.jit
def train_step(model: CharLM, optimizer: nnx.Optimizer, inputs: jax.Array, targets: jax.Array) -> jax.Array:
  loss, grads = nnx.value_and_grad(cross_entropy_loss)(model, inputs, targets)
  optimizer.update(model, grads, **_extra_args(model, inputs, targets, loss))
  return loss


@nnx.jit
def eval_step(model: CharLM, inputs: jax.Array, targets: jax.Array) -> jax.Array:
  return cross_entropy_loss(model, inputs, targets)


def train(run: Run, args: argparse.Namespace, corpus, initial: CharLM, progress: bool = True) -> None:
  """Trains a copy of ``initial`` (same init and batches for every run) and fills in ``run``'s results."""
  from tqdm.auto import tqdm  # the demo extra; imported here so `import gradtx.demo` stays light

  model, seq_len = nnx.clone(initial), initial.config.seq_len
  if args.schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(0.0, run.learning_rate, max(1, args.steps // 10), args.steps,
                                            end_value=run.learning_rate / 10)
  else:
    lr = run.learning_rate
  tx = run.make(lr)
  params = nnx.as_pure(nnx.state(model, nnx.Param))
  run.state_bytes = gradtx.memory_report(tx, params).state_bytes
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  batches = np.random.default_rng(args.seed)
  val_rng = np.random.default_rng(args.seed + 1)
  val_batches = [corpus.batch(val_rng, args.batch_size, seq_len, "val") for _ in range(args.val_batches)]
  evaluate = lambda: float(np.mean([eval_step(model, x, y) for x, y in val_batches]))
  bar = tqdm(range(1, args.steps + 1), desc=f"{run.name:>14}", disable=not progress, leave=True,
             mininterval=0.5, file=sys.stderr)
  step_time = 0.0
  for step in bar:
    inputs, targets = corpus.batch(batches, args.batch_size, seq_len)
    start = time.perf_counter()
    loss = float(train_step(model, optimizer, inputs, targets))
    elapsed = time.perf_counter() - start
    if step == 1:
      run.compile_s = elapsed
    else:
      step_time += elapsed
    run.train_losses.append(loss)
    if not math.isfinite(loss):
      bar.close()
      break
    if step % args.eval_every == 0 or step == args.steps:
      run.val_losses.append((step, evaluate()))
    if step % 10 == 0:
      bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
  run.ms_per_step = 1e3 * step_time / max(1, len(run.train_losses) - 1)


def format_table(runs: Sequence[Run]) -> str:
  header = ("| optimizer | lr (source) | final train loss (mean of last 10%) | val loss | opt-state bytes | "
            "ms/step | status |")
  rows = [header, "|" + "---|" * 7]
  for r in runs:
    rows.append(f"| {r.name} | {r.learning_rate:g} ({r.lr_source}) | {r.final_train_loss:.4f} | {r.val_loss:.4f} "
                f"| {r.state_bytes:,} | {r.ms_per_step:.1f} | {r.status} |")
  return "\n".join(rows)


def plot(runs: Sequence[Run], path: pathlib.Path, title: str) -> None:
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no display needed
  from matplotlib.figure import Figure

  fig = Figure(figsize=(11, 4.5))
  FigureCanvasAgg(fig)
  train_ax, val_ax = fig.subplots(1, 2)
  for r in (r for r in runs if r.train_losses):
    losses = np.asarray(r.train_losses)
    window = max(1, min(20, len(losses) // 10))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    line, = train_ax.plot(np.arange(window, len(losses) + 1), smooth, label=r.name)
    if r.val_losses:
      steps, values = zip(*r.val_losses)
      val_ax.plot(steps, values, "o-", color=line.get_color(), label=r.name)
  train_ax.set(title="train loss (moving average)", xlabel="step", ylabel="nats / byte")
  val_ax.set(title="validation loss", xlabel="step", ylabel="nats / byte")
  train_ax.legend(fontsize="small")
  fig.suptitle(title, fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m gradtx.demo", description=__doc__.split("\n\n")[0])
  p.add_argument("--optimizers", default="default",
                 help=f"'default' ({BASELINE} + families {', '.join(DEFAULT_FAMILIES)}), 'all', or names "
                      f"separated by commas ({BASELINE} is the optax baseline)")
  p.add_argument("--lr", action="append", default=[], metavar="NAME=VALUE", help="peak learning rate (repeatable)")
  p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                 help="cosine: 10%% linear warm-up, then cosine decay to peak/10")
  p.add_argument("--steps", type=int, default=250)
  p.add_argument("--batch-size", type=int, default=16)
  p.add_argument("--seq-len", type=int, default=64)
  p.add_argument("--d-model", type=int, default=96)
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--corpus-bytes", type=int, default=2_000_000, help="size of the stdlib slice")
  p.add_argument("--eval-every", type=int, default=50)
  p.add_argument("--val-batches", type=int, default=8)
  p.add_argument("--rank", type=int, default=0,
                 help="rank of the low-rank optimizers (default: a quarter of --d-model)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("demo_out"))
  p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
  p.add_argument("--list", action="store_true", help="list the registered optimizers and exit")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the demo; returns 0, or 1 when an optimizer failed or diverged (the table still prints)."""
  args = build_parser().parse_args(argv)
  if args.list:
    for name, spec in gradtx.OPTIMIZERS.items():
      print(f"{name:>16}  family={spec.family}  lr={spec.test_kwargs['learning_rate']}  "
            f"extra_args={list(spec.required_extra_args)}")
    return 0
  for name in ("steps", "batch_size", "eval_every", "val_batches", "d_model"):
    if getattr(args, name) < 1:
      raise SystemExit(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
  if args.rank < 0:
    raise SystemExit(f"--rank must be at least 1 (or 0 for a quarter of --d-model), got {args.rank}.")
  try:
    runs, skipped = plan_runs(args.optimizers, parse_lr_overrides(args.lr), rank=args.rank or args.d_model // 4)
  except ValueError as e:
    raise SystemExit(str(e)) from None
  config = CharLMConfig(seq_len=args.seq_len, d_model=args.d_model, num_layers=args.layers, num_heads=args.heads)
  corpus = load_stdlib_corpus(args.corpus_bytes)
  initial = nnx.jit(lambda: CharLM(config, rngs=nnx.Rngs(args.seed)))()  # one compile, not one per initializer
  num_params = sum(p.size for p in jax.tree.leaves(nnx.state(initial, nnx.Param)))
  title = (f"CharLM d={config.d_model} layers={config.num_layers} ({num_params:,} params), batch "
           f"{args.batch_size}x{config.seq_len}, {args.steps} steps, {args.schedule} lr, seed {args.seed}; "
           f"{len(corpus.train):,} train / {len(corpus.val):,} val bytes of {corpus.source}")
  print(title)
  for message in skipped:
    print(message)
  for run in runs:
    try:
      train(run, args, corpus, initial, progress=not args.no_progress)
    except Exception as e:  # noqa: BLE001  one broken optimizer must not hide the others' results
      run.error = f"{type(e).__name__}: {e}".splitlines()[0][:200]
      print(f"{run.name} failed: {run.error}", file=sys.stderr)
  table = format_table(runs)
  args.out.mkdir(parents=True, exist_ok=True)
  plot(runs, args.out / "loss_curves.png", title)
  (args.out / "results.md").write_text(f"{title}\n\n{table}\n" + "".join(f"\n{m}" for m in skipped))
  (args.out / "results.json").write_text(json.dumps(
      {"title": title, "skipped": skipped,
       "runs": [{"name": r.name, "learning_rate": r.learning_rate, "lr_source": r.lr_source,
                 "final_train_loss": r.final_train_loss, "val_loss": r.val_loss, "state_bytes": r.state_bytes,
                 "ms_per_step": r.ms_per_step, "compile_s": r.compile_s, "status": r.status,
                 "train_losses": r.train_losses, "val_losses": r.val_losses} for r in runs]}, indent=1))
  print(table)
  print(f"wrote {args.out / 'loss_curves.png'}, {args.out / 'results.md'}, {args.out / 'results.json'}")
  return 0 if all(r.status == "ok" for r in runs) else 1


if __name__ == "__main__":
  sys.exit(main())
