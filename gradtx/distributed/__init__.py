"""Scale-out: state shardings, compressed data-parallel means with error feedback."""

from gradtx.distributed.compressors import Compressor as Compressor
from gradtx.distributed.compressors import random_k as random_k
from gradtx.distributed.compressors import scaled_sign as scaled_sign
from gradtx.distributed.compressors import top_k as top_k
from gradtx.distributed.error_feedback import CompressState as CompressState
from gradtx.distributed.error_feedback import EControlState as EControlState
from gradtx.distributed.error_feedback import EF21State as EF21State
from gradtx.distributed.error_feedback import ErrorFeedbackState as ErrorFeedbackState
from gradtx.distributed.error_feedback import compress as compress
from gradtx.distributed.error_feedback import compress_with_econtrol as compress_with_econtrol
from gradtx.distributed.error_feedback import compress_with_error_feedback as compress_with_error_feedback
from gradtx.distributed.sharding import state_shardings as state_shardings
