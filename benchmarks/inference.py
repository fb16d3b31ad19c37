"""Inference speed and peak memory of the descriptor path: PyTorch eager fp32, ONNX Runtime fp32, ONNX int8.

The ONNX models are written by the library (`export_onnx`, BN folded; `quantize_spikes`, the exact integer-spike
int8 rewrite) from the same random-init weights; dense compute does not depend on the weights' values.
Configurations are interleaved round by round so that machine noise hits all of them alike; each figure is the
median over rounds. Peak memory is the peak resident set (VmHWM) of a fresh process that loads one model and
runs one batch.

    python benchmarks/inference.py                        # tiny + small, 64 and 384 px, batch 1 and 8
    python benchmarks/inference.py --variants tiny --sizes 384 --batches 1 --rounds 9
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spikevimformer import build_model
from spikevimformer.export import export_onnx
from spikevimformer.models import VARIANTS
from spikevimformer.spike_int8 import quantize_spikes

BACKENDS = ("eager", "onnx", "int8")

_PEAK = """
import json, sys, numpy as np, torch
backend, variant, onnx_path, size, batch, threads = sys.argv[1:7]
size, batch, threads = int(size), int(batch), int(threads)
torch.set_num_threads(threads)
x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
if backend == "eager":
    from spikevimformer import build_model
from spikevimformer.models import VARIANTS
    model = build_model(variant).eval()
    with torch.inference_mode():
        model.encode(torch.from_numpy(x))
else:
    import onnxruntime as ort
    opts = ort.SessionOptions(); opts.intra_op_num_threads = threads; opts.log_severity_level = 3
    ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"]).run(None, {"images": x})
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"rss_mb": int(hwm.split()[1]) / 1024}))
"""


def peak_memory_mb(backend: str, variant: str, onnx_path: str, size: int, batch: int, threads: int) -> float:
    """Peak resident memory of one model load and one batch, in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", _PEAK, backend, variant, onnx_path, str(size), str(batch),
                          str(threads)], capture_output=True, text=True, check=True).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])["rss_mb"]


class Runner:
    """One backend for one (variant, size): `run(batch)` encodes it and returns the seconds taken."""

    def __init__(self, backend: str, model: torch.nn.Module, onnx_path: Path | None, threads: int) -> None:
        self.backend, self.model = backend, model
        if backend != "eager":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.log_severity_level = 3
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])

    def run(self, images: np.ndarray) -> float:
        start = time.perf_counter()
        if self.backend == "eager":
            with torch.inference_mode():
                self.model.encode(torch.from_numpy(images))
        else:
            self.session.run(None, {"images": images})
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["tiny", "small"])
    p.add_argument("--sizes", nargs="+", type=_size, default=[64, 384], help="input sides, px (multiples of 16)")
    p.add_argument("--batches", nargs="+", type=_positive, default=[1, 8], help="batch sizes")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--rounds", type=_positive, default=5, help="interleaved timing rounds (the median is reported)")
    p.add_argument("--threads", type=_positive, default=2, help="CPU threads of PyTorch and ONNX Runtime")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="spikevimformer-bench-") as tmp:
        run(args, Path(tmp))


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value}")
    return int(value)


def _size(value: str) -> int:
    size = _positive(value)
    if size % 16 or size < 32:
        raise argparse.ArgumentTypeError(f"must be a multiple of 16 and at least 32, got {value}")
    return size


def run(args: argparse.Namespace, tmp: Path) -> None:
    runners: dict[tuple, Runner] = {}
    paths: dict[tuple, Path] = {}
    onnx_needed = any(k != "eager" for k in args.backends)
    for v in args.variants:
        model = build_model(v).eval()
        for s in args.sizes:
            if onnx_needed:
                fp32 = export_onnx(model, tmp / f"{v}-{s}.onnx", s, "benchmark")
                paths[(v, s, "onnx")] = fp32
            if "int8" in args.backends:
                paths[(v, s, "int8")] = tmp / f"{v}-{s}.int8.onnx"
                quantize_spikes(fp32, paths[(v, s, "int8")])
            for backend in args.backends:
                runners[(v, s, backend)] = Runner(backend, model, paths.get((v, s, backend)), args.threads)
    rng = np.random.default_rng(0)
    inputs = {(s, b): rng.standard_normal((b, 3, s, s)).astype(np.float32) for s in args.sizes for b in args.batches}
    configs = [(v, s, b, k) for v in args.variants for s in args.sizes for b in args.batches for k in args.backends]
    for v, s, b, k in configs:  # warm-up
        runners[(v, s, k)].run(inputs[(s, b)])
    times: dict[tuple, list[float]] = {c: [] for c in configs}
    for _ in range(args.rounds):
        for v, s, b, k in configs:
            times[(v, s, b, k)].append(runners[(v, s, k)].run(inputs[(s, b)]))

    cpu = platform.processor() or platform.machine()
    print(f"{cpu}, torch {torch.__version__}, {args.threads} threads, median of {args.rounds} interleaved rounds")
    header = (f"{'variant':<8}{'size':>6}{'batch':>7}  {'backend':<7}{'ms/img':>9}{'img/s':>8}{'x eager':>9}"
              f"{'peak MB':>9}")  # fmt: skip
    print(header)
    print("-" * len(header))
    rows = []
    for v, s, b, k in configs:
        med = statistics.median(times[(v, s, b, k)])
        eager = statistics.median(times[(v, s, b, "eager")]) if "eager" in args.backends else float("nan")
        onnx_path = str(paths.get((v, s, k), ""))
        mem = float("nan") if args.no_memory else peak_memory_mb(k, v, onnx_path, s, b, args.threads)
        row = {"variant": v, "size": s, "batch": b, "backend": k, "ms_per_image": 1e3 * med / b,
               "images_per_s": b / med, "speedup_vs_eager": eager / med, "peak_mb": mem}  # fmt: skip
        rows.append(row)
        print(f"{v:<8}{s:>6}{b:>7}  {k:<7}{row['ms_per_image']:>9.1f}{row['images_per_s']:>8.2f}"
              f"{row['speedup_vs_eager']:>9.2f}{mem:>9.0f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu, "threads": args.threads, "rounds": args.rounds,
                                               "rows": rows}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
