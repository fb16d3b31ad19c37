"""SHS: spike-driven hybrid state space branch and the classifier it feeds (training only)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .backbone import SpikeFactory
from .layers import ChannelNorm, conv_bn


class HiddenStateMixer(nn.Module):
    """Mixes L tokens through N hidden states (a spiking EfficientViM mixer): cost linear in L."""

    def __init__(self, dim: int, spike: SpikeFactory, state_dim: int = 64) -> None:
        super().__init__()
        self.in_lif = spike()
        self.to_params = nn.Conv1d(dim, 3 * state_dim, 1, bias=False)
        self.params_local = nn.Conv2d(3 * state_dim, 3 * state_dim, 3, padding=1, groups=3 * state_dim, bias=False)
        self.to_hidden = nn.Conv1d(dim, 2 * dim, 1, bias=False)
        self.out_proj = nn.Conv1d(dim, dim, 1, bias=False)
        self.A = nn.Parameter(torch.empty(state_dim).uniform_(1, 16))
        self.delta = nn.Parameter(torch.ones(1))
        self.gate_lif = spike()

    def forward(self, z: Tensor, height: int, width: int) -> Tensor:
        b = z.shape[0]
        zs = self.in_lif(z)  # (B, C, L)
        params = self.params_local(self.to_params(zs).reshape(b, -1, height, width)).flatten(2)
        state_in, state_out, dt = params.chunk(3, dim=1)  # each (B, N, L)
        weights = (dt + self.A[None, :, None]).softmax(dim=-1) * state_in
        hidden = zs @ weights.transpose(1, 2)  # (B, C, N)
        h, gate = self.to_hidden(hidden).chunk(2, dim=1)
        hidden = self.out_proj(h * self.gate_lif(gate) + self.delta * h)
        return hidden @ state_out  # (B, C, L)


class SHS(nn.Module):
    """Local conv, global hidden-state mixer, local conv, FFN; returns the refined map (B, C, H, W)."""

    def __init__(self, dim: int, spike: SpikeFactory, state_dim: int = 64, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.in_lif = spike()
        self.local_before = conv_bn(dim, dim, 3, groups=dim, zero_init=True)
        self.norm = ChannelNorm(dim)
        self.mixer = HiddenStateMixer(dim, spike, state_dim)
        self.mid_lif = spike()
        self.local_after = conv_bn(dim, dim, 3, groups=dim, zero_init=True)
        self.ffn = nn.Sequential(
            spike(), conv_bn(dim, dim * mlp_ratio), spike(), conv_bn(dim * mlp_ratio, dim, zero_init=True)
        )

    def forward(self, fmap: Tensor) -> Tensor:
        b, c, h, w = fmap.shape
        x = fmap + self.local_before(self.in_lif(fmap))
        x = self.mixer(self.norm(x.flatten(2)), h, w).reshape(b, c, h, w)
        x = x + self.local_after(self.mid_lif(x))
        return x + self.ffn(x)


class SHSClassifier(nn.Module):
    """Location classifier on the pooled SHS map: SN -> Linear -> BN -> Dropout -> Linear."""

    def __init__(self, dim: int, num_classes: int, spike: SpikeFactory, embed_dim: int = 512) -> None:
        super().__init__()
        self.lif = spike()
        self.embed = nn.Sequential(nn.Linear(dim, embed_dim), nn.BatchNorm1d(embed_dim), nn.Dropout(0.5))
        self.fc = nn.Linear(embed_dim, num_classes)
        nn.init.normal_(self.fc.weight, std=0.001)
        nn.init.zeros_(self.fc.bias)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        embedding = self.embed(self.lif(pooled))
        return self.fc(embedding), embedding
