"""Curvature: Hessian-diagonal estimators (Hutchinson, Gauss-Newton-Bartlett), Sophia-H / Sophia-G, AdaHessian,
M-FAC, TrAct and gradient-regularized Newton. Hessian-vector products live in :mod:`gradtx.core.hvp`."""

from gradtx.curvature.adahessian import ScaleByAdaHessianState as ScaleByAdaHessianState
from gradtx.curvature.adahessian import adahessian as adahessian
from gradtx.curvature.adahessian import scale_by_adahessian as scale_by_adahessian
from gradtx.curvature.gnb import GaussNewtonBartlettState as GaussNewtonBartlettState
from gradtx.curvature.gnb import estimate_hessian_diag_gnb as estimate_hessian_diag_gnb
from gradtx.curvature.hutchinson import HutchinsonState as HutchinsonState
from gradtx.curvature.hutchinson import estimate_hessian_diag_hutchinson as estimate_hessian_diag_hutchinson
from gradtx.curvature.mfac import ScaleByMFACState as ScaleByMFACState
from gradtx.curvature.mfac import mfac as mfac
from gradtx.curvature.mfac import scale_by_mfac as scale_by_mfac
from gradtx.curvature.regularized_newton import ScaleByRegularizedNewtonState as ScaleByRegularizedNewtonState
from gradtx.curvature.regularized_newton import regularized_newton as regularized_newton
from gradtx.curvature.regularized_newton import scale_by_regularized_newton as scale_by_regularized_newton
from gradtx.curvature.sophia import ScaleBySophiaState as ScaleBySophiaState
from gradtx.curvature.sophia import scale_by_sophia as scale_by_sophia
from gradtx.curvature.sophia import sophia_g as sophia_g
from gradtx.curvature.sophia import sophia_h as sophia_h
from gradtx.curvature.tract import conv_patches as conv_patches
from gradtx.curvature.tract import scale_by_tract as scale_by_tract
