"""What the oracle side (PyTorch, NumPy) and the replay side (JAX) of the fidelity tests share.

* The problem: a tiny two-layer regression with weights in the PyTorch layout ``(out, in)`` and biases.
  The first layer is *scale-invariant-ish*: each pre-activation is divided by a power of its weight row's
  norm, ``z_r = <x, w_r> (κ + (1 − κ) / ‖w_r‖)``; for κ = 0 the loss is exactly invariant to the scale of
  each row (as under a following BatchNorm), so the gradient is orthogonal to the row and AdamP/SGDP's
  projection fires; κ > 0 adds a radial component. :func:`loss` is written once against an array module
  ``xp`` (``numpy``, ``torch`` or ``jax.numpy``) so every side computes the same mathematics;
  :func:`numpy_loss_and_grads` is its analytic float64 gradient, for the NumPy transcriptions of official
  code.
* The fixture format (:func:`save_fixture`, :func:`load_fixture`): one ``.npz`` per case with the data, the
  initial params, the params after every step, a JSON ``meta`` record (oracle, hyperparameters for the
  oracle and for gradtx, versions) and optional diagnostics.
* The replay (:func:`replay`, :func:`first_mismatch`): runs a gradtx optimizer from the fixture's initial
  params on the same data in float32, recomputing gradients with ``jax.grad`` of :func:`loss`.

This module imports only NumPy at import time: the oracle environment has no JAX, the test environment has
no PyTorch.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

FIXTURE_DIR = pathlib.Path(__file__).resolve().parent / "fixtures"

#: Parameter names in the order every side iterates them (PyTorch layout: weights are ``(out, in)``).
PARAM_NAMES = ("w1", "b1", "w2", "b2")
DATA_NAMES = ("x", "y", "kappa")


def make_problem(
    seed: int = 0, n: int = 32, d_in: int = 6, hidden: int = 8, d_out: int = 3, kappa: float = 0.0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """Data ``{x, y, kappa}`` and initial params ``{w1, b1, w2, b2}``, float32, from a fixed teacher."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, d_in))
  teacher_w1 = rng.standard_normal((hidden, d_in)) / np.sqrt(d_in)
  teacher_w2 = rng.standard_normal((d_out, hidden)) / np.sqrt(hidden)
  y = np.tanh(x @ teacher_w1.T) @ teacher_w2.T + 0.05 * rng.standard_normal((n, d_out))
  params = {
      "w1": rng.standard_normal((hidden, d_in)) / np.sqrt(d_in),
      "b1": 0.1 * rng.standard_normal(hidden),
      "w2": 0.5 * rng.standard_normal((d_out, hidden)) / np.sqrt(hidden),
      "b2": 0.1 * rng.standard_normal(d_out),
  }
  data = {"x": x, "y": y, "kappa": np.asarray(kappa)}
  as32 = lambda tree: {k: np.asarray(v, np.float32) for k, v in tree.items()}
  return as32(data), as32(params)


def loss(params: Mapping[str, Any], data: Mapping[str, Any], xp: Any) -> Any:
  """Mean squared error of the two-layer model; ``xp`` is ``numpy``, ``torch`` or ``jax.numpy``."""
  w1, b1, w2, b2 = (params[k] for k in PARAM_NAMES)
  x, y, kappa = (data[k] for k in DATA_NAMES)
  row_norm = xp.sqrt((w1 * w1).sum(1))
  z = (x @ w1.T) * (kappa + (1.0 - kappa) / row_norm)
  pred = xp.tanh(z + b1) @ w2.T + b2
  return ((pred - y) ** 2).mean()


def numpy_loss_and_grads(
    params: Mapping[str, np.ndarray], data: Mapping[str, np.ndarray]
) -> tuple[float, dict[str, np.ndarray]]:
  """:func:`loss` and its analytic gradient, in float64."""
  w1, b1, w2, b2 = (np.asarray(params[k], np.float64) for k in PARAM_NAMES)
  x, y, kappa = (np.asarray(data[k], np.float64) for k in DATA_NAMES)
  row_norm = np.sqrt((w1 * w1).sum(1))
  scale = kappa + (1.0 - kappa) / row_norm
  xw = x @ w1.T
  h = np.tanh(xw * scale + b1)
  pred = h @ w2.T + b2
  d_pred = 2.0 * (pred - y) / pred.size
  d_a = (d_pred @ w2) * (1.0 - h * h)
  d_scale = (d_a * xw).sum(0)
  g_w1 = (d_a * scale).T @ x - (d_scale * (1.0 - kappa) / row_norm**3)[:, None] * w1
  grads = {"w1": g_w1, "b1": d_a.sum(0), "w2": d_pred.T @ h, "b2": d_pred.sum(0)}
  return float(((pred - y) ** 2).mean()), grads


@dataclasses.dataclass(frozen=True)
class Fixture:
  """One recorded trajectory.

  Attributes:
    name: the case name (file stem).
    meta: JSON record: ``oracle``, ``oracle_kwargs``, ``gradtx``, ``gradtx_kwargs``, ``steps``, ``versions``,
      ``module`` (the ``cases_*`` module that made it) and case-specific notes.
    data: ``{x, y, kappa}``.
    init: initial params ``{name: array}``.
    trajectory: ``{name: array of shape (steps, *param.shape)}``, params after each step.
    losses: loss at the params before each step, shape ``(steps,)``.
    diagnostics: anything else the generator recorded (projection decisions, peer trajectories, ...).
  """

  name: str
  meta: dict[str, Any]
  data: dict[str, np.ndarray]
  init: dict[str, np.ndarray]
  trajectory: dict[str, np.ndarray]
  losses: np.ndarray
  diagnostics: dict[str, np.ndarray]


def save_fixture(
    out_dir: pathlib.Path | str,
    name: str,
    *,
    meta: Mapping[str, Any],
    data: Mapping[str, np.ndarray],
    init: Mapping[str, np.ndarray],
    trajectory: Mapping[str, np.ndarray],
    losses: np.ndarray,
    diagnostics: Mapping[str, np.ndarray] | None = None,
) -> pathlib.Path:
  """Writes ``<out_dir>/<name>.npz`` (compressed; no pickled objects, so loading needs no allow_pickle)."""
  arrays = {"meta": np.asarray(json.dumps(dict(meta), sort_keys=True)), "losses": np.asarray(losses)}
  for prefix, tree in (("data", data), ("init", init), ("traj", trajectory), ("diag", diagnostics or {})):
    arrays.update({f"{prefix}/{k}": np.asarray(v) for k, v in tree.items()})
  path = pathlib.Path(out_dir) / f"{name}.npz"
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(path, **arrays)
  return path


def load_fixture(path: pathlib.Path | str) -> Fixture:
  """Reads a fixture written by :func:`save_fixture`."""
  path = pathlib.Path(path)
  with np.load(path, allow_pickle=False) as npz:
    arrays = {k: npz[k] for k in npz.files}
  parts: dict[str, dict[str, np.ndarray]] = {"data": {}, "init": {}, "traj": {}, "diag": {}}
  for key, value in arrays.items():
    prefix, _, rest = key.partition("/")
    if rest:
      parts[prefix][rest] = value
  return Fixture(
      name=path.stem,
      meta=json.loads(str(arrays["meta"])),
      data=parts["data"],
      init=parts["init"],
      trajectory=parts["traj"],
      losses=arrays["losses"],
      diagnostics=parts["diag"],
  )


def fixtures_of(module: str) -> list[Fixture]:
  """Every stored fixture made by the case module ``module`` (e.g. ``'cases_first_order'``), by name."""
  found = [load_fixture(p) for p in sorted(FIXTURE_DIR.glob("*.npz")) if _has_meta(p)]
  return [f for f in found if f.meta["module"] == module]


def _has_meta(path: pathlib.Path) -> bool:
  """Whether ``path`` was written by :func:`save_fixture` (the stability fixtures keep their own layout)."""
  with np.load(path, allow_pickle=False) as npz:
    return "meta" in npz.files


def replay(fixture: Fixture, tx: Any, dtype: Any = np.float32) -> dict[str, np.ndarray]:
  """Runs ``tx`` (an optax transformation) along ``fixture``'s problem; returns ``{name: (steps, ...)}``.

  Gradients come from ``jax.grad`` of :func:`loss` at the replay's own params, so the replay follows its own
  trajectory (nothing is taken from the oracle's besides the start).
  """
  import jax  # the oracle environment has no JAX
  import jax.numpy as jnp
  import optax

  data = {k: jnp.asarray(v, dtype) for k, v in fixture.data.items()}
  params = {k: jnp.asarray(v, dtype) for k, v in fixture.init.items()}

  @jax.jit
  def step(params, state):
    grads = jax.grad(loss)(params, data, jnp)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  out = {k: [] for k in params}
  for _ in range(fixture.meta["steps"]):
    params, state = step(params, state)
    for k, v in params.items():
      out[k].append(np.asarray(v))
  return {k: np.stack(v) for k, v in out.items()}


def first_mismatch(
    fixture: Fixture, got: Mapping[str, np.ndarray], rtol: float, atol: float
) -> str | None:
  """``None`` if ``|got − want| <= atol + rtol |want|`` at every step, else where it first fails, and by how much."""
  for t in range(fixture.meta["steps"]):
    for k in PARAM_NAMES:
      want, have = fixture.trajectory[k][t].astype(np.float64), got[k][t].astype(np.float64)
      err = np.abs(have - want)
      bad = err > atol + rtol * np.abs(want)
      if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err / (atol + rtol * np.abs(want)), 0)), want.shape)
        return (
            f"{fixture.name}: step {t + 1}, param {k}{list(i)}: got {have[i]!r}, want {want[i]!r} "
            f"(|err| {err[i]:.3g} > atol {atol:g} + rtol {rtol:g} * |want|; "
            f"{int(bad.sum())}/{bad.size} entries off at this step)"
        )
  return None


def stack_diagnostics(rows: list[Mapping[str, Any]]) -> dict[str, np.ndarray]:
  """Per-step diagnostic dicts to ``{name: array of shape (steps, ...)}``."""
  return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in (rows[0] if rows else {})}


def torch_trajectory(
    make_optimizer: Callable[[list[Any]], Any],
    data: Mapping[str, np.ndarray],
    init: Mapping[str, np.ndarray],
    steps: int,
    probe: Callable[[dict[str, np.ndarray], dict[str, np.ndarray], Any, dict[str, Any]], dict] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
  """Runs a PyTorch optimizer on the problem in float32: ``(trajectory, losses, diagnostics)``.

  ``make_optimizer`` gets the params as a list in :data:`PARAM_NAMES` order. ``probe(params, grads, opt,
  torch_params)``, called after ``backward`` and before ``opt.step()`` with NumPy copies of the params and
  gradients, returns this step's diagnostics.
  """
  import torch  # only the oracle environment has PyTorch

  params = {k: torch.tensor(init[k], requires_grad=True) for k in PARAM_NAMES}
  tdata = {k: torch.tensor(v) for k, v in data.items()}
  opt = make_optimizer([params[k] for k in PARAM_NAMES])
  traj: dict[str, list[np.ndarray]] = {k: [] for k in PARAM_NAMES}
  losses, diags = [], []
  for _ in range(steps):
    opt.zero_grad()
    value = loss(params, tdata, torch)
    value.backward()
    losses.append(value.item())
    if probe is not None:
      snapshot = {k: p.detach().numpy().copy() for k, p in params.items()}
      grads = {k: p.grad.numpy().copy() for k, p in params.items()}
      diags.append(probe(snapshot, grads, opt, params))
    opt.step()
    for k, p in params.items():
      traj[k].append(p.detach().numpy().copy())
  return {k: np.stack(v) for k, v in traj.items()}, np.asarray(losses), stack_diagnostics(diags)


def numpy_trajectory(
    step: Callable[[dict[str, np.ndarray], dict[str, np.ndarray], Any, int], tuple[dict, Any, dict]],
    state: Any,
    data: Mapping[str, np.ndarray],
    init: Mapping[str, np.ndarray],
    steps: int,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
  """Runs a NumPy transcription ``step(params, grads, state, t) -> (params, state, diagnostics)`` in float64.

  ``t`` counts from 1; gradients come from :func:`numpy_loss_and_grads`.
  """
  params = {k: np.asarray(init[k], np.float64) for k in PARAM_NAMES}
  traj: dict[str, list[np.ndarray]] = {k: [] for k in PARAM_NAMES}
  losses, diags = [], []
  for t in range(1, steps + 1):
    value, grads = numpy_loss_and_grads(params, data)
    losses.append(value)
    params, state, diag = step(params, grads, state, t)
    diags.append(diag)
    for k in PARAM_NAMES:
      traj[k].append(params[k].copy())
  return {k: np.stack(v) for k, v in traj.items()}, np.asarray(losses), stack_diagnostics(diags)


def oracle_versions() -> dict[str, str]:
  """Versions of the oracle environment's packages, for the fixture's ``meta``."""
  import importlib.metadata
  import platform

  import torch

  return {
      "python": platform.python_version(),
      "torch": torch.__version__,
      "pytorch_optimizer": importlib.metadata.version("pytorch-optimizer"),
      "numpy": np.__version__,
  }


def build(factory: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
  """``factory(**kwargs)`` with JSON lists turned back into tuples (betas and similar)."""
  return factory(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})
