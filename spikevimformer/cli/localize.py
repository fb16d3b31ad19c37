"""`spikevimformer localize IMAGE... --index DIR`: photo -> top-k tiles and a position; --evaluate for metrics."""

from __future__ import annotations

import argparse
import json
import sys

from ..fileio import atomic_write_text, refuse_overwrite
from ..geo.localize import format_table
from ..geo.metrics import SDM_CONVENTIONS, TRUTHS, evaluate_localizer, format_report, load_queries, truth_hint
from .common import add_device, add_model, add_overwrite, add_registration, open_localizer_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("localize", help="estimate where drone photos were taken, from a gallery index")
    p.add_argument("images", nargs="*", help="query images")
    p.add_argument("--index", required=True, help="gallery index folder (spikevimformer index build)")
    add_model(p, onnx=True, index=True)
    add_device(p)
    p.add_argument("-k", "--top-k", type=int, default=5,
                   help="tiles to return, verify by registration and fuse into the tile-level estimate")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--evaluate", metavar="WORLD_OR_CSV",
                   help="instead of IMAGE...: a synthetic world (cameras.csv) or a truth CSV: image, latitude, "
                        "longitude [, heading_deg, height_agl_m, altitude_amsl_m, target_latitude, "
                        "target_longitude]; prints camera error, fix and false-fix rates, radius coverage, R@1 "
                        "before and after verification, Dis@K, SDM@K and tile accuracy within 25/50/100 m")  # fmt: skip
    p.add_argument("--truth", default="camera", choices=TRUTHS,
                   help="what --evaluate's latitude/longitude are: the drone camera, the look-at point (the ground "
                        "at the image centre, as UAV-VisLoc's CSV; a world's target columns), or a world's imaged "
                        "tile centre (location)")  # fmt: skip
    p.add_argument("--sdm", default="gta-uav", choices=tuple(SDM_CONVENTIONS),
                   help="SDM@K scale for --evaluate: gta-uav exp(-1e-3 d), d in metres; denseuav exp(-5e3 d), d in "
                        "degrees (the scale is named in the report)")  # fmt: skip
    p.add_argument("--limit", type=int, help="evaluate only the first N queries")
    add_registration(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--out", help="also write the JSON to this file")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if bool(args.images) == bool(args.evaluate):
        raise ValueError("give query images, or --evaluate WORLD_OR_CSV, but not both")
    if args.out:
        refuse_overwrite([args.out], args.overwrite)
    localizer = open_localizer_from_args(args)
    errors: list[tuple[str, str]] = []  # unreadable photos are listed; the others are still answered
    if args.evaluate:
        queries = load_queries(args.evaluate, args.truth)[: args.limit]
        ks = tuple(k for k in (1, 5, 10) if k <= len(localizer.index))
        payload = evaluate_localizer(localizer, queries, ks, args.batch_size, sdm=args.sdm)
        payload.update(protocol="metric-space", truth=args.truth, source=args.evaluate)
        if hint := truth_hint(payload):
            payload.setdefault("notes", []).append(hint)
            print(f"note: {hint}", file=sys.stderr)
        text = format_report(payload)
    else:
        results = localizer.localize_files(args.images, args.batch_size, errors=errors)
        payload = {"backend": localizer.backend, "notes": localizer.notes, "results": [r.to_dict() for r in results],
                   "errors": [{"image": path, "error": message} for path, message in errors]}  # fmt: skip
        text = format_table(results)
    if args.out:
        atomic_write_text(args.out, json.dumps(payload, indent=2))
    if payload.get("results") or args.evaluate:
        print(json.dumps(payload, indent=2) if args.json else text)
    for _, message in errors:
        print(f"spikevimformer localize: error: {message}", file=sys.stderr)
    return 2 if errors else 0

