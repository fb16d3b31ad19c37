"""SSA: spike-driven selective attention, a training-only branch on the last backbone map."""

from __future__ import annotations

from torch import Tensor, nn

from .backbone import SpikeFactory
from .layers import ChannelLinear, ChannelNorm, conv_bn


class SSA(nn.Module):
    """Gates local token features twice (attention gate A, selection gate G) to sharpen what matches.

    Input: map F (B, C, H, W). Output: tokens (B, C, H*W) after the gated mixer, a depth-wise
    local residual and a spiking MLP; the model pools and normalises them into the SSA
    descriptor that L_SSA aligns across views.
    """

    def __init__(self, dim: int, spike: SpikeFactory, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.cpe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)  # conditional positional encoding
        self.norm1 = ChannelNorm(dim)
        self.refine = nn.Sequential(conv_bn(dim, dim, dims=1), conv_bn(dim, dim, 3, groups=dim, dims=1), spike())
        self.attn_gate = nn.Sequential(ChannelLinear(dim), spike())
        self.query = conv_bn(dim, dim, dims=1)
        self.query_local = nn.Sequential(conv_bn(dim, dim, dims=1), conv_bn(dim, dim, 3, groups=dim, dims=1), spike())
        self.select_gate = nn.Sequential(ChannelLinear(dim), spike())
        self.gate_norm = ChannelNorm(dim)
        self.out_lif = spike()
        self.out_proj = ChannelLinear(dim)
        self.local = nn.Conv1d(dim, dim, 3, padding=1, groups=dim)
        self.norm2 = ChannelNorm(dim)
        self.mlp = nn.Sequential(
            spike(), conv_bn(dim, dim * mlp_ratio, dims=1),
            spike(), conv_bn(dim * mlp_ratio, dim, zero_init=True, dims=1),
        )

    def forward(self, fmap: Tensor) -> Tensor:
        x = (fmap + self.cpe(fmap)).flatten(2)
        z = self.norm1(x)
        a = self.attn_gate(z)
        ql = self.query_local(self.query(self.refine(z)))
        selected = self.gate_norm(ql * self.select_gate(ql))
        x = x + self.out_proj(self.out_lif(selected) * a)
        x = x + self.local(x)
        return x + self.mlp(self.norm2(x))
