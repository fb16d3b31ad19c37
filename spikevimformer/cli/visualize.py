"""`spikevimformer visualize strips|heatmap|curves`: the pictures people look at, as PNG files."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..fileio import refuse_overwrite
from .common import add_device, add_image_size, add_model, add_overwrite, load_model, resolve_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("visualize", help="retrieval strips, activation heatmaps, training curves (PNG)")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")

    s = kinds.add_parser("strips", help="queries with their top-k gallery images, green right / red wrong")
    add_model(s)
    s.add_argument("--data-root", required=True)
    s.add_argument("--dataset", default="auto")
    s.add_argument("--altitude", type=int)
    s.add_argument("--direction", choices=["drone2satellite", "satellite2drone"], default="drone2satellite")
    s.add_argument("--queries", type=int, default=6, help="how many random queries")
    s.add_argument("--k", type=int, default=5)
    s.add_argument("--seed", type=int, default=0)
    add_image_size(s)
    add_device(s)
    s.add_argument("--out", required=True, help="PNG file")
    add_overwrite(s)
    s.set_defaults(func=run_strips)

    h = kinds.add_parser("heatmap", help="last backbone map's activation blended over each image")
    add_model(h)
    h.add_argument("images", nargs="+")
    add_image_size(h)
    h.add_argument("--out", required=True, help="folder for <image>-heatmap.png")
    add_overwrite(h)
    h.set_defaults(func=run_heatmap)

    c = kinds.add_parser("curves", help="every logged quantity of a run against the step")
    c.add_argument("run", help="run folder (or its log.csv)")
    c.add_argument("--out", help="PNG file (default RUN/curves.png, remade from the log each time)")
    add_overwrite(c)
    c.set_defaults(func=run_curves)


def run_strips(args: argparse.Namespace) -> int:
    from ..analysis.visualize import retrieval_strip
    from ..data import load_benchmark
    from ..engine.evaluate import strip_inputs

    refuse_overwrite([args.out], args.overwrite)
    bench = load_benchmark(args.data_root, args.dataset, args.altitude)
    model, _ = load_model(args)
    device = resolve_device(args.device)
    queries, ranked, correct = strip_inputs(model.to(device), bench.test[args.direction], args.image_size, device,
                                            args.queries, args.k, args.seed)
    print(f"wrote {retrieval_strip(queries, ranked, correct, args.out, k=args.k)}")
    return 0


def run_heatmap(args: argparse.Namespace) -> int:
    from ..analysis.visualize import activation_heatmap
    from ..data import eval_transform, load_rgb

    out = Path(args.out)
    refuse_overwrite([out / f"{Path(p).stem}-heatmap.png" for p in args.images], args.overwrite)
    model, _ = load_model(args)
    transform = eval_transform(args.image_size)
    for path in map(Path, args.images):
        rgb = load_rgb(path)
        png = activation_heatmap(model, transform(rgb)[None], rgb, out / f"{path.stem}-heatmap.png")
        print(f"wrote {png}")
    return 0


def run_curves(args: argparse.Namespace) -> int:
    from ..analysis.visualize import training_curves

    run = Path(args.run)
    log = run / "log.csv" if run.is_dir() else run
    if not log.is_file():
        raise FileNotFoundError(f"no training log at {log}")
    if args.out:
        refuse_overwrite([args.out], args.overwrite)
    print(f"wrote {training_curves(log, args.out or log.parent / 'curves.png')}")
    return 0
