"""`spikevimformer robustness`: metrics under RandomKeepPatches and the ten weather conditions."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..fileio import atomic_write_text, refuse_overwrite
from .common import add_device, add_image_size, add_model, add_overwrite, load_model, resolve_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("robustness", help="retrieval under masking (RandomKeepPatches) and weather")
    add_model(p)
    p.add_argument("--data-root", required=True)
    p.add_argument("--dataset", default="auto")
    p.add_argument("--altitude", type=int)
    add_image_size(p)
    add_device(p)
    p.add_argument("--keep", type=float, nargs="*", default=[20, 40, 60, 80, 100], help="R: percent of area kept")
    p.add_argument("--patches", type=int, nargs="*", default=[5, 10], help="P: rectangles")
    p.add_argument("--weather", nargs="*", default=None,
                   help="conditions (default: all ten; give none to skip)")
    p.add_argument("--direction", choices=["drone2satellite", "satellite2drone"], default="drone2satellite")
    p.add_argument("--protocol", choices=["paper", "official"], default="paper")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", help="folder for robustness.json and robustness.txt")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.robustness import WEATHER_CONDITIONS
    from ..analysis.robustness_eval import RobustnessSettings, run_robustness
    from ..data import load_benchmark
    from ..metrics import format_metrics_table, save_report

    if args.out:
        refuse_overwrite([Path(args.out) / name for name in ("robustness.json", "robustness.txt")], args.overwrite)
    bench = load_benchmark(args.data_root, args.dataset, args.altitude)
    if args.direction not in bench.test:
        raise ValueError(f"{bench.root} has no {args.direction} test split")
    model, source = load_model(args)
    device = resolve_device(args.device)
    settings = RobustnessSettings(
        keep=tuple(args.keep), patches=tuple(args.patches),
        weather=WEATHER_CONDITIONS if args.weather is None else tuple(args.weather),
        protocol=args.protocol, seed=args.seed,
    )
    rows = run_robustness(model.to(device), bench.test[args.direction], args.image_size, device, settings,
                          batch_size=args.batch_size, workers=args.workers)
    table = format_metrics_table(rows, columns=["condition", "R@1", "R@5", "AP", "dR@1", "dAP", "queries", "gallery"])
    print(f"{bench.name} {args.direction} | {source} | {args.image_size}px | protocol {args.protocol}")
    print(table)
    if args.out:
        out = Path(args.out)
        save_report(out / "robustness.json", {"benchmark": bench.name, "model": source, "direction": args.direction,
                                              "image_size": args.image_size, "rows": rows})
        atomic_write_text(out / "robustness.txt", table + "\n")
    return 0
