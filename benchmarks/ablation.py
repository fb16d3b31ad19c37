"""Ablation of the training objective: what each block adds, at a fixed step count (issue 30).

Builds once, cached in --work, a synthetic training world and a held-out world whose seeds neither the demo (2026),
the shipped model's pretraining (10000-10003), scripts/calibrate_fallback.py (3030-3032, 4040-4041) nor
benchmarks/flight.py (7) use. Then for each cell (init x variant x seed) it trains the tiny model for --steps
optimizer steps (the cosine annealed over them), scores held-out D->S and S->D R@1 and AP (paper protocol) and the
SSA branch's final batch spread (losses/collapse.py), and writes WORK/cells/CELL.json atomically; a rerun skips the
cells already written, so an interrupted grid continues where it stopped. At the end a Markdown table of
mean +- std over seeds goes to stdout and WORK/ablation.md.

    .venv/bin/python benchmarks/ablation.py --work runs/ablation                    # the whole grid
    .venv/bin/python benchmarks/ablation.py --work runs/ablation --variants infonce full-paper --seeds 1
    .venv/bin/python benchmarks/ablation.py --work runs/ablation --inits scratch --steps 300

Two processes may share a work folder to use two cores (OMP_NUM_THREADS=1 each): each claims a cell from its
training to its result, and skips the cells the other has claimed (rerun once both end for the whole table).

Variants (weights of ObjectiveConfig; a block left out has weight 0):
  infonce       InfoNCE only
  +shs          InfoNCE + L_SHS
  +hral         InfoNCE + L_HRAL
  +ssa-paper    InfoNCE + L_SSA (paper: 1 - cosine, no negatives)
  +ssa-infonce  InfoNCE + L_SSA (in-batch InfoNCE over the SSA descriptors; cannot collapse)
  full-paper    all four, paper L_SSA
  full-infonce  all four, InfoNCE L_SSA
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from spikevimformer.checkpoint import model_from_checkpoint
from spikevimformer.data import load_benchmark
from spikevimformer.data.synth import SynthConfig, generate_world
from spikevimformer.engine import load_config, train
from spikevimformer.engine.evaluate import evaluate_sets
from spikevimformer.fileio import atomic_write_json, atomic_write_text, folder_lock

TRAIN_SEED = 4101  # the training world
HELDOUT_SEED = 4102  # the held-out world: other locations, other views, never trained on
TRAIN_WORLD = SynthConfig(seed=TRAIN_SEED, locations=250, views=8, image_size=128)  # the demo world's sizes
HELDOUT_WORLD = SynthConfig(seed=HELDOUT_SEED, locations=150, views=4, image_size=128, test_fraction=0.8,
                            distractor_fraction=0.1)
OFF = {"w_ssa": 0.0, "w_shs": 0.0, "w_hral": 0.0}
VARIANTS: dict[str, dict[str, Any]] = {
    "infonce": OFF,
    "+shs": OFF | {"w_shs": 0.54},
    "+hral": OFF | {"w_hral": 1.0},
    "+ssa-paper": OFF | {"w_ssa": 0.6, "ssa_objective": "paper"},
    "+ssa-infonce": OFF | {"w_ssa": 0.6, "ssa_objective": "infonce"},
    "full-paper": {"ssa_objective": "paper"},
    "full-infonce": {"ssa_objective": "infonce"},
}
# init and peak rate, as the demo's runs; the shipped SSA branch is collapsed (its spread ~2e-7), so cells from the
# shipped model start their SSA branch afresh (it is training-only: the starting descriptor is the shipped one)
INITS = {"shipped": ("pretrained", 1e-4), "scratch": ("scratch", 1e-3)}
DIRECTIONS = {"drone2satellite": "D->S", "satellite2drone": "S->D"}
SPREAD_ROWS = 10  # the final spread: mean over the run's last logged steps
COLUMNS = ("D->S R@1", "D->S AP", "S->D R@1", "S->D AP", "spread_ssa", "steps")


@dataclass(frozen=True)
class Cell:
    """One training run of the grid."""

    init: str
    variant: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.init}_{self.variant}_s{self.seed}"


@dataclass(frozen=True)
class Sizes:
    """What every cell shares: the step budget, the model input and the batch."""

    steps: int = 150
    image_size: int = 64
    batch_size: int = 16
    workers: int = 1


def build_worlds(work: Path) -> tuple[Path, Path]:
    """The training and held-out worlds, rendered once into WORK/worlds (a world.json marks a finished one)."""
    roots = []
    for name, synth in (("train", TRAIN_WORLD), ("heldout", HELDOUT_WORLD)):
        root = work / "worlds" / f"{name}-{synth.seed}"
        if not (root / "world.json").is_file():
            print(f"rendering the {name} world (seed {synth.seed}) into {root}", flush=True)
            generate_world(synth, root, workers=2, overwrite=True)
        roots.append(root)
    return roots[0], roots[1]


def train_settings(cell: Cell, sizes: Sizes, train_root: Path, run_dir: Path) -> dict[str, Any]:
    """The `train` settings of a cell: exactly `sizes.steps` steps, the cosine over them, no evaluation."""
    init, lr = INITS[cell.init]
    return {"data_root": str(train_root), "out_dir": str(run_dir), "variant": "tiny", "init": init, "lr": lr,
            "seed": cell.seed, "image_size": sizes.image_size, "batch_size": sizes.batch_size,
            "workers": sizes.workers, "device": "cpu", "epochs": sizes.steps, "max_steps": sizes.steps,
            "anneal_by": "steps", "warmup": 0.0, "warmup_min_steps": 20, "eval_every_epochs": 0,
            "final_eval": False, "save_every_steps": 0, "fresh_ssa": "always" if cell.init == "shipped" else "auto",
            **VARIANTS[cell.variant]}  # fmt: skip


def run_cell(cell: Cell, sizes: Sizes, work: Path) -> dict[str, Any]:
    """Train one cell, score it on the held-out world, and drop its checkpoints (the log stays)."""
    train_root, heldout_root = build_worlds(work)
    run_dir = work / "runs" / cell.name
    start = time.monotonic()
    result = train(load_config(None, train_settings(cell, sizes, train_root, run_dir)), progress=False,
                   overwrite=True)  # fmt: skip
    train_s = time.monotonic() - start
    model = model_from_checkpoint(run_dir / "last.pt").eval()
    rows = evaluate_sets(model, load_benchmark(heldout_root).test, sizes.image_size, torch.device("cpu"),
                         protocols=("paper",), workers=sizes.workers, progress=False)  # fmt: skip
    for name in ("last.pt", "best.pt"):
        (run_dir / name).unlink(missing_ok=True)
    scores = {f"{DIRECTIONS[r['direction']]} {k}": float(r[k]) for r in rows for k in ("R@1", "AP")}
    with (run_dir / "log.csv").open(newline="", encoding="utf-8") as f:
        log = list(csv.DictReader(f))[-SPREAD_ROWS:]
    spreads = {key: statistics.fmean(float(r[key]) for r in log)
               for key in ("spread_descriptor", "spread_ssa") if log and key in log[0]}
    return {"cell": asdict(cell), "sizes": asdict(sizes), **scores, **spreads, "steps": result["steps"],
            "collapsed": result["collapsed"], "train_s": train_s, "seconds": time.monotonic() - start,
            "threads": torch.get_num_threads()}  # fmt: skip


def run_grid(cells: Iterable[Cell], work: Path, runner: Callable[[Cell], dict[str, Any]],
             sizes: Sizes | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Each cell's result, from WORK/cells/CELL.json when a run already wrote it (with these `sizes`, when given),
    else run and written atomically. A cell is claimed (WORK/claims/CELL, fileio.folder_lock) from training to its
    result, so a second process on the same work folder skips the cells the first is running."""
    results = []
    for cell in cells:
        claim = ExitStack()
        try:
            claim.enter_context(folder_lock(work / "claims" / cell.name, "benchmarks/ablation.py", "cell"))
        except ValueError as exc:
            print(f"{cell.name}: skipped ({exc})", flush=True)
            continue
        with claim:
            results.append(_cell_result(cell, work / "cells" / f"{cell.name}.json", runner, sizes))
    return results


def _cell_result(cell: Cell, path: Path, runner: Callable[[Cell], dict[str, Any]],
                 sizes: Sizes | None) -> dict[str, Any]:  # fmt: skip
    if path.is_file():
        done = json.loads(path.read_text(encoding="utf-8"))
        if sizes is None or done.get("sizes") == asdict(sizes):
            print(f"{cell.name}: done before, kept", flush=True)
            return done
        print(f"{cell.name}: done before with {done.get('sizes')}, run again with {asdict(sizes)}", flush=True)
    print(f"{cell.name}: training", flush=True)
    result = runner(cell)
    atomic_write_json(path, result)
    print(f"{cell.name}: " + ", ".join(f"{k} {result[k]:.3g}" for k in COLUMNS if k in result)
          + f" in {result.get('seconds', 0):.0f} s", flush=True)
    return result


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: one row per variant and init, mean +- std over the seeds of each column."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["cell"]["variant"], r["cell"]["init"]), []).append(r)
    order = {v: i for i, v in enumerate(VARIANTS)}
    lines = ["| variant | init | seeds | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 3) + "|"]
    for (variant, init), rows in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1])):
        cells = [_mean_std([r[c] for r in rows if c in r], c) for c in COLUMNS]
        lines.append(f"| {variant} | {init} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_std(values: list[float], column: str) -> str:
    """'m +- s' (s over seeds, blank for one seed) in the column's precision."""
    if not values:
        return "-"
    if len(set(values)) == 1 and column == "steps":
        return f"{values[0]:.0f}"
    digits = 0 if column == "steps" else 3 if column.startswith("spread") else 1
    mean = f"{statistics.fmean(values):.{digits}f}"
    return mean if len(values) < 2 else f"{mean} ± {statistics.stdev(values):.{digits}f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="cache of the worlds, the runs and each cell's result")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="training seeds (default 1 2 3)")
    p.add_argument("--steps", type=int, default=Sizes.steps,
                   help="optimizer steps per cell (default %(default)s: ~145 s a cell, the 42-cell grid ~1.7 h on "
                        "2 cores)")
    p.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    p.add_argument("--inits", nargs="+", choices=tuple(INITS), default=list(INITS))
    p.add_argument("--image-size", type=int, default=Sizes.image_size)
    p.add_argument("--batch-size", type=int, default=Sizes.batch_size)
    p.add_argument("--workers", type=int, default=Sizes.workers, help="data-loading processes")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps must be at least 1, got {args.steps}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work)
    sizes = Sizes(args.steps, args.image_size, args.batch_size, args.workers)
    print(f"worlds: training seed {TRAIN_SEED}, held-out seed {HELDOUT_SEED}; {sizes}; {torch.get_num_threads()} "
          f"threads", flush=True)  # fmt: skip
    build_worlds(work)
    cells = [Cell(i, v, s) for i in args.inits for v in args.variants for s in args.seeds]
    results = run_grid(cells, work, lambda cell: run_cell(cell, sizes, work), sizes)
    text = (f"Held-out world seed {HELDOUT_SEED} (paper protocol, %), trained on seed {TRAIN_SEED}; tiny model, "
            f"{sizes.steps} steps of {sizes.batch_size} pairs at {sizes.image_size} px; mean ± std over seeds "
            f"{' '.join(map(str, args.seeds))}. spread_ssa: batch spread of the SSA descriptor over the last "
            f"{SPREAD_ROWS} steps (0: collapsed).\n\n{table(results)}\n")
    atomic_write_text(work / "ablation.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
