"""Losses of the training-only branches: L_SSA (view agreement) and L_SHS (location classification)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import check_pair


def ssa_loss(ssa_q: Tensor, ssa_g: Tensor) -> Tensor:
    """1 - mean cosine between the two views' SSA descriptors: the views should agree."""
    check_pair(ssa_q, ssa_g, "L_SSA")
    with torch.autocast(ssa_q.device.type, enabled=False):
        return 1 - F.cosine_similarity(ssa_q.float(), ssa_g.float(), dim=1).mean()


def shs_loss(logits_q: Tensor, logits_g: Tensor, labels: Tensor) -> Tensor:
    """Mean of both views' cross-entropies of the SHS classifier against the location index."""
    check_pair(logits_q, logits_g, "L_SHS", "B x C logit")
    if labels.shape != (logits_q.shape[0],):
        raise ValueError(f"L_SHS needs {logits_q.shape[0]} labels, got shape {tuple(labels.shape)}")
    if labels.device.type == "cpu" and labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < (
        logits_q.shape[1]
    ):
        raise ValueError(f"labels must lie in 0..{logits_q.shape[1] - 1} (the SHS classifier's classes)")
    with torch.autocast(logits_q.device.type, enabled=False):
        return (F.cross_entropy(logits_q.float(), labels) + F.cross_entropy(logits_g.float(), labels)) / 2
