"""SGDP against a NumPy transcription of clovaai/AdamP adamp/sgdp.py."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from tests.geometry import helpers, reference


@pytest.mark.parametrize(
    "kw",
    [
        dict(momentum=0.9, nesterov=True, weight_decay=1e-2),
        dict(momentum=0.9, dampening=0.3, weight_decay=1e-2),
        dict(momentum=0.5, dampening=0.2, nesterov=True),
        dict(momentum=0.0, weight_decay=0.1, wd_ratio=0.5),
        dict(momentum=0.0, nesterov=True, delta=0.2),
    ],
)
@pytest.mark.parametrize("flax_layout", [False, True])
def test_matches_official(kw, flax_layout):
  tx = gradtx.sgdp(0.05, channel_axis=-1 if flax_layout else 0, **kw)
  ref = helpers.run_against_reference(tx, reference.SGDP(0.05, **kw), flax_layout=flax_layout)
  used = helpers.views_used(ref)
  assert {("w", "channel"), ("w", "layer"), ("w", None), ("c", "channel"), ("c", "layer"), ("b", None)} <= used


def _row_invariant_loss_grads(params, x, y):
  """Float64 gradient of ``½ mean ‖N(w) x + b − y‖²`` with ``N`` normalizing each row of ``w`` (PyTorch layout).

  The loss does not depend on the scale of each row (as under a BatchNorm), so the gradient of ``w`` is
  orthogonal to every row and SGDP's channel projection fires at every step.
  """
  w, b = params["w"], params["b"]
  norm = np.linalg.norm(w, axis=1, keepdims=True)
  a = w / norm
  r = a @ x + b[:, None] - y
  da = r @ x.T / x.shape[1]
  return {"w": (da - np.sum(da * a, axis=1, keepdims=True) * a) / norm, "b": r.sum(1) / x.shape[1]}


def test_projected_momentum_buffer_is_carried_as_official():
  """Without nesterov the official ``d_p = buf`` is projected in place: the next step starts from the
  projected buffer. 50 steps on row-scale-invariant weights, where every step projects, against the float64
  transcription with that aliasing and, to show the test can fail, against pytorch_optimizer's copy.
  (``test_matches_official`` covers dampening and the Flax layout with the same transcription.)"""
  kw = dict(momentum=0.9, weight_decay=1e-2)
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(6, 16)), rng.normal(size=(4, 16))
  init = {"w": rng.normal(size=(4, 6)), "b": 0.1 * rng.normal(size=4)}
  official = reference.SGDP(0.1, **kw)
  copied = reference.SGDP(0.1, clone_buffer=True, **kw)
  p_official, p_copied, grads, want = init, init, [], []
  for _ in range(50):
    grads.append(_row_invariant_loss_grads(p_official, x, y))
    p_official = official.step(p_official, grads[-1])
    p_copied = copied.step(p_copied, _row_invariant_loss_grads(p_copied, x, y))
    want.append(p_official)

  tx = gradtx.sgdp(0.1, channel_axis=0, **kw)

  def step(carry, g):
    params, state = carry
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
    return (params, state), params

  params = {k: jnp.asarray(v, jnp.float32) for k, v in init.items()}
  stacked = {k: jnp.asarray(np.stack([g[k] for g in grads]), jnp.float32) for k in init}
  _, got = jax.jit(lambda p, gs: jax.lax.scan(step, (p, tx.init(p)), gs))(params, stacked)
  for k in init:
    expected = np.stack([w[k] for w in want])
    # float32 against float64 on the same gradients: each step rounds the params and the buffer by a few
    # float32 ulps (6e-8) of the leaf's scale, 50 steps add at most ~1.2e-5 of it (measured 1e-6).
    np.testing.assert_allclose(np.asarray(got[k]), expected, rtol=0, atol=2e-5 * np.abs(expected).max(),
                               err_msg=f"leaf {k!r}")
  assert [views["w"] for views in official.views] == ["channel"] * 50
  # The unprojected buffer (pytorch_optimizer) ends 8% of the scale away (measured), 4000 tolerances.
  w, w_copied = np.asarray(got["w"][-1], np.float64), p_copied["w"]
  assert np.abs(w - w_copied).max() > 100 * 2e-5 * np.abs(w_copied).max()


def test_dampening_applies_from_the_first_step():
  # Official SGDP starts the buffer at 0 (torch.optim.SGD would copy g on the first step).
  tx = gradtx.scale_by_sgdp(momentum=0.9, dampening=0.5)
  params = {"b": jnp.ones(3)}
  updates, _ = helpers.first_update(tx, {"b": jnp.full(3, 2.0)}, params)
  np.testing.assert_allclose(updates["b"], 1.0)


def test_decay_is_divided_by_one_minus_momentum():
  params = {"b": jnp.ones(2)}
  grads = {"b": jnp.zeros(2)}
  for decay in (0.1, optax.constant_schedule(0.1)):
    tx = gradtx.sgdp(0.5, momentum=0.75, weight_decay=decay)
    updates, _ = helpers.first_update(tx, grads, params)
    np.testing.assert_allclose(updates["b"], -0.5 * 0.1 / 0.25)


def test_scale_by_sgdp_is_sgdp_without_decay():
  kw = dict(momentum=0.9, dampening=0.1, nesterov=True, channel_axis=0)
  direction = optax.chain(gradtx.scale_by_sgdp(**kw), optax.scale_by_learning_rate(0.05))
  helpers.run_against_reference(direction, reference.SGDP(0.05, momentum=0.9, dampening=0.1, nesterov=True),
                                steps=8)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(learning_rate=-0.1), "learning_rate"),
        (dict(learning_rate=0.1, momentum=1.0), "momentum"),
        (dict(learning_rate=0.1, dampening=1.5), "dampening"),
        (dict(learning_rate=0.1, weight_decay=-1.0), "weight_decay"),
        (dict(learning_rate=0.1, eps=-1e-8), "eps"),
        (dict(learning_rate=0.1, delta=-0.1), "delta"),
        (dict(learning_rate=0.1, wd_ratio=-0.1), "wd_ratio"),
        (dict(learning_rate=0.1, nesterov="yes"), "nesterov"),
        (dict(learning_rate=0.1, channel_axis=True), "channel_axis"),
    ],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.sgdp(**kwargs)
