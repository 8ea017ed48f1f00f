"""Amortized step time of the curvature optimizers against AdamW, measured side by side in one run.

A full training step (forward, backward, optimizer, apply) of a small MLP classifier, jitted with the params and
optimizer state donated. Sophia refreshes its Hessian estimate every k = 10 steps under ``lax.cond``, so its cost
is amortized over a window of steps that is a multiple of 10; AdaHessian estimates every step. Rounds alternate
the optimizers and the median over rounds is reported, so machine load affects all of them alike.

Run: ``python benchmarks/curvature_step_time.py [--width 512] [--rounds 7]``; writes
``benchmarks/results/curvature_step_time.md`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import gradtx

OUT = pathlib.Path(__file__).parent / "results" / "curvature_step_time.md"


def make_problem(width: int, depth: int, batch: int, n_in: int = 256, n_classes: int = 16):
  keys = jax.random.split(jax.random.key(0), depth + 3)
  sizes = [n_in] + [width] * depth + [n_classes]
  params = {
      f"layer{i}": {
          "kernel": jax.random.normal(keys[i], (a, b), jnp.float32) / jnp.sqrt(a),
          "bias": jnp.zeros((b,), jnp.float32),
      }
      for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
  }
  x = jax.random.normal(keys[-2], (batch, n_in), jnp.float32)
  y = jax.random.randint(keys[-1], (batch,), 0, n_classes)

  def logits_fn(p):
    h = x
    for i in range(len(p)):
      h = h @ p[f"layer{i}"]["kernel"] + p[f"layer{i}"]["bias"]
      if i < len(p) - 1:
        h = jax.nn.gelu(h)
    return h

  def loss_fn(p):
    return optax.softmax_cross_entropy_with_integer_labels(logits_fn(p), y).mean()

  return params, loss_fn, logits_fn


def make_runner(tx, params, loss_fn, logits_fn, steps):
  """A jitted function running ``steps`` training steps (a scan), params and state donated."""

  def one(carry, _):
    p, s = carry
    loss, grads = jax.value_and_grad(loss_fn)(p)
    u, s = tx.update(grads, s, p, loss_fn=loss_fn, logits_fn=logits_fn)
    return (optax.apply_updates(p, u), s), loss

  run = jax.jit(lambda p, s: jax.lax.scan(one, (p, s), None, steps)[0], donate_argnums=(0, 1))
  state = tx.init(params)
  return run, state


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--width", type=int, default=512)
  parser.add_argument("--depth", type=int, default=3)
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--steps", type=int, default=20, help="steps per timed window (a multiple of 10)")
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--out", type=pathlib.Path, default=OUT)
  args = parser.parse_args()
  if args.steps % 10:
    parser.error("--steps must be a multiple of 10 (Sophia's k)")

  params, loss_fn, logits_fn = make_problem(args.width, args.depth, args.batch)
  n_params = sum(x.size for x in jax.tree.leaves(params))
  optimizers = {
      "adamw": optax.adamw(1e-3, weight_decay=0.1),
      "sophia_h (k=10)": gradtx.sophia_h(1e-3, update_interval=10),
      "sophia_g (k=10)": gradtx.sophia_g(1e-3, update_interval=10),
      "adahessian (every step)": gradtx.adahessian(0.1),
      "adahessian (k=10)": gradtx.adahessian(0.1, update_interval=10),
  }
  runners = {}
  for name, tx in optimizers.items():
    run, state = make_runner(tx, params, loss_fn, logits_fn, args.steps)
    p = jax.tree.map(jnp.copy, params)
    p, state = run(p, state)  # compile and warm up
    jax.block_until_ready(p)
    runners[name] = [run, p, state]

  times = {name: [] for name in optimizers}
  for r in range(args.rounds):
    order = list(optimizers) if r % 2 == 0 else list(reversed(optimizers))
    for name in order:
      run, p, state = runners[name]
      start = time.perf_counter()
      p, state = run(p, state)
      jax.block_until_ready((p, state))
      times[name].append((time.perf_counter() - start) / args.steps)
      runners[name][1:] = [p, state]

  base = statistics.median(times["adamw"])
  lines = [
      "# Curvature optimizers: amortized step time vs AdamW",
      "",
      f"Full training step (forward, backward, optimizer, apply) of a {args.depth}-hidden-layer GELU MLP "
      f"(width {args.width}, {n_params:,} params, batch {args.batch}), jitted, params and state donated; "
      f"median over {args.rounds} alternating rounds of {args.steps} steps (a scan). Sophia refreshes every "
      "k = 10 steps under `lax.cond`, so its cost is amortized over the window.",
      "",
      f"Device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {platform.processor() or platform.machine()}; "
      f"jax {jax.__version__}, optax {optax.__version__}.",
      "",
      "| optimizer | ms / step (median) | ratio vs AdamW |",
      "|---|---|---|",
  ]
  for name in optimizers:
    t = statistics.median(times[name])
    lines.append(f"| {name} | {1e3 * t:.2f} | {t / base:.2f} |")
  lines.append("")
  lines.append(
      "Command: `python benchmarks/curvature_step_time.py "
      f"--width {args.width} --depth {args.depth} --batch {args.batch} --steps {args.steps} --rounds {args.rounds}`"
  )
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
