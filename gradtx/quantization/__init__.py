"""State compression: block-wise dynamic 8-bit quantization of any transformation's state.

:func:`quantize_state` wraps an optax transformation; :func:`adamw_8bit`, :func:`lion_8bit` and
:func:`adabelief_8bit` are the full 8-bit optimizers; :mod:`~gradtx.quantization.maps` builds bitsandbytes'
dynamic maps and :mod:`~gradtx.quantization.blockwise` quantizes arrays with them. ``StableEmbedding`` (Flax
nnx) lives in :mod:`gradtx.quantization.embedding`, imported on demand because Flax is an optional dependency.
"""

from gradtx.quantization.blockwise import QuantizedArray as QuantizedArray
from gradtx.quantization.blockwise import dequantize_blockwise as dequantize_blockwise
from gradtx.quantization.blockwise import quantize_blockwise as quantize_blockwise
from gradtx.quantization.maps import create_dynamic_map as create_dynamic_map
from gradtx.quantization.optimizers import adabelief_8bit as adabelief_8bit
from gradtx.quantization.optimizers import adamw_8bit as adamw_8bit
from gradtx.quantization.optimizers import lion_8bit as lion_8bit
from gradtx.quantization.quantize_state import QuantizeStateState as QuantizeStateState
from gradtx.quantization.quantize_state import quantize_state as quantize_state
