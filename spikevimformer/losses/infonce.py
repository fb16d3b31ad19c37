"""Symmetric InfoNCE between the two views' descriptors, with the distributed row split.

Data-parallel contract (N ranks, b pairs each, the same b everywhere): the trainer
all-gathers q and g in rank order with a gather that passes gradients back to their owner
(`torch.distributed.nn.functional.all_gather`, or all_gather forward / all_reduce-sum
backward then the local slice), and calls `info_nce(q_all, g_all, scale,
local_slice=slice(rank * b, (rank + 1) * b))`. Each rank's loss is the mean over its own
rows (both directions, all N*b columns), so the per-rank losses sum to N times the
single-process loss of the N*b pairs; DDP averages gradients over ranks, which divides
that by N again: no extra scaling, the update equals one process with N*b pairs exactly.

(If the trainer gathers without gradient and puts its own rows back with gradient, it
must instead call `info_nce(q_all, g_all, scale)` on the full batch and multiply by N.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import check_pair, check_slice

MAX_SCALE = 100.0


def info_nce(
    q: Tensor,
    g: Tensor,
    logit_scale: Tensor | float,
    label_smoothing: float = 0.1,
    local_slice: slice | None = None,
) -> Tensor:
    """(CE(s q g^T, diag) + CE(s g q^T, diag)) / 2 with s = min(exp(logit_scale), 100).

    q, g: B x d descriptors of pair i in row i (normalised here). With `local_slice`, only
    those rows of both directions enter the mean (see the module docstring for DDP).
    """
    check_pair(q, g, "InfoNCE")
    batch = q.shape[0]
    rows = slice(0, batch) if local_slice is None else local_slice
    if local_slice is not None:
        check_slice(local_slice, batch)
    with torch.autocast(q.device.type, enabled=False):
        q = F.normalize(q.float(), dim=1)
        g = F.normalize(g.float(), dim=1)
        scale = torch.as_tensor(logit_scale, device=q.device).float().exp().clamp(max=MAX_SCALE)
        targets = torch.arange(batch, device=q.device)[rows]
        q_to_g = scale * q[rows] @ g.T
        g_to_q = scale * g[rows] @ q.T
        return (
            F.cross_entropy(q_to_g, targets, label_smoothing=label_smoothing)
            + F.cross_entropy(g_to_q, targets, label_smoothing=label_smoothing)
        ) / 2
