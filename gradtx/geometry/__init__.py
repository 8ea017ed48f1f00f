"""Geometry: AdamP / SGDP radial projection, LAMB / LARS trust ratios."""

from gradtx.geometry.adamp import adamp as adamp
from gradtx.geometry.adamp import scale_by_adamp as scale_by_adamp
from gradtx.geometry.lamb import lamb as lamb
from gradtx.geometry.lamb import scale_by_lamb_trust_ratio as scale_by_lamb_trust_ratio
from gradtx.geometry.lars import ScaleByLarsTrustRatioState as ScaleByLarsTrustRatioState
from gradtx.geometry.lars import lars as lars
from gradtx.geometry.lars import scale_by_lars_trust_ratio as scale_by_lars_trust_ratio
from gradtx.geometry.masks import exclude_bias_and_norm as exclude_bias_and_norm
from gradtx.geometry.radial import ProjectRadialState as ProjectRadialState
from gradtx.geometry.radial import project_radial as project_radial
from gradtx.geometry.sgdp import scale_by_sgdp as scale_by_sgdp
from gradtx.geometry.sgdp import sgdp as sgdp
