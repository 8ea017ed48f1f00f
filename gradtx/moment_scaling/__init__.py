"""Moment scaling: AdaBelief (official rectify / decay / amsgrad options), diffGrad (fixed v2), EXAdam."""

from gradtx.moment_scaling.adabelief import ScaleByBeliefState as ScaleByBeliefState
from gradtx.moment_scaling.adabelief import adabelief as adabelief
from gradtx.moment_scaling.adabelief import scale_by_belief as scale_by_belief
from gradtx.moment_scaling.diffgrad import ScaleByDiffGradState as ScaleByDiffGradState
from gradtx.moment_scaling.diffgrad import diffgrad as diffgrad
from gradtx.moment_scaling.diffgrad import scale_by_diffgrad as scale_by_diffgrad
from gradtx.moment_scaling.exadam import ScaleByExAdamState as ScaleByExAdamState
from gradtx.moment_scaling.exadam import exadam as exadam
from gradtx.moment_scaling.exadam import scale_by_exadam as scale_by_exadam
