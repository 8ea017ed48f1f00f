"""gradtx: composable optax gradient transformations from recent optimizer papers.

Every method is a pure ``optax.GradientTransformationExtraArgs``: ``scale_by_<method>`` gives the update
direction, ``<method>(learning_rate, ...)`` the full optimizer. :data:`gradtx.registry.OPTIMIZERS` lists the
full optimizers with their papers and reference implementations.
"""

from gradtx import registry as registry
from gradtx.registry import OPTIMIZERS as OPTIMIZERS
from gradtx.registry import OptimizerSpec as OptimizerSpec

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

__version__ = "0.1.0"

__all__ = [
    "MatrixDims",
    "OPTIMIZERS",
    "OptimizerSpec",
    "ProjectLowRankState",
    "ScaleByBeliefState",
    "ScaleByDiffGradState",
    "ScaleByExAdamState",
    "ScaleByLionState",
    "adabelief",
    "apollo",
    "apollo_mini",
    "diffgrad",
    "exadam",
    "frugal",
    "galore",
    "galore_dct",
    "gradnorm_lorp",
    "lion",
    "lowrank",
    "owlore",
    "project_low_rank",
    "q_galore",
    "registry",
    "scale_by_apollo",
    "scale_by_belief",
    "scale_by_diffgrad",
    "scale_by_exadam",
    "scale_by_frugal",
    "scale_by_lion",
    "signum",
]
