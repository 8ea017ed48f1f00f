"""Low-rank projection family: projectors, the GaLore-style wrapper, Q-GaLore, APOLLO, FRUGAL, OwLore."""

from gradtx.lowrank.adam import scale_by_adam_hf as scale_by_adam_hf
from gradtx.lowrank.apollo import apollo as apollo
from gradtx.lowrank.apollo import apollo_mini as apollo_mini
from gradtx.lowrank.apollo import scale_by_apollo as scale_by_apollo
from gradtx.lowrank.dct import DCTProjector as DCTProjector
from gradtx.lowrank.dct import DCTState as DCTState
from gradtx.lowrank.engine import LowRankLeafState as LowRankLeafState
from gradtx.lowrank.engine import ProjectLowRankState as ProjectLowRankState
from gradtx.lowrank.galore import galore as galore
from gradtx.lowrank.galore import galore_dct as galore_dct
from gradtx.lowrank.galore import q_galore as q_galore
from gradtx.lowrank.project import make_projector as make_projector
from gradtx.lowrank.project import project_low_rank as project_low_rank
from gradtx.lowrank.project import quantized as quantized
from gradtx.lowrank.projector import Geometry as Geometry
from gradtx.lowrank.projector import Projector as Projector
from gradtx.lowrank.quantized import QuantizedProjector as QuantizedProjector
from gradtx.lowrank.quantized import QuantizedState as QuantizedState
from gradtx.lowrank.random_projector import RandomProjector as RandomProjector
from gradtx.lowrank.random_projector import RandomState as RandomState
from gradtx.lowrank.refresh import AdaptiveRefresh as AdaptiveRefresh
from gradtx.lowrank.refresh import RefreshState as RefreshState
from gradtx.lowrank.svd import SVDProjector as SVDProjector
from gradtx.lowrank.svd import SVDState as SVDState
