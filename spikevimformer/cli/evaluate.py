"""`spikevimformer evaluate`: Recall@K and AP of both directions, under the chosen protocols."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..fileio import atomic_write_text, refuse_overwrite
from .common import add_device, add_image_size, add_model, add_overwrite, load_model, resolve_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="retrieval metrics on University-1652, SUES-200 or a synthetic world")
    add_model(p)
    p.add_argument("--data-root", required=True, help="dataset folder (or its parent)")
    p.add_argument("--dataset", default="auto", help="auto | university1652 | sues200 | sues200-<altitude>")
    p.add_argument("--altitude", type=int, help="SUES-200 altitude (150, 200, 250, 300)")
    add_image_size(p)
    add_device(p)
    p.add_argument("--protocol", choices=["paper", "official", "both"], default="paper",
                   help="paper: gallery classes absent from the queries removed; official: full gallery")
    p.add_argument("--ap", choices=["published", "textbook"], default="published", help="AP convention")
    p.add_argument("--direction", choices=["drone2satellite", "satellite2drone", "both"], default="both")
    p.add_argument("--flip", action="store_true", help="test-time flip (descriptor of image + mirror)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip-bad-images", action="store_true",
                   help="encode unreadable images as black and list them, instead of stopping at the first")
    p.add_argument("--cache", help="folder for cached descriptors (re-scoring is then free)")
    p.add_argument("--out", help="folder for metrics.json and metrics.txt")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import load_benchmark
    from ..engine.evaluate import evaluate_sets
    from ..metrics import format_metrics_table, save_report

    if args.out:
        refuse_overwrite([Path(args.out) / name for name in ("metrics.json", "metrics.txt")], args.overwrite)
    bench = load_benchmark(args.data_root, args.dataset, args.altitude)
    model, source = load_model(args)
    device = resolve_device(args.device)
    model.to(device)
    pairs = {d: s for d, s in bench.test.items() if args.direction in ("both", d)}
    if not pairs:
        raise ValueError(f"{bench.root} has no test split for {args.direction}")
    protocols = ("paper", "official") if args.protocol == "both" else (args.protocol,)
    start = time.monotonic()
    rows = evaluate_sets(model, pairs, args.image_size, device, protocols=protocols, ap=args.ap,
                         batch_size=args.batch_size, workers=args.workers, flip=args.flip, cache_dir=args.cache,
                         on_bad_image="skip" if args.skip_bad_images else "fail")
    header = {
        "benchmark": bench.name, "root": str(bench.root), "model": source, "image_size": args.image_size,
        "flip": args.flip, "device": str(device), "seconds": round(time.monotonic() - start, 1),
    }
    print(f"{bench.name} | {source} | {args.image_size}px | flip {args.flip} | AP {args.ap}")
    print(format_metrics_table(rows))
    if args.out:
        out = Path(args.out)
        save_report(out / "metrics.json", {**header, "rows": rows})
        atomic_write_text(out / "metrics.txt", json.dumps(header) + "\n" + format_metrics_table(rows) + "\n")
        print(f"wrote {out / 'metrics.json'} and {out / 'metrics.txt'}")
    return 0
