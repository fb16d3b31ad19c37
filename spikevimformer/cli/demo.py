"""`spikevimformer demo`: the main job on the embedded synthetic world, ending in OUT/report.html."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..fileio import next_free_folder, refuse_overwrite
from .common import image_size, positive_int

DEFAULT_OUT = Path("runs/demo")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="generate a world, train, evaluate, measure energy, localize, write a report")
    p.add_argument("--out", help="output folder (report.html inside; default runs/demo, or runs/demo-2, ... when "
                                 "that holds an earlier demo)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out (default: refuse)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None, help="training budget of each run (default 5)")
    budget.add_argument("--steps", type=positive_int, default=None,
                        help="or exactly this many optimizer steps per run, the cosine annealed over them")
    p.add_argument("--epochs", type=int, default=None, help="upper bound on epochs of each run")
    p.add_argument("--image-size", type=image_size, default=None, help="training and evaluation size (default 64)")
    p.add_argument("--device", default="auto")
    p.add_argument("--from-scratch", action="store_true", help="do not start from the shipped pretrained checkpoint")
    p.add_argument("--no-scratch-comparison", action="store_true", help="skip the from-scratch comparison run")
    p.add_argument("--localize-image-size", type=int, default=None,
                   help="also localize the same world photographed again at this size (default 256; 0: off)")
    p.add_argument("--toy", action="store_true", help="seconds-long sizes through the same code path (tests)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import DEMO_FILES, DemoConfig, run_demo

    if args.out is None:
        out = next_free_folder(DEFAULT_OUT, DEMO_FILES)
        if out != DEFAULT_OUT:
            print(f"{DEFAULT_OUT} holds an earlier demo; this one goes to {out}", file=sys.stderr)
    else:
        out = Path(args.out)
        refuse_overwrite([out / name for name in DEMO_FILES], args.overwrite)
    cfg = DemoConfig.toy(str(out)) if args.toy else DemoConfig(out_dir=str(out))
    if args.minutes is not None:  # a time budget replaces the toy's steps
        cfg.steps = 0
    for key, value in (("minutes", args.minutes), ("steps", args.steps), ("epochs", args.epochs),
                       ("image_size", args.image_size),
                       ("localize_image_size", args.localize_image_size)):
        if value is not None:
            setattr(cfg, key, value)
    cfg.device = args.device
    cfg.from_scratch = args.from_scratch
    cfg.compare_scratch = not args.no_scratch_comparison
    run_demo(cfg)
    return 0
