"""Zeroth-order estimates with shared randomness: SPSA / MeZO and Just One Byte."""

from gradtx.zeroth_order.perturbation import spsa_direction as spsa_direction
from gradtx.zeroth_order.spsa import ScaleBySpsaState as ScaleBySpsaState
from gradtx.zeroth_order.spsa import mezo as mezo
from gradtx.zeroth_order.spsa import mezo_adam as mezo_adam
from gradtx.zeroth_order.spsa import scale_by_spsa as scale_by_spsa
