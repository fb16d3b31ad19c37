"""`spikevimformer adapt --ortho AREA`: fine-tune on views rendered from the user's orthophoto, index it, report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engine.signals import Interrupted
from .common import add_overwrite, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    from ..adapt import AdaptConfig

    d = AdaptConfig(ortho="")
    p = sub.add_parser("adapt", help="orthophoto of your area -> fine-tuned model, whole-area index, before/after")
    p.add_argument("--ortho", required=True, help="the area: a GeoTIFF, or an image with a world file beside it "
                   "(or --world-file), or any RGB image with --gsd (and --origin)")  # fmt: skip
    p.add_argument("--out", default=d.out_dir, help="output folder (report.html, report.json, finetune/, index/)")
    p.add_argument("--world-file", help="its world file, when not beside the image")
    p.add_argument("--crs", help="coordinate system of the world file (EPSG:4326, EPSG:3857, UTM:33N, EPSG:2056, ...)")
    p.add_argument("--gsd", type=float, help="metres per pixel, for an image without a world file")
    p.add_argument("--origin", type=float, nargs=2, metavar=("LAT", "LON"),
                   help="latitude/longitude of the north-west corner, for an image without a world file")
    p.add_argument("--dsm", metavar="DSM.tif",
                   help="surface heights of the area in metres (a GeoTIFF in any CRS): the views are rendered over "
                        "its terrain and buildings, and the index lifts matches through it (index build --dsm)")
    p.add_argument("--dsm-units", choices=("m", "ft"), help="the DSM's heights, when its CRS is feet-based")
    p.add_argument("--heights", metavar="IMAGE", help="or the surface heights as an image aligned with --ortho "
                                                      "pixel for pixel (grey level = metres)")  # fmt: skip
    p.add_argument("--init", default=d.init, metavar="NAME_OR_FILE",
                   help="the weights to adapt, as train --init: a shipped model's name or a checkpoint")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=d.minutes,
                        help="fine-tuning budget (the cosine fits it; default %(default)g)")
    budget.add_argument("--steps", type=positive_int, default=d.steps or None,
                        help="or exactly this many optimizer steps, the cosine annealed over them")
    p.add_argument("--locations", type=int, default=d.locations,
                   help="training locations to render (at most as many as fit --spacing-m apart)")
    p.add_argument("--spacing-m", type=float, help="least distance between training locations, metres "
                   "(default: a quarter of --footprint-m; at least a sixteenth)")  # fmt: skip
    p.add_argument("--views", type=int, default=d.views, help="drone views per location")
    p.add_argument("--altitude", type=float, nargs=2, default=d.altitudes_m, metavar=("MIN", "MAX"),
                   help="drone height above ground of the rendered views, metres")
    p.add_argument("--pitch", type=float, nargs=2, default=d.pitch_deg, metavar=("MIN", "MAX"),
                   help="camera depression below the horizon, degrees")
    p.add_argument("--fov", type=float, metavar="DEG", help="the drone lens (default: one framing about a tile)")
    p.add_argument("--like", metavar="PHOTO", help="take the lens from this drone photo's EXIF focal length")
    p.add_argument("--heldout-locations", type=int, default=d.heldout_locations,
                   help="locations of the held-out views (another seed)")
    p.add_argument("--footprint-m", type=float, default=d.footprint_m, help="tile ground side in metres")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workers", type=int, default=d.workers, help="rendering and data-loading processes")
    p.add_argument("--device", default=d.device)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..adapt import AdaptConfig, adapt, lens_of, summary
    from ..fileio import refuse_overwrite

    if not Path(args.ortho).is_file():
        raise FileNotFoundError(f"--ortho {args.ortho} does not exist" if not Path(args.ortho).exists()
                                else f"--ortho {args.ortho} is a folder; give the image file")  # fmt: skip
    if args.world_file and not Path(args.world_file).is_file():
        raise FileNotFoundError(f"--world-file {args.world_file} does not exist")
    out = Path(args.out)
    if not args.resume:
        if not args.overwrite and (out / "finetune/last.pt").is_file() and not (out / "report.json").is_file():
            raise FileExistsError(f"{out} holds an interrupted adapt run: continue it with the same command and "
                                  "--resume, or pass --overwrite to start over")  # fmt: skip
        refuse_overwrite([out / "report.json", out / "finetune/last.pt", out / "index/manifest.json"], args.overwrite)
    fov = lens_of(args.like) if args.like else args.fov
    cfg = AdaptConfig(
        ortho=args.ortho, out_dir=args.out, world_file=args.world_file, crs=args.crs, gsd_m=args.gsd,
        origin=tuple(args.origin) if args.origin else None, heights=args.heights, dsm=args.dsm,
        dsm_units=args.dsm_units, init=args.init,
        minutes=args.minutes, steps=args.steps or 0, footprint_m=args.footprint_m, locations=args.locations,
        spacing_m=args.spacing_m, views=args.views,
        altitudes_m=tuple(args.altitude), pitch_deg=tuple(args.pitch), fov_deg=fov,
        heldout_locations=args.heldout_locations, batch_size=args.batch_size, seed=args.seed, workers=args.workers,
        device=args.device,
    )  # fmt: skip
    try:
        report = adapt(cfg, resume=args.resume, progress=not args.no_progress)
    except KeyboardInterrupt as exc:  # the stages before and after the fine-tune say nothing of their own
        if not isinstance(exc, Interrupted):
            print(f"\nadapt interrupted: run the same command with --resume to continue in {out}", file=sys.stderr)
        raise Interrupted from None
    print(summary(report))
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0
