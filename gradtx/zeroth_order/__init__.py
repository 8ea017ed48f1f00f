"""Zeroth-order estimates with shared randomness: SPSA / MeZO and Just One Byte."""

from gradtx.zeroth_order.perturbation import spsa_direction as spsa_direction
from gradtx.zeroth_order.spsa import ScaleBySpsaState as ScaleBySpsaState
from gradtx.zeroth_order.spsa import mezo as mezo
from gradtx.zeroth_order.spsa import mezo_adam as mezo_adam
from gradtx.zeroth_order.spsa import scale_by_spsa as scale_by_spsa
from gradtx.zeroth_order.job import just_one_byte as just_one_byte
from gradtx.zeroth_order.job import scale_by_just_one_byte as scale_by_just_one_byte
