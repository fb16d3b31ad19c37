"""Small building blocks shared by the training-only SSA and SHS branches."""

from __future__ import annotations

from torch import Tensor, nn


def seq_conv_bn(cin: int, cout: int, kernel: int = 1, groups: int = 1, zero_init: bool = False) -> nn.Sequential:
    """Conv1d (no bias) + BN1d over a token sequence (B, C, L)."""
    bn = nn.BatchNorm1d(cout)
    if zero_init:
        nn.init.zeros_(bn.weight)
    return nn.Sequential(nn.Conv1d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False), bn)


def map_conv_bn(cin: int, cout: int, kernel: int = 1, groups: int = 1, zero_init: bool = False) -> nn.Sequential:
    """Conv2d (no bias) + BN2d over a feature map (B, C, H, W)."""
    bn = nn.BatchNorm2d(cout)
    if zero_init:
        nn.init.zeros_(bn.weight)
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False), bn)


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a (B, C, L) sequence."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class ChannelLinear(nn.Linear):
    """Bias-free token-wise linear map on a (B, C, L) sequence."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)
