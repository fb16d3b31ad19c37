"""Turn a pretraining run into the shipped checkpoint: fp16 safetensors + a JSON record with its SHA-256.

    python scripts/release_pretrained.py runs/synth-pretrain [--checkpoint best.pt] [--heldout-seed 20000]
        [--continues spikevimformer/resources/synth-pretrain-tiny-log.csv]   # a run --init from the last release

The record holds the command that made the run, its training summary, and an evaluation on a
held-out synthetic world generated here with a seed no pretraining or demo world uses.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

from spikevimformer.checkpoint import load_checkpoint, model_from_checkpoint, save_release
from spikevimformer.data import load_benchmark
from spikevimformer.data.synth import SynthConfig, generate_world
from spikevimformer.engine.evaluate import evaluate_sets

RESOURCES = Path(__file__).resolve().parent.parent / "spikevimformer" / "resources"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--checkpoint", default="last.pt")
    p.add_argument("--heldout-seed", type=int, default=20000)
    p.add_argument("--heldout-dir", type=Path, default=Path("data/heldout-20000"))
    p.add_argument("--command", default="spikevimformer train --config configs/synth-pretrain.yaml "
                   "--data-root data/pretrain  (world: spikevimformer synth --out data/pretrain --seed 10000 "
                   "--locations 1000 --image-size 128)")
    p.add_argument("--continues", type=Path, default=None,
                   help="log.csv of the stage this run started from (--init): its rows come first, steps count on")
    args = p.parse_args(argv)

    ckpt = args.run / args.checkpoint
    payload = load_checkpoint(ckpt)
    model = model_from_checkpoint(ckpt).eval()
    image_size = int(payload["config"]["image_size"])
    if not (args.heldout_dir / "world.json").exists():
        generate_world(SynthConfig(seed=args.heldout_seed, locations=250, image_size=128), args.heldout_dir,
                       workers=2, overwrite=True)
    bench = load_benchmark(args.heldout_dir)
    rows = evaluate_sets(model, bench.test, image_size, torch.device("cpu"), protocols=("paper", "official"))
    steps = payload["train_state"]["progress"]["step"]
    with (args.run / "log.csv").open() as f:  # a killed run may have logged past its last checkpoint
        log = [row for row in csv.DictReader(f) if int(row["step"]) <= steps]
    stage_steps = [steps]
    if args.continues is not None:
        with args.continues.open() as f:
            before = list(csv.DictReader(f))
        offset = int(before[-1]["step"])
        log = before + [{**row, "step": str(int(row["step"]) + offset)} for row in log]
        stage_steps = [offset, steps]
        steps += offset
    target = RESOURCES / "synth-pretrain-tiny.safetensors"
    digest = save_release(model, target, {"source": ckpt.name, "steps": str(steps)})
    with (RESOURCES / "synth-pretrain-tiny-log.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(log[0]))
        writer.writeheader()
        writer.writerows(log)
    record = {
        "file": target.name, "sha256": digest, "bytes": target.stat().st_size, "command": args.command,
        "config": payload["config"], "steps": steps, "stage_steps": stage_steps,
        "epochs": payload["train_state"]["progress"]["epoch"], "final_loss": float(log[-1]["loss"]) if log else None,
        "image_size": image_size,
        "evaluation": {"world_seed": args.heldout_seed, "counts": json.loads((args.heldout_dir / "world.json")
                                                                            .read_text()).get("counts"), "rows": rows},
        "history": payload["train_state"].get("history", []),
    }
    (RESOURCES / "synth-pretrain-tiny.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(json.dumps({k: record[k] for k in ("sha256", "bytes", "steps", "epochs")}))
    for r in rows:
        print(r["direction"], r["protocol"], f"R@1 {r['R@1']:.2f}", f"AP {r['AP']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
