"""Index a large tiled GeoTIFF in bounded memory: write one (default 20000 x 20000 px, 0.3 m, DEFLATE, 512-px
blocks, written strip by strip), run `spikevimformer index build --ortho` on it in a fresh process, and print the
wall time, the tile count and the peak resident memory of that process (VmHWM). Decoding the raster whole would
need 1.2 GB for its RGB pixels alone, before any copy.

    python benchmarks/large_ortho.py                       # 20000 px, 300 m tiles at a 300 m stride
    python benchmarks/large_ortho.py --side 8000 --tile-m 100 --stride-m 100
"""

from __future__ import annotations

import argparse
import resource
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
    cmd = [sys.executable, "-m", "spikevimformer", "index", "build", "--ortho", str(tif), "--crs", "UTM:32N",
           "--tile-m", str(args.tile_m), "--stride-m", str(args.stride_m), "--checkpoint", "pretrained",
           "--out", str(folder / "index"), "--overwrite", "--no-progress"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if done.returncode:
        sys.exit(f"index build failed:\n{done.stderr}")
    print(done.stdout.strip().splitlines()[-1])
    print(f"index build: {seconds:.0f} s, peak resident memory {peak_mb:.0f} MB "
          f"(the raster's RGB pixels alone: {3 * args.side**2 / 2**20:.0f} MB)")


if __name__ == "__main__":
    main()
