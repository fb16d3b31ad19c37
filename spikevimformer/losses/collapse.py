"""Collapse checks: a branch whose output no longer depends on its input has zero batch spread.

The spread of a B x d output is the total variance of its L2-normalised rows,
`1 - |mean_i x_i / |x_i||^2`, which equals the mean over all ordered pairs (i, j), i = j
included, of `1 - cos(x_i, x_j)`. It is 0 when every row points the same way (a constant
output) and 1 - 1/B on average for B random isotropic rows; a trained descriptor whose
rows share a large common component sits in between (the shipped model's descriptors:
about 0.1-0.3 at 64 px). It is computed for each view apart and the two are averaged, so
two views collapsed onto two different constants still read near 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

SPREAD_FLOOR = 1e-3  # below this a branch's output is a constant to within 0.1 % of its variance budget
SPREAD_PATIENCE = 20  # consecutive steps below the floor before the branch is called collapsed
PAPER_SSA_HINT = "L_SSA has no negatives; --ssa-objective infonce cannot collapse"


def batch_spread(x: Tensor) -> Tensor:
    """Total variance of the L2-normalised rows of a B x d output (0: constant, ~1: random); NaN for one row."""
    if x.dim() != 2:
        raise ValueError(f"batch_spread needs a B x d tensor, got {tuple(x.shape)}")
    if x.shape[0] < 2:  # a rank's share of a tiny DDP batch: no spread to measure, and no false alarm
        return torch.tensor(float("nan"), device=x.device)
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        unit = F.normalize(x.detach().float(), dim=1)
        return (1 - unit.mean(dim=0).square().sum()).clamp(min=0)


def pair_spread(a: Tensor, b: Tensor) -> Tensor:
    """Mean of the two views' spreads: each view must vary on its own."""
    return (batch_spread(a) + batch_spread(b)) / 2


@dataclass
class CollapseWatch:
    """Flags each branch once, the first time its spread has stayed below `floor` for `patience` steps."""

    floor: float = SPREAD_FLOOR
    patience: int = SPREAD_PATIENCE
    below: dict[str, int] = field(default_factory=dict)  # consecutive steps below the floor, per branch
    flagged: dict[str, int] = field(default_factory=dict)  # branch -> step it was flagged at
    hints: dict[str, str] = field(default_factory=dict)  # branch -> what to do about it, appended to its warning

    def observe(self, step: int, spreads: dict[str, float]) -> list[str]:
        """The warnings this step raises (one per newly collapsed branch, never repeated)."""
        notes = []
        for branch, spread in spreads.items():
            self.below[branch] = self.below.get(branch, 0) + 1 if spread < self.floor else 0
            if self.below[branch] >= self.patience and branch not in self.flagged:
                self.flagged[branch] = step
                notes.append(f"the {branch} output has collapsed: its batch spread stayed below {self.floor:g} for "
                             f"{self.patience} steps (now {spread:.2g} at step {step}), so it no longer depends on "
                             "the input" + (f" ({self.hints[branch]})" if branch in self.hints else ""))
        return notes
