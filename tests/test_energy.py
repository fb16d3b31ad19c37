"""Energy counter on a hand-built network, and MAC totals of tiny and small against the spec."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from spikevimformer.analysis.energy import measure_energy, plot_energy
from spikevimformer.cli import main
from spikevimformer.models import build_model
from spikevimformer.models.backbone import Downsample
from spikevimformer.models.neuron import NILIF


class Toy(nn.Module):
    """Stem conv (3 -> 2, 1x1, picks pixel channels 0 and 1) -> NI-LIF (D=4) -> 1x1 conv or linear (2 -> 3)."""

    def __init__(self, head: str) -> None:
        super().__init__()
        self.downsample1_1 = Downsample(3, 2, kernel=1, stride=1, spike=None)  # the name count_macs treats as stem
        self.lif = NILIF(levels=4)
        self.head_kind = head
        self.head = nn.Conv2d(2, 3, 1) if head == "conv" else nn.Linear(2, 3)
        with torch.no_grad():
            conv, bn = self.downsample1_1.encode_conv, self.downsample1_1.encode_bn
            conv.weight.zero_()
            conv.weight[0, 0, 0, 0] = 1.0
            conv.weight[1, 1, 0, 0] = 1.0
            conv.bias.zero_()
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)  # BN is the identity in eval mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lif(self.downsample1_1(x))
        return self.head(s) if self.head_kind == "conv" else self.head(s.permute(0, 2, 3, 1))


@pytest.mark.parametrize("head", ["conv", "linear"])
def test_energy_counter_on_a_hand_built_network(head):
    image = torch.zeros(1, 3, 2, 3)
    image[0, 0] = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 6.0]])  # spike counts 0 1 2 3 4 4 -> 14
    image[0, 1] = torch.tensor([[-1.0, 0.4, 1.6], [2.2, 0.0, 9.0]])  # spike counts 0 0 2 2 0 4 -> 8
    image[0, 2] = 5.0  # ignored by the stem weights
    blank = torch.zeros(1, 3, 2, 3)  # no spikes at all
    report = measure_energy(Toy(head), [image, blank])

    # MACs per image: stem 2 outputs x 6 pixels x 3 inputs = 36; head 3 outputs x 6 pixels x 2 inputs = 36.
    stem, second = report.layers
    assert (stem.kind, stem.macs, stem.rate) == ("stem", 36, None)
    assert (second.kind, second.macs) == (head, 36)
    rate = 22 / 24  # integer spikes of the head's input over 2 images x 12 elements
    assert second.rate == pytest.approx(rate)
    assert second.sops == pytest.approx(rate * 36)  # 33
    assert stem.energy_pj == pytest.approx(4.6 * 36)  # 165.6
    assert second.energy_pj == pytest.approx(0.9 * 33)  # 29.7
    t = report.totals
    assert t["macs"] == 72 and t["macs_stem"] == 36
    assert t["snn_energy_pj"] == pytest.approx(165.6 + 29.7)
    assert t["ann_energy_pj"] == pytest.approx(4.6 * 72)
    assert t["ann_over_snn"] == pytest.approx(331.2 / 195.3)
    assert t["max_off_integer"] == pytest.approx(0.0, abs=1e-6)
    (neuron,) = report.neurons
    assert neuron.histogram == [16, 1, 3, 1, 3]
    assert neuron.rate == pytest.approx(rate) and neuron.firing_fraction == pytest.approx(8 / 24)
    assert report.config["images"] == 2 and report.parameters["training (full model)"] is None
    json.loads(report.to_json())


def test_attention_rows_use_the_spike_rates_they_consume(tmp_path):
    model = build_model("tiny", num_classes=5)
    batches = [torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(i)) * 3 for i in range(2)]
    report = measure_energy(model, batches)
    rates = {n.name: n.rate for n in report.neurons}
    rows = {layer.name: layer for layer in report.layers}
    ktv, qktv = rows["block3.0.attn.k^T v"], rows["block3.0.attn.q(k^T v)"]
    assert ktv.rate == pytest.approx(rates["block3.0.attn.k_lif"])
    assert qktv.rate == pytest.approx(rates["block3.0.attn.q_lif"])
    assert ktv.macs == qktv.macs
    # Convolutions read their own input: the q/k/v convs all see head_lif's spikes.
    assert rows["block3.0.attn.q_conv.0"].rate == pytest.approx(rates["block3.0.attn.head_lif"])
    assert rows["ConvBlock1_1.0.Conv.pwconv1.0"].rate == pytest.approx(rates["ConvBlock1_1.0.Conv.lif1"])
    assert report.totals["max_off_integer"] < 1e-4
    p = report.parameters
    assert p["inference (backbone)"] < p["training (full model)"]
    assert model.training  # restored
    assert "block3.0.attn.k^T v" in report.table()
    png = plot_energy(report, tmp_path / "energy.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variant", "gmacs", "stem"), [("tiny", 14.27, 0.130), ("small", 24.90, 0.173)]
)
def test_totals_at_384_match_the_reference_mac_counts(variant, gmacs, stem):
    model = build_model(variant)
    report = measure_energy(model, [torch.randn(1, 3, 384, 384)], attention_order="(qkt)v")
    t = report.totals
    assert t["macs"] / 1e9 == pytest.approx(gmacs, abs=0.005)
    assert t["macs_stem"] / 1e9 == pytest.approx(stem, abs=0.0005)
    if variant == "small":  # Q(K^T V) is about 3.4 G cheaper
        assert (t["macs"] - t["macs_other_order"]) / 1e9 == pytest.approx(3.4, abs=0.1)
    assert t["snn_energy_pj"] >= 4.6 * t["macs_stem"]


def test_energy_cli_writes_its_files(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "images" / "0001"
    folder.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (70, 50), (40 * i, 120, 200)).save(folder / f"{i}.jpg")
    out = tmp_path / "out"
    argv = ["energy", "--random-init", "--variant", "tiny", "--images", str(tmp_path / "images"), "--image-size", "64",
            "--batch-size", "2", "--out", str(out)]
    assert main(argv) == 0
    assert "ANN" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"energy.json", "energy.txt", "energy.png"}
    payload = json.loads((out / "energy.json").read_text())
    assert payload["config"]["images"] == 2 and payload["config"]["image_size"] == [64, 64]
    assert "block3.0.attn.q(k^T v)" in (out / "energy.txt").read_text()
    assert main(argv) == 2  # a second report into the same folder
    assert "already exist; pass --overwrite" in capsys.readouterr().err
    argv[argv.index("--images") + 1] = str(tmp_path / "nope")
    assert main([*argv, "--overwrite"]) == 2
    assert "does not exist" in capsys.readouterr().err
