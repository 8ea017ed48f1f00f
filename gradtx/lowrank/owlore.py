"""OwLore: GaLore on a few layers sampled by their outlier ratios; the other layers are frozen.

Paper: Li, Yin, Shen, Wang, Liu, ... "OwLore: Outlier-weighed Layerwise Sampled Low-Rank Projection for
Memory-Efficient LLM Fine-tuning", 2024 (later "OWS"). https://arxiv.org/abs/2405.18380

Reference: pixeli99/OwLore@c458d7a ``src/lmflow/pipeline/finetuner.py`` (``DynamicLayerActivationCallback``):
at every ``lisa_interval_steps`` (50; step 0 included) all decoder layers are frozen and
``np.random.choice(L, γ=5, replace=False, p)`` layers are unfrozen, with ``p`` the layers' cached outlier
ratios normalised to sum 1 (``metric_cache/llama2_ratio_13.txt``, one value per layer); embeddings and the
head stay trainable; the optimizer is ``GaLoreAdamW`` (rank 256, ``update_proj_gap`` 100, scale 1, std) on
attention and MLP kernels. The outlier ratio is OWL's (Yin et al., 2024): the fraction of scores
``A_ij = |W_ij| ||X_j||`` above ``M`` times their mean (M = 13 judging by the cache's name).

gradtx differences: the active layers' state lives in γ slots and is re-initialised when the layers are
redrawn (OwLore keeps every layer's GaLore state alive); its GaLore uses gradtx's projection wrapper on the
stacked ``(γ, m, n)`` kernels. :func:`outlier_ratios` computes the ratios from weights (and optional input
norms ``||X_j||`` from calibration data) instead of reading a cache file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gradtx import registry
from gradtx.core import alias, validation
from gradtx.core.matrix import MatrixDims
from gradtx.lowrank.adam import scale_by_adam_hf
from gradtx.lowrank.layers import sample_layers
from gradtx.lowrank.project import project_low_rank


def outlier_ratios(stacked_kernels: Sequence[jax.Array], threshold: float = 13.0,
                   input_norms: Sequence[jax.Array | None] | None = None) -> jax.Array:
  """OWL's layerwise outlier ratio of stacked ``(L, in, out)`` kernels: ``(L,)`` float32.

  For each layer and kernel, the fraction of scores ``|W_ij| ||X_i||`` (input norms optional, default 1)
  larger than ``threshold`` times the kernel's mean score, averaged over the layer's kernels. Pass the result
  (or any non-negative scores) as ``probabilities`` of :func:`owlore` / :func:`sample_layers`.

  Examples:
    >>> import jax, gradtx
    >>> kernels = [jax.random.normal(jax.random.PRNGKey(0), (4, 64, 64))]
    >>> gradtx.lowrank.outlier_ratios(kernels, threshold=3.0).shape
    (4,)
  """
  validation.check_positive("threshold", threshold)
  norms = input_norms if input_norms is not None else [None] * len(stacked_kernels)
  ratios = []
  for w, x in zip(stacked_kernels, norms):
    score = jnp.abs(w.astype(jnp.float32))
    if x is not None:
      score = score * jnp.asarray(x, jnp.float32)[..., :, None]
    mean = jnp.mean(score, axis=tuple(range(1, score.ndim)), keepdims=True)
    ratios.append(jnp.mean(score > threshold * mean, axis=tuple(range(1, score.ndim))))
  return jnp.mean(jnp.stack(ratios), axis=0).astype(jnp.float32)


def _stacked_kernels(tree):
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
    stacked: Any = None,
    seed: int = 0,
) -> optax.GradientTransformationExtraArgs:
  r"""OwLore: GaLore-AdamW on γ layers sampled every K steps by outlier ratio; other layers frozen.

  :func:`sample_layers` (γ = ``num_active``, K = ``every``, ``probabilities``) around
  :func:`gradtx.project_low_rank` of HF-form AdamW on the ``(γ, in, out)`` stacked kernels (per-layer
  projections); leaves that are not stacked (embeddings, head, norms) get AdamW at full size, every step.

  Args:
    learning_rate: η (OwLore scripts: 3e-4).
    num_active: γ (official 5 of 32).
    every: K (official 50).
    probabilities: ``(L,)`` layer scores, e.g. :func:`outlier_ratios`; ``None`` samples uniformly (LISA).
    rank: GaLore rank (official 256).
    update_every: GaLore's projector period (official 100).
    scale: GaLore's α (official 1.0).
    b1: first-moment decay.
    b2: second-moment decay.
    eps: ε of the HF-form AdamW.
    weight_decay: λ, decoupled (frozen layers decay too; exclude them with ``mask`` if needed).
    mask: which params decay.
    stacked: which leaves are stacked layers (see :func:`sample_layers`; default: leaves of rank >= 3).
    seed: seed of the layer draws.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, gradtx
    >>> tx = gradtx.owlore(learning_rate=3e-4, num_active=2, rank=4)
    >>> state = tx.init({"layers": jnp.zeros((8, 32, 16)), "head": jnp.zeros((16, 4))})
    >>> state[0].inner.leaves["layers"].inner.mu.shape  # GaLore moments for 2 of 8 layers, rank 4
    (2, 32, 4)

  References:
    Li et al., `OwLore: Outlier-weighed Layerwise Sampled Low-Rank Projection for Memory-Efficient LLM
    Fine-tuning <https://arxiv.org/abs/2405.18380>`_, 2024.
  """
  adam = scale_by_adam_hf(b1, b2, eps)
  galore = project_low_rank(adam, rank=rank, update_every=update_every, scale=scale,
                            dimension_numbers=_stacked_kernels)
  direction = sample_layers(galore, num_active=num_active, every=every, probabilities=probabilities,
                            stacked=stacked, full_rank=adam, seed=seed)
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
        static_args=("num_active", "every", "probabilities", "rank", "update_every", "stacked", "seed", "mask"),
        state_per_param="GaLore state for γ of L layers",
        elementwise=False,
    )
)
