"""Training objectives of SpikeViMFormer: InfoNCE, L_SSA, L_SHS and HRAL."""

from .branches import SSA_OBJECTIVES, shs_loss, ssa_loss
from .collapse import CollapseWatch, batch_spread, pair_spread
from .hral import HRALLoss, HRALMemory, alignment, hral_refine
from .infonce import info_nce
from .objective import Objective, ObjectiveConfig

__all__ = [
    "SSA_OBJECTIVES", "CollapseWatch", "HRALLoss", "HRALMemory", "Objective", "ObjectiveConfig", "alignment",
    "batch_spread", "hral_refine", "info_nce", "pair_spread", "shs_loss", "ssa_loss",
]
