"""gradtx: composable optax gradient transformations from recent optimizer papers.

Every method is a pure ``optax.GradientTransformationExtraArgs``: ``scale_by_<method>`` gives the update
direction, ``<method>(learning_rate, ...)`` the full optimizer. :data:`gradtx.registry.OPTIMIZERS` lists the
full optimizers with their papers and reference implementations.
"""

from gradtx import registry as registry
from gradtx.registry import OPTIMIZERS as OPTIMIZERS
from gradtx.registry import OptimizerSpec as OptimizerSpec

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

__version__ = "0.1.0"

__all__ = [
    "OPTIMIZERS",
    "OptimizerSpec",
    "QuantizeStateState",
    "QuantizedArray",
    "ScaleByBeliefState",
    "ScaleByDiffGradState",
    "ScaleByExAdamState",
    "ScaleByLionState",
    "StableEmbedding",
    "adabelief",
    "adabelief_8bit",
    "adamw_8bit",
    "create_dynamic_map",
    "dequantize_blockwise",
    "diffgrad",
    "exadam",
    "lion",
    "lion_8bit",
    "quantize_blockwise",
    "quantize_state",
    "registry",
    "scale_by_belief",
    "scale_by_diffgrad",
    "scale_by_exadam",
    "scale_by_lion",
    "signum",
]


def __getattr__(name: str):
  # Flax is an optional dependency: import the nnx layer only when it is asked for.
  if name == "StableEmbedding":
    from gradtx.quantization.embedding import StableEmbedding  # pylint: disable=import-outside-toplevel

    return StableEmbedding
  raise AttributeError(f"module 'gradtx' has no attribute {name!r}")
