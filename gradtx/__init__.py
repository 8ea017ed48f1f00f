"""gradtx: composable optax gradient transformations from recent optimizer papers.

Every method is a pure ``optax.GradientTransformationExtraArgs``: ``scale_by_<method>`` gives the update
direction, ``<method>(learning_rate, ...)`` the full optimizer. :data:`gradtx.registry.OPTIMIZERS` lists the
full optimizers with their papers and reference implementations.
"""

from gradtx import registry as registry
from gradtx.registry import OPTIMIZERS as OPTIMIZERS
from gradtx.registry import OptimizerSpec as OptimizerSpec

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

__version__ = "0.1.0"

__all__ = [
    "OPTIMIZERS",
    "OptimizerSpec",
    "ProjectRadialState",
    "ScaleByBeliefState",
    "ScaleByDiffGradState",
    "ScaleByExAdamState",
    "ScaleByLarsTrustRatioState",
    "ScaleByLionState",
    "adabelief",
    "adamp",
    "diffgrad",
    "exadam",
    "exclude_bias_and_norm",
    "lamb",
    "lars",
    "lion",
    "project_radial",
    "registry",
    "scale_by_adamp",
    "scale_by_belief",
    "scale_by_diffgrad",
    "scale_by_exadam",
    "scale_by_lamb_trust_ratio",
    "scale_by_lars_trust_ratio",
    "scale_by_lion",
    "scale_by_sgdp",
    "sgdp",
    "signum",
]
