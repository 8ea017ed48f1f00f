"""OwLore: GaLore on a few layers sampled by their outlier ratios; the other layers are frozen.

Paper: Li, Yin, Shen, Wang, Liu, ... "OwLore: Outlier-weighed Layerwise Sampled Low-Rank Projection for
Memory-Efficient LLM Fine-tuning", 2024 (later "OWS"). https://arxiv.org/abs/2405.18380

Reference: pixeli99/OwLore@c458d7a ``src/lmflow/pipeline/finetuner.py`` (``DynamicLayerActivationCallback``):
at every ``lisa_interval_steps`` (50; step 0 included) every parameter of the decoder layers
(``model.model.layers``, one module per layer) is frozen (``requires_grad=False``: no gradient, so
``GaLoreAdamW`` skips it entirely, weight decay included) and ``np.random.choice(L, γ=5, replace=False, p)``
whole layers are unfrozen, with ``p`` one cached outlier ratio per layer normalised to sum 1
(``metric_cache/llama2_ratio_13.txt``; the repository ships ``llama2_7b_ratio_13.txt``, 32 values);
embeddings, final norm and head are never frozen; the optimizer is ``GaLoreAdamW`` (rank 256,
``update_proj_gap`` 100, scale 1, std) on the ``nn.Linear`` weights of modules named ``attn`` / ``mlp``, AdamW
on the rest. The ratio is OWL's (Yin et al., 2024; luuyin/OWL@dddb7a4 ``lib/prune_all.py``,
``check_outlier_mean``): the scores ``A_ij = |W_ij| ||X_j||`` of all ``nn.Linear`` weights of a decoder layer
are concatenated, and the layer's ratio is the percentage of them above ``M`` times their mean (M = 13 judging
by the cache's name).

gradtx differences: the active layers' state lives in γ slots and is re-initialised when the layers are
redrawn (OwLore keeps every layer's GaLore state alive); its GaLore uses gradtx's projection wrapper on the
slots ``(γ, m, n)`` of the kernels, stacked or gathered from one module per layer (see
:mod:`gradtx.lowrank.layers`); the draw uses JAX's ``random.choice`` on a key in the state, not NumPy's
global generator. :func:`outlier_ratios` computes the ratios (as fractions, not percent) from the weights (and
optional input norms ``||X_j||`` from calibration data) instead of reading a cache file. Weight decay
(0 in OwLore's scripts) also acts on frozen layers unless ``mask`` excludes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradtx import registry
from gradtx.core import alias, tree, validation
from gradtx.core.matrix import MatrixDims
from gradtx.lowrank import layer_groups as groups
from gradtx.lowrank.adam import scale_by_adam_hf
from gradtx.lowrank.layers import sample_layers
from gradtx.lowrank.project import project_low_rank


def outlier_ratios(params: Any, threshold: float = 13.0, input_norms: Any = None, *,
                   layer_groups: groups.LayerGroups = "auto", stacked: Any = None) -> jax.Array:
  r"""OWL's layerwise outlier ratio of every layer of ``params``: ``(L,)`` float32, in sampling order.

  .. math::

    A_{ij} = |W_{ij}|\,\lVert X_i \rVert_2, \qquad
    D_l = \frac{1}{|A^l|} \sum_{A_{ij} \in A^l} \mathbb{1}\left[A_{ij} > M\,\overline{A^l}\right]

  where :math:`A^l` pools the scores of all matrices of layer ``l`` (its leaves of rank >= 2 per layer;
  biases and norm scales are not scored, as OWL scores only a decoder layer's ``nn.Linear`` weights) and
  :math:`\overline{A^l}` is their mean. OwLore samples layer ``l`` with probability :math:`D_l / \sum_k D_k`:
  pass the result as ``probabilities`` of :func:`gradtx.owlore` / :func:`sample_layers` (they normalise).
  OWL reports :math:`D_l` in percent; the scale cancels in the probabilities.

  Args:
    params: the weights (the pretrained model OwLore fine-tunes); layers are found as in
      :func:`sample_layers` (stacked ``(L, ...)`` leaves or one module per layer), so the result indexes
      the same layers in the same order. A list of stacked ``(L, in, out)`` kernels is a valid tree.
    threshold: M (OwLore's cached ratios: 13).
    input_norms: optional tree of the same paths as ``params`` holding :math:`\lVert X_i \rVert_2` over
      calibration tokens for a kernel's input axis (its first axis per layer, Flax's ``(in, out)``
      layout): shape ``(in,)`` per module, ``(L, in)`` for a stacked kernel; ``None`` entries or missing
      paths mean 1 (weights only).
    layer_groups: how a path names its layer (see :func:`sample_layers`).
    stacked: which leaves are stacked layers (see :func:`sample_layers`).

  Returns:
    The ``(L,)`` ratios in [0, 1].

  Examples:
    >>> import jax, gradtx
    >>> kernels = [jax.random.normal(jax.random.PRNGKey(0), (4, 64, 64))]
    >>> gradtx.lowrank.outlier_ratios(kernels, threshold=3.0).shape
    (4,)
    >>> per_module = {f"layers_{l}": {"kernel": kernels[0][l]} for l in range(4)}
    >>> bool((gradtx.lowrank.outlier_ratios(per_module, 3.0) == gradtx.lowrank.outlier_ratios(kernels, 3.0)).all())
    True
  """
  validation.check_positive("threshold", threshold)
  groups.check_layer_groups(layer_groups)
  unboxed = tree.unboxed_map(lambda x: x, params)
  with_path, _ = jax.tree_util.tree_flatten_with_path(unboxed)
  leaves = [x for _, x in with_path]
  norms = {}
  if input_norms is not None:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree.unboxed_map(lambda x: x, input_norms))
    norms = {groups.path_string(path): x for path, x in flat}
  norms = [norms.get(groups.path_string(path)) for path, _ in with_path]
  p = groups.plan(unboxed, layer_groups, stacked)
  if p.num_layers is None:
    raise ValueError("`params` has no layers: no stacked (L, ...) leaf and no path matched by `layer_groups`="
                     f"{layer_groups!r}.")
  # (layer positions, leaf indices) of each scored block: a stacked leaf, or the leaves of one kind
  blocks = [(np.arange(p.num_layers), [i]) for i in p.stacked if len(leaves[i].shape) >= 3]
  blocks += [(np.asarray(k.layers), list(k.leaves)) for k in p.kinds if len(leaves[k.leaves[0]].shape) >= 2]
  for _, idx in blocks:
    for i in idx:
      want = leaves[i].shape[:2] if i in p.stacked else leaves[i].shape[:1]
      if norms[i] is not None and tuple(jnp.shape(norms[i])) != tuple(want):
        raise ValueError(f"`input_norms` at {groups.path_string(with_path[i][0])!r} must have shape {tuple(want)} "
                         f"(the kernel's input axis), got {tuple(jnp.shape(norms[i]))}.")
  size = np.zeros(p.num_layers, np.int64)
  for layers, idx in blocks:
    np.add.at(size, layers, int(np.prod(leaves[idx[0]].shape[1 if idx[0] in p.stacked else 0:])))
  if not size.all():
    raise ValueError("`params`: every layer needs a matrix (a leaf of rank >= 2 per layer) to score, got layer "
                     f"sizes {size.tolist()} for layers {list(p.names)}.")

  def ratios(leaves, norms):  # one program, not one eager dispatch per operation
    total = jnp.zeros(p.num_layers, jnp.float32)
    count = jnp.zeros(p.num_layers, jnp.int32)
    scores = []
    for layers, idx in blocks:
      if idx[0] in p.stacked:
        w, x = leaves[idx[0]], norms[idx[0]]
      else:
        w = jnp.stack([leaves[i] for i in idx])
        x = None if all(norms[i] is None for i in idx) else jnp.stack(
            [jnp.ones(w.shape[1], jnp.float32) if norms[i] is None else jnp.asarray(norms[i], jnp.float32)
             for i in idx])
      score = jnp.abs(jnp.asarray(w, jnp.float32))
      if x is not None:
        score = score * jnp.asarray(x, jnp.float32).reshape(score.shape[:2] + (1,) * (score.ndim - 2))
      scores.append((layers, score.reshape(score.shape[0], -1)))
      total = total.at[layers].add(jnp.sum(scores[-1][1], axis=1))
    limit = threshold * total / size.astype(np.float32)
    for layers, score in scores:
      count = count.at[layers].add(jnp.sum(score > limit[layers][:, None], axis=1, dtype=jnp.int32))
    return count.astype(jnp.float32) / size.astype(np.float32)

  return jax.jit(ratios)(leaves, norms)


def _stacked_kernels(tree):  # the slots (γ, in, out) of 2-D kernels: one projection per slot
  return jax.tree.map(lambda x: MatrixDims(1, 2) if len(x.shape) == 3 else None, tree)


def owlore(
    learning_rate: optax.ScalarOrSchedule,
    num_active: int = 5,
    every: int = 50,
    probabilities: Any = None,
    rank: int = 256,
    update_every: int = 100,
    scale: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    layer_groups: groups.LayerGroups = "auto",
    stacked: Any = None,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""OwLore: GaLore-AdamW on γ layers sampled every K steps by outlier ratio; other layers frozen.

  :func:`sample_layers` (γ = ``num_active``, K = ``every``, ``probabilities``) around
  :func:`gradtx.project_low_rank` of HF-form AdamW on the ``(γ, in, out)`` slots of the active layers'
  kernels (one projection per layer and kernel; a layer's norms and biases get AdamW unprojected). Layers
  are stacked ``(L, ...)`` leaves or one module per layer (``layers_3``, ``blocks/3``: ``layer_groups``);
  leaves outside the layers (embeddings, head, final norm) get AdamW at full size, every step.

  Args:
    learning_rate: η (OwLore scripts: 3e-4).
    num_active: γ (official 5 of 32).
    every: K (official 50).
    probabilities: ``(L,)`` layer scores: OwLore's are :func:`outlier_ratios` of the pretrained weights
      (``threshold=13``); ``None`` samples uniformly (LISA).
    rank: GaLore rank (official 256).
    update_every: GaLore's projector period (official 100).
    scale: GaLore's α (official 1.0).
    b1: first-moment decay.
    b2: second-moment decay.
    eps: ε of the HF-form AdamW.
    weight_decay: λ, decoupled (frozen layers decay too, unlike OwLore's; exclude them with ``mask``).
    mask: which params decay.
    layer_groups: how a parameter path names its layer (see :func:`sample_layers`; default ``'auto'``).
    stacked: which leaves are stacked layers (see :func:`sample_layers`; default: leaves of rank >= 3
      when no per-module layer is found).
    seed: seed of the layer draws.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.owlore(learning_rate=3e-4, num_active=2, rank=4)
    >>> state = tx.init({"layers": jnp.zeros((8, 32, 16)), "head": jnp.zeros((16, 4))})
    >>> state[0].inner.leaves["layers"].inner.mu.shape  # GaLore moments for 2 of 8 layers, rank 4
    (2, 32, 4)
    >>> import jax, numpy as np
    >>> rng = np.random.default_rng(0)  # heavy-tailed weights, like a pretrained LLM's
    >>> params = {f"layers_{l}": {"kernel": jnp.asarray(rng.standard_t(1.0, (32, 16)), jnp.float32)}
    ...           for l in range(8)}
    >>> tx = gradtx.owlore(3e-4, num_active=2, rank=4, probabilities=gradtx.lowrank.outlier_ratios(params))
    >>> state = jax.eval_shape(tx.init, params)
    >>> state[0].inner.leaves["layers_0"]["kernel"].inner.mu.shape  # one module per layer: the same slots
    (2, 32, 4)

  References:
    Li et al., `OwLore: Outlier-weighed Layerwise Sampled Low-Rank Projection for Memory-Efficient LLM
    Fine-tuning <https://arxiv.org/abs/2405.18380>`_, 2024.
  """
  adam = scale_by_adam_hf(b1, b2, eps)
  galore = project_low_rank(adam, rank=rank, update_every=update_every, scale=scale,
                            dimension_numbers=_stacked_kernels)
  direction = sample_layers(galore, num_active=num_active, every=every, probabilities=probabilities,
                            layer_groups=layer_groups, stacked=stacked, full_rank=adam, seed=seed)
  return alias.decoupled_after_step(direction, learning_rate, weight_decay, mask)


registry.register(
    registry.OptimizerSpec(
        name="owlore",
        rank_arg="rank",
        factory=owlore,
        test_kwargs={"learning_rate": 0.05, "rank": 3, "update_every": 10, "num_active": 1, "every": 5},
        family="lowrank",
        paper="Li et al., OwLore: Outlier-weighed Layerwise Sampled Low-Rank Projection for Memory-Efficient LLM Fine-tuning, 2024, arXiv:2405.18380",
        reference="pixeli99/OwLore@c458d7a src/lmflow/pipeline/finetuner.py (DynamicLayerActivationCallback)",
        static_args=("num_active", "every", "probabilities", "rank", "update_every", "layer_groups", "stacked", "seed",
                     "mask"),
        state_per_param="GaLore state for γ of L layers",
        elementwise=False,
    )
)
