"""Gallery-scale benchmark: build and query a faiss index of clustered 360-d descriptors.

Descriptors are not uniform noise: seed descriptors come from the SpikeViMFormer-S model
(seeded, BN-calibrated random init: no trained weights ship with the repo) run on procedural
aerial-like images; cluster centres are random mixtures of seeds, and gallery tiles are noisy
copies around the centres (like overlapping tiles of one area). Queries are fresh noisy copies.

    python benchmarks/gallery.py --size 1000000
    python benchmarks/gallery.py --size 100000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spikevimformer.geo.index import IndexConfig, _exact_topk, build_faiss, recall_at  # noqa: E402


def rss_gb() -> float:
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    return kb / 2**20


def procedural_images(n: int, size: int, seed: int) -> np.ndarray:
    """Fields, roads and roofs: random rectangles and lines on a textured background, as (n, 3, S, S)."""
    from PIL import Image, ImageDraw

    from spikevimformer.geo.imaging import preprocess

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        base = rng.integers(40, 200, 3)
        arr = np.clip(base + rng.normal(0, 18, (size, size, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        draw = ImageDraw.Draw(img)
        for _ in range(rng.integers(3, 12)):
            x0, y0 = rng.integers(0, size, 2)
            w, h = rng.integers(4, size // 2, 2)
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        for _ in range(rng.integers(1, 4)):
            draw.line([tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(2)],
                      fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=int(rng.integers(2, 6)))  # fmt: skip
        images.append(img)
    return preprocess(images, size)


def seed_descriptors(n: int, size: int, seed: int) -> np.ndarray:
    import torch

    from spikevimformer.checkpoint import load_model

    model, _ = load_model(None, "small")
    x = torch.from_numpy(procedural_images(n, size, seed))
    with torch.inference_mode():
        return np.concatenate([model.encode(x[i : i + 32]).numpy() for i in range(0, n, 32)])


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_gallery(args, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres = mixtures of 3 seed descriptors + noise; tiles and queries = noisy copies of centres."""
    rng = np.random.default_rng(args.seed)
    dim = seeds.shape[1]
    # Noise amplitudes are relative to the spread of the seeds around their mean, so clusters neither
    # collapse (random-init descriptors share a large common component) nor drown in noise.
    centred = seeds - seeds.mean(0)
    spread = float(np.linalg.norm(centred, axis=1).mean())
    mix = rng.dirichlet(np.ones(3), args.centres).astype(np.float32)
    picks = rng.integers(0, len(seeds), (args.centres, 3))
    centres = seeds.mean(0) + np.einsum("nk,nkd->nd", mix, centred[picks]) * 1.5
    centres += rng.standard_normal((args.centres, dim)).astype(np.float32) * (args.centre_noise * spread / np.sqrt(dim))
    centres = _unit(centres)
    sigma = args.tile_noise * spread / np.sqrt(dim)
    gallery = np.empty((args.size, dim), dtype=np.float32)
    owner = rng.integers(0, args.centres, args.size)
    for start in range(0, args.size, 100_000):
        stop = min(start + 100_000, args.size)
        noise = rng.standard_normal((stop - start, dim)).astype(np.float32) * sigma
        gallery[start:stop] = _unit(centres[owner[start:stop]] + noise)
    q_owner = rng.integers(0, args.centres, args.queries)
    queries = _unit(centres[q_owner] + rng.standard_normal((args.queries, dim)).astype(np.float32) * sigma)
    return gallery, queries, centres


def latencies(index, queries: np.ndarray, k: int, batch: int) -> list[float]:
    out = []
    for start in range(0, len(queries) - batch + 1, batch):
        q = queries[start : start + batch]
        t = time.perf_counter()
        index.search(q, k)
        out.append(time.perf_counter() - t)
    return out


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1_000_000, help="gallery tiles")
    p.add_argument("--centres", type=int, default=None, help="clusters (default size / 50)")
    p.add_argument("--seeds", type=int, default=256, help="procedural images run through the model")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--kind", default="ivf", choices=("ivf", "hnsw", "flat"))
    p.add_argument("--nlist", type=int, default=None)
    p.add_argument("--nprobe", type=int, default=None, help="default: calibrated to recall@10 >= 0.95")
    p.add_argument("--centre-noise", type=float, default=0.3)
    p.add_argument("--tile-noise", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the numbers here too")
    args = p.parse_args()
    args.centres = args.centres or max(10, args.size // 50)

    import faiss

    info = {"size": args.size, "dim": 360, "centres": args.centres, "queries": args.queries, "kind": args.kind,
            "cpu": platform.processor() or platform.machine(), "os_cpus": os.cpu_count(),
            "faiss_threads": faiss.omp_get_max_threads(), "faiss": faiss.__version__}  # fmt: skip
    t = time.perf_counter()
    seeds = seed_descriptors(args.seeds, args.image_size, args.seed)
    info["seed_descriptors_s"] = time.perf_counter() - t
    gallery, queries, _ = make_gallery(args, seeds)
    nn = _exact_topk(queries[:200], gallery, 2)
    info["mean_cos_query_top1"] = float(np.mean(np.sum(queries[:200] * gallery[nn[:, 0]], axis=1)))
    info["mean_cos_random_pair"] = float(np.mean(np.sum(gallery[:1000] * gallery[-1000:], axis=1)))
    print(f"gallery {args.size} x 360, {args.centres} centres; cos(query, its NN) {info['mean_cos_query_top1']:.3f}, "
          f"cos(random pair) {info['mean_cos_random_pair']:.3f}; threads {info['faiss_threads']}", flush=True)

    t = time.perf_counter()
    exact = _exact_topk(queries, gallery, 10)
    info["exact_groundtruth_s"] = time.perf_counter() - t

    rss0 = rss_gb()
    peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t = time.perf_counter()
    cfg = IndexConfig(kind=args.kind, nlist=args.nlist, nprobe=args.nprobe, exact_max=0)
    state = build_faiss(gallery, cfg)
    info["build_s"] = time.perf_counter() - t
    info["index_rss_gb"] = rss_gb() - rss0
    info["descriptors_gb"] = gallery.nbytes / 2**30
    info["peak_rss_gb"] = max(peak0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    info["params"] = state.params
    print(f"build {info['build_s']:.1f} s, index memory +{info['index_rss_gb']:.2f} GB, params {state.params}",
          flush=True)  # fmt: skip

    index = state.index
    info["recall@10"] = recall_at(index.search(queries, 10)[1], exact)
    info["recall@1"] = float(np.mean(index.search(queries, 1)[1][:, 0] == exact[:, 0]))
    runs: dict[str, list[dict]] = {}
    for batch in (1, 32, 256):
        for _ in range(args.repeats):
            lat = latencies(index, queries, 10, batch)
            runs.setdefault(str(batch), []).append({"p50_ms": pct(lat, 50) * 1e3, "p95_ms": pct(lat, 95) * 1e3})
    info["latency"] = {
        b: {k: statistics.median(r[k] for r in rs) for k in ("p50_ms", "p95_ms")} | {"repeats": len(rs)}
        for b, rs in runs.items()
    }
    if args.kind != "flat":  # the exact baseline for a sense of scale
        flat = faiss.IndexFlatIP(360)
        flat.add(gallery)
        lat = latencies(flat, queries[:100], 10, 1)
        info["exact_single_p50_ms"] = pct(lat, 50) * 1e3
        del flat
    print(f"recall@10 {info['recall@10']:.4f} (recall@1 {info['recall@1']:.4f}) vs exact")
    print(f"{'batch':>6} {'p50 ms':>9} {'p95 ms':>9} {'p50 ms/query':>13}   (median of {args.repeats} runs)")
    for b, row in info["latency"].items():
        print(f"{b:>6} {row['p50_ms']:>9.3f} {row['p95_ms']:>9.3f} {row['p50_ms'] / int(b):>13.4f}")
    if "exact_single_p50_ms" in info:
        print(f"exact (IndexFlatIP) single query p50: {info['exact_single_p50_ms']:.2f} ms")
    target = info["latency"]["1"]["p50_ms"] < 10 and info["recall@10"] >= 0.95
    print(f"target p50 < 10 ms at recall@10 >= 0.95: {'met' if target else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
