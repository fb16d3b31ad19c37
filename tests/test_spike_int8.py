"""The integer-spike int8 rewrite: exact where the arithmetic is exact, close on the real model, refused elsewhere."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")

from spikevimformer.models.neuron import NILIF  # noqa: E402
from spikevimformer.spike_int8 import quantize_spikes  # noqa: E402


class Toy(nn.Module):
    """Stem, a spike conv feeding a neuron (QLinearConv), a depth-wise one, a 1x1 back onto the residual stream."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.lif1, self.lif2, self.lif3, self.lif4 = NILIF(), NILIF(), NILIF(), NILIF()
        self.conv = nn.Conv2d(8, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.project = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        s = self.lif3(self.dw(self.lif2(self.conv(self.lif1(x)))))
        y = x + self.project(s)
        return y, self.lif4(y)


def _on_grid(conv: nn.Conv2d, gen: torch.Generator, step: float = 1 / 64) -> None:
    """Weights k * step with |k| <= 127 and one |k| = 127 per channel (the int8 grid exactly), bias on step / 4."""
    with torch.no_grad():
        k = torch.randint(-40, 41, conv.weight.shape, generator=gen).float()
        k.view(k.shape[0], -1)[:, 0] = 127 * torch.sign(torch.randn(k.shape[0], generator=gen)).clamp(min=0) * 2 - 127
        conv.weight.copy_(k * step)
        conv.bias.copy_(torch.randint(-300, 300, conv.bias.shape, generator=gen).float() * step / 4)


def _export(model: nn.Module, path, size: int = 16) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), input_names=["images"],
                          output_names=["membrane", "spikes"], dynamic_axes={"images": {0: "batch"}},
                          opset_version=17, dynamo=False)  # fmt: skip


def test_spikes_are_bit_identical_when_the_weights_sit_on_the_int8_grid(tmp_path) -> None:
    import onnxruntime as ort

    gen = torch.Generator().manual_seed(0)
    toy = Toy().eval()
    for conv in (toy.stem, toy.conv, toy.dw, toy.project):
        _on_grid(conv, gen)
    _export(toy, tmp_path / "fp32.onnx")
    summary = quantize_spikes(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")
    assert (summary.neurons, summary.integer_convs, summary.integer_matmuls) == (4, 2, 1)
    assert summary.float_convs == ["/stem/Conv"]
    import onnx

    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node)
    assert ops["QLinearConv"] == 2 and ops["Round"] == 0 and ops["Div"] == 0

    images = torch.randint(-16, 17, (3, 3, 16, 16), generator=gen).float() / 8  # exact in fp32 through the stem
    with torch.no_grad():
        membrane, spikes = toy(images)
    session = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    got_membrane, got_spikes = session.run(None, {"images": images.numpy()})
    assert 0.05 < float((spikes > 0).float().mean()) < 0.95  # the check sees real spiking, not all-zero or saturated
    np.testing.assert_array_equal(got_spikes, spikes.numpy())
    np.testing.assert_array_equal(got_membrane, membrane.numpy())


def test_off_grid_weights_differ_only_by_weight_rounding(tmp_path) -> None:
    import onnxruntime as ort

    torch.manual_seed(1)
    toy = Toy().eval()
    _export(toy, tmp_path / "fp32.onnx")
    quantize_spikes(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")
    images = torch.randn(4, 3, 16, 16) * 3
    with torch.no_grad():
        membrane, spikes = toy(images)
    session = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    got_membrane, got_spikes = session.run(None, {"images": images.numpy()})
    assert np.mean(got_spikes != spikes.numpy()) < 0.01  # a spike moves only where a membrane sits at a threshold
    assert np.abs(got_membrane - membrane.numpy()).max() < 0.3


def test_a_graph_without_neurons_or_with_another_rounding_is_refused(tmp_path) -> None:
    plain = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)).eval()
    _export_single(plain, tmp_path / "plain.onnx")
    with pytest.raises(ValueError, match="no NI-LIF"):
        quantize_spikes(tmp_path / "plain.onnx", tmp_path / "x.onnx")

    class Rounder(nn.Module):
        def forward(self, x):
            return torch.round(x).clamp(0, 3) / 4  # D = 4 but clipped at 3: not an NI-LIF

    _export_single(nn.Sequential(nn.Conv2d(3, 4, 1), Rounder()).eval(), tmp_path / "odd.onnx")
    with pytest.raises(ValueError, match="is not an NI-LIF"):
        quantize_spikes(tmp_path / "odd.onnx", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def _export_single(model: nn.Module, path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 8, 8),), str(path), opset_version=17, dynamo=False)
