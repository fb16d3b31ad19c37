"""Energy counter on a hand-built network, and MAC totals of tiny and small against the spec."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from spikevimformer.analysis.conventions import CONVENTIONS, price, spike_bits
from spikevimformer.analysis.energy import LayerEnergy, measure_energy, plot_energy
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
    paper = report.conventions["paper-45nm-fp32"].totals  # today's totals, bit for bit
    assert (paper["snn_mj"], paper["ann_mj"]) == (t["snn_energy_mj"], t["ann_energy_mj"])
    json.loads(report.to_json())


class TwoLayers(nn.Module):
    """Stem conv (3 -> 2, 1x1, picks pixel channels 0 and 1) -> NI-LIF -> 1x1 conv (2 -> 2, weights diag(8, 0):
    doubles channel 0's counts, silences channel 1) -> NI-LIF -> 1x1 conv (2 -> 3); D = 4, T = 1."""

    def __init__(self) -> None:
        super().__init__()
        self.downsample1_1 = Toy("conv").downsample1_1
        self.lif1, self.lif2 = NILIF(levels=4), NILIF(levels=4)
        self.conv1 = nn.Conv2d(2, 2, 1, bias=False)
        self.conv2 = nn.Conv2d(2, 3, 1)
        with torch.no_grad():
            self.conv1.weight.zero_()
            self.conv1.weight[0, 0, 0, 0] = 8.0  # input s/4 -> 2s, clipped to 4 by lif2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.lif2(self.conv1(self.lif1(self.downsample1_1(x)))))


def test_every_convention_against_hand_counts():
    image = torch.zeros(1, 3, 2, 3)
    image[0, 0] = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 6.0]])  # lif1 counts 0 1 2 3 4 4 -> lif2 0 2 4 4 4 4
    image[0, 1] = torch.tensor([[-1.0, 0.4, 1.6], [2.2, 0.0, 9.0]])  # lif1 counts 0 0 2 2 0 4 -> lif2 silent
    report = measure_energy(TwoLayers(), [image, torch.zeros(1, 3, 2, 3)])
    # Per image: stem 2x6x3 = 36 MACs (6 weights, reads 18 pixels, writes 12); conv1 2x6x2 = 24 MACs (4 weights,
    # reads 12 spike counts, writes 12); conv2 3x6x2 = 36 MACs (6 weights, reads 12 counts, writes 18). Over two
    # images, conv1's input holds 22 spikes in 24 elements, 8 of them nonzero; conv2's 18 spikes, 5 nonzero.
    stem, conv1, conv2 = report.layers
    assert [(r.macs, r.weights, r.spike_reads, r.value_reads, r.writes) for r in report.layers] == [
        (36, 6, 0, 18, 12), (24, 4, 12, 0, 12), (36, 6, 12, 0, 18)]  # fmt: skip
    assert (conv1.sops, conv2.sops) == (pytest.approx(22.0), pytest.approx(27.0))  # 22/24 x 24, 18/24 x 36
    assert (conv1.firing_fraction, conv2.firing_fraction) == (pytest.approx(8 / 24), pytest.approx(5 / 24))
    assert [n.elements for n in report.neurons] == [24, 24]  # 12 per image each: 96 updates at D*T = 4 steps

    memory_snn = 0.3125 * (8 * 16 + 8 * (18 + 12) + 3 * 12 + 8 * 12 + 3 * 12 + 8 * 18)  # 680 bits, 3-bit spikes
    memory_ann = 0.3125 * (8 * 16 + 8 * (18 + 12) + 8 * (12 + 12) + 8 * (12 + 18))  # 800 bits
    int8_snn, int8_ann = 0.3 * 36 + 0.1 * (22 + 27), 0.3 * 96
    expected = {  # (SNN compute, neurons, memory, ANN compute, ANN memory) in pJ per image
        "paper-45nm-fp32": (4.6 * 36 + 0.9 * 49, 0.0, 0.0, 4.6 * 96, 0.0),
        "int8": (int8_snn, 0.0, 0.0, int8_ann, 0.0),
        "memory-aware": (int8_snn, 0.0, memory_snn, int8_ann, memory_ann),
        "binary-spikes": (4.6 * 36 + 0.9 * 49, 0.9 * 96, 0.0, 4.6 * 96, 0.0),
    }
    assert list(report.conventions) == list(expected)
    scale = 6 / 224**2  # a 2 x 3 image
    for name, (compute, neurons, memory, ann_compute, ann_memory) in expected.items():
        t = report.conventions[name].totals
        got = [t[k] * 1e9 for k in ("snn_compute_mj", "snn_neurons_mj", "snn_memory_mj", "ann_compute_mj",
                                    "ann_memory_mj")]  # fmt: skip
        assert got == pytest.approx([compute, neurons, memory, ann_compute, ann_memory], rel=1e-12, abs=1e-12), name
        snn, ann = compute + neurons + memory, ann_compute + ann_memory
        assert t["snn_mj"] * 1e9 == pytest.approx(snn, rel=1e-12)
        assert t["ann_over_snn"] == pytest.approx(ann / snn, rel=1e-12)
        e_mac = 4.6 if name in ("paper-45nm-fp32", "binary-spikes") else 0.3
        resnet, convnext = report.conventions[name].references
        weights_only = 0.3125 * 8 if name == "memory-aware" else 0.0  # reference ANNs: weight reads only
        assert resnet["energy_mj"] * 1e9 == pytest.approx(e_mac * 4.1e9 * scale + weights_only * 25.6e6, rel=1e-12)
        assert convnext["energy_mj"] * 1e9 == pytest.approx(e_mac * 15.4e9 * scale + weights_only * 89e6, rel=1e-12)
        assert resnet["lower_bound"] == (name == "memory-aware")
        assert convnext["ann_over_snn"] == pytest.approx(convnext["energy_mj"] / t["snn_mj"], rel=1e-12)
        per_layer = sum(r["snn_compute_pj"] + r["snn_memory_pj"] for r in report.conventions[name].layers)
        assert per_layer == pytest.approx(compute + memory, rel=1e-12)
    binary = report.conventions["binary-spikes"].totals
    one_op = 4.6 * 36 + 0.9 * (8 / 24 * 24 + 5 / 24 * 36)  # a nonzero count is one operation: 179.55 pJ
    assert binary["snn_integer_as_one_op_mj"] * 1e9 == pytest.approx(one_op, rel=1e-12)
    assert "snn_integer_as_one_op_mj" not in report.conventions["int8"].totals
    assert report.totals["snn_energy_pj"] == pytest.approx(209.7, rel=1e-12)  # the legacy keys: paper's convention
    payload = json.loads(report.to_json())
    assert payload["conventions"]["memory-aware"]["convention"]["e_sram_bit_pj"] == 0.3125
    assert payload["claim"]["energy_ratio"] == 13.24
    assert "memory-aware" in report.table() and "integer spike counted as ONE operation" in report.table()


def test_spike_bits_and_a_verdict_that_fails():
    assert [spike_bits(d, t) for d, t in [(4, 1), (1, 1), (3, 1), (4, 2), (8, 1)]] == [3, 1, 2, 4, 4]
    # Every input element at the top count 4: 4 SOPs per MAC, 0.4 pJ at int8 against the ANN's 0.3 pJ MAC.
    busy = LayerEnergy("conv", "conv", 100, 4.0, 400.0, 360.0, "input", 1.0, 10, 50, 0, 50)
    priced = price(CONVENTIONS[1], [busy], [], images=1, levels=4, time_steps=1, image_size=(224, 224))
    assert priced.totals["ann_over_snn"] == pytest.approx(30 / 40, rel=1e-12)
    assert priced.verdict.startswith("int8: the SNN costs 0.0000 mJ per image, 1.33x ABOVE the ANN of the same shape")
    assert "does NOT hold (the SNN costs more than the ANN of the same shape)" in priced.verdict
    assert "below ResNet-50" in priced.verdict and "reached against ResNet-50, ConvNeXt-B." in priced.verdict


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
    payload_conventions = payload["conventions"]
    assert list(payload_conventions) == ["paper-45nm-fp32", "int8", "memory-aware", "binary-spikes"]
    assert payload_conventions["paper-45nm-fp32"]["totals"]["snn_mj"] == payload["totals"]["snn_energy_mj"]
    empty = tmp_path / "empty"
    empty.mkdir()
    for given, words in [(tmp_path / "nope", "does not exist"), (empty, "holds no images"),
                         (folder / "0.jpg", "is a file, not a folder")]:
        argv[argv.index("--images") + 1] = str(given)
        assert main([*argv, "--overwrite"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(given) in err and words in err, err
