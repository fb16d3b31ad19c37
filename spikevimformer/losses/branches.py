"""Losses of the training-only branches: L_SSA (view agreement) and L_SHS (location classification)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import check_pair
from .infonce import info_nce

SSA_OBJECTIVES = ("paper", "infonce")
SSA_TEMPERATURE = 0.1  # of the "infonce" SSA objective: fixed, so the SSA branch cannot drag the model's logit scale


def ssa_loss(ssa_q: Tensor, ssa_g: Tensor, objective: str = "paper", label_smoothing: float = 0.1,
             local_slice: slice | None = None) -> Tensor:  # fmt: skip
    """L_SSA: the two views' SSA descriptors (B x d) should agree.

    "paper": 1 - mean cosine of each pair. It has no negatives, so a constant SSA output minimises it (collapse).
    "infonce": symmetric InfoNCE over the batch's SSA descriptors at temperature SSA_TEMPERATURE: each drone view
    must pick its own satellite view out of the batch, so rows that drift together are pushed apart. Under DDP
    pass every rank's rows and `local_slice` (this rank's), as for the main InfoNCE (infonce.py).
    """
    check_pair(ssa_q, ssa_g, "L_SSA")
    if objective == "infonce":
        return info_nce(ssa_q, ssa_g, math.log(1 / SSA_TEMPERATURE), label_smoothing, local_slice)
    if objective != "paper":
        raise ValueError(f"ssa_objective must be one of {', '.join(SSA_OBJECTIVES)}, got {objective!r}")
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
