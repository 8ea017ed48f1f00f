"""gradtx: composable optax gradient transformations from recent optimizer papers.

Every method is a pure ``optax.GradientTransformationExtraArgs``: ``scale_by_<method>`` gives the update
direction, ``<method>(learning_rate, ...)`` the full optimizer. :data:`gradtx.registry.OPTIMIZERS` lists the
full optimizers with their papers and reference implementations.
"""

from gradtx import registry as registry
from gradtx.registry import OPTIMIZERS as OPTIMIZERS
from gradtx.registry import OptimizerSpec as OptimizerSpec

# sign momentum
from gradtx.sign_momentum import ScaleByLionState as ScaleByLionState
from gradtx.sign_momentum import lion as lion
from gradtx.sign_momentum import scale_by_lion as scale_by_lion
from gradtx.sign_momentum import signum as signum

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

__version__ = "0.1.0"

__all__ = [
    "AddGradientNoiseState",
    "ClipByAdaptiveMaxState",
    "ClipByCoordinateState",
    "ClipSpikesState",
    "NormalizeByNormEmaState",
    "OPTIMIZERS",
    "OptimizerSpec",
    "ResetStateEveryState",
    "ScaleByAGVMState",
    "ScaleByAdamCoordinateClippedState",
    "ScaleByLionState",
    "ScaleByStableSpamAdamState",
    "adam_coordinate_clipped",
    "add_gradient_noise",
    "clip_by_adaptive_max",
    "clip_by_coordinate",
    "clip_spikes",
    "lion",
    "normalize_by_norm_ema",
    "registry",
    "reset_state_every",
    "scale_by_adam_coordinate_clipped",
    "scale_by_agvm",
    "scale_by_lion",
    "scale_by_spam",
    "scale_by_stable_spam",
    "signum",
    "spam",
    "stable_spam",
]
