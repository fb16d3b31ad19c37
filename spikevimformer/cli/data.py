"""`spikevimformer data check PATH`: the dataset doctor (exit 0 when usable, 1 when not)."""

from __future__ import annotations

import argparse
import json

from ..data.check import check_dataset, format_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect benchmark datasets (University-1652, SUES-200)")
    actions = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    c = actions.add_parser("check", help="counts against the published ones, empty folders, bad images, "
                                         "one-view ids, the SUES-200 split bug")
    c.add_argument("path", help="dataset folder or its parent (University-Release / SUES-200 archive names work)")
    c.add_argument("--dataset", default="auto", choices=("auto", "university1652", "sues200"),
                   help="layout to expect (default: detect)")
    c.add_argument("--altitude", type=int, default=None, help="SUES-200 altitude to check (default: all present)")
    c.add_argument("--full", action="store_true", help="decode every image (slow) instead of the quick check")
    c.add_argument("--no-images", action="store_true", help="skip the per-image integrity check")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    report = check_dataset(args.path, args.dataset, args.altitude, full=args.full,
                           check_images=not args.no_images, progress=not args.json)
    if args.json:
        print(json.dumps({
            "dataset": report.dataset, "root": str(report.root), "usable": report.usable,
            "rows": [{"folder": r.split, "locations": r.locations, "images": r.images, "empty": r.empty,
                      "published": r.published, "status": r.status} for r in report.rows],
            "errors": report.errors, "warnings": report.warnings, "notes": report.notes,
            "empty_folders": [str(p) for p in report.empty_folders],
            "bad_images": [{"path": str(p), "reason": why} for p, why in report.bad_images],
            "odd_shapes": [{"path": str(p), "reason": why} for p, why in report.odd_shapes],
            "images_checked": report.images_checked,
        }, indent=2))
    else:
        print(format_report(report))
    return 0 if report.usable else 1
