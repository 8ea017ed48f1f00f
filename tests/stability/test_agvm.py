"""AGVM against a NumPy transcription of the official hook (Sense-X/AGVM@b60d5981 agvm_optimizer_hook.py)
driving momentum SGD and, with use_adam, torch's AdamW, on one device (grad_pair) and on 8 simulated devices
(axis_name)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx


def label(path):
  return path.split("/")[0]


def official_agvm_sgd(params, pairs, *, lr, momentum, interval, start, stop, ema, clamp):
  """Official hook around torch SGD(momentum): groups backbone, neck, head (backbone = group 0)."""
  groups = ["backbone", "neck", "head"]
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  buf = {k: np.zeros_like(v) for k, v in p.items()}
  scales = np.ones(len(groups))
  traj = []
  for it, (g_a, g_b) in enumerate(pairs):
    if start <= it <= stop and it % interval == 0:
      sims = []
      for grp in groups:
        a = np.concatenate([np.ravel(g_a[k]) for k in p if label(k) == grp]).astype(np.float64)
        b = np.concatenate([np.ravel(g_b[k]) for k in p if label(k) == grp]).astype(np.float64)
        sims.append(1 - a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-8))
      new = [np.sqrt(np.clip((sims[0] + 1e-6) / (s + 1e-6), *clamp)) for s in sims]
      scales = ema * scales + (1 - ema) * np.array(new)
    use = scales if start <= it <= stop else np.ones(len(groups))
    for k in p:
      g = (np.asarray(g_a[k], np.float64) + np.asarray(g_b[k], np.float64)) / 2
      buf[k] = momentum * buf[k] + g
      p[k] = p[k] - lr * use[groups.index(label(k))] * buf[k]
    traj.append({k: v.copy() for k, v in p.items()})
  return traj, scales


def official_agvm_adamw(params, pairs, *, lr, betas, eps, weight_decay, interval, start, stop, ema, world_size):
  """Official hook with use_adam=True around torch AdamW (float64); returns (trajectory, scales, similarities).

  ``_cat_all_param_grads`` sees each half's gradient as ``g / W`` (the loss is divided by ``W · W/2`` before
  the all-reduce within a half) and AdamW's ``exp_avg_sq`` before this step; its result is multiplied by W.
  A refresh at iteration 0 raises KeyError in the official code (no ``exp_avg_sq`` yet): zeros here, as gradtx.
  """
  groups = ["backbone", "neck", "head"]
  b1, b2 = betas
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  scales, sims = np.ones(len(groups)), None
  traj = []
  for it, (g_a, g_b) in enumerate(pairs):
    if start <= it <= stop and it % interval == 0:
      sims = []
      for grp in groups:
        halves = []
        for half in (g_a, g_b):
          parts = []
          for k in (k for k in p if label(k) == grp):
            g = np.asarray(half[k], np.float64) / world_size
            cur = v[k] * b2 + g**2 * (1 - b2)
            parts.append((g / (np.sqrt(cur) + eps)).ravel())
          halves.append(np.concatenate(parts) * world_size)
        a, b = halves
        sims.append(1 - a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-8))
      new = [np.sqrt(np.clip((sims[0] + 1e-6) / (s + 1e-6), 0.5, 10.0)) for s in sims]
      scales = ema * scales + (1 - ema) * np.array(new)
    use = scales if start <= it <= stop else np.ones(len(groups))
    for k in p:
      t = it + 1
      g = (np.asarray(g_a[k], np.float64) + np.asarray(g_b[k], np.float64)) / 2
      lr_k = lr * use[groups.index(label(k))]
      p[k] = p[k] * (1 - lr_k * weight_decay)
      m[k] = b1 * m[k] + (1 - b1) * g
      v[k] = b2 * v[k] + (1 - b2) * g * g
      p[k] = p[k] - lr_k / (1 - b1**t) * m[k] / (np.sqrt(v[k]) / np.sqrt(1 - b2**t) + eps)
    traj.append({k: x.copy() for k, x in p.items()})
  return traj, scales, np.array(sims)


def _params():
  rng = np.random.default_rng(0)
  return {"backbone/conv": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
          "backbone/bias": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
          "neck/w": jnp.asarray(rng.normal(size=(4, 2)), jnp.float32),
          "head/w": jnp.asarray(rng.normal(size=(2, 2)), jnp.float32)}


def _pairs(n, seed=1):
  """Two gradient estimates per step; the head's halves disagree most (highest variance)."""
  rng = np.random.default_rng(seed)
  noise = {"backbone": 0.1, "neck": 0.5, "head": 2.0}
  out = []
  for _ in range(n):
    mean = {k: rng.normal(size=v.shape) for k, v in _params().items()}
    out.append(tuple({k: jnp.asarray(mean[k] + noise[label(k)] * rng.normal(size=mean[k].shape), jnp.float32)
                      for k in mean} for _ in range(2)))
  return out


@pytest.mark.parametrize("interval, start, stop, clamp", [(1, 0, None, (0.5, 10.0)), (2, 3, 9, (0.01, 10.0)),
                                                         (3, 1, None, (0.5, 10.0))])
def test_single_device_matches_official(interval, start, stop, clamp):
  params, pairs = _params(), _pairs(12)
  expected, scales = official_agvm_sgd(params, pairs, lr=0.05, momentum=0.9, interval=interval, start=start,
                                       stop=10**9 if stop is None else stop, ema=0.7, clamp=clamp)
  tx = gradtx.scale_by_agvm(optax.sgd(0.05, momentum=0.9), label, reference_label="backbone", interval=interval,
                            start_step=start, stop_step=stop, momentum=0.7, min_ratio=clamp[0], max_ratio=clamp[1])
  state, p = tx.init(params), params
  step = jax.jit(tx.update)
  for (g_a, g_b), exp in zip(pairs, expected):
    g = jax.tree.map(lambda a, b: (a + b) / 2, g_a, g_b)
    u, state = step(g, state, p, grad_pair=(g_a, g_b))
    p = optax.apply_updates(p, u)
    for k in p:
      np.testing.assert_allclose(np.asarray(p[k]), exp[k], rtol=1e-5, atol=1e-6)
  # gradtx orders groups by first appearance in the flattened (key-sorted) tree: backbone, head, neck.
  np.testing.assert_allclose(np.asarray(state.scales), scales[[0, 2, 1]], rtol=1e-5)
  assert float(state.scales[1]) <= float(state.scales[2]) < 1.0  # noisier modules take smaller steps


@pytest.mark.parametrize(
    "interval, start, stop, world_size, weight_decay, adam_b2, adam_eps",
    [(1, 0, None, None, 0.0, None, None), (2, 1, 9, 8, 0.01, 0.99, 1e-6), (1, 2, None, 1, 0.0, None, None)],
)
def test_use_adam_matches_official(interval, start, stop, world_size, weight_decay, adam_b2, adam_eps):
  params, pairs = _params(), _pairs(12)
  betas, eps = (0.9, 0.999 if adam_b2 is None else adam_b2), 1e-8 if adam_eps is None else adam_eps
  expected, scales, sims = official_agvm_adamw(
      params, pairs, lr=0.05, betas=betas, eps=eps, weight_decay=weight_decay, interval=interval, start=start,
      stop=10**9 if stop is None else stop, ema=0.7, world_size=2 if world_size is None else world_size)
  inner = optax.adamw(0.05, b1=betas[0], b2=betas[1], eps=eps, weight_decay=weight_decay)
  tx = gradtx.scale_by_agvm(inner, label, reference_label="backbone", interval=interval, start_step=start,
                            stop_step=stop, momentum=0.7, use_adam=True, adam_b2=adam_b2, adam_eps=adam_eps,
                            world_size=world_size)
  state, p = tx.init(params), params
  step = jax.jit(tx.update)
  for (g_a, g_b), exp in zip(pairs, expected):
    g = jax.tree.map(lambda a, b: (a + b) / 2, g_a, g_b)
    u, state = step(g, state, p, grad_pair=(g_a, g_b))
    p = optax.apply_updates(p, u)
    for k in p:
      # float32 against float64 over 12 Adam steps: each moves a param of size <= 2 by ~lr = 0.05 whatever the
      # gradient (half an ulp, 1.2e-7, per add) and the direction m / (sqrt(v) + eps) loses a few ulps more
      # where m nearly cancels; about 3e-6 measured. A formula error (1/W, bias correction) moves the scales
      # by 1e-3 or more, so the params by far more than this bound.
      np.testing.assert_allclose(np.asarray(p[k]), exp[k], rtol=1e-5, atol=1e-5)
  # 1 - cos in float32 is off by a few ulps of 1 (1.2e-7 each) whatever its size (phi_backbone ~ 5e-3).
  np.testing.assert_allclose(np.asarray(state.variance), sims[[0, 2, 1]], rtol=1e-5, atol=5e-7)
  np.testing.assert_allclose(np.asarray(state.scales), scales[[0, 2, 1]], rtol=1e-5)


def test_use_adam_needs_an_inner_nu():
  with pytest.raises(ValueError, match="nu"):
    gradtx.scale_by_agvm(optax.sgd(0.1, momentum=0.9), label, use_adam=True).init(_params())
  with pytest.raises(ValueError, match="several"):
    gradtx.scale_by_agvm(optax.chain(optax.adam(0.1), optax.adam(0.1)), label, use_adam=True).init(_params())


def _mesh_run(axis_index_groups, use_adam=False):
  params = _params()
  rng = np.random.default_rng(3)
  local = [{k: jnp.asarray(rng.normal(size=v.shape) + rng.normal(size=(8, *v.shape)) * (0.2 + 2 * (label(k) == "head")),
                           jnp.float32) for k, v in params.items()} for _ in range(4)]
  kwargs = {"reference_label": "backbone", "interval": 2, "start_step": 1, "momentum": 0.5, "use_adam": use_adam}
  inner = optax.adam(0.1) if use_adam else optax.sgd(0.1, momentum=0.9)
  tx = gradtx.scale_by_agvm(inner, label, axis_name="i", axis_index_groups=axis_index_groups, **kwargs)
  single = gradtx.scale_by_agvm(inner, label, **kwargs, **({"world_size": 8} if use_adam else {}))
  first = [0, 1, 2, 3] if axis_index_groups is None else axis_index_groups[0]
  second = [i for i in range(8) if i not in first]
  replicate = lambda x: jnp.broadcast_to(x, (8, *x.shape))  # noqa: E731
  step = jax.pmap(lambda g, s, p: tx.update(g, s, p), axis_name="i")
  s_mesh = jax.tree.map(replicate, tx.init(params))
  p_mesh = jax.tree.map(replicate, params)
  s1, p1 = single.init(params), params
  single_step = jax.jit(single.update)
  for g in local:
    u, s_mesh = step(g, s_mesh, p_mesh)
    p_mesh = optax.apply_updates(p_mesh, u)
    pair = tuple(jax.tree.map(lambda x, idx=idx: jnp.mean(x[jnp.array(idx)], 0), g) for idx in (first, second))
    u1, s1 = single_step(jax.tree.map(lambda x: jnp.mean(x, 0), g), s1, p1, grad_pair=pair)
    p1 = optax.apply_updates(p1, u1)
    for k in params:
      for d in range(8):
        np.testing.assert_allclose(np.asarray(p_mesh[k][d]), np.asarray(p1[k]), rtol=1e-5, atol=1e-6)
  for d in range(8):
    np.testing.assert_allclose(np.asarray(s_mesh.scales[d]), np.asarray(s1.scales), rtol=1e-5)
  assert float(s1.scales[1]) < 1.0  # the head (group 1 in key order) is the noisiest


def test_eight_devices_equal_single_device_halves():
  _mesh_run(None)


def test_eight_devices_with_axis_index_groups():
  _mesh_run([[0, 2, 4, 6], [1, 3, 5, 7]])


def test_use_adam_on_eight_devices_equals_single_device_with_world_size_8():
  _mesh_run(None, use_adam=True)


def test_missing_grad_pair_is_clear():
  tx = gradtx.scale_by_agvm(optax.sgd(0.1), label)
  with pytest.raises(ValueError, match="grad_pair"):
    tx.update(_params(), tx.init(_params()), _params())


def test_unknown_reference_label():
  tx = gradtx.scale_by_agvm(optax.sgd(0.1), label, reference_label="trunk")
  with pytest.raises(ValueError, match="reference_label"):
    tx.init(_params())


@pytest.mark.parametrize(
    "kwargs, name",
    [({"interval": 0}, "interval"), ({"start_step": -1}, "start_step"), ({"stop_step": 2, "start_step": 5}, "stop_step"),
     ({"momentum": 1.0}, "momentum"), ({"min_ratio": 0.0}, "min_ratio"), ({"max_ratio": -1.0}, "max_ratio"),
     ({"axis_index_groups": [[0], [1]]}, "axis_index_groups"), ({"label_fn": "backbone"}, "label_fn"),
     ({"use_adam": 1}, "use_adam"), ({"adam_b2": 0.99}, "adam_b2"), ({"adam_eps": 1e-6}, "adam_eps"),
     ({"world_size": 4}, "world_size"), ({"use_adam": True, "adam_b2": 1.0}, "adam_b2"),
     ({"use_adam": True, "adam_eps": -1.0}, "adam_eps"), ({"use_adam": True, "world_size": 0}, "world_size"),
     ({"use_adam": True, "world_size": 4, "axis_name": "i"}, "world_size")],
)
def test_invalid_arguments(kwargs, name):
  args = {"label_fn": label, **kwargs}
  with pytest.raises(ValueError, match=name):
    gradtx.scale_by_agvm(optax.sgd(0.1), **args)
