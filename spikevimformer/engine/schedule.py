"""Learning-rate schedule: linear warm-up, then cosine to zero."""

from __future__ import annotations

import math

import torch


def warmup_steps(total_steps: int, share: float, floor: int) -> int:
    """Warm-up length: a share of the run, but never fewer than `floor` steps (nor more than the run)."""
    return min(total_steps, max(floor, round(share * total_steps)))


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Multiplier (step+1)/warmup during warm-up, then 0.5 (1 + cos(pi t)) over the remaining steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
