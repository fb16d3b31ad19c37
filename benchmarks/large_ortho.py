"""Index a large tiled GeoTIFF, and render training views from it, in bounded memory: write one (default 20000 x
20000 px, 0.3 m, DEFLATE, 512-px blocks, written strip by strip), run `spikevimformer index build --ortho` and
`spikevimformer synth --ground` (what `adapt` renders: 120 locations x 4 views, 100 m tiles, 128 px) on it, each in
a fresh process, and print the wall time and the peak resident memory of the largest process of each (ru_maxrss).
Decoding the raster whole would need 1.2 GB for its RGB pixels alone, before any copy.

    python benchmarks/large_ortho.py                       # 20000 px, 300 m tiles at a 300 m stride
    python benchmarks/large_ortho.py --side 8000 --tile-m 100 --stride-m 100 --render-locations 0
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_geotiff(path: Path, side: int, gsd_m: float, seed: int = 0) -> None:
    """A textured RGB orthophoto in UTM 32N, written 512 rows at a time (never whole in memory)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 216, (side // 64 + 2, side // 64 + 2, 3), dtype=np.uint8)  # 19 m fields
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=3, dtype="uint8", crs="EPSG:32632",
                       transform=from_origin(500_000.0, 5_200_000.0, gsd_m, gsd_m), tiled=True, blockxsize=512,
                       blockysize=512, compress="deflate", BIGTIFF="IF_SAFER") as ds:  # fmt: skip
        for top in range(0, side, 512):
            rows = min(512, side - top)
            fields = np.repeat(np.repeat(coarse[top // 64 : top // 64 + rows // 64 + 2], 64, 0), 64, 1)
            strip = fields[:rows, :side] + rng.integers(0, 24, (rows, side, 3), dtype=np.uint8)
            ds.write(strip.transpose(2, 0, 1), window=Window(0, top, side, rows))


def _side(path: Path) -> int:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.width if ds.width == ds.height else -1


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=20000, help="raster side in pixels")
    p.add_argument("--gsd", type=float, default=0.3, help="metres per pixel")
    p.add_argument("--tile-m", type=float, default=300.0)
    p.add_argument("--stride-m", type=float, default=300.0)
    p.add_argument("--render-locations", type=int, default=120, help="locations of the synth --ground stage (0: skip)")
    p.add_argument("--keep", help="write the GeoTIFF and the index under this folder instead of a temporary one "
                                  "(a GeoTIFF of the same side already there is reused)")
    args = p.parse_args(argv)
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        run(args, Path(args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="spikevimformer-large-") as tmp:
            run(args, Path(tmp))


def run(args: argparse.Namespace, folder: Path) -> None:
    tif = folder / "large.tif"
    if args.keep and tif.is_file() and _side(tif) == args.side:
        print(f"reusing {tif} (--keep)")
    else:
        start = time.perf_counter()
        write_geotiff(tif, args.side, args.gsd)
        print(f"wrote {tif}: {args.side}x{args.side} px, {tif.stat().st_size / 2**20:.0f} MB on disk, "
              f"{time.perf_counter() - start:.0f} s")
    cmd = ["index", "build", "--ortho", str(tif), "--crs", "UTM:32N", "--tile-m", str(args.tile_m), "--stride-m",
           str(args.stride_m), "--checkpoint", "pretrained", "--out", str(folder / "index"), "--overwrite",
           "--no-progress"]  # fmt: skip
    seconds, peak_mb, out = measure(cmd)
    print(out.strip().splitlines()[-1])
    print(f"index build: {seconds:.0f} s, peak resident memory {peak_mb:.0f} MB "
          f"(the raster's RGB pixels alone: {3 * args.side**2 / 2**20:.0f} MB)")
    if args.render_locations:
        world_file = folder / "large.tfw"  # synth --ground reads a world file, not GeoTIFF tags (adapt writes one)
        world_file.write_text(f"{args.gsd!r}\n0\n0\n{-args.gsd!r}\n{500_000.0 + args.gsd / 2!r}\n"
                              f"{5_200_000.0 - args.gsd / 2!r}\n")
        cmd = ["synth", "--ground", str(tif), "--world-file", str(world_file), "--crs", "UTM:32N",
               "--out", str(folder / "views"), "--locations", str(args.render_locations), "--views", "4",
               "--image-size", "128", "--footprint", "100", "--spacing", "50", "--overwrite", "--no-progress"]
        seconds, peak_mb, out = measure(cmd)
        print(next((line.strip() for line in out.splitlines() if "window" in line), "(rendered whole)"))
        print(f"synth --ground ({args.render_locations} locations x 4 views): {seconds:.0f} s, peak resident memory "
              f"{peak_mb:.0f} MB")


def measure(argv: list[str]) -> tuple[float, float, str]:
    """Run `spikevimformer ARGV` through a fresh interpreter that reports the largest resident set among its
    descendants (render workers included): (seconds, MB, stdout). Exits with stderr when the command fails."""
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "spikevimformer", *argv],
                          capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"spikevimformer {argv[0]} failed:\n{done.stderr}")
    return seconds, int(done.stderr.strip().splitlines()[-1]) / 1024, done.stdout

if __name__ == "__main__":
    main()
