"""BatchNorm folding for inference and export: every BN merged into the convolution that feeds it."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# Attribute pairs (conv, bn) of the E-SpikeFormer modules; Sequential(conv, bn) pairs are found by position.
NAMED_PAIRS = (("encode_conv", "encode_bn"), ("conv1", "bn1"), ("conv2", "bn2"), ("fc1_conv", "fc1_bn"),
               ("fc2_conv", "fc2_bn"))  # fmt: skip
_CONV = (nn.Conv1d, nn.Conv2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def _fold(conv: nn.Module, bn: nn.Module) -> nn.Module:
    if not (isinstance(conv, _CONV) and isinstance(bn, _BN)):
        raise TypeError(f"cannot fold {type(bn).__name__} into {type(conv).__name__}")
    return fuse_conv_bn_eval(conv.eval(), bn.eval())


@torch.no_grad()
def fuse_backbone(backbone: nn.Module) -> nn.Module:
    """An eval-mode copy of `backbone` with each BN folded into its conv (BN replaced by Identity).

    Raises if any BatchNorm is left, so an architecture change cannot silently skip folding.
    """
    fused = copy.deepcopy(backbone).eval()
    for module in fused.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], _CONV) and isinstance(module[i + 1], _BN):
                    module[i] = _fold(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
        for conv_name, bn_name in NAMED_PAIRS:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, _CONV) and isinstance(bn, _BN):
                setattr(module, conv_name, _fold(conv, bn))
                setattr(module, bn_name, nn.Identity())
    left = [name for name, m in fused.named_modules() if isinstance(m, _BN)]
    if left:
        raise ValueError(f"{len(left)} BatchNorm layers have no preceding conv to fold into, e.g. {left[0]}")
    return fused
