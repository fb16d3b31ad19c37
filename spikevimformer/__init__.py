"""SpikeViMFormer: spike-driven transformer for drone-view geo-localization."""

from .checkpoint import CheckpointError, load_backbone_checkpoint, load_checkpoint, save_checkpoint
from .models import VARIANTS, ModelOutput, SpikeViMFormer, build_model

__version__ = "0.1.0"
__all__ = [
    "VARIANTS", "CheckpointError", "ModelOutput", "SpikeViMFormer", "build_model",
    "load_backbone_checkpoint", "load_checkpoint", "save_checkpoint",
]
