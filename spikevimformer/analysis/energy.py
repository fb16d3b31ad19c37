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
E_MAC for every MAC. That is the paper's convention; the same rows (with their weight and tensor
sizes and the share of input elements that fire) are also priced under the other conventions of
`conventions.CONVENTIONS` (int8, memory-aware, binary spikes), against reference ANNs too.
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
from .complexity import ATTENTION_ORDERS, LayerMacs, count_macs
from .conventions import CLAIM, CONVENTIONS, E_AC_PJ, E_MAC_PJ, PAPER, REFERENCE_ANNS, ConventionEnergy, price


@dataclass
class LayerEnergy:
    """One layer (or one attention product) for one image."""

    name: str
    kind: str  # "stem", "conv", "linear" or "attention"
    macs: int
    rate: float | None  # mean integer spike count of the input (0..D*T); None for the stem's pixels
    sops: float  # synaptic operations = rate * MACs (MACs for the stem)
    energy_pj: float  # under the paper's convention (paper-45nm-fp32)
    rate_source: str = ""  # which tensor's spikes `rate` counts
    firing_fraction: float | None = None  # share of input elements with a nonzero count; None for the stem
    weights: int = 0  # weight elements read (memory-aware convention)
    spike_reads: int = 0  # elements of spike-count tensors read
    value_reads: int = 0  # elements of non-spike tensors read (pixels, K^T V, Q K^T)
    writes: int = 0  # elements written (conv outputs are membranes, not spikes)


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
    """Per-layer energy, totals, neuron statistics and parameter counts of one measurement; `totals` and
    `LayerEnergy.energy_pj` are the paper's convention, `conventions` all four (keyed by name)."""

    layers: list[LayerEnergy]
    totals: dict[str, Any]
    neurons: list[NeuronStats] = field(default_factory=list)
    parameters: dict[str, int | None] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    conventions: dict[str, ConventionEnergy] = field(default_factory=dict)

    def claim(self) -> dict[str, Any]:
        """The paper's claim beside the measured parameter ratios (reference ANN / our inference backbone)."""
        ours = self.parameters.get("inference (backbone)")
        ratios = {ref.name: ref.parameters / ours for ref in REFERENCE_ANNS} if ours else {}
        return {**CLAIM, "parameter_ratios": ratios, "verdicts": [c.verdict for c in self.conventions.values()]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config, "totals": self.totals, "parameters": self.parameters, "claim": self.claim(),
            "conventions": {name: c.to_dict() for name, c in self.conventions.items()},
            "layers": [asdict(layer) for layer in self.layers], "neurons": [asdict(n) for n in self.neurons],
        }  # fmt: skip

    def to_json(self) -> str:
        """The whole report as a JSON string (per image figures; energies in pJ and mJ)."""
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """Readable fixed-width text: per-layer rows (SNN energy under each convention), totals, the conventions
        against the ANNs and the paper's claim, then per-neuron firing."""
        c, t = self.config, self.totals
        name_w = max(24, *(len(layer.name) for layer in self.layers))
        priced = list(self.conventions.values())
        widths = [max(10, len(p.convention.name)) for p in priced]
        lines = [
            f"Energy per image at {c.get('image_size')} px over {c.get('images')} images, attention order "
            f"{c.get('attention_order')} (D={c.get('levels')}, T={c.get('time_steps')}); per layer: SNN energy in "
            "uJ under each convention (synaptic compute + memory; neuron updates in the NI-LIF table)",
            f"{'layer':<{name_w}}  {'kind':<9}  {'MMACs':>9}  {'rate':>6}  {'MSOPs':>9}  "
            + "  ".join(f"{p.convention.name:>{w}}" for p, w in zip(priced, widths, strict=True)),
        ]
        lines.append("-" * len(lines[-1]))
        for i, layer in enumerate(self.layers):
            rate = "pixels" if layer.rate is None else f"{layer.rate:.3f}"
            energies = "  ".join(
                f"{(p.layers[i]['snn_compute_pj'] + p.layers[i]['snn_memory_pj']) / 1e6:>{w}.3f}"
                for p, w in zip(priced, widths, strict=True)
            )
            lines.append(
                f"{layer.name:<{name_w}}  {layer.kind:<9}  {layer.macs / 1e6:>9.2f}  {rate:>6}  "
                f"{layer.sops / 1e6:>9.2f}  {energies}"
            )
        lines += [
            "",
            f"MACs: {t['macs'] / 1e9:.3f} G ({c.get('attention_order')}), {t['macs_other_order'] / 1e9:.3f} G "
            f"({t['other_order']}); stem {t['macs_stem'] / 1e9:.3f} G",
            f"SOPs (after the stem): {t['sops'] / 1e9:.3f} G; MAC-weighted mean input spike count {t['mean_rate']:.4f}",
            f"SNN energy: {t['snn_energy_mj']:.4f} mJ   ANN energy: {t['ann_energy_mj']:.4f} mJ   "
            f"ANN/SNN: {t['ann_over_snn']:.2f}x   (paper-45nm-fp32: E_MAC {E_MAC_PJ} pJ, E_AC {E_AC_PJ} pJ)",
            "Parameters: " + ", ".join(f"{k} {v:,}" for k, v in self.parameters.items() if v is not None),
        ]
        if priced:
            lines += ["", *self._conventions_table(priced)]
        if self.neurons:
            charged = [p for p in priced if p.convention.e_neuron_update_pj]
            top = len(self.neurons[0].histogram) - 1
            lines += ["", f"{'NI-LIF layer':<{name_w}}  {'rate':>6}  {'firing':>7}  "
                      + "".join(f"{'updates uJ ' + p.convention.name:>28}  " for p in charged)
                      + f"spike-level shares 0..{top}"]  # fmt: skip
            lines.append("-" * len(lines[-1]))
            for i, n in enumerate(self.neurons):
                total = max(1, sum(n.histogram))
                shares = " ".join(f"{h / total:.3f}" for h in n.histogram)
                updates = "".join(f"{p.neurons[i]['energy_pj'] / 1e6:>28.3f}  " for p in charged)
                lines.append(f"{n.name:<{name_w}}  {n.rate:>6.3f}  {n.firing_fraction:>7.3f}  {updates}{shares}")
        return "\n".join(lines)

    def _conventions_table(self, priced: list[ConventionEnergy]) -> list[str]:
        """Totals per convention (mJ per image) against the ANN of the same shape and the reference ANNs."""
        refs = [ref.name for ref in REFERENCE_ANNS]
        head = (f"{'convention':<16}  {'SNN mJ':>9}  {'compute':>9}  {'neurons':>9}  {'memory':>9}  "
                f"{'ANN mJ':>9}  {'ANN/SNN':>8}" + "".join(f"  {name + ' mJ':>14}  {'ANN/SNN':>8}" for name in refs))
        lines = ["Energy per image under four conventions (ANN = the same network as an ANN; ratios ANN/SNN; "
                 "'>=' marks a lower bound)", head, "-" * len(head)]  # fmt: skip
        for p in priced:
            t = p.totals
            row = (f"{p.convention.name:<16}  {t['snn_mj']:>9.4f}  {t['snn_compute_mj']:>9.4f}  "
                   f"{t['snn_neurons_mj']:>9.4f}  {t['snn_memory_mj']:>9.4f}  {t['ann_mj']:>9.4f}  "
                   f"{t['ann_over_snn']:>7.2f}x")  # fmt: skip
            for r in p.references:
                bound = ">=" if r["lower_bound"] else ""
                row += f"  {bound + format(r['energy_mj'], '.4f'):>14}  {bound + format(r['ann_over_snn'], '.2f'):>7}x"
            lines.append(row)
        for p in priced:
            if "snn_integer_as_one_op_mj" in p.totals:
                one = p.totals["snn_integer_as_one_op_mj"]
                lines.append(f"{p.convention.name}, an integer spike counted as ONE operation (firing fraction x "
                             f"MACs, no neuron updates): SNN {one:.4f} mJ, ANN/SNN {p.totals['ann_mj'] / one:.2f}x")
        size = self.config.get("image_size") or [224, 224]
        scale = size[0] * size[1] / 224**2
        lines.append(
            f"Reference ANNs scaled by (size/224)^2 = {scale:.3f} from their 224 px MACs: "
            + "; ".join(f"{ref.name} {ref.macs_224 / 1e9:.1f} G -> {ref.macs_224 * scale / 1e9:.2f} G MACs, "
                        f"{ref.parameters / 1e6:.1f} M parameters ({ref.source})" for ref in REFERENCE_ANNS)
        )  # fmt: skip
        claim = self.claim()
        ratios = ", ".join(f"{name} {r:.2f}x" for name, r in claim["parameter_ratios"].items())
        lines.append(f"Paper's claim: {claim['source']}. Measured parameter ratios (reference / our inference "
                     f"backbone): {ratios or 'n/a'}.")  # fmt: skip
        lines += [f"- {p.verdict}" for p in priced]
        return lines


@dataclass
class _InputSums:
    """Running sums of one layer's input on the device; read once at the end."""

    total: Tensor | None = None
    off_grid: Tensor | None = None  # largest distance of input * D * T from an integer
    nonzero: Tensor | None = None  # input elements with a nonzero spike count
    elements: int = 0


def _spike_scale(backbone: nn.Module) -> int:
    """D * T shared by every NI-LIF of the backbone (the factor from normalised output to count)."""
    scales = {m.levels * m.time_steps for m in backbone.modules() if isinstance(m, NILIF)}
    if len(scales) != 1:
        raise ValueError(f"expected one NI-LIF setting (D*T) across the backbone, found {sorted(scales)}")
    return scales.pop()


def _attention_rows(
    attn: SpikeAttention, layer: LayerMacs, order: str, neurons: dict[str, NeuronStats]
) -> list[LayerEnergy]:
    """The two products of one spike attention, each with the rate and firing fraction of the spike tensor
    that gates its accumulations and the elements it reads and writes (per image)."""
    name = layer.name.removesuffix(".products")
    channels, v_width = attn.q_conv[0].out_channels, attn.v_conv[0].out_channels
    tokens = layer.input_elements // channels
    q = k = channels * tokens
    v = v_width * tokens
    if order == "q(ktv)":
        half, kv = layer.macs // 2, channels * v_width // attn.heads  # K^T V: heads x d x 4d
        specs = [("k^T v", half, "k", k + v, 0, kv), ("q(k^T v)", layer.macs - half, "q", q, kv, v)]
    else:
        qk, scores = layer.macs * channels // (channels + v_width), attn.heads * tokens**2
        specs = [("q k^T", qk, "q", q + k, 0, scores), ("(q k^T)v", layer.macs - qk, "v", v, scores, v)]
    rows = []
    for suffix, macs, gate, spike_reads, value_reads, writes in specs:
        stats = neurons[f"{name}.{gate}_lif"]
        rows.append(LayerEnergy(f"{name}.{suffix}", "attention", macs, stats.rate, stats.rate * macs, 0.0,
                                stats.name, stats.firing_fraction, 0, spike_reads, value_reads, writes))
    return rows


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
        nonzero = (x != 0).sum()
        s.total = total if s.total is None else s.total + total
        s.off_grid = off if s.off_grid is None else torch.maximum(s.off_grid, off)
        s.nonzero = nonzero if s.nonzero is None else s.nonzero + nonzero
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
    neurons = {}
    for name, stats in neuron_dict.items():
        hist = stats["histogram"]
        elements = int(stats["elements"])
        firing = 1.0 - hist[0] / elements if hist and elements else 0.0
        neurons[name] = NeuronStats(name, elements, stats["rate"], firing, hist)
    macs = count_macs(backbone, size, attention_order)
    other = "(qkt)v" if attention_order == "q(ktv)" else "q(ktv)"
    macs_other = sum(layer.macs for layer in count_macs(backbone, size, other))
    modules = dict(backbone.named_modules())

    rows: list[LayerEnergy] = []
    off_grid = 0.0
    for layer in macs:
        if layer.kind == "attention":
            rows += _attention_rows(modules[layer.name.removesuffix(".products")], layer, attention_order, neurons)
        elif not layer.spike_input:
            rows.append(LayerEnergy(layer.name, "stem", layer.macs, None, float(layer.macs), 0.0, "pixels", None,
                                    layer.weights, 0, layer.input_elements, layer.output_elements))
        else:
            s = sums[layer.name]
            rate = float(s.total) * scale / s.elements
            off_grid = max(off_grid, float(s.off_grid))
            rows.append(LayerEnergy(layer.name, layer.kind, layer.macs, rate, rate * layer.macs, 0.0, "input",
                                    float(s.nonzero) / s.elements, layer.weights, layer.input_elements, 0,
                                    layer.output_elements))
    for row in rows:
        row.energy_pj = PAPER.snn_compute_pj(row)

    levels = next(m.levels for m in backbone.modules() if isinstance(m, NILIF))
    time_steps = next(m.time_steps for m in backbone.modules() if isinstance(m, NILIF))
    neuron_list = list(neurons.values())
    conventions = {
        c.name: price(c, rows, neuron_list, images=images, levels=levels, time_steps=time_steps, image_size=size)
        for c in CONVENTIONS
    }
    total_macs = sum(r.macs for r in rows)
    stem = sum(r.macs for r in rows if r.kind == "stem")
    sops = sum(r.sops for r in rows if r.kind != "stem")
    snn, ann = sum(r.energy_pj for r in rows), E_MAC_PJ * total_macs  # the paper's; equal to conventions[PAPER]
    totals = {
        "macs": total_macs, "macs_stem": stem, "macs_other_order": macs_other, "other_order": other,
        "sops": sops, "mean_rate": sops / max(1, total_macs - stem),
        "snn_energy_pj": snn, "ann_energy_pj": ann, "snn_energy_mj": snn * 1e-9, "ann_energy_mj": ann * 1e-9,
        "ann_over_snn": ann / snn if snn else float("inf"),
        "max_off_integer": off_grid,  # ~0 when every non-stem layer really receives integer spike counts
    }  # fmt: skip
    parameters = {
        "inference (backbone)": count_parameters(backbone),
        "training (full model)": count_parameters(model) if model is not backbone else None,
    }
    config = {
        "image_size": list(size), "images": images, "attention_order": attention_order,
        "levels": levels, "time_steps": time_steps, "e_mac_pj": E_MAC_PJ, "e_ac_pj": E_AC_PJ,
        "conventions": [c.name for c in CONVENTIONS],
    }  # fmt: skip
    return EnergyReport(rows, totals, neuron_list, parameters, config, conventions)


def _group(name: str) -> str:
    """Stage-level bucket of a layer name: 'block3.2.attn.q_conv.0' -> 'block3.2'."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and parts[1].isdigit() else parts[0]


def plot_energy(report: EnergyReport, path: str | Path) -> Path:
    """Bar chart PNG: per convention SNN / ANN of the same shape / reference ANNs (mJ per image, log scale; a
    hatched bar is a lower bound), then SNN vs ANN energy (paper's convention) and input rate per block."""
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
    fig, (conv_ax, top, bottom) = plt.subplots(
        3, 1, figsize=(max(8, 0.45 * len(labels)), 10.5), gridspec_kw={"height_ratios": [1.2, 1, 0.8]}
    )
    _plot_conventions(conv_ax, report)
    width = 0.4
    top.bar([i - width / 2 for i in x], [groups[k]["ann"] for k in labels], width, label="ANN (all MACs)", color="#999")
    top.bar([i + width / 2 for i in x], [groups[k]["snn"] for k in labels], width, label="SNN", color="#2a7")
    top.set_yscale("log")
    top.set_ylabel("energy per image (uJ)")
    t = report.totals
    top.set_title(
        f"per block, {PAPER.name}: SNN {t['snn_energy_mj']:.3f} mJ vs ANN {t['ann_energy_mj']:.3f} mJ "
        f"({t['ann_over_snn']:.1f}x), {report.config.get('image_size')} px, {report.config.get('attention_order')}"
    )
    top.legend()
    top.set_xticks(list(x), [])
    bottom.bar(list(x), [groups[k]["sops"] / groups[k]["macs"] if groups[k]["macs"] else 0.0 for k in labels],
               color="#37a")
    bottom.set_ylabel("mean input spike count")
    bottom.set_xticks(list(x), labels, rotation=60, ha="right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _plot_conventions(ax: Any, report: EnergyReport) -> None:
    """One group of bars per convention: SNN, the ANN of the same shape, each reference ANN (mJ per image)."""
    names = list(report.conventions)
    series = ["SNN", "ANN same shape", *(ref.name for ref in REFERENCE_ANNS)]
    colors = ["#2a7", "#999", "#c84", "#a4a"]
    # per convention: (mJ, lower bound?) of each series
    values = [[(p.totals["snn_mj"], False), (p.totals["ann_mj"], False),
               *((r["energy_mj"], r["lower_bound"]) for r in p.references)] for p in report.conventions.values()]
    width = 0.8 / len(series)
    for j, (label, color) in enumerate(zip(series, colors, strict=True)):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(names))]
        bars = ax.bar(xs, [v[j][0] for v in values], width, label=label, color=color)
        for bar, v in zip(bars, values, strict=True):
            bar.set_hatch("//" if v[j][1] else "")
    ax.set_yscale("log")
    ax.set_ylim(top=max(v[0] for row in values for v in row) * 10)  # room for the legend above the bars
    ax.set_ylabel("energy per image (mJ)")
    ax.set_xticks(range(len(names)), names)
    h, w = report.config.get("image_size") or ("?", "?")
    ax.set_title(f"the same spikes under {len(names)} conventions, {h}x{w} px (hatched: lower bound)")
    ax.legend(fontsize=8, ncol=len(series), loc="upper center")
