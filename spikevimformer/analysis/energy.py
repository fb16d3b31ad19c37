"""Inference energy of the backbone from measured spike counts: E = E_MAC MAC_stem + E_AC sum_l r_l MAC_l.

MACs per layer come from `count_macs` (shapes only); r_l, the mean integer spike count of
layer l's input (per element and time step, times T), is measured with forward hooks on
real images in eval mode. Convolutions and linear layers read their input directly: it is
an NI-LIF output normalised by D (and averaged over T), so the count is input * D * T. The
two attention products read the rates of the spike tensors that gate their accumulations:

- Q(K^T V) order:  K^T V  uses r(K) (each K spike adds a row of V);
                   Q (K^T V) uses r(Q) (each Q spike adds a row of the small K^T V matrix).
- (QK^T) V order:  Q K^T uses r(Q);  (Q K^T) V uses r(V) (each V spike adds a score column).

The stem sees real pixels and is charged E_MAC per MAC; an ANN of the same shape is charged
E_MAC for every MAC.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..models.backbone import SpikeAttention, count_parameters
from ..models.neuron import NILIF, record_spikes
from ..progress import progress_bar
from .complexity import ATTENTION_ORDERS, count_macs

E_MAC_PJ = 4.6  # 32-bit float multiply-accumulate, 45 nm (Horowitz 2014)
E_AC_PJ = 0.9  # 32-bit float accumulate, 45 nm


@dataclass
class LayerEnergy:
    """One layer (or one attention product) for one image."""

    name: str
    kind: str  # "stem", "conv", "linear" or "attention"
    macs: int
    rate: float | None  # mean integer spike count of the input (0..D*T); None for the stem's pixels
    sops: float  # synaptic operations = rate * MACs (MACs for the stem)
    energy_pj: float
    rate_source: str = ""  # which tensor's spikes `rate` counts


@dataclass
class NeuronStats:
    """Spike statistics of one NI-LIF layer over all measured images."""

    name: str
    elements: int
    rate: float  # mean integer spike count per element (0..D*T)
    firing_fraction: float  # fraction of elements that fire at least once
    histogram: list[int]  # element counts at each spike level 0..D*T


@dataclass
class EnergyReport:
    """Per-layer energy, totals, neuron statistics and parameter counts of one measurement."""

    layers: list[LayerEnergy]
    totals: dict[str, Any]
    neurons: list[NeuronStats] = field(default_factory=list)
    parameters: dict[str, int | None] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config, "totals": self.totals, "parameters": self.parameters,
            "layers": [asdict(layer) for layer in self.layers], "neurons": [asdict(n) for n in self.neurons],
        }  # fmt: skip

    def to_json(self) -> str:
        """The whole report as a JSON string (per image figures; energies in pJ and mJ)."""
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """Readable fixed-width text: per-layer rows, totals, parameters, then per-neuron firing."""
        c, t = self.config, self.totals
        name_w = max(24, *(len(layer.name) for layer in self.layers))
        lines = [
            f"Energy per image at {c.get('image_size')} px over {c.get('images')} images, attention order "
            f"{c.get('attention_order')}, E_MAC {E_MAC_PJ} pJ, E_AC {E_AC_PJ} pJ (D={c.get('levels')}, "
            f"T={c.get('time_steps')})",
            f"{'layer':<{name_w}}  {'kind':<9}  {'MMACs':>9}  {'rate':>6}  {'MSOPs':>9}  {'energy uJ':>10}",
        ]
        lines.append("-" * len(lines[-1]))
        for layer in self.layers:
            rate = "pixels" if layer.rate is None else f"{layer.rate:.3f}"
            lines.append(
                f"{layer.name:<{name_w}}  {layer.kind:<9}  {layer.macs / 1e6:>9.2f}  {rate:>6}  "
                f"{layer.sops / 1e6:>9.2f}  {layer.energy_pj / 1e6:>10.3f}"
            )
        lines += [
            "",
            f"MACs: {t['macs'] / 1e9:.3f} G ({c.get('attention_order')}), {t['macs_other_order'] / 1e9:.3f} G "
            f"({t['other_order']}); stem {t['macs_stem'] / 1e9:.3f} G",
            f"SOPs (after the stem): {t['sops'] / 1e9:.3f} G; MAC-weighted mean input rate {t['mean_rate']:.4f}",
            f"SNN energy: {t['snn_energy_mj']:.4f} mJ   ANN energy: {t['ann_energy_mj']:.4f} mJ   "
            f"ANN/SNN: {t['ann_over_snn']:.2f}x",
            "Parameters: " + ", ".join(f"{k} {v:,}" for k, v in self.parameters.items() if v is not None),
        ]
        if self.neurons:
            top = len(self.neurons[0].histogram) - 1
            lines += ["", f"{'NI-LIF layer':<{name_w}}  {'rate':>6}  {'firing':>7}  spike-level shares 0..{top}"]
            lines.append("-" * len(lines[-1]))
            for n in self.neurons:
                total = max(1, sum(n.histogram))
                shares = " ".join(f"{h / total:.3f}" for h in n.histogram)
                lines.append(f"{n.name:<{name_w}}  {n.rate:>6.3f}  {n.firing_fraction:>7.3f}  {shares}")
        return "\n".join(lines)


@dataclass
class _InputSums:
    """Running sums of one layer's input on the device; read once at the end."""

    total: Tensor | None = None
    off_grid: Tensor | None = None  # largest distance of input * D * T from an integer
    elements: int = 0


def _spike_scale(backbone: nn.Module) -> int:
    """D * T shared by every NI-LIF of the backbone (the factor from normalised output to count)."""
    scales = {m.levels * m.time_steps for m in backbone.modules() if isinstance(m, NILIF)}
    if len(scales) != 1:
        raise ValueError(f"expected one NI-LIF setting (D*T) across the backbone, found {sorted(scales)}")
    return scales.pop()


def _attention_products(
    attn: SpikeAttention, name: str, macs: int, order: str, rates: dict[str, float]
) -> list[tuple[str, int, float, str]]:
    """(row name, MACs, rate, rate source) of the two products of one spike attention."""
    r = {part: rates[f"{name}.{part}_lif"] for part in ("q", "k", "v")}
    if order == "q(ktv)":
        half = macs // 2
        return [
            (f"{name}.k^T v", half, r["k"], f"{name}.k_lif"),
            (f"{name}.q(k^T v)", macs - half, r["q"], f"{name}.q_lif"),
        ]
    channels = attn.q_conv[0].out_channels
    v_width = attn.v_conv[0].out_channels
    qk = macs * channels // (channels + v_width)
    return [(f"{name}.q k^T", qk, r["q"], f"{name}.q_lif"), (f"{name}.(q k^T)v", macs - qk, r["v"], f"{name}.v_lif")]


def measure_energy(
    model: nn.Module,
    batches: Iterable[Tensor],
    attention_order: str = "q(ktv)",
    progress: bool = False,
) -> EnergyReport:
    """Measure per-layer spike rates of the backbone on `batches` of images and price them.

    `model` is a SpikeViMFormer (its backbone is measured; its own size is the training-time
    parameter count) or a bare backbone. Every batch is (B, 3, H, W), normalised as for
    inference, on any device (moved to the model's); all batches share one H, W.
    """
    if attention_order not in ATTENTION_ORDERS:
        raise ValueError(f"attention_order must be one of {ATTENTION_ORDERS}, got {attention_order!r}")
    backbone = model.backbone if hasattr(model, "backbone") else model
    scale = _spike_scale(backbone)
    names = {m: n for n, m in backbone.named_modules()}
    sums: dict[str, _InputSums] = {}

    def pre_hook(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        x = inputs[0].detach()
        s = sums.setdefault(names[module], _InputSums())
        total = x.sum(dtype=torch.float64)
        counts = x.float() * scale
        off = (counts - counts.round()).abs().max()
        s.total = total if s.total is None else s.total + total
        s.off_grid = off if s.off_grid is None else torch.maximum(s.off_grid, off)
        s.elements += x.numel()

    layers = [m for m in backbone.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_pre_hook(pre_hook) for m in layers]
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    size: tuple[int, int] | None = None
    images = 0
    try:
        with record_spikes(backbone, histogram=True) as recorder, torch.inference_mode():
            for batch in progress_bar(batches, desc="energy", unit="batch", progress=progress):
                if not isinstance(batch, Tensor) or batch.ndim != 4 or batch.shape[1] != 3:
                    shape = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
                    raise ValueError(f"each batch must be an image tensor (B, 3, H, W), got {shape}")
                if size is None:
                    size = (batch.shape[-2], batch.shape[-1])
                elif size != (batch.shape[-2], batch.shape[-1]):
                    raise ValueError(f"all batches must share one image size; got {size} and {tuple(batch.shape[-2:])}")
                backbone(batch.to(device))
                images += batch.shape[0]
    finally:
        for h in handles:
            h.remove()
        backbone.train(was_training)
    if size is None:
        raise ValueError("no images were given to measure spike rates on")

    neuron_dict = recorder.as_dict()  # one device sync for all NI-LIF layers
    rates = {name: stats["rate"] for name, stats in neuron_dict.items()}
    macs = count_macs(backbone, size, attention_order)
    other = "(qkt)v" if attention_order == "q(ktv)" else "q(ktv)"
    macs_other = sum(layer.macs for layer in count_macs(backbone, size, other))
    modules = dict(backbone.named_modules())

    rows: list[LayerEnergy] = []
    off_grid = 0.0
    for layer in macs:
        if layer.kind == "attention":
            attn_name = layer.name.removesuffix(".products")
            for row_name, row_macs, rate, source in _attention_products(
                modules[attn_name], attn_name, layer.macs, attention_order, rates
            ):
                sops = rate * row_macs
                rows.append(LayerEnergy(row_name, "attention", row_macs, rate, sops, E_AC_PJ * sops, source))
            continue
        if not layer.spike_input:
            rows.append(LayerEnergy(layer.name, "stem", layer.macs, None, float(layer.macs), E_MAC_PJ * layer.macs))
            continue
        s = sums[layer.name]
        rate = float(s.total) * scale / s.elements
        off_grid = max(off_grid, float(s.off_grid))
        sops = rate * layer.macs
        rows.append(LayerEnergy(layer.name, layer.kind, layer.macs, rate, sops, E_AC_PJ * sops, "input"))

    total_macs = sum(r.macs for r in rows)
    stem = sum(r.macs for r in rows if r.kind == "stem")
    sops = sum(r.sops for r in rows if r.kind != "stem")
    snn = sum(r.energy_pj for r in rows)
    ann = E_MAC_PJ * total_macs
    totals = {
        "macs": total_macs, "macs_stem": stem, "macs_other_order": macs_other, "other_order": other,
        "sops": sops, "mean_rate": sops / max(1, total_macs - stem),
        "snn_energy_pj": snn, "ann_energy_pj": ann, "snn_energy_mj": snn * 1e-9, "ann_energy_mj": ann * 1e-9,
        "ann_over_snn": ann / snn if snn else float("inf"),
        "max_off_integer": off_grid,  # ~0 when every non-stem layer really receives integer spike counts
    }  # fmt: skip
    neurons = []
    for name, stats in neuron_dict.items():
        hist = stats["histogram"]
        elements = int(stats["elements"])
        firing = 1.0 - hist[0] / elements if hist and elements else 0.0
        neurons.append(NeuronStats(name, elements, stats["rate"], firing, hist))
    parameters = {
        "inference (backbone)": count_parameters(backbone),
        "training (full model)": count_parameters(model) if model is not backbone else None,
    }
    config = {
        "image_size": list(size), "images": images, "attention_order": attention_order,
        "levels": next(m.levels for m in backbone.modules() if isinstance(m, NILIF)),
        "time_steps": next(m.time_steps for m in backbone.modules() if isinstance(m, NILIF)),
        "e_mac_pj": E_MAC_PJ, "e_ac_pj": E_AC_PJ,
    }  # fmt: skip
    return EnergyReport(rows, totals, neurons, parameters, config)


def _group(name: str) -> str:
    """Stage-level bucket of a layer name: 'block3.2.attn.q_conv.0' -> 'block3.2'."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and parts[1].isdigit() else parts[0]


def plot_energy(report: EnergyReport, path: str | Path) -> Path:
    """Bar chart PNG: SNN vs ANN energy and MAC-weighted input rate per backbone block."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .visualize import save_figure

    groups: dict[str, dict[str, float]] = {}
    for layer in report.layers:
        g = groups.setdefault(_group(layer.name), {"snn": 0.0, "ann": 0.0, "macs": 0.0, "sops": 0.0})
        g["snn"] += layer.energy_pj / 1e6
        g["ann"] += E_MAC_PJ * layer.macs / 1e6
        if layer.rate is not None:
            g["macs"] += layer.macs
            g["sops"] += layer.sops
    labels = list(groups)
    x = range(len(labels))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 0.45 * len(labels)), 7), sharex=True)
    width = 0.4
    top.bar([i - width / 2 for i in x], [groups[k]["ann"] for k in labels], width, label="ANN (all MACs)", color="#999")
    top.bar([i + width / 2 for i in x], [groups[k]["snn"] for k in labels], width, label="SNN", color="#2a7")
    top.set_yscale("log")
    top.set_ylabel("energy per image (uJ)")
    t = report.totals
    top.set_title(
        f"SNN {t['snn_energy_mj']:.3f} mJ vs ANN {t['ann_energy_mj']:.3f} mJ ({t['ann_over_snn']:.1f}x), "
        f"{report.config.get('image_size')} px, {report.config.get('attention_order')}"
    )
    top.legend()
    bottom.bar(list(x), [groups[k]["sops"] / groups[k]["macs"] if groups[k]["macs"] else 0.0 for k in labels],
               color="#37a")
    bottom.set_ylabel("mean input spike count")
    bottom.set_xticks(list(x), labels, rotation=60, ha="right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
