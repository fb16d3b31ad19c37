"""Small building blocks shared by the backbone and the training-only SSA and SHS branches."""

from __future__ import annotations

from torch import Tensor, nn


def conv_bn(
    cin: int, cout: int, kernel: int = 1, groups: int = 1, zero_init: bool = False, dims: int = 2
) -> nn.Sequential:
    """Conv (no bias) + BN as a Sequential, so keys read `<name>.0.weight`, `<name>.1.*` as in E-SpikeFormer.

    `dims=2` works on feature maps (B, C, H, W), `dims=1` on token sequences (B, C, L); `zero_init`
    starts the BN scale at 0 so a residual branch begins as the identity.
    """
    conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv1d, nn.BatchNorm1d)
    bn = norm(cout)
    if zero_init:
        nn.init.zeros_(bn.weight)
    return nn.Sequential(conv(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False), bn)


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
