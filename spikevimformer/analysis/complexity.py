"""Per-layer multiply-accumulate counts, from shapes alone (the model runs on the meta device)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..models.backbone import ESpikeFormer, SpikeAttention

ATTENTION_ORDERS = ("q(ktv)", "(qkt)v")


@dataclass(frozen=True)
class LayerMacs:
    """MACs one image costs in one layer, as an ANN of the same shape would compute them, and the tensor sizes
    the memory-aware energy convention moves (elements per image; weights = weight elements, biases left out)."""

    name: str
    kind: str  # "conv", "linear" or "attention"
    macs: int
    spike_input: bool  # False only for the stem, which sees real pixels
    weights: int  # 0 for the attention products, which multiply activations only
    input_elements: int  # the layer's input (for attention: the block input x, C x tokens)
    output_elements: int  # the layer's output (for attention: the product Q (K^T V), V-width x tokens)


def count_macs(
    backbone: ESpikeFormer, image_size: tuple[int, int] = (384, 384), attention_order: str = "q(ktv)"
) -> list[LayerMacs]:
    """MACs per layer of the backbone for one image of `image_size` (H, W), in forward order."""
    if attention_order not in ATTENTION_ORDERS:
        raise ValueError(f"attention_order must be one of {ATTENTION_ORDERS}, got {attention_order!r}")
    meta = copy.deepcopy(backbone).to("meta")
    names = {m: n for n, m in meta.named_modules()}
    layers: list[LayerMacs] = []

    def hook(module: nn.Module, inputs, out) -> None:
        name = names[module]
        x = inputs[0][0]  # one image
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            per_out = module.in_channels // module.groups * math.prod(module.kernel_size)
            layers.append(LayerMacs(name, "conv", out[0].numel() * per_out, name != "downsample1_1.encode_conv",
                                    module.weight.numel(), x.numel(), out[0].numel()))
        elif isinstance(module, nn.Linear):
            layers.append(LayerMacs(name, "linear", out[0].numel() * module.in_features, True,
                                    module.weight.numel(), x.numel(), out[0].numel()))
        elif isinstance(module, SpikeAttention):
            tokens = x.shape[-2] * x.shape[-1]
            macs = module.product_macs(tokens, x.shape[0], attention_order)
            width = module.v_conv[0].out_channels
            layers.append(LayerMacs(f"{name}.products", "attention", macs, True, 0, x.numel(), width * tokens))

    handles = [
        m.register_forward_hook(hook)
        for m in meta.modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear, SpikeAttention))
    ]
    try:
        with torch.no_grad():
            meta(torch.empty(1, 3, *image_size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return layers


def total_macs(layers: list[LayerMacs]) -> tuple[int, int]:
    """(all MACs, MACs of the stem that sees real pixels)."""
    return sum(layer.macs for layer in layers), sum(layer.macs for layer in layers if not layer.spike_input)
