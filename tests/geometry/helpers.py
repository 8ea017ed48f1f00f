"""Shared drivers: run a gradtx optimizer and a NumPy reference side by side on the same gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tests.geometry import reference

# PyTorch layouts: a dense kernel (out, in), a conv kernel (out, in, kh, kw), a bias.
SHAPES = {"w": (4, 6), "c": (3, 2, 2, 2), "b": (5,)}
# Per step, which gradient each leaf gets (cycled): every view of the projection is exercised.
KINDS = {"w": ("channel", "layer", "free", "layer_cos"), "c": ("layer", "layer_cos", "channel", "free"), "b": ("free",)}

_TO_FLAX = {2: (1, 0), 4: (2, 3, 1, 0)}


def to_flax(x):
  """PyTorch layout -> Flax layout (output channels last)."""
  return np.transpose(x, _TO_FLAX[x.ndim]) if x.ndim in _TO_FLAX else x


def from_flax(x):
  return np.transpose(x, np.argsort(_TO_FLAX[x.ndim])) if x.ndim in _TO_FLAX else x


def run_against_reference(tx, ref, *, steps=20, flax_layout=False, seed=0, kinds=KINDS, shapes=SHAPES,
                          rtol=1e-5, atol=1e-6, init=None):
  """Steps ``tx`` (float32) and ``ref`` (float64) on the same gradients and compares params every step.

  Gradients come from the reference's params (``reference.radial_gradient``), so both sides see identical
  inputs. Returns the reference (its ``views`` record which projection each step used, when it has one).
  """
  rng = np.random.default_rng(seed)
  p_ref = init if init is not None else {k: rng.normal(size=s) for k, s in shapes.items()}
  convert, back = (to_flax, from_flax) if flax_layout else (lambda x: x, lambda x: x)
  params = {k: jnp.asarray(convert(v), jnp.float32) for k, v in p_ref.items()}
  state = tx.init(params)
  update = jax.jit(tx.update)
  for t in range(steps):
    grads = {k: reference.radial_gradient(p_ref[k], kinds[k][t % len(kinds[k])], rng) for k in p_ref}
    p_ref = ref.step(p_ref, grads)
    updates, state = update({k: jnp.asarray(convert(g), jnp.float32) for k, g in grads.items()}, state, params)
    params = optax.apply_updates(params, updates)
    for k in p_ref:
      np.testing.assert_allclose(back(np.asarray(params[k])), p_ref[k], rtol=rtol, atol=atol,
                                 err_msg=f"leaf {k!r} at step {t + 1}")
  return ref


def views_used(ref):
  """The set of (leaf, view) pairs the reference's projection used over the run."""
  return {(k, v) for step in ref.views for k, v in step.items()}


def first_update(tx, grads, params):
  """``tx.update`` from a fresh state, jitted (eager dispatch of many small ops is slower than compiling)."""
  return jax.jit(tx.update)(grads, tx.init(params), params)
