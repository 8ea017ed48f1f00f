"""gradtx on JAX's multi-controller runtime: real processes on 127.0.0.1, a global mesh, orbax restarts.

Three checks, each launching fresh Python processes (each with its own CPU devices) under a timeout:

1. ``single``: one process with ``P x L`` devices trains a small Flax (nnx) MLP with several registered
   gradtx optimizers on a global mesh (batch split over ``'data'``; the first kernel and the optimizer
   state split FSDP-style with :func:`gradtx.state_shardings`).
2. ``multi``: ``P`` processes with ``L`` devices each, joined by ``jax.distributed.initialize``, run the same
   program on the same global mesh; the final params must equal the single-process ones (up to the order
   of cross-device sums, ~1e-7).
3. ``fault``: the multi-process run checkpoints with orbax every few steps; one process is killed with
   SIGKILL after a given step, the survivor is stopped, and both restart from the last checkpoint: the final
   params must equal the uninterrupted multi-process run exactly.

Run ``python benchmarks/multihost.py`` (about 2.5 minutes on 2 busy cores); ``tests/distributed/test_multihost.py``
runs the same functions with fewer optimizers and steps. Report: ``benchmarks/results/multihost.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OPTIMIZERS = ("lion", "adabelief", "lamb", "adam_coordinate_clipped", "mezo_adam")


# --------------------------------------------------------------------------------------- the launcher


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _child_env(cache_dir: str | None) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # no inherited 8-device flag
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
  if cache_dir:
    env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
  return env


def _command(args: argparse.Namespace, process_id: int, num_processes: int, port: int, out: str, **extra) -> list[str]:
  cmd = [
      sys.executable, str(pathlib.Path(__file__).resolve()), "--worker",
      "--process-id", str(process_id), "--num-processes", str(num_processes), "--port", str(port),
      "--local-devices", str(args.local_devices * (args.processes if num_processes == 1 else 1)),
      "--steps", str(args.steps), "--optimizers", ",".join(args.optimizers), "--out", out,
  ]
  for key, value in extra.items():
    cmd += [f"--{key.replace('_', '-')}", str(value)] if value is not True else [f"--{key.replace('_', '-')}"]
  return cmd


def _launch(args, num_processes, out, **extra) -> list[subprocess.Popen]:
  port = free_port()
  procs = []
  for i in range(num_processes):
    log = open(os.path.join(out, f"log-{i}.txt"), "a")  # noqa: SIM115  (closed with the process)
    procs.append(
        subprocess.Popen(_command(args, i, num_processes, port, out, **extra), env=_child_env(args.cache_dir),
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    )
  return procs


def _kill(procs: list[subprocess.Popen]) -> None:
  for p in procs:
    if p.poll() is None:
      os.killpg(p.pid, signal.SIGKILL)
  for p in procs:
    p.wait()


def _wait(procs: list[subprocess.Popen], timeout: float, out: str) -> None:
  deadline = time.monotonic() + timeout
  try:
    for p in procs:
      p.wait(timeout=max(deadline - time.monotonic(), 0.1))
  except subprocess.TimeoutExpired:
    _kill(procs)
    raise RuntimeError(f"processes still running after {timeout:.0f} s; logs in {out}") from None
  bad = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
  if bad:
    logs = "\n".join(pathlib.Path(out, f"log-{i}.txt").read_text()[-3000:] for i, _ in bad)
    raise RuntimeError(f"processes exited with {bad}:\n{logs}")


def _result(out: str) -> dict:
  import numpy as np

  with np.load(os.path.join(out, "params.npz")) as data:
    return {k: data[k] for k in data.files}


def run_single(args, out: str) -> dict:
  _wait(_launch(args, 1, out), args.timeout, out)
  return _result(out)


def run_multi(args, out: str, **extra) -> dict:
  _wait(_launch(args, args.processes, out, **extra), args.timeout, out)
  return _result(out)


def run_fault(args, out: str) -> tuple[dict, int]:
  """Kills process ``P-1`` after step ``kill_after``, then restarts all from the last checkpoint."""
  ckpt = os.path.join(out, "ckpt")
  procs = _launch(args, args.processes, out, ckpt=ckpt, ckpt_every=args.ckpt_every, pause_after=args.kill_after)
  marker = pathlib.Path(out, f"paused-{args.processes - 1}")
  deadline = time.monotonic() + args.timeout
  while not marker.exists():
    if time.monotonic() > deadline or any(p.poll() not in (None,) for p in procs):
      _kill(procs)
      raise RuntimeError(f"the run ended or timed out before step {args.kill_after}; logs in {out}")
    time.sleep(0.05)
  os.killpg(procs[-1].pid, signal.SIGKILL)  # the crash
  time.sleep(0.5)
  _kill(procs)  # the survivors block on collectives with a dead peer: stop them as a scheduler would
  restarted = run_multi(args, out, ckpt=ckpt, ckpt_every=args.ckpt_every, resume=True)
  return restarted, int(json.loads(pathlib.Path(out, "resumed.json").read_text())["from_step"])


def max_difference(a: dict, b: dict) -> float:
  import numpy as np

  assert a.keys() == b.keys(), (sorted(a), sorted(b))
  return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)


def main(argv=None) -> int:
  args = parse(argv)
  if args.worker:
    return worker(args)
  lines = ["# Multi-process runs on 127.0.0.1", "",
           f"{args.processes} processes x {args.local_devices} CPU devices, {args.steps} steps, optimizers: "
           f"{', '.join(args.optimizers)}.", "", "| run | wall time | max abs difference |", "|---|---|---|"]
  with tempfile.TemporaryDirectory() as tmp:
    dirs = {name: os.path.join(tmp, name) for name in ("single", "multi", "fault")}
    for d in dirs.values():
      os.makedirs(d)
    t = time.monotonic()
    single = run_single(args, dirs["single"])
    lines.append(f"| 1 process x {args.processes * args.local_devices} devices | {time.monotonic() - t:.1f} s | – |")
    t = time.monotonic()
    multi = run_multi(args, dirs["multi"])
    diff = max_difference(single, multi)
    lines.append(f"| {args.processes} processes (vs 1 process) | {time.monotonic() - t:.1f} s | {diff:.2e} |")
    t = time.monotonic()
    restarted, from_step = run_fault(args, dirs["fault"])
    fault_diff = max_difference(multi, restarted)
    lines.append(f"| killed after step {args.kill_after}, restarted from step {from_step} (vs uninterrupted) | "
                 f"{time.monotonic() - t:.1f} s | {fault_diff:.2e} |")
  report = "\n".join(lines) + "\n"
  print(report)
  if args.report:  # '' skips the file
    pathlib.Path(args.report).write_text(report)
  return 0 if diff < 1e-5 and fault_diff == 0.0 else 1


def parse(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--processes", type=int, default=2)
  p.add_argument("--local-devices", type=int, default=2)
  p.add_argument("--steps", type=int, default=16)
  p.add_argument("--optimizers", type=lambda s: tuple(s.split(",")), default=DEFAULT_OPTIMIZERS)
  p.add_argument("--ckpt-every", type=int, default=4)
  p.add_argument("--kill-after", type=int, default=10)
  p.add_argument("--timeout", type=float, default=240.0)
  p.add_argument("--cache-dir", default=None)
  p.add_argument("--report", default=str(ROOT / "benchmarks" / "results" / "multihost.md"))
  # worker side
  p.add_argument("--worker", action="store_true")
  p.add_argument("--process-id", type=int, default=0)
  p.add_argument("--num-processes", type=int, default=1)
  p.add_argument("--port", type=int, default=0)
  p.add_argument("--out", default=".")
  p.add_argument("--ckpt", default=None)
  p.add_argument("--pause-after", type=int, default=-1)
  p.add_argument("--resume", action="store_true")
  return p.parse_args(argv)


# --------------------------------------------------------------------------------------- one process


def worker(args: argparse.Namespace) -> int:
  import jax

  jax.config.update("jax_num_cpu_devices", args.local_devices)  # before any JAX operation
  if args.num_processes > 1:
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{args.port}", num_processes=args.num_processes,
        process_id=args.process_id, initialization_timeout=60,
    )
  import numpy as np
  from jax.experimental import multihost_utils

  import gradtx

  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  results = {}
  for name in args.optimizers:
    spec = gradtx.OPTIMIZERS[name]
    params = train(spec, mesh, args, tag=name, first=name == args.optimizers[0])
    for path, value in jax.tree_util.tree_flatten_with_path(params)[0]:
      results[name + jax.tree_util.keystr(path)] = np.asarray(multihost_utils.process_allgather(value, tiled=True))
  if jax.process_index() == 0:
    np.savez(os.path.join(args.out, "params.npz"), **results)
  return 0


def train(spec, mesh, args: argparse.Namespace, *, tag: str, first: bool) -> dict:
  """``args.steps`` steps of ``spec``'s optimizer on the MLP; with ``args.ckpt``, orbax checkpoints."""
  import functools

  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from flax import nnx
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  import gradtx

  class MLP(nnx.Module):
    def __init__(self, rngs):
      self.l1 = nnx.Linear(8, 32, rngs=rngs)
      self.l2 = nnx.Linear(32, 4, rngs=rngs)

    def __call__(self, x):
      return self.l2(jax.nn.relu(self.l1(x)))

  graphdef, state = nnx.split(MLP(nnx.Rngs(0)))
  host_params = jax.tree.map(np.asarray, nnx.to_pure_dict(state))
  specs = {"l1": {"bias": P("data"), "kernel": P(None, "data")}, "l2": {"bias": P(), "kernel": P("data", None)}}
  shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
  global_array = lambda x, sharding: jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
  params = jax.tree.map(global_array, host_params, shardings)

  def batch(t):  # the global batch of step t, the same in every process; each keeps its rows
    rng = np.random.default_rng(1000 + t)
    x = rng.normal(size=(32, 8)).astype(np.float32)
    y = np.sin(x @ np.linspace(-1.0, 1.0, 32).reshape(8, 4)).astype(np.float32)
    rows = NamedSharding(mesh, P("data", None))
    return global_array(x, rows), global_array(y, rows)

  def loss(p, x, y):
    return jnp.mean(jnp.square(nnx.merge(graphdef, nnx.State(p), copy=True)(x) - y))

  tx = spec.build()
  state_shardings = gradtx.state_shardings(tx, params, shardings)
  opt_state = jax.jit(tx.init, out_shardings=state_shardings)(params)

  @functools.partial(jax.jit, donate_argnums=(0, 1), out_shardings=(shardings, state_shardings))
  def step(p, s, x, y):
    loss_fn = functools.partial(loss, x=x, y=y)
    extra = {"loss_fn": loss_fn, "value": loss_fn(p)}
    updates, s = tx.update(jax.grad(loss_fn)(p), s, p, **{k: extra[k] for k in spec.required_extra_args})
    return optax.apply_updates(p, updates), s

  start, manager = 0, None
  if args.ckpt:
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    manager = ocp.CheckpointManager(os.path.join(args.ckpt, tag), options=options)
    if args.resume and manager.latest_step() is not None:
      start = manager.latest_step()
      target = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": opt_state})
      restored = manager.restore(start, args=ocp.args.StandardRestore(target))
      params, opt_state = restored["params"], restored["opt_state"]
      if first and jax.process_index() == 0:
        pathlib.Path(args.out, "resumed.json").write_text(json.dumps({"from_step": start}))
  for t in range(start, args.steps):
    params, opt_state = step(params, opt_state, *batch(t))
    if manager is not None and (t + 1) % args.ckpt_every == 0:
      manager.save(t + 1, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state}))
    if first and t + 1 == args.pause_after and jax.process_index() == jax.process_count() - 1:
      pathlib.Path(args.out, f"paused-{jax.process_index()}").write_text(str(t + 1))
      time.sleep(3600)  # until the launcher kills this process: the crash
  if manager is not None:
    manager.close()
  return params


if __name__ == "__main__":
  sys.path.insert(0, str(ROOT))
  sys.exit(main())
