"""Clipping and stability: coordinate-wise (top-k) clipping, SPAM, Stable-SPAM, gradient noise, AGVM."""

from gradtx.stability.agvm import ScaleByAGVMState as ScaleByAGVMState
from gradtx.stability.agvm import scale_by_agvm as scale_by_agvm
from gradtx.stability.coordinate_clip import ClipByCoordinateState as ClipByCoordinateState
from gradtx.stability.coordinate_clip import ScaleByAdamCoordinateClippedState as ScaleByAdamCoordinateClippedState
from gradtx.stability.coordinate_clip import adam_coordinate_clipped as adam_coordinate_clipped
from gradtx.stability.coordinate_clip import clip_by_coordinate as clip_by_coordinate
from gradtx.stability.coordinate_clip import scale_by_adam_coordinate_clipped as scale_by_adam_coordinate_clipped
from gradtx.stability.noise import AddGradientNoiseState as AddGradientNoiseState
from gradtx.stability.noise import add_gradient_noise as add_gradient_noise
from gradtx.stability.reset import ResetStateEveryState as ResetStateEveryState
from gradtx.stability.reset import reset_state_every as reset_state_every
from gradtx.stability.spam import ClipSpikesState as ClipSpikesState
from gradtx.stability.spam import clip_spikes as clip_spikes
from gradtx.stability.spam import scale_by_spam as scale_by_spam
from gradtx.stability.spam import spam as spam
from gradtx.stability.stable_spam import ClipByAdaptiveMaxState as ClipByAdaptiveMaxState
from gradtx.stability.stable_spam import NormalizeByNormEmaState as NormalizeByNormEmaState
from gradtx.stability.stable_spam import ScaleByStableSpamAdamState as ScaleByStableSpamAdamState
from gradtx.stability.stable_spam import clip_by_adaptive_max as clip_by_adaptive_max
from gradtx.stability.stable_spam import normalize_by_norm_ema as normalize_by_norm_ema
from gradtx.stability.stable_spam import scale_by_stable_spam as scale_by_stable_spam
from gradtx.stability.stable_spam import stable_spam as stable_spam
