"""Every registered optimizer converges on the four small contract problems (float32)."""

import jax
import jax.numpy as jnp
import pytest

import gradtx
from tests.conformance import problems


@pytest.mark.parametrize("problem", sorted(problems.PROBLEMS))
@pytest.mark.parametrize("name", problems.all_names())
def test_converges(name, problem):
  spec = gradtx.OPTIMIZERS[name]
  prob = problems.PROBLEMS[problem]
  tx = spec.build()
  params = prob.init(jnp.float32)

  def step(carry, _):
    params, state = carry
    loss, grads = jax.value_and_grad(prob.loss)(params)
    updates, state = tx.update(grads, state, params, **problems.extra_args(spec, prob.loss, params))
    return (jax.tree.map(jnp.add, params, updates), state), loss

  (final, _), losses = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), None, problems.CONVERGENCE_STEPS))(
      params
  )
  initial, last = float(prob.loss(params)), float(prob.loss(final))
  assert jnp.all(jnp.isfinite(losses)), f"{name} produced a non-finite loss on {problem}"
  assert last < prob.tolerance * initial, f"{name} on {problem}: loss {initial:.4g} -> {last:.4g}"
