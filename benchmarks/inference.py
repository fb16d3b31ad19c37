"""Inference throughput and peak memory of the descriptor path (eval mode, fp32, eager).

Configurations are interleaved round by round so that machine noise hits all of them alike;
each figure is the median over rounds. Peak memory is measured in a fresh subprocess per
configuration (peak resident set, VmHWM, on CPU, max allocated on CUDA).

    python benchmarks/inference.py                # tiny + small, 384x384, batch 1 and 8
    python benchmarks/inference.py --rounds 3 --sizes 256
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

import torch

from spikevimformer import build_model


def one_forward(model: torch.nn.Module, images: torch.Tensor) -> float:
    if images.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        model(images)
    if images.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def peak_memory_mb(variant: str, size: int, batch: int, device: str) -> float:
    """Peak memory of one forward pass, measured in a fresh interpreter."""
    code = (
        "import json,sys,torch\n"
        "from spikevimformer import build_model\n"
        f"d=torch.device({device!r}); m=build_model({variant!r}).eval().to(d)\n"
        f"x=torch.randn({batch},3,{size},{size},device=d)\n"
        "with torch.inference_mode(): m(x)\n"
        "cuda=torch.cuda.max_memory_allocated()/2**20 if d.type=='cuda' else 0\n"
        "hwm=[l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print(json.dumps({'rss': int(hwm)/1024, 'cuda': cuda}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    return figures["cuda"] if device.startswith("cuda") else figures["rss"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["tiny", "small"])
    p.add_argument("--sizes", nargs="+", type=int, default=[384])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    configs = [(v, s, b) for v in args.variants for s in args.sizes for b in args.batches]
    models = {v: build_model(v).eval().to(device) for v in args.variants}
    inputs = {(s, b): torch.randn(b, 3, s, s, device=device) for s in args.sizes for b in args.batches}
    for v, s, b in configs:  # warm-up
        one_forward(models[v], inputs[(s, b)])
    times: dict[tuple, list[float]] = {c: [] for c in configs}
    for _ in range(args.rounds):
        for v, s, b in configs:
            times[(v, s, b)].append(one_forward(models[v], inputs[(s, b)]))

    cpu = platform.processor() or platform.machine()
    print(f"device {device} ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"fp32 eager, median of {args.rounds} interleaved rounds")
    header = f"{'variant':<8}{'size':>6}{'batch':>7}{'s/batch':>10}{'images/s':>10}{'peak MB':>10}"
    print(header)
    print("-" * len(header))
    rows = []
    for v, s, b in configs:
        med = statistics.median(times[(v, s, b)])
        mem = peak_memory_mb(v, s, b, args.device)
        rows.append({"variant": v, "size": s, "batch": b, "seconds": med, "images_per_s": b / med, "peak_mb": mem})
        print(f"{v:<8}{s:>6}{b:>7}{med:>10.3f}{b / med:>10.2f}{mem:>10.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "threads": torch.get_num_threads(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
