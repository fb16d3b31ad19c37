"""`spikevimformer train`: YAML config + flags + key=value overrides -> a run folder."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from .common import image_size

# flag -> config key; a flag left out keeps the config file's (or the default) value
FLAGS = {
    "data_root": ("--data-root", str, "dataset folder (University-1652, SUES-200, or a synthetic world)"),
    "extra_train_roots": ("--extra-train-roots", str, "more dataset folders whose training pairs join "
                          "--data-root's, e.g. other synthetic worlds (evaluation stays on --data-root)"),
    "out_dir": ("--out", str, "run folder (config, log.csv, last.pt, best.pt); refused while another process "
                "writes it"),
    "variant": ("--variant", str, "tiny or small"),
    "image_size": ("--image-size", image_size, "square training and evaluation size (multiple of 16, >= 32)"),
    "epochs": ("--epochs", int, "number of epochs"),
    "batch_size": ("--batch-size", int, "global pairs per step (over all ranks)"),
    "lr": ("--lr", float, "peak learning rate"),
    "init": ("--init", str, "'scratch', a shipped model's name (pretrained), one of our checkpoints, or "
                        "E-SpikeFormer ImageNet weights"),
    "device": ("--device", str, "auto, cpu or cuda"),
    "max_steps": ("--max-steps", int, "stop after this many steps"),
    "time_limit_min": ("--time-limit", float, "stop cleanly after this many minutes, the final evaluation "
                       "included (of this session; with --anneal-by time, of the whole run)"),
    "anneal_by": ("--anneal-by", str, "steps or time: the cosine ends with the planned steps, or by --time-limit"),
    "workers": ("--workers", int, "data-loading processes"),
    "ssa_objective": ("--ssa-objective", str, "L_SSA: paper (1 - cosine of the pair; a constant SSA output "
                      "minimises it) or infonce (in-batch negatives at a fixed temperature; cannot collapse)"),
    "altitude": ("--altitude", int, "SUES-200 altitude"),
}


def register(sub: argparse._SubParsersAction) -> None:
    from ..engine.config import TrainConfig

    p = sub.add_parser("train", help="train SpikeViMFormer (one device, or many under torchrun)")
    p.add_argument("--config", help="YAML file of settings (see configs/)")
    defaults = TrainConfig()
    for key, (flag, kind, text) in FLAGS.items():
        many = {"nargs": "+", "metavar": "DIR"} if key == "extra_train_roots" else {}
        shown = getattr(defaults, key)
        told = f" (default: {shown}, or the config's)" if shown not in (None, [], "") else ""
        p.add_argument(flag, dest=key, type=kind, default=None, help=text + told, **many)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override any setting, e.g. w_hral=0")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs still written)")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out (default: refuse)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip unreadable images and list them, instead of stopping at the first "
                        "(= --set on_bad_image=skip)")  # fmt: skip
    p.set_defaults(func=run)


def _sets_image_size(given: dict, sets: list[str], config_path) -> bool:
    """Whether the user chose the image size (flag, --set, or the config file), rather than the default."""
    import yaml

    if "image_size" in given or any(s.split("=", 1)[0].strip().replace("-", "_") == "image_size" for s in sets):
        return True
    return config_path is not None and "image_size" in (yaml.safe_load(Path(config_path).read_text()) or {})


def _size_of_init(cfg, chosen: bool):
    """Fine-tune at the size the --init weights were trained at unless the user chose one (then warn if it
    differs), as every other command does."""
    from ..checkpoint import trained_image_size

    trained = trained_image_size(cfg.init)
    if trained is None or trained == cfg.image_size:
        return cfg
    if chosen:
        print(f"warning: image size {cfg.image_size} differs from the {trained} px the --init weights were trained "
              "at", file=sys.stderr)  # fmt: skip
        return cfg
    print(f"image size {trained} px, the size the --init weights were trained at", file=sys.stderr)
    return replace(cfg, image_size=trained)


def run(args: argparse.Namespace) -> int:
    from ..engine.config import TrainConfig, load_config
    from ..engine.trainer import RUN_FILES, train
    from ..fileio import next_free_folder

    if args.resume:
        run = Path(args.resume)
        if not run.exists():
            raise FileNotFoundError(f"--resume {run} does not exist")
        if run.is_dir() and not (run / "last.pt").is_file():
            raise ValueError(f"--resume {run} holds no last.pt: not a run folder, or its run saved nothing yet "
                             f"(start it again with --out {run})")
        if run.is_file() and run.suffix != ".pt":
            raise ValueError(f"--resume {run} is a file; --resume names a run folder (or the last.pt inside it)")
    given = {key: getattr(args, key) for key in FLAGS if getattr(args, key) is not None}
    overrides = [f"{key}={json.dumps(v) if isinstance(v, list) else v}" for key, v in given.items()]
    config_path = args.config
    if args.resume and config_path is None:
        run_dir = Path(args.resume) if Path(args.resume).is_dir() else Path(args.resume).parent
        saved = run_dir / "config.yaml"
        config_path = saved if saved.is_file() else None
    skip = ["on_bad_image=skip"] if args.skip_bad_images else []
    cfg = load_config(config_path, overrides + skip + list(args.set))
    if args.resume is None and cfg.init != "scratch":
        cfg = _size_of_init(cfg, _sets_image_size(given, args.set, config_path))
    if args.resume is None and not args.overwrite and cfg.out_dir == TrainConfig.out_dir:
        fresh = next_free_folder(cfg.out_dir, RUN_FILES)  # no --out: never over an earlier run
        if str(fresh) != cfg.out_dir:
            print(f"{cfg.out_dir} holds an earlier run; this one goes to {fresh}", file=sys.stderr)
            cfg = replace(cfg, out_dir=str(fresh))
    result = train(cfg, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    print(json.dumps({k: v for k, v in result.items() if k != "metrics"}))
    from ..metrics import format_metrics_table

    if result["metrics"]:
        print(format_metrics_table(result["metrics"]))
    return 0
