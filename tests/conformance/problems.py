"""Small problems and extra-argument providers shared by the registry-driven contract suite."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx.core import layout


@dataclasses.dataclass(frozen=True)
class Problem:
  name: str
  init: Callable[[Any], Any]  # dtype -> params
  loss: Callable[[Any], jax.Array]  # params -> scalar loss
  tolerance: float  # converged when final loss < tolerance * initial loss


_RNG = np.random.default_rng(0)
_A = np.array([1.0, -2.0, 3.0, 0.5, -1.0], np.float32)
_T = _RNG.normal(size=(8, 6)).astype(np.float32)
_X = _RNG.normal(size=(32, 6)).astype(np.float32)
_K = _RNG.normal(size=(6, 4)).astype(np.float32)
_B = _RNG.normal(size=(4,)).astype(np.float32)
_Y = _X @ _K + _B
_K0 = (0.1 * _RNG.normal(size=(6, 4))).astype(np.float32)


def _parabola_loss(p):
  return jnp.sum(jnp.square(p["x"].astype(jnp.float32) - _A))


def _rosenbrock_loss(p):
  x, y = p["xy"][0].astype(jnp.float32), p["xy"][1].astype(jnp.float32)
  return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def _matrix_loss(p):
  return jnp.sum(jnp.square(p["w"].astype(jnp.float32) - _T))


def mixed_loss(p, x=_X, y=_Y):
  pred = x @ p["kernel"].astype(jnp.float32) + p["bias"].astype(jnp.float32)
  return jnp.mean(jnp.sum(jnp.square(pred - y), axis=-1))


def mixed_params(dtype=jnp.float32):
  return {"bias": jnp.zeros((4,), dtype), "kernel": jnp.asarray(_K0, dtype)}


def mixed_example_losses(p, x=_X, y=_Y):
  """Per-example losses of the mixed problem (mean of these is mixed_loss)."""
  pred = x @ p["kernel"].astype(jnp.float32) + p["bias"].astype(jnp.float32)
  return jnp.sum(jnp.square(pred - y), axis=-1)


PROBLEMS = {
    "parabola": Problem("parabola", lambda d: {"x": jnp.zeros((5,), d)}, _parabola_loss, 1e-2),
    "rosenbrock": Problem("rosenbrock", lambda d: {"xy": jnp.array([-1.2, 1.0], d)}, _rosenbrock_loss, 1e-1),
    "matrix": Problem("matrix", lambda d: {"w": jnp.zeros((8, 6), d)}, _matrix_loss, 1e-2),
    "mixed": Problem("mixed", mixed_params, mixed_loss, 1e-2),
}

CONVERGENCE_STEPS = 300


def params_as_logits(params: Any) -> jax.Array:
  """The ``logits_fn`` of every problem: each visible param entry θ_j is one example of a two-class softmax.

  Logits are ``[θ_j, 0]`` for the entries of all leaves (``jax.tree.leaves`` order, so masked-out
  ``optax.MaskedNode`` / ``None`` leaves are skipped), shape ``(#entries, 2)``. It is defined for every problem
  and every (sub)tree an optimizer may see, and its Gauss-Newton diagonal ``σ(θ_j)(1 − σ(θ_j)) / #entries`` is
  positive and smooth; it is not the Hessian of the problem's loss, so Sophia-G runs on these problems as a
  preconditioned, clipped method with an unrelated (but valid) curvature estimate.
  """
  # Replicated first: on an Explicit mesh, leaves sharded differently cannot be concatenated.
  leaves = [layout.constrain(x.astype(jnp.float32), x, ()).ravel() for x in jax.tree.leaves(params)]
  theta = jnp.concatenate(leaves)
  return jnp.stack([theta, jnp.zeros_like(theta)], axis=-1)


def extra_args(spec: gradtx.OptimizerSpec, loss: Callable[[Any], jax.Array], params: Any) -> dict[str, Any]:
  """The required extra arguments of ``spec`` for a problem with loss ``loss`` at ``params``.

  A new extra-argument name needs a provider here; an unknown name fails loudly rather than skipping.
  ``logits_fn`` is :func:`params_as_logits` (independent of ``loss``).
  """
  out = {}
  for name in spec.required_extra_args:
    if name == "loss_fn":
      out[name] = loss
    elif name == "value":
      out[name] = loss(params)
    elif name == "logits_fn":
      out[name] = params_as_logits
    elif name == "per_example_grads":
      # Two rows that average to the gradient: a minimal per-example batch (leading axis on every leaf).
      grads = jax.grad(loss)(params)
      out[name] = jax.tree.map(lambda g: jnp.stack([0.5 * g, 1.5 * g]), grads)
    else:
      raise NotImplementedError(
          f"The conformance suite has no provider for extra argument {name!r} of {spec.name!r}; add one to"
          " tests/conformance/problems.py."
      )
  return out


def all_names():
  return sorted(gradtx.OPTIMIZERS)


#: One optimizer per family runs every conformance check in ``make test``; the others run the checks that
#: exercise shared machinery (nnx.Optimizer, orbax, meshes, wrappers, float16/float64) only in
#: ``make test-slow``, which keeps ``make test`` within its 15-minute budget on 2 cores. The checks of each
#: optimizer's own arithmetic (convergence, bfloat16/float32 dtypes, inject_hyperparams, MultiSteps, one
#: compilation, data parallelism) run for every optimizer in ``make test``. A family not listed is
#: represented by its first name in alphabetical order.
PREFERRED_REPRESENTATIVES = ("lion", "adabelief", "lamb", "stable_spam", "sophia_h", "galore", "adamw_8bit",
                             "adagrad_norm", "mezo_adam")


def representatives() -> set[str]:
  """The names that stand for their family in ``make test``."""
  chosen = {}
  for name in [n for n in PREFERRED_REPRESENTATIVES if n in gradtx.OPTIMIZERS] + all_names():
    chosen.setdefault(gradtx.OPTIMIZERS[name].family, name)
  return set(chosen.values())


def sampled_names() -> list[Any]:
  """Every registered name as a pytest parameter, those outside :func:`representatives` marked ``slow``."""
  keep = representatives()
  return [n if n in keep else pytest.param(n, marks=pytest.mark.slow) for n in all_names()]


def run_steps(tx, params, loss, spec, n, state=None):
  """n plain (unjitted-loop, jitted-step) optimizer steps; returns (params, state, updates list)."""
  state = tx.init(params) if state is None else state

  @jax.jit
  def step(params, state):
    grads = jax.grad(loss)(params)
    updates, state = tx.update(grads, state, params, **extra_args(spec, loss, params))
    return jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates), state, updates

  history = []
  for _ in range(n):
    params, state, updates = step(params, state)
    history.append(updates)
  return params, state, history
