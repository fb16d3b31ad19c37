"""BatchNorm calibration: running statistics from a few forward passes instead of the fresh-init 0 and 1."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["calibrate_batchnorm", "noise_batches"]


def noise_batches(seed: int = 0, batches: int = 1, batch_size: int = 16, image_size: int = 32) -> Iterator[Tensor]:
    """Seeded standard-normal images (about the scale of normalised photos), the same for every call."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        yield torch.randn(batch_size, 3, image_size, image_size, generator=gen)


@torch.no_grad()
def calibrate_batchnorm(
    module: nn.Module, batches: Iterable[Tensor | tuple | list] | None = None, *, seed: int = 0,
) -> int:  # fmt: skip
    """Set every BN layer's running mean and variance to the plain average over `batches`; returns batches used.

    At fresh init (mean 0, var 1) NI-LIF spikes die out with depth and every image gets the same
    descriptor; calibrated, an untrained model gives usable (random) features and training from
    scratch starts from live spikes. `batches` are normalised (B, 3, H, W) images, or DataLoader
    items whose first element is; without them, one batch of seeded noise (`noise_batches(seed)`).
    The module's train/eval mode and BN momenta are restored; on error the old statistics are too.
    """
    bns = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in bns]
    momenta = [m.momentum for m in bns]
    was_training = module.training
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    used = 0
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        module.train()
        for item in noise_batches(seed) if batches is None else batches:
            images = item[0] if isinstance(item, (tuple, list)) else item
            module(images.to(device))
            used += 1
        if used == 0:
            raise ValueError("calibrate_batchnorm got no batches: BN statistics need at least one forward pass")
    except BaseException:
        for m, buffers in zip(bns, saved, strict=True):
            for name, value in buffers.items():
                getattr(m, name).copy_(value)
        raise
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        module.train(was_training)
    return used
