"""Seconds per training step when two trainings share the CPU: all threads throughout (`yield_cpu: false`), the
trainer's thread governor (the default, spikevimformer/engine/threads.py), and OpenMP's sleeping waiters
(`OMP_WAIT_POLICY=PASSIVE`, the other known remedy, which slows a run that is alone).

Each run is `train` on a synthetic world (the tiny model, 64 px from 128 px renders, batch 16, 2 DataLoader
workers, torch on all cores), in a fresh process: alone, then two at once. A run stops after --steps steps or
--minutes, whichever comes first; the figure is the median step time (from the trainer's log.csv, first step left
out) over the runs of a case.

    python benchmarks/cpu_sharing.py                 # 20 steps, at most 2 min per run
    python benchmarks/cpu_sharing.py --steps 60 --minutes 4
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = {"all threads": ({"yield_cpu": False}, {}), "governor (default)": ({}, {}),
         "OMP_WAIT_POLICY=PASSIVE": ({"yield_cpu": False}, {"OMP_WAIT_POLICY": "PASSIVE"})}


def child_code(data: Path, out: Path, steps: int, minutes: float, extra: dict) -> str:
    settings = {"data_root": str(data), "out_dir": str(out), "image_size": 64, "batch_size": 16, "epochs": 1000,
                "init": "pretrained", "workers": 2, "device": "cpu", "warmup": 0.0, "warmup_min_steps": 1,
                "eval_every_epochs": 0, "final_eval": False, "save_every_steps": 100000, "max_steps": steps,
                "time_limit_min": minutes, **extra}  # fmt: skip
    return ("from spikevimformer.engine import load_config, train\n"
            f"train(load_config(None, {settings!r}), progress=False, overwrite=True)\n")  # fmt: skip


def step_seconds(run: Path) -> list[float]:
    """Seconds of each logged step but the first (which also starts the DataLoader workers)."""
    with open(run / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    return [16 / float(r["pairs_per_s"]) for r in rows[1:]]


def run_together(case: tuple[dict, dict], data: Path, tmp: Path, tag: str, copies: int, steps: int,
                 minutes: float) -> list[float]:
    settings, env_vars = case
    env = {**{k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}, **env_vars}
    runs = [tmp / f"{tag}-{i}" for i in range(copies)]
    code = [child_code(data, run, steps, minutes, settings) for run in runs]
    procs = [subprocess.Popen([sys.executable, "-c", c], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for c in code]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"training process failed:\n{err[-2000:]}")
    return [s for run in runs for s in step_seconds(run)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=2.0, help="cap per run (default 2)")
    args = parser.parse_args()

    from spikevimformer.data.synth import SynthConfig, generate_world

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "world"
        generate_world(SynthConfig(locations=60, views=4, image_size=128), data, progress=False)
        print(f"{os.cpu_count()} cores; tiny model, batch 16 at 64 px, {args.steps} steps or {args.minutes:g} min")
        print(f"{'threads':<26}{'alone s/step':>14}{'two at once s/step':>20}{'slowdown':>10}")
        for i, (name, case) in enumerate(CASES.items()):
            tag = f"case{i}"
            alone = statistics.median(run_together(case, data, tmp, f"{tag}-alone", 1, args.steps, args.minutes))
            shared = run_together(case, data, tmp, f"{tag}-pair", 2, args.steps, args.minutes)
            both = statistics.median(shared)
            print(f"{name:<26}{alone:>14.2f}{both:>20.2f}{both / alone:>9.1f}x  ({len(shared)} shared steps)",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
