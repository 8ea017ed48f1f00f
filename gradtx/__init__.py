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

# sign momentum
from gradtx.sign_momentum import ScaleByLionState as ScaleByLionState
from gradtx.sign_momentum import lion as lion
from gradtx.sign_momentum import scale_by_lion as scale_by_lion
from gradtx.sign_momentum import signum as signum

__version__ = "0.1.0"

__all__ = [
    "OPTIMIZERS",
    "GaussNewtonBartlettState",
    "HutchinsonState",
    "OptimizerSpec",
    "ScaleByAdaHessianState",
    "ScaleByLionState",
    "ScaleByMFACState",
    "ScaleByRegularizedNewtonState",
    "ScaleBySophiaState",
    "adahessian",
    "conv_patches",
    "estimate_hessian_diag_gnb",
    "estimate_hessian_diag_hutchinson",
    "fill_masked_leaves",
    "lion",
    "mfac",
    "registry",
    "regularized_newton",
    "scale_by_adahessian",
    "scale_by_lion",
    "scale_by_mfac",
    "scale_by_regularized_newton",
    "scale_by_sophia",
    "scale_by_tract",
    "signum",
    "sophia_g",
    "sophia_h",
]
