"""Training objectives of SpikeViMFormer: InfoNCE, L_SSA, L_SHS and HRAL."""

from .branches import shs_loss, ssa_loss
from .hral import HRALLoss, HRALMemory, alignment, hral_refine
from .infonce import info_nce
from .objective import Objective, ObjectiveConfig

__all__ = [
    "HRALLoss", "HRALMemory", "Objective", "ObjectiveConfig", "alignment", "hral_refine", "info_nce",
    "shs_loss", "ssa_loss",
]
