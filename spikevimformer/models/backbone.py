"""E-SpikeFormer (Spike-Driven Transformer V3) backbone with the official checkpoints' module names."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import Tensor, nn

from .layers import conv_bn
from .neuron import NILIF

SpikeFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class BackboneCfg:
    """Shape of an E-SpikeFormer; `dims` are the four stage widths (C1..C4)."""

    dims: tuple[int, int, int, int]
    heads: int = 8
    mlp_ratio: int = 4
    stage3_depth: int = 6
    stage4_depth: int = 2
    levels: int = 4  # D
    time_steps: int = 1  # T
    leak: float = 0.5

    @property
    def out_dim(self) -> int:
        return self.dims[3]


class Downsample(nn.Module):
    """Strided conv + BN; every stage but the stem first turns its input into spikes."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, spike: SpikeFactory | None
    ) -> None:
        super().__init__()
        self.lif = spike() if spike is not None else nn.Identity()
        self.encode_conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)
        self.encode_bn = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.encode_bn(self.encode_conv(self.lif(x)))


class SepConv(nn.Module):
    """Inverted separable conv (PW 2x expand, depth-wise k x k, PW project), spikes before each conv."""

    def __init__(self, dim: int, kernel: int, spike: SpikeFactory) -> None:
        super().__init__()
        hidden = 2 * dim
        self.lif1, self.lif2, self.lif3 = spike(), spike(), spike()
        self.pwconv1 = conv_bn(dim, hidden)
        self.dwconv = conv_bn(hidden, hidden, kernel, groups=hidden)
        self.pwconv2 = conv_bn(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pwconv1(self.lif1(x))
        x = self.dwconv(self.lif2(x))
        return self.pwconv2(self.lif3(x))


class ConvBlock(nn.Module):
    """MS_ConvBlock_spike_SepConv: SepConv(k=7) then a 3x3 conv MLP, both residual."""

    def __init__(self, dim: int, mlp_ratio: int, spike: SpikeFactory) -> None:
        super().__init__()
        self.Conv = SepConv(dim, 7, spike)
        self.lif1, self.lif2 = spike(), spike()
        self.conv1 = nn.Conv2d(dim, dim * mlp_ratio, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(dim * mlp_ratio)
        self.conv2 = nn.Conv2d(dim * mlp_ratio, dim, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.Conv(x)
        return x + self.bn2(self.conv2(self.lif2(self.bn1(self.conv1(self.lif1(x))))))


class SpikeAttention(nn.Module):
    """Spike-driven linear attention without softmax; V is 4C wide; computed as Q (K^T V)."""

    def __init__(self, dim: int, heads: int, spike: SpikeFactory, v_ratio: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.scale = 2.0 / math.sqrt(dim // heads)
        self.head_lif, self.q_lif, self.k_lif, self.v_lif, self.attn_lif = (spike() for _ in range(5))
        self.q_conv = conv_bn(dim, dim)
        self.k_conv = conv_bn(dim, dim)
        self.v_conv = conv_bn(dim, dim * v_ratio)
        self.proj_conv = conv_bn(dim * v_ratio, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        z = self.head_lif(x)
        # Channel-major per head (B, heads, d, N): head j holds channels j*d .. (j+1)*d - 1.
        q = self.q_lif(self.q_conv(z)).reshape(b, self.heads, c // self.heads, h * w)
        k = self.k_lif(self.k_conv(z)).reshape(b, self.heads, c // self.heads, h * w)
        v = self.v_lif(self.v_conv(z)).reshape(b, self.heads, -1, h * w)
        kv = k @ v.transpose(-2, -1)  # K^T V: (B, heads, d, 4d), linear in tokens
        out = (kv.transpose(-2, -1) @ q) * self.scale  # (Q (K^T V))^T: (B, heads, 4d, N)
        return self.proj_conv(self.attn_lif(out.reshape(b, -1, h, w)))

    def product_macs(self, tokens: int, channels: int, order: str = "q(ktv)") -> int:
        """Multiply-accumulates of the two attention products for one image."""
        v_width = self.v_conv[0].out_channels
        if order == "q(ktv)":
            return 2 * tokens * channels * v_width // self.heads
        if order == "(qkt)v":
            return tokens * tokens * (channels + v_width)
        raise ValueError(f"unknown attention order {order!r}; use 'q(ktv)' or '(qkt)v'")


class SpikeMLP(nn.Module):
    """Token MLP as 1x1 Conv1d with bias + BN1d (the checkpoints store Conv1d weights)."""

    def __init__(self, dim: int, hidden: int, spike: SpikeFactory) -> None:
        super().__init__()
        self.lif1, self.lif2 = spike(), spike()
        self.fc1_conv = nn.Conv1d(dim, hidden, 1)
        self.fc1_bn = nn.BatchNorm1d(hidden)
        self.fc2_conv = nn.Conv1d(hidden, dim, 1)
        self.fc2_bn = nn.BatchNorm1d(dim)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.fc1_bn(self.fc1_conv(self.lif1(x.flatten(2))))
        return self.fc2_bn(self.fc2_conv(self.lif2(y))).reshape(b, c, h, w)


class TransformerBlock(nn.Module):
    """MS_Block_Spike_SepConv: SepConv(k=3), spike attention, MLP; membrane (real-valued) shortcuts."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, spike: SpikeFactory) -> None:
        super().__init__()
        self.conv = SepConv(dim, 3, spike)
        self.attn = SpikeAttention(dim, heads, spike)
        self.mlp = SpikeMLP(dim, dim * mlp_ratio, spike)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.conv(x)
        x = x + self.attn(x)
        return x + self.mlp(x)


class ESpikeFormer(nn.Module):
    """E-SpikeFormer feature extractor: image (B, 3, H, W) -> map (B, C4, H/16, W/16)."""

    stride = 16

    def __init__(self, cfg: BackboneCfg) -> None:
        super().__init__()
        self.cfg = cfg
        c1, c2, c3, c4 = cfg.dims
        spike = partial(NILIF, levels=cfg.levels, time_steps=cfg.time_steps, leak=cfg.leak)
        block = partial(TransformerBlock, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, spike=spike)
        self.downsample1_1 = Downsample(3, c1 // 2, 7, 2, spike=None)
        self.ConvBlock1_1 = nn.ModuleList([ConvBlock(c1 // 2, cfg.mlp_ratio, spike)])
        self.downsample1_2 = Downsample(c1 // 2, c1, 3, 2, spike)
        self.ConvBlock1_2 = nn.ModuleList([ConvBlock(c1, cfg.mlp_ratio, spike)])
        self.downsample2 = Downsample(c1, c2, 3, 2, spike)
        self.ConvBlock2_1 = nn.ModuleList([ConvBlock(c2, cfg.mlp_ratio, spike)])
        self.ConvBlock2_2 = nn.ModuleList([ConvBlock(c2, cfg.mlp_ratio, spike)])
        self.downsample3 = Downsample(c2, c3, 3, 2, spike)
        self.block3 = nn.ModuleList([block(c3) for _ in range(cfg.stage3_depth)])
        self.downsample4 = Downsample(c3, c4, 3, 1, spike)
        self.block4 = nn.ModuleList([block(c4) for _ in range(cfg.stage4_depth)])

    @property
    def out_dim(self) -> int:
        return self.cfg.out_dim

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if images.shape[-2] % self.stride or images.shape[-1] % self.stride:
            raise ValueError(
                f"image sides must be multiples of {self.stride}, got {images.shape[-2]}x{images.shape[-1]}"
            )
        x = self.downsample1_1(images)
        stages = (
            self.ConvBlock1_1, self.downsample1_2, self.ConvBlock1_2, self.downsample2,
            self.ConvBlock2_1, self.ConvBlock2_2, self.downsample3, self.block3,
            self.downsample4, self.block4,
        )  # fmt: skip
        for stage in stages:
            if isinstance(stage, nn.ModuleList):
                for blk in stage:
                    x = blk(x)
            else:
                x = stage(x)
        return x


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

