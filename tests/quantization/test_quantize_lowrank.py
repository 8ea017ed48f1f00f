"""quantize_state composes with the low-rank family: GaLore's projected moments are stored in 8 bits (GaLore's
8-bit AdamW), the projector stays in float32, and the steps track the float32 run."""

import jax
import jax.numpy as jnp
import numpy as np

import gradtx


def test_quantize_state_around_galore_quantizes_the_low_rank_moments():
  params = {"w": jnp.ones((256, 512)), "b": jnp.zeros(512)}
  keys = jax.random.split(jax.random.key(0), 5)
  full, small = gradtx.galore(1e-2, rank=64), gradtx.quantize_state(gradtx.galore(1e-2, rank=64))
  s_full, s_small = full.init(params), small.init(params)
  step_full, step_small = jax.jit(full.update), jax.jit(small.update)
  for key in keys:
    grads = jax.tree.map(lambda x: jax.random.normal(key, x.shape), params)
    u_full, s_full = step_full(grads, s_full, params)
    u_small, s_small = step_small(grads, s_small, params)
    np.testing.assert_allclose(u_small["w"], u_full["w"], atol=0.05 * float(jnp.abs(u_full["w"]).max()))
  # (64, 512) moments: one uint8 code per value plus a float32 scale per 256 values, instead of float32.
  moments = 2 * 64 * 512
  saved = gradtx.state_nbytes(s_full) - gradtx.state_nbytes(s_small)
  wrapper = 4 + 8  # quantize_state's own step count and PRNG key
  assert saved == moments * 4 - (moments + 4 * moments // 256) - wrapper
  bases = [x for path, x in jax.tree_util.tree_leaves_with_path(s_small) if "basis" in jax.tree_util.keystr(path)]
  assert [(b.shape, b.dtype) for b in bases] == [((256, 64), jnp.float32)]
