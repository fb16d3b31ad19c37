"""SpikeViMFormer: E-SpikeFormer backbone plus the training-only SSA, SHS and classifier."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import BackboneCfg, ESpikeFormer
from .neuron import NILIF
from .shs import SHS, SHSClassifier
from .ssa import SSA

VARIANTS: dict[str, BackboneCfg] = {
    "tiny": BackboneCfg(dims=(48, 96, 192, 240)),  # E-SpikeFormer 10M, V3_10.0M_1x4.pth
    "small": BackboneCfg(dims=(64, 128, 256, 360)),  # E-SpikeFormer 19M, V3_19.0M_1x4.pth
}


@dataclass
class ModelOutput:
    """What one view's training forward pass gives the four objectives."""

    descriptor: Tensor  # L2-normalised GAP of the backbone map: the only thing inference uses
    ssa_descriptor: Tensor
    shs_logits: Tensor | None
    shs_embedding: Tensor | None


class SpikeViMFormer(nn.Module):
    """Shared-weight retrieval model for drone and satellite views.

    Training mode runs the backbone, SSA, SHS and the classifier and returns a `ModelOutput`;
    eval mode runs the backbone only and returns the descriptor.
    """

    def __init__(self, cfg: BackboneCfg, num_classes: int = 0, variant: str = "custom") -> None:
        super().__init__()
        self.variant = variant
        self.num_classes = num_classes
        self.image_size: int | None = None  # square input side its weights were trained at; set by the loaders
        self.backbone = ESpikeFormer(cfg)
        spike = partial(NILIF, levels=cfg.levels, time_steps=cfg.time_steps, leak=cfg.leak)
        self.ssa = SSA(cfg.out_dim, spike)
        self.shs = SHS(cfg.out_dim, spike)
        self.classifier = SHSClassifier(cfg.out_dim, num_classes, spike) if num_classes > 0 else None
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def descriptor_dim(self) -> int:
        return self.backbone.out_dim

    def encode(self, images: Tensor, flip: bool = False) -> Tensor:
        """Descriptor = L2-normalise(GAP(backbone(x))); with `flip`, summed with the mirror image's."""
        pooled = self.backbone(images).mean(dim=(2, 3))
        if flip:
            pooled = F.normalize(pooled, dim=-1) + F.normalize(self.backbone(images.flip(-1)).mean(dim=(2, 3)), dim=-1)
        return F.normalize(pooled, dim=-1)

    def forward(self, images: Tensor) -> ModelOutput | Tensor:
        if not self.training:
            return self.encode(images)
        fmap = self.backbone(images)
        descriptor = F.normalize(fmap.mean(dim=(2, 3)), dim=-1)
        ssa_descriptor = F.normalize(self.ssa(fmap).mean(dim=-1), dim=-1)
        logits = embedding = None
        if self.classifier is not None:
            logits, embedding = self.classifier(self.shs(fmap).mean(dim=(2, 3)))
        return ModelOutput(descriptor, ssa_descriptor, logits, embedding)


def variant_cfg(variant: str, **overrides) -> BackboneCfg:
    """The named backbone config, optionally with T, D, leak changed."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
    return replace(VARIANTS[variant], **overrides)


def build_model(variant: str = "tiny", num_classes: int = 0, **overrides) -> SpikeViMFormer:
    """Build SpikeViMFormer-T ('tiny', 10M backbone) or -S ('small', 19M backbone).

    `num_classes` is the number of training locations for the SHS classifier (0: none).
    `overrides` change neuron settings, e.g. `time_steps=4, leak=0.5`.
    """
    return SpikeViMFormer(variant_cfg(variant, **overrides), num_classes=num_classes, variant=variant)
