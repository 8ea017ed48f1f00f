"""The contract (DESIGN.md) for the unregistered pieces: abstract init, None / MaskedNode leaves, one
compilation, dtypes kept, unknown extra arguments ignored, inject_hyperparams."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx


def _label(path):
  return path.split("/")[0]


# optax's Adam divides 0 by 0 for an exactly-zero float16 gradient when eps (1e-8) rounds to 0 in float16.
ADAM = optax.scale_by_adam(eps=1e-3)

PIECES = {
    "clip_by_coordinate": lambda: gradtx.clip_by_coordinate(0.3),
    "clip_by_coordinate_histogram": lambda: gradtx.clip_by_coordinate(0.3, method="histogram"),
    "scale_by_adam_coordinate_clipped": lambda: gradtx.scale_by_adam_coordinate_clipped(),
    "clip_spikes": lambda: gradtx.clip_spikes(None, 50.0, accumulation_steps=2),
    "clip_spikes_adam": lambda: gradtx.clip_spikes(ADAM, 50.0, accumulation_steps=2),
    "reset_state_every": lambda: gradtx.reset_state_every(ADAM, 2, warmup_steps=2),
    "scale_by_spam": lambda: gradtx.scale_by_spam(reset_period=2, warmup_steps=1, accumulation_steps=1),
    "scale_by_spam_sparse": lambda: gradtx.scale_by_spam(reset_period=2, warmup_steps=1, accumulation_steps=1,
                                                         density=0.5),
    "clip_by_adaptive_max": lambda: gradtx.clip_by_adaptive_max(reset_period=2),
    "normalize_by_norm_ema": lambda: gradtx.normalize_by_norm_ema(total_steps=10),
    "scale_by_stable_spam": lambda: gradtx.scale_by_stable_spam(reset_period=2, total_steps=10),
    "add_gradient_noise": lambda: gradtx.add_gradient_noise(0.1),
    "scale_by_agvm": lambda: gradtx.scale_by_agvm(ADAM, _label, start_step=0, interval=1),
    "scale_by_agvm_adam": lambda: gradtx.scale_by_agvm(ADAM, _label, start_step=0, interval=1, use_adam=True,
                                                       adam_eps=1e-3),
}


def _params(dtype=jnp.float32):
  return {"bias": jnp.linspace(-1.0, 1.0, 4).astype(dtype), "kernel": jnp.arange(12.0).reshape(3, 4).astype(dtype)}


def _grads(params, t):
  return jax.tree.map(lambda p: (jnp.sin(p.astype(jnp.float32) + t) * (1 + 10 * (t == 2))).astype(p.dtype), params)


def _update(name, tx, g, s, p, **kw):
  if name.startswith("scale_by_agvm"):
    kw["grad_pair"] = (g, jax.tree.map(lambda x: (x * 0.9 + 0.01).astype(x.dtype), g))
  return tx.update(g, s, p, **kw)


@pytest.mark.parametrize("name", sorted(PIECES))
def test_abstract_init(name):
  tx, params = PIECES[name](), _params()
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  expected = jax.tree.map(lambda x: (x.shape, x.dtype), tx.init(params))
  assert jax.tree.map(lambda x: (x.shape, x.dtype), jax.eval_shape(tx.init, params)) == expected
  assert jax.tree.map(lambda x: (x.shape, x.dtype), tx.init(abstract)) == expected


@pytest.mark.parametrize("name", sorted(PIECES))
def test_none_and_masked_node_leaves(name):
  tx = PIECES[name]()
  params = {"a": jnp.ones(3), "b": None, "c": optax.MaskedNode()}
  grads = {"a": jnp.full(3, 0.5), "b": None, "c": optax.MaskedNode()}
  state = tx.init(params)
  out, _ = _update(name, tx, grads, state, params)
  assert out["b"] is None and isinstance(out["c"], optax.MaskedNode)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
@pytest.mark.parametrize("name", sorted(PIECES))
def test_compiles_once_and_keeps_dtypes(name, dtype):
  tx, params = PIECES[name](), _params(dtype)
  traces = []

  @jax.jit
  def step(state, t):
    traces.append(1)
    return _update(name, tx, _grads(params, t), state, params, unknown_argument=1)

  state = tx.init(params)
  dtypes = jax.tree.map(lambda x: x.dtype, state)
  for t in range(4):
    out, state = step(state, jnp.float32(t))
    assert jax.tree.map(lambda x: x.dtype, out) == jax.tree.map(lambda x: x.dtype, params)
    assert jax.tree.map(lambda x: x.dtype, state) == dtypes
    assert all(np.all(np.isfinite(np.asarray(x, np.float32))) for x in jax.tree.leaves(out))
  assert len(traces) == 1


@pytest.mark.parametrize(
    "factory, kwargs, static",
    [
        (gradtx.clip_by_coordinate, {"fraction": 0.3, "threshold_scale": 1.5}, ("method", "axis_name")),
        (gradtx.clip_by_adaptive_max, {"theta": 0.9}, ("bias_correction", "reset_period", "axis_name")),
        (gradtx.normalize_by_norm_ema, {"gamma1": 0.8, "gamma2": 0.95, "eta_min": 0.3, "total_steps": 10},
         ("bias_correction", "reset_period", "total_steps", "axis_name")),
        (gradtx.add_gradient_noise, {"eta": 0.1, "gamma": 0.5, "seed": 3}, ("seed",)),
        (gradtx.scale_by_spam, {"b1": 0.8, "threshold": 50.0, "reset_period": 2, "warmup_steps": 1},
         ("reset_period", "warmup_steps", "accumulation_steps", "density", "density_mask", "seed", "axis_name")),
        (gradtx.scale_by_spam, {"b1": 0.8, "threshold": 50.0, "reset_period": 2, "warmup_steps": 1, "density": 0.5},
         ("reset_period", "warmup_steps", "accumulation_steps", "density", "density_mask", "seed", "axis_name")),
    ],
)
def test_inject_hyperparams(factory, kwargs, static):
  params = _params()
  plain = factory(**kwargs)
  injected = optax.inject_hyperparams(factory, static_args=static)(**kwargs)
  s1, s2 = plain.init(params), injected.init(params)
  for t in range(4):
    g = _grads(params, t)
    a, s1 = jax.jit(plain.update)(g, s1)
    b, s2 = jax.jit(injected.update)(g, s2)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
