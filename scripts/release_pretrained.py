"""Turn a pretraining run into the shipped checkpoint: fp16 safetensors + a JSON record with its SHA-256.

    python scripts/release_pretrained.py runs/synth-pretrain [--checkpoint best.pt] [--heldout-seed 20000]

A run started with `--init RUN/last.pt` continues that earlier run: the script follows the chain of
`init` paths back to the run from scratch, so the record and the shipped log hold every stage, with
steps counted on across stages. The record holds the commands, the training summary, and an evaluation
on a held-out synthetic world generated here with a seed no pretraining or demo world uses.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spikevimformer.checkpoint import load_checkpoint, model_from_checkpoint, save_release
from spikevimformer.data import load_benchmark
from spikevimformer.data.synth import SynthConfig, generate_world
from spikevimformer.engine.evaluate import evaluate_sets

RESOURCES = Path(__file__).resolve().parent.parent / "spikevimformer" / "resources"


@dataclass
class Stage:
    """One run of the chain: its checkpoint's step count, log rows up to that step, and settings."""

    checkpoint: Path
    steps: int
    log: list[dict[str, str]]
    config: dict[str, Any]
    history: list[dict[str, Any]]


def stages(checkpoint: Path) -> list[Stage]:
    """The run that wrote `checkpoint`, preceded by the runs its weights came from (oldest first)."""
    payload = load_checkpoint(checkpoint)
    steps = int(payload["train_state"]["progress"]["step"])
    with (checkpoint.parent / "log.csv").open() as f:  # a killed run may have logged past its last checkpoint
        log = [row for row in csv.DictReader(f) if int(row["step"]) <= steps]
    stage = Stage(checkpoint, steps, log, payload["config"], payload["train_state"].get("history", []))
    init = payload["config"]["init"]
    if init == "scratch":
        return [stage]
    source = Path(init)
    if not (source.suffix == ".pt" and (source.parent / "log.csv").is_file()):
        raise SystemExit(f"{checkpoint} started from {init}, which is not a run folder's checkpoint with its "
                         "log.csv beside it; the record must hold every stage, so keep the earlier run folders")
    return stages(source) + [stage]


def joined(chain: list[Stage]) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """Log rows and evaluation history of all stages, steps counted on from stage to stage."""
    log: list[dict[str, str]] = []
    history: list[dict[str, Any]] = []
    offset = 0
    for stage in chain:
        log += [{**row, "step": str(int(row["step"]) + offset)} for row in stage.log]
        history += [{**h, "step": h["step"] + offset} for h in stage.history]
        offset += stage.steps
    return log, history


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--checkpoint", default="last.pt")
    p.add_argument("--heldout-seed", type=int, default=20000)
    p.add_argument("--heldout-dir", type=Path, default=Path("data/heldout-20000"))
    p.add_argument("--command", default="spikevimformer train --config configs/synth-pretrain.yaml "
                   "--data-root data/pretrain  (world: spikevimformer synth --out data/pretrain --seed 10000 "
                   "--locations 1000 --image-size 128)")
    args = p.parse_args(argv)

    ckpt = args.run / args.checkpoint
    chain = stages(ckpt)
    log, history = joined(chain)
    fields = list(dict.fromkeys(k for row in log for k in row))  # stages may log different columns
    model = model_from_checkpoint(ckpt).eval()
    image_size = int(chain[-1].config["image_size"])
    if not (args.heldout_dir / "world.json").exists():
        generate_world(SynthConfig(seed=args.heldout_seed, locations=250, image_size=128), args.heldout_dir,
                       workers=2, overwrite=True)
    bench = load_benchmark(args.heldout_dir)
    rows = [{"flip": flip, **r} for flip in (False, True)  # flip: University-1652-Baseline's test-time mirror
            for r in evaluate_sets(model, bench.test, image_size, torch.device("cpu"), protocols=("paper", "official"),
                                   flip=flip)]
    steps = sum(s.steps for s in chain)
    target = RESOURCES / "synth-pretrain-tiny.safetensors"
    digest = save_release(model, target, {"source": ckpt.name, "steps": str(steps)})
    with (RESOURCES / "synth-pretrain-tiny-log.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(log)
    record = {
        "file": target.name, "sha256": digest, "bytes": target.stat().st_size, "command": args.command,
        "config": chain[-1].config, "steps": steps,
        "stages": [{"run": str(s.checkpoint), "steps": s.steps, "config": s.config} for s in chain],
        "final_loss": float(log[-1]["loss"]) if log else None, "image_size": image_size,
        "evaluation": {"world_seed": args.heldout_seed, "counts": json.loads((args.heldout_dir / "world.json")
                                                                            .read_text()).get("counts"), "rows": rows},
        "history": history,
    }
    (RESOURCES / "synth-pretrain-tiny.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(json.dumps({"sha256": digest, "bytes": record["bytes"], "steps": steps,
                      "stages": [s.steps for s in chain]}))
    for r in rows:
        print(r["direction"], r["protocol"], "flip" if r["flip"] else "", f"R@1 {r['R@1']:.2f}", f"AP {r['AP']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
