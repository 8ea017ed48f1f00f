"""AGVM: per-module learning-rate modulation by the gradient variance of two independent half-batch estimates.

Paper: Xue, Chen, Zhang, Lu, Wang, Li, Liu, Wang, Qiao, Lin, Ouyang. "Large-batch Optimization for Dense
Visual Predictions", NeurIPS 2022. https://arxiv.org/abs/2210.11078

Reference implementation: Sense-X/AGVM@b60d5981 ``agvm/optim/agvm_optimizer_hook.py``. At iterations
``i`` (0-based) with ``start <= i <= stop`` and ``i % interval == 0``, the workers are split into two
halves whose all-reduced gradients ``g_A``, ``g_B`` are two independent estimates of the full-batch
gradient; for every module group ``k`` (the optimizer's param groups; group 0 is the reference):

``φ_k = 1 − cos(g_A^k, g_B^k)``, ``μ_k = sqrt(clamp((φ_0 + 1e-6) / (φ_k + 1e-6), 0.5, 10))``,
``s_k ← 0.97 s_k + 0.03 μ_k`` (``s_k`` starts at 1).

The step uses the full mean gradient with group ``k``'s learning rate multiplied by ``s_k`` whenever
``start <= i <= stop`` (also between refreshes). Scaling the learning rate of SGD, momentum SGD, Adam or
AdamW is scaling their final update, so gradtx wraps any optax optimizer and scales its updates.

With ``use_adam`` (official ``use_adam=True``, for Adam/AdamW) the cosine is taken between Adam-preconditioned
half gradients. The official hook computes them from the half gradients as they are at that point of its
``_agvm_update``, ``g_A / W`` (the loss is divided by ``W · W/2`` before the all-reduce within a half), with
the optimizer's ``exp_avg_sq`` before this step's update, ``v``, and the group's ``betas[1]`` and ``eps``;
it then multiplies by ``W``:

``ĝ_A = W · (g_A / W) / (sqrt(β2 v + (1 − β2) (g_A / W)²) + ε)``, the same for ``B``; ``v`` is not changed.

gradtx reproduces both quirks: the half gradient enters the candidate second moment scaled by ``1/W`` (so
its weight there shrinks as ``1/W²`` with the number of replicas), and ``v`` is not bias-corrected.
``W`` is the size of ``axis_name`` on a mesh and ``world_size`` (default 2) on one device; ``world_size=1``
gives the formula the code seems to intend (Adam's next ``v`` with the half gradient). ``v`` is the inner
optimizer's ``nu`` (``optax.tree.get(inner_state, 'nu')``, the un-debiased EMA that torch calls
``exp_avg_sq``); ``adam_b2`` and ``adam_eps`` must be the inner Adam's ``b2`` and ``eps``.

Where gradtx differs:
  * ``use_adam`` on the first iteration: the official hook raises ``KeyError`` when a refresh comes before
    the optimizer's first step (torch creates ``exp_avg_sq`` lazily); gradtx reads the zero ``nu``.
  * The official hook compares rank 0 with rank ``min(world_size // 2 + 8, world_size − 1)``; both hold
    their half's all-reduced gradient, so this is the same as comparing the halves.
  * On a mesh gradtx all-reduces ``Σ g`` every step and ``Σ ±g`` (+ on half A, − on half B) on refresh
    steps, and recovers ``g_A, g_B`` from the two (the official hook uses grouped all-reduces and an
    all-gather between two ranks); the statistics are identical on every replica.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradtx.core import reduce, tree, validation


class ScaleByAGVMState(NamedTuple):
  """State of :func:`scale_by_agvm`.

  Attributes:
    count: the 0-based iteration of the next update (the official ``runner.iter``).
    scales: the per-group learning-rate multipliers ``s_k`` (groups in order of first appearance).
    variance: ``φ_k`` at the last refresh (diagnostic).
    inner_state: state of the wrapped optimizer.
  """

  count: jax.Array
  scales: jax.Array
  variance: jax.Array
  inner_state: optax.OptState


def _leaf_labels(params, label_fn) -> list[Hashable]:
  leaves, _ = jax.tree_util.tree_flatten_with_path(params)
  return [label_fn(jax.tree_util.keystr(path, simple=True, separator="/")) for path, _ in leaves]


def _groups(labels: Sequence[Hashable]) -> list[Hashable]:
  return list(dict.fromkeys(labels))


def _half_a(axis_name, axis_index_groups) -> jax.Array:
  """Whether this replica is in half A of ``axis_name`` (checked against the axis size at trace time)."""
  n = int(jax.lax.axis_size(axis_name))
  if axis_index_groups is None:
    if n % 2:
      raise ValueError(f"scale_by_agvm needs an even number of replicas on `axis_name`, got {n}.")
    first = list(range(n // 2))
  else:
    first, second = (sorted(int(i) for i in g) for g in axis_index_groups)
    if len(first) != len(second) or sorted(first + second) != list(range(n)):
      raise ValueError(
          f"`axis_index_groups` must split the {n} indices of `axis_name` into two halves, got {axis_index_groups!r}."
      )
  idx = jax.lax.axis_index(axis_name)
  return jnp.any(idx == jnp.asarray(first, jnp.int32))


def scale_by_agvm(
    inner: optax.GradientTransformation,
    label_fn: Callable[[str], Hashable],
    *,
    reference_label: Hashable | None = None,
    interval: int = 5,
    start_step: int = 500,
    stop_step: int | None = None,
    momentum: float = 0.97,
    min_ratio: float = 0.5,
    max_ratio: float = 10.0,
    use_adam: bool = False,
    adam_b2: float | None = None,
    adam_eps: float | None = None,
    world_size: int | None = None,
    axis_name: reduce.AxisName = None,
    axis_index_groups: Sequence[Sequence[int]] | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Scales ``inner``'s updates per module group by AGVM's gradient-variance ratio to a reference group.

  .. math::

    \phi_k = 1 - \cos(g_A^{(k)}, g_B^{(k)}), \quad
    \mu_k = \sqrt{\operatorname{clip}\left(\frac{\phi_{\mathrm{ref}} + 10^{-6}}{\phi_k + 10^{-6}},
    r_{\min}, r_{\max}\right)}, \quad s_k \leftarrow m\, s_k + (1 - m)\, \mu_k

  **One device:** pass the mean gradient as ``updates`` and two independent estimates (e.g. the gradients
  of the two halves of the batch, ``jax.vmap(jax.grad(loss), (None, 0))(params, batch_halves)``) as
  ``update(..., grad_pair=(g_a, g_b))``.

  **On a mesh** (inside ``pmap`` / ``shard_map`` over the data-parallel axis ``axis_name``): pass each
  replica's *local* gradient as ``updates`` and do not average it first; ``scale_by_agvm`` all-reduces it,
  gives ``inner`` the mean, and takes ``g_A``, ``g_B`` from the two halves of the axis (the first and second
  half of the indices, or the two lists of ``axis_index_groups``).

  **With** ``use_adam=True`` (``inner`` an Adam-family optimizer with a ``nu`` state field) the cosine is
  between ``g / (sqrt(β2 ν + (1 − β2) (g / W)²) + ε)`` of the two halves, as in the official hook (see the
  module docstring for its two quirks).

  Args:
    inner: the optimizer whose learning rate is modulated (e.g. ``optax.sgd(lr, momentum=0.9)``).
    label_fn: maps a parameter path (keys joined by ``'/'``, e.g. ``'backbone/conv1/kernel'``) to its
      module group.
    reference_label: the reference group (official: the backbone); ``None`` takes the first leaf's group.
    interval: refresh interval in steps (official ``lr_update_interval`` 5).
    start_step: first 0-based step of the modulation (official ``lr_update_start_iter`` 500).
    stop_step: last step of the modulation (``None``: never stops).
    momentum: m, the EMA rate of ``s`` (official 0.97).
    min_ratio: lower clamp of the variance ratio (official 0.5).
    max_ratio: upper clamp of the variance ratio (official 10).
    use_adam: take the cosine of Adam-preconditioned half gradients (official ``use_adam``); ``inner``'s
      state must have one ``nu`` field shaped like the params.
    adam_b2: the inner Adam's ``b2`` (only with ``use_adam``; default 0.999, torch's and optax's).
    adam_eps: the inner Adam's ``eps`` (only with ``use_adam``; default 1e-8, torch's and optax's).
    world_size: ``W`` of the official ``1/W`` scaling on one device (only with ``use_adam`` and
      ``axis_name=None``; default 2, one replica per half); on a mesh ``W`` is the size of ``axis_name``.
    axis_name: data-parallel axis; ``None`` on one device.
    axis_index_groups: the two halves of ``axis_name`` as two lists of axis indices of equal length.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; on one device ``update`` requires ``grad_pair``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, gradtx
    >>> params = {"backbone": jnp.zeros(2), "head": jnp.zeros(2)}
    >>> tx = gradtx.scale_by_agvm(optax.sgd(0.1), lambda path: path.split("/")[0], start_step=0,
    ...                           interval=1, momentum=0.0)
    >>> state = tx.init(params)
    >>> g_a = {"backbone": jnp.array([1.0, 0.0]), "head": jnp.array([1.0, 0.0])}
    >>> g_b = {"backbone": jnp.array([1.0, 0.1]), "head": jnp.array([1.0, 1.0])}
    >>> g = jax.tree.map(lambda a, b: (a + b) / 2, g_a, g_b)
    >>> u, state = tx.update(g, state, params, grad_pair=(g_a, g_b))
    >>> state.scales.round(3)  # the noisier head: ratio clamped to 0.5, step x sqrt(0.5)
    Array([1.   , 0.707], dtype=float32)
    >>> adam = gradtx.scale_by_agvm(optax.adam(0.1), lambda path: path.split("/")[0], start_step=0,
    ...                             interval=1, momentum=0.0, use_adam=True)
    >>> u, state = adam.update(g, adam.init(params), params, grad_pair=(g_a, g_b))
    >>> state.variance.round(3)  # nu = 0: each half is W sign(g) / sqrt(1 - b2), only signs compared
    Array([0.293, 0.293], dtype=float32)

  References:
    Xue et al., `Large-batch Optimization for Dense Visual Predictions <https://arxiv.org/abs/2210.11078>`_,
    2022.
  """
  if not callable(label_fn):
    raise ValueError(f"`label_fn` must be a callable of a parameter path, got {label_fn!r}.")
  validation.check_transformation("inner", inner)
  validation.check_int("interval", interval, low=1)
  validation.check_int("start_step", start_step, low=0)
  if stop_step is not None:
    validation.check_int("stop_step", stop_step, low=start_step)
  validation.check_beta("momentum", momentum)
  validation.check_positive("min_ratio", min_ratio)
  validation.check_positive("max_ratio", max_ratio)
  validation.check_at_most("min_ratio", min_ratio, "max_ratio", max_ratio)
  if axis_index_groups is not None and (axis_name is None or len(axis_index_groups) != 2):
    raise ValueError(f"`axis_index_groups` must be two lists of indices of `axis_name`, got {axis_index_groups!r}.")
  validation.check_bool("use_adam", use_adam)
  beta2 = 0.999 if adam_b2 is None else adam_b2
  eps = 1e-8 if adam_eps is None else adam_eps
  validation.check_beta("adam_b2", beta2)
  # eps = 0 divides 0 by 0 on a coordinate whose gradient and second moment are 0, so eps > 0.
  validation.check_eps("adam_eps", eps)
  if world_size is not None:
    validation.check_int("world_size", world_size, low=1)
  for name, value in (("adam_b2", adam_b2), ("adam_eps", adam_eps), ("world_size", world_size)):
    if value is not None and not use_adam:
      raise ValueError(f"`{name}` is only used with use_adam=True, got {name}={value!r} and use_adam=False.")
  if world_size is not None and axis_name is not None:
    raise ValueError(f"`world_size` is for one device; on a mesh W is the size of `axis_name`, got {world_size!r}.")
  inner = optax.with_extra_args_support(inner)

  def second_moment(inner_state, like):
    """The leaves of the inner optimizer's ``nu``, checked to mirror those of ``like`` (at trace time)."""
    try:
      nu = optax.tree.get(inner_state, "nu")
    except KeyError:
      raise ValueError("use_adam=True needs one `nu` field in the inner state; it has several.") from None
    if nu is None:
      raise ValueError(f"use_adam=True needs an Adam-family `inner` with a `nu` state field, got {inner_state!r:.200}.")
    leaves = jax.tree.leaves(nu)
    shapes = [tuple(x.shape) for x in leaves]
    if shapes != [tuple(x.shape) for x in jax.tree.leaves(like)]:
      raise ValueError(f"use_adam=True needs the inner `nu` shaped like the params, got leaf shapes {shapes!r:.200}.")
    return leaves

  def precondition(grads, nu, w):
    """Official ``_cat_all_param_grads`` with ``use_adam``, times W: the half gradient enters as ``g / W``."""
    leaves, treedef = jax.tree.flatten(grads)

    def one(g, v):
      g, v = g.astype(jnp.float32), v.astype(jnp.float32)
      return g / (jnp.sqrt(beta2 * v + (1.0 - beta2) * jnp.square(g / w)) + eps)

    return treedef.unflatten([one(g, v) for g, v in zip(leaves, nu)])

  def group_index(params):
    labels = _leaf_labels(params, label_fn)
    groups = _groups(labels)
    ref = groups[0] if reference_label is None and groups else reference_label
    if groups and ref not in groups:
      raise ValueError(f"`reference_label` {ref!r} is not one of the groups {groups!r}.")
    return [groups.index(lab) for lab in labels], len(groups), (groups.index(ref) if groups else 0)

  def init_fn(params):
    _, n_groups, _ = group_index(params)
    inner_state = inner.init(params)
    if use_adam:
      second_moment(inner_state, params)
    return ScaleByAGVMState(
        count=jnp.zeros([], jnp.int32),
        scales=jnp.ones([n_groups], jnp.float32),
        variance=jnp.zeros([n_groups], jnp.float32),
        inner_state=inner_state,
    )

  def update_fn(updates, state, params=None, *, grad_pair=None, **extra_args):
    with jax.named_scope("gradtx/agvm"):
      index, n_groups, ref = group_index(updates)
      step = state.count
      window = (step >= start_step) if stop_step is None else (step >= start_step) & (step <= stop_step)
      refresh = window & (step % interval == 0)
      if axis_name is not None:
        n = int(jax.lax.axis_size(axis_name))
        total = jax.tree.map(lambda g: jax.lax.psum(g, axis_name), updates)
        in_a = _half_a(axis_name, axis_index_groups)
        diff = jax.lax.cond(
            refresh,
            lambda: jax.tree.map(lambda g: jax.lax.psum(jnp.where(in_a, g, -g), axis_name), updates),
            lambda: jax.tree.map(lambda g: jnp.zeros(g.shape, g.dtype), updates),
        )
        grads = jax.tree.map(lambda s: s / n, total)
        g_a = jax.tree.map(lambda s, d: (s.astype(jnp.float32) + d) / n, total, diff)
        g_b = jax.tree.map(lambda s, d: (s.astype(jnp.float32) - d) / n, total, diff)
      elif grad_pair is None:
        raise ValueError("scale_by_agvm needs `grad_pair=(g_a, g_b)` in `update` when `axis_name` is None.")
      else:
        grads, (g_a, g_b) = updates, grad_pair
      if use_adam:
        nu = second_moment(state.inner_state, updates)
        w = float(n if axis_name is not None else (2 if world_size is None else world_size))
        g_a, g_b = precondition(g_a, nu, w), precondition(g_b, nu, w)

      dot = jnp.zeros([n_groups], jnp.float32)
      sq_a = jnp.zeros([n_groups], jnp.float32)
      sq_b = jnp.zeros([n_groups], jnp.float32)
      for k, a, b in zip(index, jax.tree.leaves(g_a), jax.tree.leaves(g_b)):
        a, b = a.astype(jnp.float32), b.astype(jnp.float32)
        dot = dot.at[k].add(jnp.sum(a * b))
        sq_a = sq_a.at[k].add(jnp.sum(a * a))
        sq_b = sq_b.at[k].add(jnp.sum(b * b))
      phi = 1.0 - dot / jnp.sqrt(jnp.maximum(sq_a * sq_b, 1e-16))
      # The reference group's own ratio is exactly 1, as in the official code (the same tensor element
      # divided by itself); XLA may round phi[ref] and phi differently in two fusions, which matters when
      # phi[ref] is near 0 (identical halves, or sign-like preconditioned halves at the first step).
      is_ref = jnp.arange(n_groups) == ref
      ratio = jnp.clip(jnp.where(is_ref, 1.0, (phi[ref] + 1e-6) / (phi + 1e-6)), min_ratio, max_ratio)
      scales = jnp.where(refresh, momentum * state.scales + (1.0 - momentum) * jnp.sqrt(ratio), state.scales)
      scales = scales.astype(jnp.float32)
      variance = jnp.where(refresh, phi, state.variance)

      new_updates, inner_state = inner.update(grads, state.inner_state, params, **extra_args)
      applied = jnp.where(window, scales, 1.0)
      leaves, treedef = jax.tree.flatten(new_updates)
      scaled = [(u * applied[k]).astype(u.dtype) for k, u in zip(index, leaves)]
      return treedef.unflatten(scaled), ScaleByAGVMState(tree.safe_increment(step), scales, variance, inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
