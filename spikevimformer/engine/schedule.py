"""Learning-rate schedule: linear warm-up, then cosine to zero over the steps or a time budget."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def warmup_steps(total_steps: int, share: float, floor: int) -> int:
    """Warm-up length: a share of the run, but never fewer than `floor` steps, unless the floor would take more
    than half the run (a short run still anneals: a run of 4 steps would otherwise end at its peak rate)."""
    return min(max(floor, round(share * total_steps)) if floor <= total_steps // 2 else total_steps // 2,
               total_steps)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup: int,
                  time_share: Callable[[], float] | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """Multiplier (step+1)/warmup during warm-up, then 0.5 (1 + cos(pi t)) over the remaining steps.

    With `time_share` (the used share of a time budget after warm-up, 0..1) t is the larger of the two
    shares, so a run cut by its time budget still ends annealed instead of at its peak rate.
    """

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        if time_share is not None:
            progress = max(progress, time_share())
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
