"""Real oblique drone photos, leave-one-out: for each photo F of a small OpenDroneMap project, index an orthophoto
made from the OTHER photos (scripts/real_orthos.py), once with the DSM (`index build --dsm`, a 6-DoF camera through
the terrain) and once flat, then localize F four ways: DSM index + `--camera cameras.json`, DSM index + the photo's
own lens (DJI XMP DewarpData, else EXIF focal length), flat index + `--camera`, flat index + the photo's own lens.
Every step is a CLI call a README reader would type; the commands are printed, then a table of the camera error
against the reconstruction's pose (haversine), the 95 % radius and whether it holds the truth, the height errors,
the lens source and, without a fix, the reason.

    python benchmarks/real_frames.py --odm /path/to/orthority/tests/data/odm                   # temp work folder
    python benchmarks/real_frames.py --odm /path/to/odm --work /tmp/loo --json /tmp/loo/rows.json
    python benchmarks/real_frames.py --odm /path/to/odm --work /tmp/loo --tile-m 80 --reuse-indexes
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL_ORTHOS = ROOT / "scripts" / "real_orthos.py"
EARTH_RADIUS_M = 6371008.8
LENSES = ("camera", "photo")  # --camera cameras.json, or the photo's own lens
TERRAINS = ("dsm", "flat")


@dataclass(frozen=True)
class Truth:
    """One photo's pose from the reconstruction (a row of truth.csv)."""

    image: Path
    latitude: float
    longitude: float
    altitude_m: float
    heading_deg: float
    pitch_deg: float
    height_above_ground_m: float

    @property
    def stem(self) -> str:
        return self.image.stem


@dataclass
class Row:
    """One frame localized one way."""

    frame: str
    variant: str  # "<terrain> + <lens>"
    fix: bool
    error_m: float | None  # camera position vs truth (only with a fix)
    radius_m: float | None
    inside: bool | None  # the radius holds the truth
    altitude_error_m: float | None  # camera altitude_m vs truth altitude_m (DSM index only)
    height_error_m: float | None  # camera height_m vs truth height_above_ground_m
    heading_error_deg: float | None
    intrinsics: str | None
    reason: str
    estimate_error_m: float | None  # the answer's estimate (camera or tile-level) vs truth
    seconds: float
    command: str


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)  # fmt: skip
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, a)))


def angle_diff_deg(a: float, b: float) -> float:
    """a - b wrapped into (-180, 180]."""
    d = (a - b) % 360.0
    return d - 360.0 if d > 180.0 else d


def shown(argv: list[str]) -> str:
    """The command as a reader would type it: `spikevimformer ...` or `python scripts/...`."""
    if argv[1:3] == ["-m", "spikevimformer"]:
        return shlex.join(["spikevimformer", *argv[3:]])
    return shlex.join(["python", *argv[1:]])


def run(argv: list[str], commands: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    """Run one command, record it, return its result and wall time; stderr is passed through on failure."""
    commands.append(shown(argv))
    print(f"$ {shown(argv)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stderr.rstrip(), file=sys.stderr)
        print(f"  -> exit {proc.returncode} after {seconds:.0f} s", file=sys.stderr, flush=True)
    else:
        print(f"  -> {seconds:.0f} s", file=sys.stderr, flush=True)
    return proc, seconds


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "spikevimformer", *args]


def read_truth(path: Path) -> list[Truth]:
    with path.open(newline="") as f:
        return [Truth(Path(r["image"]), float(r["latitude"]), float(r["longitude"]), float(r["altitude_m"]),
                      float(r["heading_deg"]), float(r["pitch_deg"]), float(r["height_above_ground_m"]))
                for r in csv.DictReader(f)]  # fmt: skip


def work_ready(work: Path) -> bool:
    """Whether `work` already holds real_orthos.py's outputs for every photo in its truth.csv."""
    needed = [work / name for name in ("truth.csv", "cameras.json", "dsm.tif")]
    if not all(p.is_file() for p in needed):
        return False
    return all((work / f"ortho_without_{t.stem}.tif").is_file() for t in read_truth(work / "truth.csv"))


def prepare(odm: Path, work: Path, commands: list[str]) -> None:
    """Make the leave-one-out orthophotos, truth, lens and DSM in `work` unless they are already there."""
    if work_ready(work):
        print(f"{work} already holds the leave-one-out orthophotos: not regenerating", file=sys.stderr)
        return
    proc, _ = run([sys.executable, str(REAL_ORTHOS), "--odm", str(odm), "--out", str(work)], commands)
    if proc.returncode != 0:
        raise SystemExit(f"error: scripts/real_orthos.py failed (exit {proc.returncode})")


def build_index(ortho: Path, out: Path, dsm: Path | None, tile_m: float, stride_m: float, reuse: bool,
                commands: list[str]) -> bool:  # fmt: skip
    """Index one orthophoto with the shipped model; True when the index is there afterwards."""
    if reuse and out.is_dir():
        proc = subprocess.run(cli("index", "info", str(out)), capture_output=True, text=True, cwd=ROOT)
        if proc.returncode == 0:
            print(f"reusing {out}", file=sys.stderr)
            return True
    terrain = ["--dsm", str(dsm)] if dsm is not None else []
    argv = cli("index", "build", "--ortho", str(ortho), "--tile-m", f"{tile_m:g}", "--stride-m", f"{stride_m:g}",
               *terrain, "--checkpoint", "pretrained", "--out", str(out), "--overwrite", "--no-progress")  # fmt: skip
    proc, _ = run(argv, commands)
    return proc.returncode == 0


def localize(truth: Truth, index: Path, camera: Path | None, variant: str, commands: list[str]) -> Row:
    """Localize one photo against one index and score the answer against the truth."""
    lens = ["--camera", str(camera)] if camera is not None else []
    argv = cli("localize", str(truth.image), "--index", str(index), *lens, "--json", "--no-progress")
    proc, seconds = run(argv, commands)
    try:
        results = json.loads(proc.stdout)["results"]
    except (json.JSONDecodeError, KeyError):
        results = []
    if not results:
        why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}, no output"])[-1]
        return Row(truth.stem, variant, False, None, None, None, None, None, None, None, f"crashed: {why}",
                   None, seconds, shown(argv))  # fmt: skip
    return score(truth, results[0], variant, seconds, shown(argv))


def score(truth: Truth, result: dict, variant: str, seconds: float, command: str) -> Row:
    """One answer of `localize --json` against the truth."""
    est = result.get("estimate") or {}
    est_err = (haversine_m(est["latitude"], est["longitude"], truth.latitude, truth.longitude)
               if "latitude" in est else None)  # fmt: skip
    cam = result.get("camera") if result.get("fix") else None
    if cam is None:
        return Row(truth.stem, variant, False, None, None, None, None, None, None, result.get("intrinsics"),
                   result.get("reason", ""), est_err, seconds, command)  # fmt: skip
    err = haversine_m(cam["latitude"], cam["longitude"], truth.latitude, truth.longitude)
    radius = result.get("radius_m")
    alt = cam.get("altitude_m")
    height = cam.get("height_m")
    heading = cam.get("heading_deg")
    return Row(truth.stem, variant, True, err, radius, None if radius is None else err <= radius,
               None if alt is None else alt - truth.altitude_m,
               None if height is None else height - truth.height_above_ground_m,
               None if heading is None else angle_diff_deg(heading, truth.heading_deg),
               result.get("intrinsics"), "", est_err, seconds, command)  # fmt: skip


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


def table(rows: list[Row]) -> str:
    """The rows as a fixed-width text table."""
    head = ["frame", "variant", "fix", "err_m", "radius_m", "inside", "dalt_m", "dagl_m", "dhead", "lens", "s",
            "reason (no fix)"]  # fmt: skip
    body = [[r.frame, r.variant, "yes" if r.fix else "no", fmt(r.error_m), fmt(r.radius_m),
             "-" if r.inside is None else "yes" if r.inside else "NO", signed(r.altitude_error_m),
             signed(r.height_error_m), signed(r.heading_error_deg), r.intrinsics or "-", f"{r.seconds:.0f}",
             r.reason] for r in rows]  # fmt: skip
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head) - 1)]
    lines = []
    for line in [head, *body]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1])
    return "\n".join(lines)


def summary(rows: list[Row]) -> str:
    """Per variant: fixes, median error, radius coverage."""
    lines = []
    for variant in dict.fromkeys(r.variant for r in rows):
        sub = [r for r in rows if r.variant == variant]
        fixed = [r.error_m for r in sub if r.fix and r.error_m is not None]
        held = sum(1 for r in sub if r.inside)
        med = f"{statistics.median(fixed):.1f} m" if fixed else "-"
        lines.append(f"{variant:12s} fixes {len(fixed)}/{len(sub)}, median error {med}, "
                     f"radius holds the truth {held}/{len(fixed)}")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--odm", type=Path, required=True, metavar="DIR",
                   help="the ODM folder (orthority's tests/data/odm layout), for scripts/real_orthos.py")  # fmt: skip
    p.add_argument("--work", type=Path, metavar="DIR",
                   help="real_orthos.py's output and the indexes (default: a temp folder); when it already holds "
                        "the orthophotos, truth.csv, cameras.json and dsm.tif they are not regenerated")  # fmt: skip
    p.add_argument("--tile-m", type=float, default=60.0, help="index tile side in metres (default %(default)g)")
    p.add_argument("--stride-m", type=float, help="index stride in metres (default: half a tile)")
    p.add_argument("--frames", nargs="*", metavar="STEM", help="only these photos (default: all in truth.csv)")
    p.add_argument("--reuse-indexes", action="store_true",
                   help="keep an index already in WORK/indexes/ (default: rebuild)")  # fmt: skip
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the rows and commands as JSON")
    args = p.parse_args(argv)
    if not args.odm.is_dir():
        p.error(f"--odm {args.odm}: no such folder")
    if not args.tile_m > 0:
        p.error(f"--tile-m must be positive, got {args.tile_m}")
    if args.stride_m is None:
        args.stride_m = args.tile_m / 2
    elif not args.stride_m > 0:
        p.error(f"--stride-m must be positive, got {args.stride_m}")
    return args


def run_frame(truth: Truth, work: Path, args: argparse.Namespace, commands: list[str]) -> list[Row]:
    """Both indexes of one leave-one-out orthophoto, and the four localizations of the held-out photo."""
    rows = []
    ortho = work / f"ortho_without_{truth.stem}.tif"
    for terrain in TERRAINS:
        index = work / "indexes" / f"{truth.stem}-{terrain}"
        dsm = work / "dsm.tif" if terrain == "dsm" else None
        if not build_index(ortho, index, dsm, args.tile_m, args.stride_m, args.reuse_indexes, commands):
            for lens in LENSES:
                rows.append(Row(truth.stem, f"{terrain} + {lens}", False, None, None, None, None, None, None, None,
                                "index build failed", None, 0.0, ""))  # fmt: skip
            continue
        for lens in LENSES:
            camera = work / "cameras.json" if lens == "camera" else None
            rows.append(localize(truth, index, camera, f"{terrain} + {lens}", commands))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="real-frames-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        commands: list[str] = []
        prepare(args.odm.resolve(), work, commands)
        truths = read_truth(work / "truth.csv")
        if args.frames:
            missing = set(args.frames) - {t.stem for t in truths}
            if missing:
                raise SystemExit(f"error: not in {work / 'truth.csv'}: {', '.join(sorted(missing))}")
            truths = [t for t in truths if t.stem in args.frames]
        for t in truths:
            if not t.image.is_file():
                raise SystemExit(f"error: {t.image} (from truth.csv) does not exist")
        rows = [row for t in truths for row in run_frame(t, work, args, commands)]
    wall = time.perf_counter() - start
    print("commands:")
    print("\n".join(f"  {c}" for c in commands))
    print()
    print(table(rows))
    print()
    print(summary(rows))
    print(f"\nwall time {wall:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"tile_m": args.tile_m, "stride_m": args.stride_m, "wall_s": wall, "commands": commands,
                   "rows": [asdict(r) for r in rows]}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
