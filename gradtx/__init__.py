"""gradtx: composable optax gradient transformations from recent optimizer papers.

Every method is a pure ``optax.GradientTransformationExtraArgs``: ``scale_by_<method>`` gives the update
direction, ``<method>(learning_rate, ...)`` the full optimizer. :data:`gradtx.registry.OPTIMIZERS` lists the
full optimizers with their papers and reference implementations.
"""

from gradtx import registry as registry
from gradtx.registry import OPTIMIZERS as OPTIMIZERS
from gradtx.registry import OptimizerSpec as OptimizerSpec

# data parallelism: the data axis of updates that use per-device data
from gradtx.core.reduce import NO_DATA_AXIS as NO_DATA_AXIS
from gradtx.core.reduce import check_replicas_agree as check_replicas_agree

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

# low-rank projection
from gradtx.core.matrix import MatrixDims as MatrixDims
from gradtx import lowrank as lowrank
from gradtx.lowrank import ProjectLowRankState as ProjectLowRankState
from gradtx.lowrank import apollo as apollo
from gradtx.lowrank import apollo_mini as apollo_mini
from gradtx.lowrank import frugal as frugal
from gradtx.lowrank import galore as galore
from gradtx.lowrank import galore_dct as galore_dct
from gradtx.lowrank import gradnorm_lorp as gradnorm_lorp
from gradtx.lowrank import owlore as owlore
from gradtx.lowrank import project_low_rank as project_low_rank
from gradtx.lowrank import q_galore as q_galore
from gradtx.lowrank import scale_by_apollo as scale_by_apollo
from gradtx.lowrank import scale_by_frugal as scale_by_frugal

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

# scale-out
from gradtx.distributed import state_shardings as state_shardings
from gradtx.distributed import Compressor as Compressor
from gradtx.distributed import random_k as random_k
from gradtx.distributed import scaled_sign as scaled_sign
from gradtx.distributed import top_k as top_k
from gradtx.distributed import CompressState as CompressState
from gradtx.distributed import EControlState as EControlState
from gradtx.distributed import EF21State as EF21State
from gradtx.distributed import ErrorFeedbackState as ErrorFeedbackState
from gradtx.distributed import compress as compress
from gradtx.distributed import compress_with_econtrol as compress_with_econtrol
from gradtx.distributed import compress_with_error_feedback as compress_with_error_feedback
from gradtx.zeroth_order import spsa_direction as spsa_direction
from gradtx.zeroth_order import ScaleBySpsaState as ScaleBySpsaState
from gradtx.zeroth_order import mezo as mezo
from gradtx.zeroth_order import scale_by_spsa as scale_by_spsa
from gradtx.zeroth_order import mezo_adam as mezo_adam
from gradtx.zeroth_order import just_one_byte as just_one_byte
from gradtx.zeroth_order import scale_by_just_one_byte as scale_by_just_one_byte

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
    "apollo",
    "apollo_mini",
    "BatchSizeTestResult",
    "check_replicas_agree",
    "clip_by_adaptive_max",
    "clip_by_coordinate",
    "clip_spikes",
    "ClipByAdaptiveMaxState",
    "ClipByCoordinateState",
    "ClipSpikesState",
    "compress",
    "compress_with_econtrol",
    "compress_with_error_feedback",
    "Compressor",
    "CompressState",
    "conv_patches",
    "coordinate_norm_test",
    "create_dynamic_map",
    "dequantize_blockwise",
    "diffgrad",
    "EControlState",
    "EF21State",
    "ErrorFeedbackState",
    "estimate_hessian_diag_gnb",
    "estimate_hessian_diag_hutchinson",
    "exadam",
    "exclude_bias_and_norm",
    "fill_masked_leaves",
    "frugal",
    "galore",
    "galore_dct",
    "GaussNewtonBartlettState",
    "gradnorm_lorp",
    "HutchinsonState",
    "inner_product_test",
    "just_one_byte",
    "lamb",
    "lars",
    "LeafMemory",
    "linear_decay",
    "lion",
    "lion_8bit",
    "lowrank",
    "MatrixDims",
    "memory_report",
    "MemoryReport",
    "mezo",
    "mezo_adam",
    "mfac",
    "next_batch_size",
    "NO_DATA_AXIS",
    "norm_test",
    "normalize_by_norm_ema",
    "NormalizeByNormEmaState",
    "OPTIMIZERS",
    "OptimizerSpec",
    "orthogonality_test",
    "owlore",
    "project_low_rank",
    "project_radial",
    "ProjectLowRankState",
    "ProjectRadialState",
    "q_galore",
    "quantize_blockwise",
    "quantize_state",
    "QuantizedArray",
    "QuantizeStateState",
    "random_k",
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
    "scale_by_apollo",
    "scale_by_belief",
    "scale_by_diffgrad",
    "scale_by_exadam",
    "scale_by_frugal",
    "scale_by_just_one_byte",
    "scale_by_lamb_trust_ratio",
    "scale_by_lars_trust_ratio",
    "scale_by_lion",
    "scale_by_mfac",
    "scale_by_regularized_newton",
    "scale_by_sgdp",
    "scale_by_sophia",
    "scale_by_spam",
    "scale_by_spsa",
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
    "ScaleBySpsaState",
    "ScaleByStableSpamAdamState",
    "scaled_sign",
    "sgdp",
    "signum",
    "smooth_grad_norms",
    "sophia_g",
    "sophia_h",
    "spam",
    "spsa_direction",
    "stable_spam",
    "state_nbytes",
    "state_shardings",
    "top_k",
]


def __getattr__(name: str):
  # Flax is an optional dependency: the nnx layer is imported only when asked for (and left out of
  # __all__, so that ``from gradtx import *`` does not import Flax).
  if name == "StableEmbedding":
    from gradtx.quantization.embedding import StableEmbedding  # pylint: disable=import-outside-toplevel

    return StableEmbedding
  raise AttributeError(f"module 'gradtx' has no attribute {name!r}")
