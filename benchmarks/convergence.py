"""Convergence of every registered optimizer on two small tasks, each at a small learning-rate sweep.

Tasks: the demo's character-level transformer (:class:`gradtx.models.CharLM`) on the standard library's
source (no download), and an MLP on scikit-learn's digits. Every optimizer in
:data:`gradtx.registry.OPTIMIZERS` (plus ``optax.adamw``, the baseline) trains each task from the same
initialization on the same batches for the same number of steps, at ``--lr-multipliers`` times a centre
learning rate (a table below; an optimizer missing from it is centred on its registry ``test_kwargs``
learning rate, and the report says so), with 10% linear warm-up then cosine decay to a tenth of the peak.
For each optimizer the learning rate with the lowest best validation loss (mean over seeds) is reported:
best validation loss (and accuracy on digits), final train loss (mean of the last 10% of steps), steps
until the validation loss first reaches AdamW's final validation loss, optimizer-state bytes, and
step time (forward, backward and update, jitted and scanned; the machine may be shared). Writes
``convergence.md`` and one PNG per task to ``--out``.

  python benchmarks/convergence.py                    # 23 minutes on 2 cores (31 optimizers, 2026-11-22)
  python benchmarks/convergence.py --optimizers lion,spam --tasks digits --seeds 0,1
  python benchmarks/convergence.py --size tiny        # a smoke test: seconds per optimizer

Optimizers that need an ``update`` argument other than ``loss_fn``, ``logits_fn`` or ``value`` are skipped
with a note (AdAdaGrad's ``per_example_grads`` belongs to a loop that changes the batch size).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout without install

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import gradtx  # noqa: E402
from gradtx.models import CharLM, CharLMConfig, cross_entropy_loss, load_stdlib_corpus  # noqa: E402
from llama_shapes import header  # noqa: E402

BASELINE = "optax.adamw"
PROVIDED_EXTRA_ARGS = ("loss_fn", "logits_fn", "value")
#: Centre of each optimizer's sweep, per task, from earlier sweeps on each task (sign methods and Sophia step
#: 3-10x below Adam; trust-ratio methods take relative steps; AdaGrad-Norm's is a distance). 8-bit optimizers
#: share their float32 twin's.
CENTRE_LR = {
    "charlm": {BASELINE: 3e-3, "adamw_8bit": 3e-3, "lion": 1e-3, "lion_8bit": 1e-3, "signum": 1e-3,
               "adabelief": 1e-2, "adabelief_8bit": 1e-2, "diffgrad": 3e-3, "exadam": 1e-3, "adamp": 3e-3,
               "lamb": 1e-2, "lars": 1.0, "sgdp": 0.1, "adam_coordinate_clipped": 3e-2, "spam": 1e-3,
               "stable_spam": 3e-3, "adagrad_norm": 1.0, "sophia_h": 1e-3, "sophia_g": 1e-3, "adahessian": 0.05,
               "mfac": 1e-3, "regularized_newton": 1.0, "galore": 1e-2, "q_galore": 1e-2, "galore_dct": 1e-2,
               "gradnorm_lorp": 1e-2, "apollo": 1e-2, "apollo_mini": 1e-2, "frugal": 3e-3, "owlore": 3e-3,
               "mezo_adam": 1e-3},
    "digits": {BASELINE: 3e-2, "adamw_8bit": 3e-2, "lion": 1e-3, "lion_8bit": 1e-3, "signum": 3e-3,
               "adabelief": 3e-2, "adabelief_8bit": 3e-2, "diffgrad": 1e-2, "exadam": 3e-3, "adamp": 3e-2,
               "lamb": 1e-2, "lars": 0.3, "sgdp": 0.3, "adam_coordinate_clipped": 3e-2, "spam": 1e-2,
               "stable_spam": 1e-2, "adagrad_norm": 3.0, "sophia_h": 3e-3, "sophia_g": 3e-3, "adahessian": 0.15,
               "mfac": 1e-3, "regularized_newton": 1.0, "galore": 0.1, "q_galore": 0.1, "galore_dct": 0.1,
               "gradnorm_lorp": 0.1, "apollo": 3e-2, "apollo_mini": 3e-2, "frugal": 3e-2, "owlore": 3e-2,
               "mezo_adam": 1e-3},
}
#: Arguments other than the learning rate (registry defaults otherwise). M-FAC's default window of 1024
#: gradients would hold 1024 copies of the parameters (1.1 GB for the CharLM) and dominate the run time.
EXTRA_KWARGS = {"mfac": {"num_grads": 32}}
#: Low-rank optimizers (a ``rank_arg`` in the registry) train at rank ``width // RANK_DIVISOR`` (APOLLO's and
#: GaLore's ratio for their smaller LLaMA models).
RANK_DIVISOR = 4


@dataclasses.dataclass(frozen=True)
class Size:
  charlm: CharLMConfig
  charlm_batch: int
  charlm_steps: int
  corpus_bytes: int
  digits_hidden: int
  digits_steps: int
  eval_every: int


SIZES = {
    "tiny": Size(CharLMConfig(seq_len=16, d_model=16, num_layers=1, num_heads=2), 4, 10, 20_000, 16, 10, 5),
    "default": Size(CharLMConfig(), 16, 250, 2_000_000, 128, 500, 25),
    "large": Size(CharLMConfig(seq_len=128, d_model=128), 32, 1000, 8_000_000, 256, 2000, 100),
}


@dataclasses.dataclass
class Task:
  """A model, its data and its metrics, as pure functions of a parameter tree."""

  name: str
  steps: int
  init: Callable[[int], Any]  # seed -> params
  loss: Callable[[Any, jax.Array, jax.Array], jax.Array]
  logits: Callable[[Any, jax.Array], jax.Array]
  batches: Callable[[int], tuple[np.ndarray, np.ndarray]]  # seed -> (inputs, targets), leading axis = step
  evaluate: Callable[[Any], dict[str, float]]
  description: str
  width: int  # the model width; low-rank optimizers get a quarter of it as their rank


def charlm_task(size: Size) -> Task:
  config, batch = size.charlm, size.charlm_batch
  corpus = load_stdlib_corpus(size.corpus_bytes)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: CharLM(config, rngs=nnx.Rngs(0))))
  logits = lambda params, x: nnx.merge(graphdef, params)(x)
  loss = lambda params, x, y: cross_entropy_loss(nnx.merge(graphdef, params), x, y)
  val_rng = np.random.default_rng(12345)
  val = [corpus.batch(val_rng, batch, config.seq_len, "val") for _ in range(8)]
  val_x, val_y = jnp.asarray(np.stack([v[0] for v in val])), jnp.asarray(np.stack([v[1] for v in val]))
  val_loss = jax.jit(lambda p: jnp.mean(jax.vmap(loss, in_axes=(None, 0, 0))(p, val_x, val_y)))

  def batches(seed):
    rng = np.random.default_rng(seed)
    xs, ys = zip(*(corpus.batch(rng, batch, config.seq_len) for _ in range(size.charlm_steps)))
    return np.stack(xs), np.stack(ys)

  init = lambda seed: nnx.split(nnx.jit(lambda: CharLM(config, rngs=nnx.Rngs(seed)))())[1]
  n = sum(x.size for x in jax.tree.leaves(init(0)))
  return Task("charlm", size.charlm_steps, init, loss, logits, batches,
              lambda p: {"val_loss": float(val_loss(p))},
              f"CharLM d={config.d_model}, {config.num_layers} layers ({n:,} params), batch {batch}x{config.seq_len}, "
              f"{size.charlm_steps} steps; {len(corpus.train):,} train / {len(corpus.val):,} val bytes of the stdlib",
              config.d_model)


class _MLP(nnx.Module):
  def __init__(self, hidden: int, rngs: nnx.Rngs):
    self.l1, self.l2 = nnx.Linear(64, hidden, rngs=rngs), nnx.Linear(hidden, hidden, rngs=rngs)
    self.l3 = nnx.Linear(hidden, 10, rngs=rngs)

  def __call__(self, x):
    return self.l3(nnx.relu(self.l2(nnx.relu(self.l1(x)))))


def digits_task(size: Size) -> Task:
  from sklearn.datasets import load_digits

  images, labels = load_digits(return_X_y=True)
  order = np.random.default_rng(0).permutation(len(images))
  x, y = (images[order] / 16.0).astype(np.float32), labels[order].astype(np.int32)
  n_train = 1400
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: _MLP(size.digits_hidden, nnx.Rngs(0))))
  logits = lambda params, xb: nnx.merge(graphdef, params)(xb)
  loss = lambda params, xb, yb: optax.softmax_cross_entropy_with_integer_labels(logits(params, xb), yb).mean()
  x_val, y_val = jnp.asarray(x[n_train:]), jnp.asarray(y[n_train:])
  metrics = jax.jit(lambda p: (loss(p, x_val, y_val), jnp.mean(logits(p, x_val).argmax(-1) == y_val)))

  def evaluate(params):
    val_loss, accuracy = metrics(params)
    return {"val_loss": float(val_loss), "val_accuracy": float(accuracy)}

  def batches(seed):
    idx = np.random.default_rng(seed).integers(0, n_train, size=(size.digits_steps, 64))
    return x[idx], y[idx]

  init = lambda seed: nnx.split(_MLP(size.digits_hidden, nnx.Rngs(seed)))[1]
  return Task("digits", size.digits_steps, init, loss, logits, batches, evaluate,
              f"MLP 64-{size.digits_hidden}-{size.digits_hidden}-10 on scikit-learn digits ({n_train} train / "
              f"{len(x) - n_train} val images), batch 64, {size.digits_steps} steps", size.digits_hidden)


TASKS = {"charlm": charlm_task, "digits": digits_task}


@dataclasses.dataclass
class Run:
  optimizer: str
  task: str
  lr: float
  seed: int
  train_losses: list[float] = dataclasses.field(default_factory=list)
  evals: list[tuple[int, dict[str, float]]] = dataclasses.field(default_factory=list)
  state_bytes: int = 0
  ms_per_step: float = math.nan
  error: str = ""

  def best(self, key: str, mode=min) -> float:
    values = [e[key] for _, e in self.evals if math.isfinite(e[key])]
    return mode(values) if values and self.finite else (math.inf if mode is min else 0.0)

  @property
  def finite(self) -> bool:
    return not self.error and bool(self.train_losses) and all(math.isfinite(v) for v in self.train_losses)

  @property
  def final_train_loss(self) -> float:
    tail = self.train_losses[-max(1, len(self.train_losses) // 10):]
    return float(np.mean(tail)) if self.finite else math.inf

  @property
  def final_val_loss(self) -> float:
    return self.evals[-1][1]["val_loss"] if self.finite and self.evals else math.inf

  def steps_to(self, target: float) -> int | None:
    """The first evaluation step whose validation loss is at most ``target``."""
    hits = [step for step, e in self.evals if e["val_loss"] <= target] if self.finite else []
    return hits[0] if hits else None


def make_optimizer(name: str, learning_rate, width: int) -> optax.GradientTransformation:
  if name == BASELINE:
    return optax.adamw(learning_rate)
  spec = gradtx.OPTIMIZERS[name]
  kwargs = dict(EXTRA_KWARGS.get(name, {}))
  if spec.rank_arg:
    kwargs.setdefault(spec.rank_arg, max(1, width // RANK_DIVISOR))
  return spec.factory(learning_rate=learning_rate, **kwargs)


class Trainer:
  """Trains runs of one task; one compilation per optimizer serves its whole sweep and every seed.

  The peak learning rate is an argument of the compiled scan (the schedule is ``peak * shape(step)``), so
  a sweep does not recompile. Inits and batches are made once per seed.
  """

  def __init__(self, task: Task, eval_every: int):
    if task.steps % eval_every:
      raise ValueError(f"`eval_every` ({eval_every}) must divide the {task.name} task's {task.steps} steps.")
    self.task, self.eval_every = task, eval_every
    self.shape = optax.warmup_cosine_decay_schedule(0.0, 1.0, max(1, task.steps // 10), task.steps, 0.1)
    self._compiled, self._seeded = {}, {}

  def _chunk(self, name: str, carry, inputs, targets):
    if name not in self._compiled:
      task, shape = self.task, self.shape

      def chunk(carry, xs, ys, peak):
        tx = make_optimizer(name, lambda count: peak * shape(count), task.width)

        def step(carry, batch):
          params, state = carry
          x, y = batch
          loss_fn = lambda p: task.loss(p, x, y)
          value, grads = jax.value_and_grad(loss_fn)(params)
          updates, state = tx.update(grads, state, params, loss_fn=loss_fn,
                                     logits_fn=lambda p: task.logits(p, x), value=value)
          return (optax.apply_updates(params, updates), state), value

        return jax.lax.scan(step, carry, (xs, ys))

      self._compiled[name] = jax.jit(chunk, donate_argnums=0).lower(carry, inputs, targets, jnp.float32(1)).compile()
    return self._compiled[name]

  def run(self, run: Run, on_chunk: Callable[[int, float], None]) -> None:
    """Fills ``run`` in: scans of ``eval_every`` steps, each followed by an evaluation."""
    task, every = self.task, self.eval_every
    if run.seed not in self._seeded:
      self._seeded[run.seed] = (task.init(run.seed), task.batches(run.seed))
    init, (inputs, targets) = self._seeded[run.seed]
    state = make_optimizer(run.optimizer, self.shape, task.width).init(init)  # a schedule: same state as in the scan
    run.state_bytes = gradtx.state_nbytes(state)
    carry = jax.tree.map(jnp.copy, (init, state))  # the scan donates its carry: one fresh buffer per leaf
    chunk = self._chunk(run.optimizer, carry, inputs[:every], targets[:every])
    elapsed = 0.0
    for begin in range(0, task.steps, every):
      start = time.perf_counter()
      carry, losses = chunk(carry, inputs[begin:begin + every], targets[begin:begin + every], jnp.float32(run.lr))
      losses = np.asarray(losses).tolist()
      elapsed += time.perf_counter() - start
      run.train_losses.extend(losses)
      on_chunk(len(losses), losses[-1])
      if not all(math.isfinite(v) for v in losses):
        break
      run.evals.append((begin + every, task.evaluate(carry[0])))
    run.ms_per_step = 1e3 * elapsed / len(run.train_losses)


def plan(selection: str, tasks: list[str]) -> tuple[list[str], list[str], dict[str, dict[str, tuple[float, str]]]]:
  """(optimizer names, skip notes, task -> name -> (centre lr, where it came from))."""
  registered = gradtx.OPTIMIZERS
  names = [BASELINE, *registered] if selection == "all" else [BASELINE] + [
      n.strip() for n in selection.split(",") if n.strip() and n.strip() != BASELINE]
  unknown = [n for n in names if n != BASELINE and n not in registered]
  if unknown:
    raise ValueError(f"unknown optimizer(s) {unknown}: choose from {[BASELINE, *registered]}.")
  chosen, skipped = [], []
  for name in dict.fromkeys(names):
    missing = [] if name == BASELINE else [a for a in registered[name].required_extra_args
                                           if a not in PROVIDED_EXTRA_ARGS]
    if missing:
      skipped.append(f"{name}: needs extra update argument(s) {missing}, which this loop does not provide")
    else:
      chosen.append(name)
  centres = {t: {n: (CENTRE_LR[t][n], "table") if n in CENTRE_LR[t]
                 else (float(registered[n].test_kwargs["learning_rate"]), "registry test_kwargs")
                 for n in chosen} for t in tasks}
  return chosen, skipped, centres


def summarize(runs: list[Run], task: str, names: list[str]) -> list[dict[str, Any]]:
  """One row per optimizer, at the learning rate with the lowest mean best validation loss."""
  by_name = {n: [r for r in runs if r.task == task and r.optimizer == n] for n in names}

  def mean(values):
    return float(np.mean(values)) if values else math.inf

  accuracy = any("val_accuracy" in e for r in runs if r.task == task for _, e in r.evals)
  rows = {}
  for name, own in by_name.items():
    lrs = sorted({r.lr for r in own})
    score = {lr: mean([r.best("val_loss") for r in own if r.lr == lr]) for lr in lrs}
    best_lr = min(lrs, key=lambda lr: score[lr])
    chosen = [r for r in own if r.lr == best_lr]
    rows[name] = {"name": name, "lr": best_lr, "edge": len(lrs) > 1 and best_lr in (lrs[0], lrs[-1]),
                  "sweep": score, "runs": chosen, "val_loss": score[best_lr],
                  "val_accuracy": mean([r.best("val_accuracy", max) for r in chosen]) if accuracy else None,
                  "final": mean([r.final_train_loss for r in chosen]),
                  "final_val": mean([r.final_val_loss for r in chosen]),
                  "state_bytes": chosen[0].state_bytes,
                  "ms": float(np.median([r.ms_per_step for r in own if math.isfinite(r.ms_per_step)] or [math.nan])),
                  "errors": sorted({r.error for r in own if r.error})}
  target = rows[BASELINE]["final_val"]
  for row in rows.values():
    hits = [r.steps_to(target) for r in row["runs"]]
    row["steps_to_adamw"] = (f"{np.mean(hits):.0f}" if all(h is not None for h in hits)
                             else f"not reached ({sum(h is not None for h in hits)}/{len(hits)} seeds)")
  return list(rows.values())


def format_table(rows: list[dict[str, Any]], centres: dict[str, tuple[float, str]]) -> str:
  accuracy = rows[0]["val_accuracy"] is not None
  family = lambda n: "optax" if n == BASELINE else gradtx.OPTIMIZERS[n].family
  out = ["| optimizer | family | best lr (centre from) | best val loss" + (" | best val accuracy" if accuracy else "")
         + " | final train loss | steps to AdamW's final val loss | state bytes | ms/step |",
         "|---|---|---|---|" + ("---|" if accuracy else "") + "---|---|---|---|"]
  for row in sorted(rows, key=lambda r: (r["name"] != BASELINE, family(r["name"]), r["name"])):
    lr = f"{row['lr']:.3g}{' (edge)' if row['edge'] else ''} ({centres[row['name']][1]})"
    cells = [f"`{row['name']}`", family(row["name"]), lr, f"{row['val_loss']:.4f}"]
    cells += [f"{row['val_accuracy']:.3f}"] if accuracy else []
    cells += [f"{row['final']:.4f}", row["steps_to_adamw"], f"{row['state_bytes']:,}", f"{row['ms']:.1f}"]
    if row["errors"]:
      cells[3] += " (error: " + "; ".join(e[:80] for e in row["errors"]) + ")"
    out.append("| " + " | ".join(cells) + " |")
  return "\n".join(out)


def plot(rows: list[dict[str, Any]], task: Task, centres: dict[str, tuple[float, str]], path: pathlib.Path) -> None:
  import matplotlib
  import matplotlib.ticker
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no display needed
  from matplotlib.figure import Figure

  fig = Figure(figsize=(13, 5))
  FigureCanvasAgg(fig)
  curves, sweep = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
  cmap = matplotlib.colormaps["tab20"]
  for i, row in enumerate(rows):
    colour = cmap((2 * i) % 20 + (i // 10) % 2)  # the dark shades of tab20's ten hues first, then the light
    style = {"color": "k", "ls": "--", "lw": 2} if row["name"] == BASELINE else {"color": colour}
    losses = np.mean([r.train_losses for r in row["runs"] if r.finite], axis=0) if any(
        r.finite for r in row["runs"]) else None
    if losses is not None:
      window = max(1, len(losses) // 20)
      curves.plot(np.arange(window, len(losses) + 1), np.convolve(losses, np.ones(window) / window, "valid"),
                  label=f"{row['name']} (lr {row['lr']:.3g})", **style)
    lrs = sorted(row["sweep"])
    sweep.plot([lr / centres[row["name"]][0] for lr in lrs], [row["sweep"][lr] for lr in lrs], marker="o", **style)
  curves.set(title=f"{task.name}: train loss at each optimizer's best lr (moving average)", xlabel="step",
             ylabel="train loss", yscale="log")
  sweep.set(title="best validation loss across the sweep", xlabel="learning rate / centre", ylabel="val loss",
            xscale="log", yscale="log")
  multipliers = sorted({lr / centres[row["name"]][0] for row in rows for lr in row["sweep"]})
  sweep.set_xticks(multipliers, [f"{m:.3g}" for m in multipliers])
  sweep.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
  curves.legend(fontsize="x-small", ncol=2)
  fig.suptitle(task.description, fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
  """Runs the benchmark; returns 1 when a run raised (the report still lists it), else 0."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--optimizers", default="all", help=f"'all' or registry names separated by commas "
                                                          f"({BASELINE} always runs)")
  parser.add_argument("--tasks", default="charlm,digits", help=f"comma-separated, from {', '.join(TASKS)}")
  parser.add_argument("--size", choices=list(SIZES), default="default", help="model sizes and step budgets")
  parser.add_argument("--seeds", default="0", help="comma-separated ints (init and batch order)")
  parser.add_argument("--lr-multipliers", default="0.333,1,3", help="the sweep, relative to each centre lr")
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "results")
  parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
  args = parser.parse_args(argv)
  try:
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks or any(t not in TASKS for t in tasks):
      raise ValueError(f"--tasks must be names from {list(TASKS)}, got {args.tasks!r}.")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    multipliers = sorted(float(m) for m in args.lr_multipliers.split(",") if m.strip())
    if not seeds or not multipliers or min(multipliers) <= 0:
      raise ValueError("--seeds needs at least one int and --lr-multipliers at least one positive number.")
    names, skipped, centres = plan(args.optimizers, tasks)
  except ValueError as e:
    parser.error(str(e))
  from tqdm.auto import tqdm  # the benchmarks extra

  size = SIZES[args.size]
  built = {t: TASKS[t](size) for t in tasks}
  trainers = {t: Trainer(built[t], size.eval_every) for t in tasks}
  runs = []
  for t in tasks:  # one bar per task: their steps cost very different times
    bar = tqdm(total=built[t].steps * len(names) * len(multipliers) * len(seeds), unit="step", mininterval=1.0,
               disable=args.no_progress, file=sys.stderr,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} steps [{elapsed}<{remaining}]{postfix}")
    for name in names:
      for multiplier in multipliers:
        for seed in seeds:
          run = Run(name, t, centres[t][name][0] * multiplier, seed)
          bar.set_description(f"{t} {name} lr={run.lr:.3g} seed={seed}", refresh=False)
          on_chunk = lambda n, loss: (bar.update(n), bar.set_postfix_str(f"loss {loss:.3f}", refresh=False))
          try:
            trainers[t].run(run, on_chunk)
          except Exception as e:  # noqa: BLE001  one broken optimizer must not hide the others' results
            run.error = f"{type(e).__name__}: {e}".splitlines()[0][:200]
          bar.update(built[t].steps - len(run.train_losses))
          runs.append(run)
    bar.close()

  args.out.mkdir(parents=True, exist_ok=True)
  takes_rank = [n for n in names if n != BASELINE and gradtx.OPTIMIZERS[n].rank_arg]
  rank_note = [f"{', '.join(f'`{n}`' for n in takes_rank)} train at rank width // {RANK_DIVISOR} (CharLM: d_model; "
               "digits: the hidden width)"] if takes_rank else []
  out = [header("Convergence at a small learning-rate sweep", [
      f"size `{args.size}`, seeds {seeds}, learning rates = centre x {multipliers}; 10% linear warm-up, then "
      "cosine decay to a tenth of the peak; the same initialization and batches for every optimizer",
      "best lr: lowest best validation loss (mean over seeds); `(edge)` marks a best lr at the end of the sweep "
      "(a wider sweep may find a better one); centre from `table` (benchmarks/convergence.py) or from the "
      "registry's `test_kwargs` (tuned on toy problems, not on these tasks)",
      "final train loss: mean of the last 10% of steps; steps to AdamW's final val loss: the first evaluation "
      f"(every {size.eval_every} steps) at which the validation loss reaches AdamW's last one (mean over seeds)",
      "ms/step: jitted forward + backward + update, median over the sweep; compare within one run only "
      "(the machine may be shared)",
      *[f"`{n}` runs with {kw} (see `EXTRA_KWARGS`)" for n, kw in EXTRA_KWARGS.items() if n in names],
      *rank_note,
      *[f"skipped {note}" for note in skipped],
  ])]
  for t in tasks:
    rows = summarize(runs, t, names)
    plot(rows, built[t], centres[t], args.out / f"convergence_{t}.png")
    out += [f"## {t}: {built[t].description}", "", format_table(rows, centres[t]), "",
            f"![{t} curves](convergence_{t}.png)", ""]
  (args.out / "convergence.md").write_text("\n".join(out))
  print("\n".join(out))
  return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
  sys.exit(main())
