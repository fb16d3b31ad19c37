"""Four named ways of pricing one set of measured spike statistics, and the ANNs they are compared with.

The energy of an SNN depends as much on what a spike and a weight cost as on the spikes: critics
count data movement (arXiv 2409.08290), integer-spike rates (Dampfhoffer et al., IEEE TETCI 2023)
and equal-bit quantised ANNs (STEP, arXiv 2505.11151). Each `Convention` below is one such choice,
applied to the SAME per-layer MACs, spike counts and tensor sizes measured by `measure_energy`:

- ``paper-45nm-fp32``: the paper's convention; 4.6 pJ per MAC (stem, ANN), 0.9 pJ per synaptic
  operation (SOP = one unit of integer spike count reaching one weight), memory ignored.
- ``int8``: the same network at int8: the SNN accumulates int8 weights into an int32 membrane
  (one 32-bit integer add, 0.1 pJ, per SOP), its stem and the ANN do int8 MACs (8-bit multiply
  0.2 pJ + 32-bit accumulate 0.1 pJ = 0.3 pJ; the product of two int8 numbers needs a wide
  accumulator, so the add is priced at 32 bits, not 8).
- ``memory-aware``: ``int8`` compute plus on-chip data movement (see `MEMORY_MODEL`).
- ``binary-spikes``: what a neuromorphic chip runs: an integer count s is s binary events over D*T
  virtual steps (the SOP count is unchanged) at fp32 energies, plus one 0.9 pJ add per NI-LIF neuron
  per virtual step for the membrane update; beside it the SNN with each nonzero count as ONE
  operation (``snn_integer_as_one_op_mj``: firing fraction x MACs x 0.9 pJ, stem as usual, no
  neuron updates), what a chip that takes a whole integer count as one event would do.

The reference ANNs are priced by their published MAC counts, scaled from 224 px by the pixel count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .energy import LayerEnergy, NeuronStats

# Energies at 45 nm, 0.9 V from M. Horowitz, "Computing's energy problem (and what we can do about it)",
# ISSCC 2014, its table of operation and memory-access energies (where the paper's 4.6/0.9 pJ come from).
E_MAC_PJ = 4.6  # fp32 multiply-accumulate: fp32 mult 3.7 pJ + fp32 add 0.9 pJ
E_AC_PJ = 0.9  # fp32 add
INT8_MAC_PJ = 0.3  # int8 mult 0.2 pJ + 32-bit int add 0.1 pJ
INT32_ADD_PJ = 0.1  # 32-bit int add
SRAM_BIT_PJ = 20.0 / 64  # 32 KB SRAM (cache), 20 pJ per 64-bit access = 0.3125 pJ per bit
WEIGHT_BITS = 8  # int8 weights, SNN and ANN alike
ACTIVATION_BITS = 8  # ANN activations, and the SNN's non-spike tensors (pixels, conv membrane outputs)

MEMORY_MODEL = (
    f"On-chip SRAM at {SRAM_BIT_PJ} pJ per bit (Horowitz ISSCC 2014: 32 KB SRAM, 20 pJ per 64-bit access; a "
    "1 MB SRAM costs 100 pJ, 5x more, so this is the cheap end). Per image and priced layer: its weights read "
    f"once at {WEIGHT_BITS} bits (SNN and ANN); its input read once and its output written once. ANN "
    f"activations are {ACTIVATION_BITS} bits; SNN spike-count tensors ceil(log2(D*T+1)) bits (3 for D=4, T=1); "
    f"non-spike tensors (the stem's pixels, conv outputs = membranes, K^T V or Q K^T) {ACTIVATION_BITS} bits "
    "for both. NI-LIF, BatchNorm (folded) and residual adds are taken as fused into the neighbouring reads "
    "and writes, for SNN and ANN alike. Reference ANNs: weight reads only (their activation sizes are not "
    "modelled), so their energy is a lower bound."
)


@dataclass(frozen=True)
class Convention:
    """One pricing of the measured statistics; every energy in pJ (45 nm, Horowitz ISSCC 2014)."""

    name: str
    e_stem_mac_pj: float  # SNN stem (sees real pixels), per MAC
    e_sop_pj: float  # SNN, per synaptic operation (one unit of integer spike count times one weight)
    e_ann_mac_pj: float  # ANN of the same shape and the reference ANNs, per MAC
    e_sram_bit_pj: float  # data movement per bit read or written; 0: memory ignored
    e_neuron_update_pj: float  # per NI-LIF neuron and virtual step (D*T per image); 0: not charged
    integer_as_one_op: bool  # also report the SNN with each nonzero integer count as one operation
    description: str

    def snn_compute_pj(self, layer: LayerEnergy) -> float:
        """Stem MACs at the stem's price; every other layer its measured SOPs."""
        return self.e_stem_mac_pj * layer.macs if layer.rate is None else self.e_sop_pj * layer.sops

    def snn_one_op_pj(self, layer: LayerEnergy) -> float:
        """As `snn_compute_pj`, but a nonzero integer count of any size is one operation."""
        if layer.rate is None:
            return self.e_stem_mac_pj * layer.macs
        return self.e_sop_pj * (layer.firing_fraction or 0.0) * layer.macs

    def snn_memory_pj(self, layer: LayerEnergy, spike_bits: int) -> float:
        bits = WEIGHT_BITS * layer.weights + spike_bits * layer.spike_reads
        return self.e_sram_bit_pj * (bits + ACTIVATION_BITS * (layer.value_reads + layer.writes))

    def ann_memory_pj(self, layer: LayerEnergy) -> float:
        activations = layer.spike_reads + layer.value_reads + layer.writes
        return self.e_sram_bit_pj * (WEIGHT_BITS * layer.weights + ACTIVATION_BITS * activations)


CONVENTIONS: tuple[Convention, ...] = (
    Convention("paper-45nm-fp32", E_MAC_PJ, E_AC_PJ, E_MAC_PJ, 0.0, 0.0, False,
               "The paper's convention: fp32 at 45 nm, 4.6 pJ per MAC (stem; every MAC of the ANN), 0.9 pJ "
               "per SOP (SOPs = mean integer spike count x MACs), memory ignored (Horowitz ISSCC 2014: fp32 "
               "mult 3.7 + add 0.9 pJ)."),
    Convention("int8", INT8_MAC_PJ, INT32_ADD_PJ, INT8_MAC_PJ, 0.0, 0.0, False,
               "The same network at int8: SNN accumulates int8 weights into an int32 membrane, 0.1 pJ per SOP "
               "(32-bit int add); stem and ANN int8 MACs, 0.3 pJ (8-bit mult 0.2 + 32-bit add 0.1 pJ; "
               "Horowitz ISSCC 2014); memory ignored."),
    Convention("memory-aware", INT8_MAC_PJ, INT32_ADD_PJ, INT8_MAC_PJ, SRAM_BIT_PJ, 0.0, False,
               "int8 compute as in 'int8' plus data movement. " + MEMORY_MODEL),
    Convention("binary-spikes", E_MAC_PJ, E_AC_PJ, E_MAC_PJ, 0.0, E_AC_PJ, True,
               "A neuromorphic chip at fp32 45 nm: an integer count s is s binary events over D*T virtual steps "
               "(0.9 pJ each, as the paper), plus one fp32 add (0.9 pJ, Horowitz ISSCC 2014) per NI-LIF neuron "
               "per virtual step for its membrane update; ANN at 4.6 pJ per MAC; memory ignored. "
               "snn_integer_as_one_op_mj: each nonzero count as one 0.9 pJ operation, no neuron updates."),
)  # fmt: skip
PAPER = CONVENTIONS[0]


@dataclass(frozen=True)
class ReferenceANN:
    """A published ANN priced by its MAC count (multiply-adds, which these papers call FLOPs) at 224 px."""

    name: str
    macs_224: float
    parameters: float
    source: str


REFERENCE_ANNS: tuple[ReferenceANN, ...] = (
    ReferenceANN("ResNet-50", 4.1e9, 25.6e6,
                 "He et al., CVPR 2016; torchvision ResNet50_Weights.IMAGENET1K_V1: 4.09 G multiply-adds, 25.6 M "
                 "parameters at 224 px"),
    ReferenceANN("ConvNeXt-B", 15.4e9, 89e6,
                 "Liu et al., A ConvNet for the 2020s, CVPR 2022, Table 1: 15.4 G FLOPs (multiply-adds), 89 M "
                 "parameters at 224 px; the Sample4Geo/DAC backbone"),
)  # fmt: skip

# The paper's abstract (arXiv 2512.19365; quoted in ../shared/spec/README.md): against strong ANNs.
CLAIM = {"energy_ratio": 13.24, "parameter_ratio": 8.4,
         "source": "arXiv 2512.19365 abstract: 13.24x lower inference energy and 8.4x fewer parameters than "
                   "strong ANNs"}  # fmt: skip


@dataclass
class ConventionEnergy:
    """One convention's prices of one measurement: per layer and per NI-LIF in pJ, totals in mJ, per image."""

    convention: Convention
    layers: list[dict[str, Any]]
    neurons: list[dict[str, Any]]
    totals: dict[str, Any]
    references: list[dict[str, Any]]
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "convention": asdict(self.convention), "totals": self.totals, "references": self.references,
            "verdict": self.verdict, "layers": self.layers, "neurons": self.neurons,
        }  # fmt: skip


def spike_bits(levels: int, time_steps: int) -> int:
    """Bits of one integer spike count 0..D*T: ceil(log2(D*T + 1)), exactly (3 for D=4, T=1)."""
    return (levels * time_steps).bit_length()


def price(
    convention: Convention,
    layers: list[LayerEnergy],
    neurons: list[NeuronStats],
    *,
    images: int,
    levels: int,
    time_steps: int,
    image_size: tuple[int, int],
) -> ConventionEnergy:
    """Price measured per-image layer rows and NI-LIF statistics (gathered over `images` images) under one
    convention, with the ANN of the same shape and the reference ANNs at `image_size` (H, W)."""
    c, bits = convention, spike_bits(levels, time_steps)
    rows = [
        {"name": layer.name, "snn_compute_pj": c.snn_compute_pj(layer), "snn_memory_pj": c.snn_memory_pj(layer, bits),
         "ann_compute_pj": c.e_ann_mac_pj * layer.macs, "ann_memory_pj": c.ann_memory_pj(layer)}
        for layer in layers
    ]  # fmt: skip
    steps = levels * time_steps
    cells = [{"name": n.name, "updates": n.elements / images * steps,
              "energy_pj": c.e_neuron_update_pj * n.elements / images * steps} for n in neurons]  # fmt: skip
    snn_compute = sum(r["snn_compute_pj"] for r in rows)
    snn_memory = sum(r["snn_memory_pj"] for r in rows)
    snn_neurons = sum(n["energy_pj"] for n in cells)
    snn = snn_compute + snn_neurons + snn_memory
    ann_compute = c.e_ann_mac_pj * sum(layer.macs for layer in layers)
    ann_memory = sum(r["ann_memory_pj"] for r in rows)
    ann = ann_compute + ann_memory
    totals: dict[str, Any] = {
        "snn_mj": snn * 1e-9, "snn_compute_mj": snn_compute * 1e-9, "snn_neurons_mj": snn_neurons * 1e-9,
        "snn_memory_mj": snn_memory * 1e-9, "ann_mj": ann * 1e-9, "ann_compute_mj": ann_compute * 1e-9,
        "ann_memory_mj": ann_memory * 1e-9, "ann_over_snn": ann / snn if snn else float("inf"),
        "neuron_updates": sum(n["updates"] for n in cells), "spike_bits": bits,
    }  # fmt: skip
    if c.integer_as_one_op:
        totals["snn_integer_as_one_op_mj"] = sum(c.snn_one_op_pj(layer) for layer in layers) * 1e-9
    scale = image_size[0] * image_size[1] / 224**2
    references = []
    for ref in REFERENCE_ANNS:
        compute, memory = c.e_ann_mac_pj * ref.macs_224 * scale, c.e_sram_bit_pj * WEIGHT_BITS * ref.parameters
        references.append({
            "name": ref.name, "macs": ref.macs_224 * scale, "macs_scale": scale, "parameters": ref.parameters,
            "compute_mj": compute * 1e-9, "memory_mj": memory * 1e-9, "energy_mj": (compute + memory) * 1e-9,
            "lower_bound": c.e_sram_bit_pj > 0, "ann_over_snn": (compute + memory) / snn if snn else float("inf"),
            "source": ref.source,
        })  # fmt: skip
    verdict = _verdict(c.name, totals["snn_mj"], [("the ANN of the same shape", totals["ann_over_snn"], False)] + [
        (r["name"], r["ann_over_snn"], r["lower_bound"]) for r in references])  # fmt: skip
    return ConventionEnergy(c, rows, cells, totals, references, verdict)


def _verdict(name: str, snn_mj: float, comparisons: list[tuple[str, float, bool]]) -> str:
    """Plain sentences: is the SNN below each ANN (ratio ANN/SNN > 1) and by how much, does the claim "lower
    energy than these ANNs" hold, and is the paper's factor reached. A ratio against a lower-bound ANN energy is
    itself a lower bound: above 1 it proves the point, below 1 it decides nothing."""
    parts, failed, open_ = [], [], []
    for label, ratio, lower in comparisons:
        if ratio > 1:
            parts.append(f"{'at least ' if lower else ''}{ratio:.2f}x below {label}")
        elif lower:
            parts.append(f"not shown below {label} (its lower bound is {1 / ratio:.2f}x below the SNN)")
            open_.append(label)
        else:
            parts.append(f"{1 / ratio:.2f}x ABOVE {label}")
            failed.append(label)
    if failed:
        outcome = f"does NOT hold (the SNN costs more than {', '.join(failed)})"
    elif open_:
        outcome = f"is not decided for {', '.join(open_)} (lower bounds only)"
    else:
        outcome = "holds"
    target = CLAIM["energy_ratio"]
    reached = [label for label, ratio, _ in comparisons if ratio >= target]
    return (f"{name}: the SNN costs {snn_mj:.4f} mJ per image, {'; '.join(parts)}. Lower energy than these ANNs: "
            f"{outcome}; the paper's {target}x is reached against {', '.join(reached) if reached else 'none of them'}.")
