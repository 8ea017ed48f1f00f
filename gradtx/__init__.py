"""gradtx: composable optax gradient transformations from recent optimizer papers.

Every method is a pure ``optax.GradientTransformationExtraArgs``: ``scale_by_<method>`` gives the update
direction, ``<method>(learning_rate, ...)`` the full optimizer. :data:`gradtx.registry.OPTIMIZERS` lists the
full optimizers with their papers and reference implementations.
"""

from gradtx import registry as registry
from gradtx.registry import OPTIMIZERS as OPTIMIZERS
from gradtx.registry import OptimizerSpec as OptimizerSpec

# curvature
from gradtx.core.hvp import fill_masked_leaves as fill_masked_leaves
from gradtx.curvature import GaussNewtonBartlettState as GaussNewtonBartlettState
from gradtx.curvature import HutchinsonState as HutchinsonState
from gradtx.curvature import ScaleByAdaHessianState as ScaleByAdaHessianState
from gradtx.curvature import ScaleByMFACState as ScaleByMFACState
from gradtx.curvature import ScaleByRegularizedNewtonState as ScaleByRegularizedNewtonState
from gradtx.curvature import ScaleBySophiaState as ScaleBySophiaState
from gradtx.curvature import adahessian as adahessian
from gradtx.curvature import conv_patches as conv_patches
from gradtx.curvature import estimate_hessian_diag_gnb as estimate_hessian_diag_gnb
from gradtx.curvature import estimate_hessian_diag_hutchinson as estimate_hessian_diag_hutchinson
from gradtx.curvature import mfac as mfac
from gradtx.curvature import regularized_newton as regularized_newton
from gradtx.curvature import scale_by_adahessian as scale_by_adahessian
from gradtx.curvature import scale_by_mfac as scale_by_mfac
from gradtx.curvature import scale_by_regularized_newton as scale_by_regularized_newton
from gradtx.curvature import scale_by_sophia as scale_by_sophia
from gradtx.curvature import scale_by_tract as scale_by_tract
from gradtx.curvature import sophia_g as sophia_g
from gradtx.curvature import sophia_h as sophia_h

# geometry
from gradtx.geometry import ProjectRadialState as ProjectRadialState
from gradtx.geometry import ScaleByLarsTrustRatioState as ScaleByLarsTrustRatioState
from gradtx.geometry import adamp as adamp
from gradtx.geometry import exclude_bias_and_norm as exclude_bias_and_norm
from gradtx.geometry import lamb as lamb
from gradtx.geometry import lars as lars
from gradtx.geometry import project_radial as project_radial
from gradtx.geometry import scale_by_adamp as scale_by_adamp
from gradtx.geometry import scale_by_lamb_trust_ratio as scale_by_lamb_trust_ratio
from gradtx.geometry import scale_by_lars_trust_ratio as scale_by_lars_trust_ratio
from gradtx.geometry import scale_by_sgdp as scale_by_sgdp
from gradtx.geometry import sgdp as sgdp
# optimizer-state memory
from gradtx.core.memory import LeafMemory as LeafMemory
from gradtx.core.memory import MemoryReport as MemoryReport
from gradtx.core.memory import memory_report as memory_report
from gradtx.core.memory import state_nbytes as state_nbytes

# moment scaling
from gradtx.moment_scaling import ScaleByBeliefState as ScaleByBeliefState
from gradtx.moment_scaling import ScaleByDiffGradState as ScaleByDiffGradState
from gradtx.moment_scaling import ScaleByExAdamState as ScaleByExAdamState
from gradtx.moment_scaling import adabelief as adabelief
from gradtx.moment_scaling import diffgrad as diffgrad
from gradtx.moment_scaling import exadam as exadam
from gradtx.moment_scaling import scale_by_belief as scale_by_belief
from gradtx.moment_scaling import scale_by_diffgrad as scale_by_diffgrad
from gradtx.moment_scaling import scale_by_exadam as scale_by_exadam

# sign momentum
from gradtx.sign_momentum import ScaleByLionState as ScaleByLionState
from gradtx.sign_momentum import lion as lion
from gradtx.sign_momentum import scale_by_lion as scale_by_lion
from gradtx.sign_momentum import signum as signum

# state compression
from gradtx.quantization import QuantizedArray as QuantizedArray
from gradtx.quantization import QuantizeStateState as QuantizeStateState
from gradtx.quantization import adabelief_8bit as adabelief_8bit
from gradtx.quantization import adamw_8bit as adamw_8bit
from gradtx.quantization import create_dynamic_map as create_dynamic_map
from gradtx.quantization import dequantize_blockwise as dequantize_blockwise
from gradtx.quantization import lion_8bit as lion_8bit
from gradtx.quantization import quantize_blockwise as quantize_blockwise
from gradtx.quantization import quantize_state as quantize_state

# clipping and stability
from gradtx.stability import ScaleByAGVMState as ScaleByAGVMState
from gradtx.stability import scale_by_agvm as scale_by_agvm
from gradtx.stability import ClipByCoordinateState as ClipByCoordinateState
from gradtx.stability import ScaleByAdamCoordinateClippedState as ScaleByAdamCoordinateClippedState
from gradtx.stability import adam_coordinate_clipped as adam_coordinate_clipped
from gradtx.stability import clip_by_coordinate as clip_by_coordinate
from gradtx.stability import scale_by_adam_coordinate_clipped as scale_by_adam_coordinate_clipped
from gradtx.stability import AddGradientNoiseState as AddGradientNoiseState
from gradtx.stability import add_gradient_noise as add_gradient_noise
from gradtx.stability import ResetStateEveryState as ResetStateEveryState
from gradtx.stability import reset_state_every as reset_state_every
from gradtx.stability import ClipSpikesState as ClipSpikesState
from gradtx.stability import clip_spikes as clip_spikes
from gradtx.stability import scale_by_spam as scale_by_spam
from gradtx.stability import spam as spam
from gradtx.stability import ClipByAdaptiveMaxState as ClipByAdaptiveMaxState
from gradtx.stability import NormalizeByNormEmaState as NormalizeByNormEmaState
from gradtx.stability import ScaleByStableSpamAdamState as ScaleByStableSpamAdamState
from gradtx.stability import clip_by_adaptive_max as clip_by_adaptive_max
from gradtx.stability import normalize_by_norm_ema as normalize_by_norm_ema
from gradtx.stability import scale_by_stable_spam as scale_by_stable_spam
from gradtx.stability import stable_spam as stable_spam

# schedules and batch size
from gradtx.schedules import AdaptiveBatchSizeState as AdaptiveBatchSizeState
from gradtx.schedules import BatchSizeTestResult as BatchSizeTestResult
from gradtx.schedules import RecordGradNormsState as RecordGradNormsState
from gradtx.schedules import ScaleByAdagradNormState as ScaleByAdagradNormState
from gradtx.schedules import ScaleByAdagradState as ScaleByAdagradState
from gradtx.schedules import adadagrad as adadagrad
from gradtx.schedules import adadagrad_norm as adadagrad_norm
from gradtx.schedules import adagrad_norm as adagrad_norm
from gradtx.schedules import adaptive_batch_size as adaptive_batch_size
from gradtx.schedules import coordinate_norm_test as coordinate_norm_test
from gradtx.schedules import inner_product_test as inner_product_test
from gradtx.schedules import linear_decay as linear_decay
from gradtx.schedules import next_batch_size as next_batch_size
from gradtx.schedules import norm_test as norm_test
from gradtx.schedules import orthogonality_test as orthogonality_test
from gradtx.schedules import record_grad_norms as record_grad_norms
from gradtx.schedules import recorded_grad_norms as recorded_grad_norms
from gradtx.schedules import refined_schedule as refined_schedule
from gradtx.schedules import refined_schedule_values as refined_schedule_values
from gradtx.schedules import rescale_learning_rate as rescale_learning_rate
from gradtx.schedules import scale_by_adagrad as scale_by_adagrad
from gradtx.schedules import scale_by_adagrad_norm as scale_by_adagrad_norm
from gradtx.schedules import smooth_grad_norms as smooth_grad_norms

__version__ = "0.1.0"

__all__ = [
    "adabelief",
    "adabelief_8bit",
    "adadagrad",
    "adadagrad_norm",
    "adagrad_norm",
    "adahessian",
    "adam_coordinate_clipped",
    "adamp",
    "adamw_8bit",
    "adaptive_batch_size",
    "AdaptiveBatchSizeState",
    "add_gradient_noise",
    "AddGradientNoiseState",
    "BatchSizeTestResult",
    "clip_by_adaptive_max",
    "clip_by_coordinate",
    "clip_spikes",
    "ClipByAdaptiveMaxState",
    "ClipByCoordinateState",
    "ClipSpikesState",
    "conv_patches",
    "coordinate_norm_test",
    "create_dynamic_map",
    "dequantize_blockwise",
    "diffgrad",
    "estimate_hessian_diag_gnb",
    "estimate_hessian_diag_hutchinson",
    "exadam",
    "exclude_bias_and_norm",
    "fill_masked_leaves",
    "GaussNewtonBartlettState",
    "HutchinsonState",
    "inner_product_test",
    "lamb",
    "lars",
    "LeafMemory",
    "linear_decay",
    "lion",
    "lion_8bit",
    "memory_report",
    "MemoryReport",
    "mfac",
    "next_batch_size",
    "norm_test",
    "normalize_by_norm_ema",
    "NormalizeByNormEmaState",
    "OPTIMIZERS",
    "OptimizerSpec",
    "orthogonality_test",
    "project_radial",
    "ProjectRadialState",
    "quantize_blockwise",
    "quantize_state",
    "QuantizedArray",
    "QuantizeStateState",
    "record_grad_norms",
    "recorded_grad_norms",
    "RecordGradNormsState",
    "refined_schedule",
    "refined_schedule_values",
    "registry",
    "regularized_newton",
    "rescale_learning_rate",
    "reset_state_every",
    "ResetStateEveryState",
    "scale_by_adagrad",
    "scale_by_adagrad_norm",
    "scale_by_adahessian",
    "scale_by_adam_coordinate_clipped",
    "scale_by_adamp",
    "scale_by_agvm",
    "scale_by_belief",
    "scale_by_diffgrad",
    "scale_by_exadam",
    "scale_by_lamb_trust_ratio",
    "scale_by_lars_trust_ratio",
    "scale_by_lion",
    "scale_by_mfac",
    "scale_by_regularized_newton",
    "scale_by_sgdp",
    "scale_by_sophia",
    "scale_by_spam",
    "scale_by_stable_spam",
    "scale_by_tract",
    "ScaleByAdagradNormState",
    "ScaleByAdagradState",
    "ScaleByAdaHessianState",
    "ScaleByAdamCoordinateClippedState",
    "ScaleByAGVMState",
    "ScaleByBeliefState",
    "ScaleByDiffGradState",
    "ScaleByExAdamState",
    "ScaleByLarsTrustRatioState",
    "ScaleByLionState",
    "ScaleByMFACState",
    "ScaleByRegularizedNewtonState",
    "ScaleBySophiaState",
    "ScaleByStableSpamAdamState",
    "sgdp",
    "signum",
    "smooth_grad_norms",
    "sophia_g",
    "sophia_h",
    "spam",
    "stable_spam",
    "state_nbytes",
]


def __getattr__(name: str):
  # Flax is an optional dependency: the nnx layer is imported only when asked for (and left out of
  # __all__, so that ``from gradtx import *`` does not import Flax).
  if name == "StableEmbedding":
    from gradtx.quantization.embedding import StableEmbedding  # pylint: disable=import-outside-toplevel

    return StableEmbedding
  raise AttributeError(f"module 'gradtx' has no attribute {name!r}")
