"""Sign momentum: Lion, Lion-K, Signum / signSGD."""

from gradtx.sign_momentum.lion import ScaleByLionState as ScaleByLionState
from gradtx.sign_momentum.lion import lion as lion
from gradtx.sign_momentum.lion import scale_by_lion as scale_by_lion
from gradtx.sign_momentum.signum import signum as signum
