"""AdamP against a NumPy transcription of clovaai/AdamP adamp/adamp.py."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from tests import tolerances
from tests.geometry import helpers, reference


@pytest.mark.parametrize("flax_layout", [False, True])
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_matches_official(flax_layout, nesterov, weight_decay):
  kw = dict(b1=0.9, b2=0.99, eps=1e-8, weight_decay=weight_decay, delta=0.1, wd_ratio=0.1, nesterov=nesterov)
  tx = gradtx.adamp(0.01, channel_axis=-1 if flax_layout else 0, **kw)
  ref = helpers.run_against_reference(tx, reference.AdamP(0.01, **kw), flax_layout=flax_layout)
  used = helpers.views_used(ref)
  assert {("w", "channel"), ("w", "layer"), ("w", None), ("c", "channel"), ("c", "layer"), ("b", None)} <= used


def test_projection_off_is_adamw():
  # delta = 0: no cosine is below 0, so nothing is projected and AdamP is AdamW (decay lr * λ * θ).
  ref_tx = optax.adamw(0.01, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.1)
  tx = gradtx.adamp(0.01, b2=0.99, weight_decay=0.1, delta=1e-30)
  params = {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}
  grads = {"w": jnp.arange(12.0).reshape(3, 4) / 10, "b": jnp.full(4, -0.3)}
  u1, _ = helpers.first_update(tx, grads, params)
  u2, _ = helpers.first_update(ref_tx, grads, params)
  # Both are elementwise Adam steps arranged differently (bias corrections through pow, lr applied before or
  # after the division): a few correctly rounded operations apart (used 0.93 of 1e-6 under SSE4.2).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=tolerances.ELEMENTWISE_RTOL), u1, u2)


def test_project_radial_around_optax_adam_is_adamp():
  """The block composes with optax's own Adam direction (same maths without nesterov)."""
  kw = dict(weight_decay=0.05, delta=0.1, wd_ratio=0.1, channel_axis=0)
  composed = optax.chain(gradtx.project_radial(optax.scale_by_adam(b2=0.99), **kw), optax.scale_by_learning_rate(0.01))
  ref = reference.AdamP(0.01, b2=0.99, weight_decay=0.05)
  helpers.run_against_reference(composed, ref, steps=10)


def test_decay_mask_and_schedule():
  params = {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}
  grads = {"w": jnp.full((3, 4), 0.5), "b": jnp.full(4, 0.5)}
  masked = gradtx.adamp(0.1, weight_decay=0.5, mask={"w": True, "b": False})
  plain = gradtx.adamp(0.1)
  scheduled = gradtx.adamp(optax.constant_schedule(0.1), weight_decay=optax.constant_schedule(0.5))
  decayed = gradtx.adamp(0.1, weight_decay=0.5)
  u_masked, _ = helpers.first_update(masked, grads, params)
  u_plain, _ = helpers.first_update(plain, grads, params)
  u_sched, _ = helpers.first_update(scheduled, grads, params)
  u_decayed, _ = helpers.first_update(decayed, grads, params)
  np.testing.assert_array_equal(u_masked["b"], u_plain["b"])
  np.testing.assert_allclose(u_masked["w"], u_plain["w"] - 0.1 * 0.5 * 1.0, rtol=1e-6)  # grads ∥ w: s = 1
  jax.tree.map(np.testing.assert_array_equal, u_sched, u_decayed)


def test_moment_dtypes():
  tx = gradtx.adamp(0.1, mu_dtype=jnp.bfloat16, nu_dtype=jnp.float16)
  params = {"w": jnp.ones((3, 4))}
  state = tx.init(params)
  updates, state = jax.jit(tx.update)({"w": jnp.full((3, 4), 0.5)}, state, params)
  inner = state[0].inner_state
  assert inner.mu["w"].dtype == jnp.bfloat16 and inner.nu["w"].dtype == jnp.float16
  assert updates["w"].dtype == jnp.float32


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(learning_rate=0.1, b1=1.0), "b1"),
        (dict(learning_rate=0.1, b2=-0.1), "b2"),
        (dict(learning_rate=0.1, eps=0.0), "eps"),
        (dict(learning_rate=0.1, weight_decay=-1e-3), "weight_decay"),
        (dict(learning_rate=0.1, delta=0.0), "delta"),
        (dict(learning_rate=0.1, wd_ratio=1.5), "wd_ratio"),
        (dict(learning_rate=0.1, nesterov=1), "nesterov"),
        (dict(learning_rate=0.1, channel_axis=1.0), "channel_axis"),
        (dict(learning_rate="fast"), "learning_rate"),
    ],
)
def test_invalid_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    gradtx.adamp(**kwargs)
