"""Exact integer-spike int8 ONNX: NI-LIF outputs become uint8 spike counts, convolutions integer arithmetic.

Every NI-LIF output is an integer count 0..D divided by D, so a spike tensor is exactly a uint8 with scale 1/D and
zero point 0: no calibration, no activation rounding. The rewrite of an exported (BN-folded) graph:

- NI-LIF ``Round -> Clip(0, D) -> Div(D)`` becomes ``QuantizeLinear(scale 1) -> Clip(0, D)`` on uint8: the same
  round-half-to-even and the same saturation, now producing the count directly.
- A convolution that reads spikes and feeds an NI-LIF becomes ``QLinearConv`` (uint8 counts x per-channel int8
  weights, int32 accumulation and bias) whose requantisation scale is 1, so its uint8 output *is* the rounded
  membrane, clipped to 0..D by the next node: the NI-LIF is fused into the integer convolution.
- A 1x1 convolution that reads spikes and feeds the real-valued residual stream becomes a MatMul of dequantised
  counts and int8 weights, which ONNX Runtime runs as one integer ``MatMulIntegerToFloat`` (float output).
- Kept in float, where precision or speed needs it: the stem (it sees pixels), 3x3 and strided convolutions on the
  residual stream (with every spike convolution as ONNX Runtime's CPU ``ConvInteger``, tiny at 384 px ran 5x
  slower than in fp32), the second attention product (its K^T V input is not a spike tensor), the pooling and the
  L2 normalisation of the descriptor.

The only approximation is the weights: symmetric per-output-channel int8, scale max|w| / 127, with the bias rounded
to the accumulator's scale. Weights already on that grid give bit-identical spikes (tests/test_spike_int8.py).
ONNX Runtime's own quantiser calibrates activation ranges; here the ranges are known exactly, which is the point.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

QUANTIZATION = "spike-int8"


@dataclass
class Int8Summary:
    """What the rewrite did: layer counts by how they run, and the float layers by name."""

    neurons: int = 0
    integer_convs: int = 0  # QLinearConv, NI-LIF fused
    integer_matmuls: int = 0  # 1x1 convs as MatMulIntegerToFloat
    float_convs: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.neurons} NI-LIF as uint8 counts, {self.integer_convs} QLinearConv, "
                f"{self.integer_matmuls} integer 1x1 MatMul, {len(self.float_convs)} convolutions in fp32 "
                "(stem, 3x3/strided residual)")  # fmt: skip


def _per_channel_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 weights and their scales (max |w| / 127; 1 for an all-zero channel)."""
    flat = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float64)
    scale = np.where(flat > 0, flat / 127.0, 1.0)
    q = np.clip(np.round(w / scale.reshape(-1, *([1] * (w.ndim - 1)))), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


class _Graph:
    """Name lookups over one ONNX graph and the initializers the rewrite adds."""

    def __init__(self, model) -> None:
        from onnx import numpy_helper

        self.model, self.graph = model, model.graph
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in self.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.values = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        for n in self.graph.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        for n in self.graph.node:  # the exporter shares equal weights through Identity nodes
            if n.op_type == "Identity" and n.input[0] in self.values:
                self.values[n.output[0]] = self.values[n.input[0]]
        self.added: list = []

    def only_consumer(self, name: str, op_type: str):
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    def scalar(self, name: str) -> float | None:
        value = self.values.get(name)
        return None if value is None or value.size != 1 else float(value.reshape(()))

    def constant(self, array: np.ndarray, name: str) -> str:
        """Add an initializer once; a second request for the same name must carry the same value."""
        from onnx import numpy_helper

        if name in self.values:
            if not np.array_equal(self.values[name], array):
                raise ValueError(f"int8 rewrite: two different constants named {name}")
            return name
        self.values[name] = array
        self.added.append(numpy_helper.from_array(array, name))
        return name


@dataclass
class _Neuron:
    """One NI-LIF in the float graph: membrane `u` -> spikes `s` = clip(round(u), 0, D) / D."""

    round_node: object
    clip_node: object
    div_node: object
    levels: int

    @property
    def membrane(self) -> str:
        return self.round_node.input[0]

    @property
    def spikes(self) -> str:
        return self.div_node.output[0]


def _neurons(g: _Graph) -> dict[str, _Neuron]:
    """Every NI-LIF of the graph by its spike tensor; a Round in any other pattern is refused."""
    found = {}
    for n in g.graph.node:
        if n.op_type != "Round":
            continue
        clip = g.only_consumer(n.output[0], "Clip")
        div = g.only_consumer(clip.output[0], "Div") if clip is not None else None
        low = g.scalar(clip.input[1]) if clip is not None and len(clip.input) > 2 else None
        high = g.scalar(clip.input[2]) if clip is not None and len(clip.input) > 2 else None
        levels = g.scalar(div.input[1]) if div is not None else None
        valid = levels is not None and levels == int(levels) and 1 <= levels <= 255
        if div is None or low != 0 or not valid or high != levels:
            raise ValueError(f"{n.name} is not an NI-LIF (Round -> Clip(0, D) -> Div(D), 1 <= D <= 255) as exported "
                             "with T = 1; the int8 rewrite supports only that form")  # fmt: skip
        found[div.output[0]] = _Neuron(n, clip, div, int(levels))
    return found


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _is_pointwise(node, weight: np.ndarray) -> bool:
    a = _attrs(node)
    steps = [*a.get("strides", []), *a.get("dilations", [])]
    ones = all(k == 1 for k in weight.shape[2:]) and all(v == 1 for v in steps)
    return ones and a.get("group", 1) == 1 and not any(a.get("pads", []))


def quantize_spikes(src: str | Path, dst: str | Path) -> Int8Summary:
    """Rewrite the fp32 ONNX model `src` (from `export_onnx`) into the integer-spike int8 model `dst`.

    Raises ValueError when the graph has no NI-LIF in the exported form (e.g. T > 1) or a spike-reading convolution
    has no weight initializer. `dst` is written atomically, with the source's metadata plus `quantization`.
    """
    import onnx
    from onnx import helper

    from .fileio import atomic_write

    model = onnx.load(str(src))
    g = _Graph(model)
    neurons = _neurons(g)
    if not neurons:
        raise ValueError(f"{src} has no NI-LIF neurons to quantise")
    summary = Int8Summary(neurons=len(neurons))
    zero_u8 = g.constant(np.array(0, np.uint8), "int8/zero_u8")
    one = g.constant(np.array(1.0, np.float32), "int8/one")
    outputs = {o.name for o in g.graph.output}
    counts = {s: f"{s}/counts" for s in neurons}  # uint8 spike count of each NI-LIF
    by_membrane = {nr.membrane: nr for nr in neurons.values()}
    fused = {  # membranes of convs that read spikes and feed only an NI-LIF: one QLinearConv each
        n.output[0] for n in g.graph.node
        if n.op_type == "Conv" and n.input[0] in neurons and n.output[0] in by_membrane
        and g.only_consumer(n.output[0], "Round") is not None
    }  # fmt: skip
    replaced: dict[int, list] = {}
    dropped: set[int] = set()

    def levels_const(levels: int) -> str:
        return g.constant(np.array(levels, np.uint8), f"int8/levels_{levels}")

    for s, nr in neurons.items():
        nodes = []
        if nr.membrane not in fused:  # a membrane from the residual stream: round and saturate to uint8
            q = f"{s}/rounded"
            nodes += [helper.make_node("QuantizeLinear", [nr.membrane, one, zero_u8], [q]),
                      helper.make_node("Clip", [q, zero_u8, levels_const(nr.levels)], [counts[s]])]  # fmt: skip
        float_users = [u for u in g.consumers.get(s, []) if not (u.op_type == "Conv" and u.output[0] in fused)]
        if float_users or s in outputs:
            inv = g.constant(np.array(1.0 / nr.levels, np.float32), f"{s}/inv_levels")
            nodes.append(helper.make_node("DequantizeLinear", [counts[s], inv, zero_u8], [s]))
        replaced[id(nr.round_node)] = nodes
        dropped.update((id(nr.clip_node), id(nr.div_node)))

    for n in g.graph.node:
        if n.op_type != "Conv":
            continue
        if n.input[0] not in neurons:
            summary.float_convs.append(n.name)
            continue
        if n.input[1] not in g.values:
            raise ValueError(f"{n.name}: its weight is computed in the graph, not stored; cannot quantise it")
        weight = g.values[n.input[1]].astype(np.float64)
        bias = g.values[n.input[2]].astype(np.float64) if len(n.input) > 2 and n.input[2] else np.zeros(weight.shape[0])
        name = n.name.strip("/").replace("/", ".")
        spikes = neurons[n.input[0]]
        if n.output[0] in fused:
            target = by_membrane[n.output[0]]
            wq, ws = _per_channel_int8(weight)
            acc_scale = ws.astype(np.float64) / spikes.levels  # int32 accumulator step: (1/D) x weight scale
            bq = np.round(bias / acc_scale)
            if np.abs(bq).max(initial=0) >= 2**31:
                raise ValueError(f"{n.name}: bias does not fit the int32 accumulator at scale {acc_scale.min():.3g}")
            inputs = [counts[spikes.spikes], g.constant(np.array(1.0 / spikes.levels, np.float32), f"{name}/x_scale"),
                      zero_u8, g.constant(wq, f"{name}/w_int8"), g.constant(ws, f"{name}/w_scale"),
                      g.constant(np.zeros(len(ws), np.int8), f"{name}/w_zero"), one, zero_u8,
                      g.constant(bq.astype(np.int32), f"{name}/bias_int32")]  # fmt: skip
            rounded = f"{n.output[0]}/rounded"
            replaced[id(n)] = [helper.make_node("QLinearConv", inputs, [rounded], name=f"{name}/int8", **_attrs(n)),
                               helper.make_node("Clip", [rounded, zero_u8, levels_const(target.levels)],
                                                [counts[target.spikes]])]  # fmt: skip
            summary.integer_convs += 1
        elif _is_pointwise(n, weight):
            replaced[id(n)] = _pointwise_matmul(g, n, weight, bias, name)
            summary.integer_matmuls += 1
        else:
            summary.float_convs.append(n.name)

    nodes = [m for n in g.graph.node if id(n) not in dropped for m in replaced.get(id(n), [n])]
    _set_nodes(g, nodes)
    meta = next((p.value for p in model.metadata_props if p.key == "spikevimformer"), None)
    if meta is not None:
        info = {**json.loads(meta), "quantization": QUANTIZATION,
                "int8_layers": {"qlinearconv": summary.integer_convs, "matmul_integer": summary.integer_matmuls,
                                "float_convs": len(summary.float_convs)}}  # fmt: skip
        for p in model.metadata_props:
            if p.key == "spikevimformer":
                p.value = json.dumps(info)
    onnx.checker.check_model(model)

    def write(tmp: str) -> None:
        onnx.save(model, tmp)

    atomic_write(dst, write, suffix=".onnx")
    return summary


def _pointwise_matmul(g: _Graph, node, weight: np.ndarray, bias: np.ndarray, name: str) -> list:
    """A 1x1 conv on spikes as (B, N, Cin) x int8 (Cin, Cout): ONNX Runtime fuses DQ -> MatMul into integer GEMM."""
    from onnx import helper

    cout, cin = weight.shape[:2]
    wq, ws = _per_channel_int8(weight.reshape(cout, cin))
    x = node.input[0]
    t = f"{name}/mm"
    return [
        helper.make_node("Reshape", [x, g.constant(np.array([0, cin, -1], np.int64), f"{t}/flat")], [f"{t}/x"]),
        helper.make_node("Transpose", [f"{t}/x"], [f"{t}/xt"], perm=[0, 2, 1]),
        helper.make_node("DequantizeLinear", [g.constant(np.ascontiguousarray(wq.T), f"{t}/w_int8"),
                                              g.constant(ws, f"{t}/w_scale"),
                                              g.constant(np.zeros(cout, np.int8), f"{t}/w_zero")], [f"{t}/w"], axis=1),
        helper.make_node("MatMul", [f"{t}/xt", f"{t}/w"], [f"{t}/y"]),
        helper.make_node("Add", [f"{t}/y", g.constant(bias.astype(np.float32), f"{t}/bias")], [f"{t}/yb"]),
        helper.make_node("Transpose", [f"{t}/yb"], [f"{t}/yt"], perm=[0, 2, 1]),
        helper.make_node("Shape", [x], [f"{t}/in_shape"]),
        helper.make_node("ScatterElements", [f"{t}/in_shape", g.constant(np.array([1], np.int64), f"{t}/axis1"),
                                             g.constant(np.array([cout], np.int64), f"{t}/cout")], [f"{t}/out_shape"]),
        helper.make_node("Reshape", [f"{t}/yt", f"{t}/out_shape"], [node.output[0]]),
    ]  # fmt: skip


def _set_nodes(g: _Graph, nodes: list) -> None:
    """Replace the graph's nodes (topologically sorted) and initializers (unused ones dropped)."""
    graph = g.graph
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {t.name for t in g.added} | {""}
    ordered, pending = [], nodes
    while pending:
        waiting = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                waiting.append(n)
        if len(waiting) == len(pending):
            raise ValueError(f"int8 rewrite left {waiting[0].op_type} {waiting[0].name} without its inputs")
        pending = waiting
    used = {i for n in ordered for i in n.input} | {o.name for o in graph.output}
    ordered = [n for n in ordered if n.op_type != "Constant" or any(o in used for o in n.output)]
    inits = [t for t in [*graph.initializer, *g.added] if t.name in used]
    del graph.node[:]
    graph.node.extend(ordered)
    del graph.initializer[:]
    graph.initializer.extend(inits)

