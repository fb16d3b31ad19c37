"""Flight benchmark: synthetic flights -> filtered tracks, scored against the true cameras, with frames/s.

Each case renders a world and a flight over it with `spikevimformer synth --flight N` (a constant-speed loop
through the world's test locations, `--blank` frames in the middle over featureless water that the filter must
bridge), indexes the world's reference with the shipped model (`spikevimformer index build --world`; across dates
that reference is the orthophoto and tiles of ANOTHER date, `synth --epoch-gap 0.5`, as in the README's flights
across dates) and flies the frames through `FlightTracker`, the code path of `spikevimformer flight`. Printed per
case: frames, fix rate, rejected fixes, the longest stretch without a fix, and for the online and the smoothed
track the RMSE, median, 95th percentile and largest error, the share within 5/10/25 m and the 95 % radius
coverage (flight.metrics.flight_metrics); frames/s over the whole loop (frame decoding included, after one
warm-up frame) and the median seconds of each stage per frame. The commands are printed; WORK/results.json
keeps everything.

Cases: same-date-256 (reference of the photos' own date), cross-epoch-256 (the issue's target: >= 300 frames with
>= 20 frames over water) and cross-epoch-1024 (1024 px frames, the throughput target).

    python benchmarks/flight.py --work /tmp/flight                                     # all three, 300 frames
    python benchmarks/flight.py --work /tmp/flight --cases cross-epoch-256 --reuse     # worlds and indexes kept
    python benchmarks/flight.py --work /tmp/flight-small --cases same-date-256 --frames 40 --blank 8
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spikevimformer.flight import FlightConfig, FlightTracker, flight_metrics, read_frames  # noqa: E402
from spikevimformer.flight.metrics import flight_truth  # noqa: E402
from spikevimformer.geo.localize import open_localizer  # noqa: E402


@dataclass(frozen=True)
class Case:
    """One flight: its reference's date (synth --epoch-gap) and frame size."""

    name: str
    epoch_gap: float
    size: int


CASES = {c.name: c for c in (Case("same-date-256", 0.0, 256), Case("cross-epoch-256", 0.5, 256),
                             Case("cross-epoch-1024", 0.5, 1024))}  # fmt: skip


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "spikevimformer", *args]


def shown(argv: list[str]) -> str:
    """The command as a reader would type it."""
    return shlex.join(["spikevimformer", *argv[3:]])


def run(argv: list[str], commands: list[str]) -> float:
    """Run one CLI command (SystemExit with its stderr when it fails); its wall seconds."""
    commands.append(shown(argv))
    print(f"$ {shown(argv)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"error: exit {proc.returncode} after {seconds:.0f} s:\n{proc.stderr.rstrip()}")
    print(f"  -> {seconds:.0f} s", file=sys.stderr, flush=True)
    return seconds


def prepare(case: Case, args: argparse.Namespace, commands: list[str]) -> tuple[Path, Path]:
    """The case's world with its flight and the index of its reference, rendered and built unless --reuse finds
    them made by the same synth command; returns (flight folder, index folder)."""
    folder = args.work / case.name
    world, index = folder / "world", folder / "index"
    blank = [] if not args.blank else ["--flight-blank", str(args.frames // 2), str(args.frames // 2 + args.blank)]
    synth = cli("synth", "--out", str(world), "--seed", str(args.seed), "--locations", str(args.locations),
                "--epoch-gap", f"{case.epoch_gap:g}", "--flight", str(args.frames), "--flight-size", str(case.size),
                *blank, "--overwrite", "--no-progress")  # fmt: skip
    stamp = folder / "synth-command.txt"
    same = stamp.is_file() and stamp.read_text() == shown(synth)
    if args.reuse and same and (world / "flight" / "cameras.csv").is_file() and (index / "manifest.json").is_file():
        print(f"reusing {world} and {index}", file=sys.stderr)
        return world / "flight", index
    folder.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)  # written back only once the world and its index are whole
    run(synth, commands)
    run(cli("index", "build", "--out", str(index), "--world", str(world), "--checkpoint", "pretrained",
            "--overwrite", "--no-progress"), commands)  # fmt: skip
    stamp.write_text(shown(synth))
    return world / "flight", index


def fly_case(case: Case, flight_dir: Path, index: Path, args: argparse.Namespace) -> dict:
    """Fly the case's frames through the index (after one warm-up frame) and score the track."""
    truth = flight_truth(flight_dir)
    localizer = open_localizer(str(index), k=args.top_k)  # the weights the index names, as `flight --index` loads
    for note in localizer.notes:
        print(f"note: {note}", file=sys.stderr)
    frames = flight_dir / "frames"
    localizer.localize_files([str(sorted(frames.iterdir())[0])])  # warm-up: weights, allocator, threads
    first = next(iter(truth.by_name.values()))
    command = (f"spikevimformer flight {frames} --index {index} -k {args.top_k} --truth {flight_dir / 'cameras.csv'}"
               + (f" --start {first[0]:.7f} {first[1]:.7f}" if args.start_known else ""))
    print(f"flying {case.name}: {command}", file=sys.stderr, flush=True)
    tracker = FlightTracker(localizer, FlightConfig(start=first if args.start_known else None))
    start = time.perf_counter()
    for frame in read_frames(frames):
        tracker.add(frame)
    flight = tracker.finish()
    wall = time.perf_counter() - start
    stages = {key: statistics.median(s[key] for s in flight.stages if key in s)
              for key in dict.fromkeys(k for s in flight.stages for k in s)}  # fmt: skip
    return {"case": case.name, "epoch_gap": case.epoch_gap, "size": case.size, "command": command,
            "frames_per_s": len(flight.points) / wall, "median_s_per_frame": statistics.median(flight.seconds),
            "median_stage_s": stages, "warnings": flight.warnings, **flight_metrics(flight.points, truth),
            "frame_seconds": flight.seconds, "frame_sources": [p.source for p in flight.points]}  # fmt: skip


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def metres(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


HEADER = (f"{'case':<17} {'track':<8} {'frames':>6} {'fix %':>6} {'rej':>4} {'no fix':>6} {'RMSE':>7} {'median':>7} "
          f"{'p95':>7} {'max':>7} {'<=5 m':>6} {'<=10 m':>6} {'<=25 m':>6} {'radius':>6} {'frames/s':>8} "
          f"{'s/frame':>7}  median s per stage")  # fmt: skip


def table(rows: list[dict]) -> str:
    """Two lines per case: the online and the smoothed track (metres; shares in %)."""
    lines = [HEADER]
    for r in rows:
        stages = ", ".join(f"{k} {v:.3f}" for k, v in r["median_stage_s"].items())
        for track in ("online", "smoothed"):
            g = {key.removeprefix(f"{track}_"): v for key, v in r.items() if key.startswith(f"{track}_")}.get
            lines.append(f"{r['case']:<17} {track:<8} {r['frames']:>6} {pct(r['fix_rate']):>6} "
                         f"{r['rejected_fixes']:>4} {r['longest_without_fix']:>6} {metres(g('rmse_m')):>7} "
                         f"{metres(g('median_error_m')):>7} {metres(g('p95_error_m')):>7} "
                         f"{metres(g('max_error_m')):>7} {pct(g('within_5m')):>6} {pct(g('within_10m')):>6} "
                         f"{pct(g('within_25m')):>6} {pct(g('radius95_coverage')):>6} {r['frames_per_s']:>8.2f} "
                         f"{r['median_s_per_frame']:>7.2f}  {stages if track == 'online' else ''}")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, metavar="DIR",
                   help="worlds, flights, indexes and results.json (one subfolder per case)")  # fmt: skip
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--frames", type=int, default=300, help="frames per flight (default %(default)s)")
    p.add_argument("--blank", type=int, default=25,
                   help="frames over featureless water in the middle of each flight (0: none; default %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="world seed (the README's flight; default %(default)s)")
    p.add_argument("--locations", type=int, default=60, help="locations of each world (default %(default)s)")
    p.add_argument("-k", "--top-k", type=int, default=5, help="tiles verified per frame (default %(default)s)")
    p.add_argument("--start-known", action="store_true",
                   help="give the filter the first frame's true position (the last GNSS fix), as `flight --start`")
    p.add_argument("--reuse", action="store_true",
                   help="keep a case's world, flight and index already in WORK made by the same synth command")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.frames < 2:
        p.error(f"--frames must be at least 2, got {args.frames}")
    if not 0 <= args.blank < args.frames // 2:
        p.error(f"--blank must lie in 0..{args.frames // 2 - 1} for {args.frames} frames, got {args.blank}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work = args.work.resolve()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    commands: list[str] = []
    rows = []
    for case in (CASES[name] for name in args.cases):
        flight_dir, index = prepare(case, args, commands)
        rows.append(fly_case(case, flight_dir, index, args))
    print("commands:")
    print("\n".join(f"  {c}" for c in commands) or "  (all reused)")
    print()
    print(table(rows))
    for r in rows:
        for warning in r["warnings"]:
            print(f"warning ({r['case']}): {warning}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    machine = platform.processor() or platform.machine()
    print(f"\n{args.frames} frames a flight, {args.blank} over water; peak memory {peak_mb:.0f} MB; {args.threads} "
          f"threads on {machine}")  # fmt: skip
    results = {"frames": args.frames, "blank": args.blank, "seed": args.seed, "locations": args.locations,
               "top_k": args.top_k, "start_known": args.start_known, "threads": args.threads, "machine": machine,
               "peak_rss_mb": peak_mb, "commands": commands, "rows": rows}  # fmt: skip
    (args.work / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results: {args.work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
