"""SpikeViMFormer: spike-driven transformer for drone-view geo-localization."""

from .checkpoint import CheckpointError, load_backbone_checkpoint, load_checkpoint, load_model, save_checkpoint
from .data.transforms import preprocess
from .models import VARIANTS, ModelOutput, SpikeViMFormer, build_model
from .pretrained import load_pretrained, release_names

__version__ = "0.1.0"
__all__ = [
    "VARIANTS", "CheckpointError", "ModelOutput", "SpikeViMFormer", "build_model", "load_backbone_checkpoint",
    "load_checkpoint", "load_model", "load_pretrained", "preprocess", "release_names", "save_checkpoint",
]
