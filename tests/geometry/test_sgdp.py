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
