"""GradNormLoRP: weight-normalised parameters whose direction is trained with GaLore's projected Adam.

Paper: Huang, Huang, Chen, ... "Gradient Weight-normalized Low-rank Projection for Efficient LLM Training",
AAAI 2025. https://arxiv.org/abs/2412.19616

Reference implementation: Jhhuangkay/Gradient-Weight-normalized-Low-rank-Projection-for-Efficient-LLM-Training
@4033ee2 ``GradNormLoRP/LowRankWeightNormAdamW.py``. Per matrix ``W`` it keeps a full copy ``v`` (initially
``W``) and a magnitude ``g``; each step:

* ``g ← ||v||`` (the norm over the input dimension: one magnitude per output channel; the stored ``g`` is
  overwritten by ``||v||`` at every step), ``W = g v / ||v||``;
* ``∇v = G g / ||v||``, ``∇g = Σ_in G ⊙ v / ||v||`` (the radial term of the weight-norm gradient is omitted);
* ``∇v`` goes through GaLore's projector and HF-form Adam (α = ``scale``), ``∇g`` through HF-form Adam;
* ``v ← v − η_t α P N_v``, ``g ← g − η_t N_g``, then decoupled decay of ``v`` and ``g`` (not of ``W``);
* ``W ← g v / ||v||``.

The paper describes ``W = M ⊙ (W0 + IJ) / ||W0 + IJ||_c`` with column-wise norms, a learned magnitude ``M``,
low-rank factors ``IJ`` and a two-sided projection ``U (Uᵀ D V) Vᵀ``; the official optimizer uses row-wise
(output-channel) norms, no ``IJ``, a one-sided GaLore projection, resets the magnitude to ``||v||`` at every
step and omits the radial term. gradtx follows the code by default (a zero column, whose direction is
undefined, gives a zero weight instead of the official 0/0 NaN); ``reset_magnitude=False`` keeps ``g`` as
a learned parameter and ``radial=True`` uses the exact gradient ``(g/||v||)(G − v̂ ∇g)``. Its state holds a
full copy of each matrix, so it uses *more* memory than GaLore (the paper's 8-bit savings do not follow from
the code). Leaves that are not matrices get HF-form AdamW. The update is ``W_new − W``, so the learning rate
and weight decay live inside this transformation (``v`` and ``g`` are updated with them). GaLore's SVD
vectors have canonical signs (:mod:`gradtx.lowrank.svd`); the official trajectory depends on its LAPACK's.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import layout, numerics, reduce, tree, validation
from gradtx.core.matrix import MatrixView, leaf_dims, leaf_mask
from gradtx.lowrank.adam import scale_by_adam_hf
from gradtx.lowrank.project import project_low_rank


_TINY = 1e-30  # a zero column has no direction: guarded (the official code divides 0 by 0)


def _norm(v: jax.Array) -> jax.Array:
  """Norm over the input (row) axis: one value per output channel, ``batch + (1, cols)``."""
  return jnp.linalg.norm(v, axis=-2, keepdims=True)


def _magnitude_spec(x: Any, view: MatrixView) -> tuple[Any, ...]:
  """Layout of a magnitude ``batch + (1, cols)`` on an Explicit mesh: the param's batch and output sharding
  (what the norm over the rows leaves), so ``init`` and ``update`` give it the same sharding type."""
  spec = view.matrix_spec(layout.spec_of(x))
  return spec[:-2] + (None, spec[-1])


class GradNormLoRPState(NamedTuple):
  """State of :func:`gradnorm_lorp`.

  Attributes:
    count: steps taken.
    v: the direction parameters (a full copy of each matrix; the params themselves elsewhere).
    g: the magnitudes (one per output channel of each matrix).
    v_state: the projected Adam's state on ``∇v`` (matrices) and AdamW's on the gradients of other leaves.
    g_state: HF-form Adam's state on ``∇g``.
  """

  count: jax.Array
  v: Any
  g: Any
  v_state: Any
  g_state: Any


def gradnorm_lorp(
    learning_rate: optax.ScalarOrSchedule,
    rank: int = 128,
    update_every: int = 200,
    scale: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    *,
    reset_magnitude: bool = True,
    radial: bool = False,
    dimension_numbers: Any = None,
    projection_mask: Any = None,
    axis_name: reduce.AxisName = None,
) -> optax.GradientTransformationExtraArgs:
  r"""GradNormLoRP (official ``LowRankWeightNormAdamW``): weight normalisation plus GaLore on the direction.

  .. math::

    W = g \frac{v}{\|v\|}, \quad v \leftarrow v - \eta_t \alpha P\,\mathrm{Adam}(P^\top \nabla_v), \quad
    g \leftarrow g - \eta_t \mathrm{Adam}(\nabla_g)

  Args:
    learning_rate: η, a float or an optax schedule.
    rank: GaLore rank of the direction's gradient.
    update_every: GaLore's projector period.
    scale: GaLore's α (official class default 1.0).
    b1: first-moment decay.
    b2: second-moment decay.
    eps: ε of the HF-form Adam.
    weight_decay: λ, applied to ``v`` and ``g`` (official) and to non-matrix leaves.
    reset_magnitude: set ``g ← ||v||`` at every step (official code); False keeps ``g`` learned (paper).
    radial: use the exact weight-norm gradient of ``v`` (the official code omits its radial term).
    dimension_numbers: matrix views (see :func:`gradtx.project_low_rank`); norms run over the input axes.
    projection_mask: which matrices are weight-normalised and projected; the others get AdamW.
    axis_name: data-parallel axis over which GaLore's projector choices agree.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> target = jnp.arange(48.0).reshape(8, 6) / 48 + 0.5
    >>> f = lambda p: jnp.sum((p["w"] - target) ** 2)
    >>> tx = gradtx.gradnorm_lorp(learning_rate=0.02, rank=2, update_every=10)
    >>> params = {"w": jnp.ones((8, 6))}
    >>> state = tx.init(params)
    >>> step = jax.jit(lambda p, s: tx.update(jax.grad(f)(p), s, p))
    >>> for _ in range(300):
    ...   updates, state = step(params, state)
    ...   params = optax.apply_updates(params, updates)
    >>> bool(f(params) < 1e-2 * f({"w": jnp.ones((8, 6))}))
    True

  References:
    Huang et al., `Gradient Weight-normalized Low-rank Projection for Efficient LLM Training
    <https://arxiv.org/abs/2412.19616>`_, 2025.
  """
  validation.check_schedule("learning_rate", learning_rate)
  validation.check_schedule("weight_decay", weight_decay)
  validation.check_bool("reset_magnitude", reset_magnitude)
  validation.check_bool("radial", radial)
  adam = scale_by_adam_hf(b1, b2, eps)
  v_tx = project_low_rank(adam, rank=rank, update_every=update_every, scale=scale,
                          dimension_numbers=dimension_numbers, projection_mask=projection_mask, axis_name=axis_name)

  def views(unboxed):
    leaves = jax.tree.leaves(unboxed)
    dims, mask = leaf_dims(dimension_numbers, unboxed), leaf_mask(projection_mask, unboxed)
    return [MatrixView.of(x.shape, d) if d is not None and m else None for x, d, m in zip(leaves, dims, mask)]

  def magnitudes(unboxed, vs, fill):
    """A tree of per-output-channel arrays (shape ``batch + (1, cols)``) for matrices, ``fill`` elsewhere."""
    leaves, treedef = jax.tree.flatten(unboxed)
    return treedef.unflatten([fill(x, view) if view else optax.MaskedNode() for x, view in zip(leaves, vs)])

  def init_fn(params):
    unboxed = tree.unboxed_map(lambda x: x, params)
    vs = views(unboxed)
    zeros_g = magnitudes(unboxed, vs, lambda x, view: layout.zeros(view.batch_shape + (1, view.cols), x.dtype, x,
                                                                    _magnitude_spec(x, view)))
    return GradNormLoRPState(
        count=jnp.zeros([], jnp.int32),
        v=tree.zeros_like(magnitudes(unboxed, vs, lambda x, view: x)),
        g=zeros_g,
        v_state=v_tx.init(params),
        g_state=adam.init(zeros_g),
    )

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError("gradnorm_lorp needs `params` in update (its update is W_new - W).")
    with jax.named_scope("gradtx/gradnorm_lorp"):
      g_leaves, treedef = jax.tree.flatten(updates)
      unboxed_p = tree.unboxed_map(lambda x: x, params)
      p_leaves, vs = jax.tree.leaves(unboxed_p), views(unboxed_p)
      first = state.count == 0
      v_leaves = iter(jax.tree.leaves(state.v))
      m_leaves = iter(jax.tree.leaves(state.g))
      grad_v, grad_g, v_cur, g_cur = [], [], [], []
      for grad, p, view in zip(g_leaves, p_leaves, vs):
        if view is None:
          grad_v.append(grad)
          continue
        v = numerics.upcast(jnp.where(first, view.to_matrix(p), view.to_matrix(next(v_leaves))))
        norm_v = _norm(v)
        stored = numerics.upcast(next(m_leaves))
        g = norm_v if reset_magnitude else jnp.where(first, norm_v, stored)
        gm = numerics.upcast(view.to_matrix(grad))
        direction = v / jnp.maximum(norm_v, _TINY)
        dg = jnp.sum(gm * direction, axis=-2, keepdims=True)
        ratio = 1.0 if reset_magnitude else g / jnp.maximum(norm_v, _TINY)  # g = ||v|| exactly when reset
        dv = ratio * (gm - direction * dg if radial else gm)
        grad_v.append(view.from_matrix(dv).astype(grad.dtype))
        grad_g.append(layout.constrain(dg.astype(p.dtype), p, _magnitude_spec(p, view)))
        v_cur.append(v)
        g_cur.append(g)
      nv, v_state = v_tx.update(treedef.unflatten(grad_v), state.v_state, params, **extra_args)
      ng, g_state = adam.update(jax.tree.structure(state.g).unflatten(grad_g), state.g_state)
      lr = numerics.schedule_value(learning_rate, state.count)
      wd = numerics.schedule_value(weight_decay, state.count)
      ng_leaves, out, new_v, new_g = iter(jax.tree.leaves(ng)), [], [], []
      v_iter, g_iter = iter(v_cur), iter(g_cur)
      for n, p, view in zip(jax.tree.leaves(nv), p_leaves, vs):
        pf = numerics.upcast(p)
        if view is None:
          out.append((-lr * (numerics.upcast(n) + wd * pf)).astype(p.dtype))
          continue
        v = (next(v_iter) - lr * numerics.upcast(view.to_matrix(n))) * (1 - lr * wd)
        g = (next(g_iter) - lr * numerics.upcast(next(ng_leaves))) * (1 - lr * wd)
        w_new = view.from_matrix(g * v / jnp.maximum(_norm(v), _TINY))
        out.append((w_new - pf).astype(p.dtype))
        new_v.append(layout.constrain(view.from_matrix(v).astype(p.dtype), p, layout.spec_of(p)))
        new_g.append(layout.constrain(g.astype(p.dtype), p, _magnitude_spec(p, view)))
      return treedef.unflatten(out), GradNormLoRPState(
          count=tree.safe_increment(state.count),
          v=jax.tree.structure(state.v).unflatten(new_v),
          g=jax.tree.structure(state.g).unflatten(new_g),
          v_state=v_state,
          g_state=g_state,
      )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


registry.register(
    registry.OptimizerSpec(
        name="gradnorm_lorp",
        rank_arg="rank",
        factory=gradnorm_lorp,
        test_kwargs={"learning_rate": 0.05, "rank": 3, "update_every": 10},
        family="lowrank",
        data_axis_arg="axis_name",
        paper="Huang et al., Gradient Weight-normalized Low-rank Projection for Efficient LLM Training, AAAI 2025, arXiv:2412.19616",
        reference="Jhhuangkay/Gradient-Weight-normalized-Low-rank-Projection-for-Efficient-LLM-Training@4033ee2 GradNormLoRP/LowRankWeightNormAdamW.py",
        static_args=("rank", "update_every", "reset_magnitude", "radial", "dimension_numbers", "projection_mask",
                     "axis_name"),
        state_per_param="mn (v) + m (g) + GaLore's r·min + 2r·max + 2m per matrix",
        elementwise=False,
    )
)
