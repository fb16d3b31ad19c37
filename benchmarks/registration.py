"""Registration benchmark: photo -> camera position across dates, photo sizes and matchers, at k = 5.

Renders worlds of one seed (the demo's by default) whose reference (orthophoto and tiles) was painted at the
photos' own date (gap 0) and at another (synth --epoch-gap 0.5: other sun and shadows, season, cars, buildings,
a coarser sensor), with 256 px and 1024 px drone photos; indexes each test gallery with the shipped model (and
the learned reference features `index build` stores), then localizes held-out photos with each matcher: fix
rate, camera within 5/25 m, false fixes (> 25 m), 95 % radius coverage, median error, R@1 before and after
verification, and wall seconds per photo (all stages). --large also times a 4000x3000 photo with its focal
length in EXIF, rendered by the world generator's camera.

    python benchmarks/registration.py                          # about 25 minutes on 2 cores
    python benchmarks/registration.py --sizes 256 --photos 20 --features sift auto
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spikevimformer.data.synth import SynthConfig, generate_world  # noqa: E402
from spikevimformer.data.synth.camera import Camera, view_reach_m  # noqa: E402
from spikevimformer.data.synth.pipeline import build_world  # noqa: E402
from spikevimformer.data.synth.render import MAX_LEVEL, drone_view  # noqa: E402
from spikevimformer.data.synth.writer import camera_exif, with_exif  # noqa: E402
from spikevimformer.geo import reference_features  # noqa: E402
from spikevimformer.geo.encoders import TorchEncoder, encode_tiles  # noqa: E402
from spikevimformer.geo.index import GalleryIndex, IndexConfig  # noqa: E402
from spikevimformer.geo.localize import Localizer  # noqa: E402
from spikevimformer.geo.metrics import evaluate_localizer, load_queries  # noqa: E402
from spikevimformer.geo.tiles import world_tiles  # noqa: E402
from spikevimformer.geodesy import haversine_m  # noqa: E402
from spikevimformer.registration import FEATURES, RegisterConfig  # noqa: E402

SEED = 2026


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def large_photo(cfg: SynthConfig, out: Path) -> tuple[Path, tuple[float, float]]:
    """A 4000x3000 JPEG of a test location with its EXIF focal length; returns it and the camera's (lat, lon)."""
    cfg = cfg.resolved()
    world, locations = build_world(cfg, view_reach_m(cfg))
    world.prepare(MAX_LEVEL + 1)
    loc = next(loc for loc in locations if loc.split == "test")
    cam = Camera.look_at(loc.xy, 30.0, 50.0, 100.0, cfg.fov_deg, 4000)
    rgb = drone_view(world, cam)[500:3500]
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    path = out / "large-4000x3000.jpg"
    path.write_bytes(with_exif(buf.tobytes(), camera_exif(cam.focal_px, 4000, 3000)))
    lat, lon = world.geo.to_latlon(cam.position[0], -cam.position[1])
    return path, (float(lat), float(lon))


def indexed(world: Path, tmp: Path) -> tuple[TorchEncoder, GalleryIndex]:
    """The shipped model and an index of the world's gallery with stored learned reference features."""
    encoder = TorchEncoder.load("pretrained")  # tagged with the release's SHA-256, as the CLI tags it
    tiles = world_tiles(world)
    index = GalleryIndex.create(tmp / f"index-{world.name}", encoder.identity, IndexConfig())
    index.add(tiles, encode_tiles(encoder, tiles, progress=False))
    reference_features.store(index, tiles)
    return encoder, index


def world_rows(world: Path, tmp: Path, features: list[str], photos: int, label: str) -> list[dict]:
    """Localize the world's held-out photos with each matcher at k = 5: accuracy in metres, seconds per photo."""
    encoder, index = indexed(world, tmp)
    queries = load_queries(world)
    pick = np.linspace(0, len(queries) - 1, num=min(photos, len(queries))).astype(int)
    chosen = [queries[i] for i in pick]
    rows = []
    for name in features:
        localizer = Localizer(encoder, index, k=5, register=RegisterConfig(features=name))
        localizer.localize_files([chosen[0].image])  # warm-up: weights, allocator, threads
        start = time.perf_counter()
        rep = evaluate_localizer(localizer, chosen, (1, 5), batch_size=1)
        wall = (time.perf_counter() - start) / len(chosen)
        rows.append({"world": label, "features": name, "photos": len(chosen), "s_per_photo": wall,
                     **{key: rep.get(key) for key in KEYS}})
        print(_row(rows[-1]), flush=True)
    return rows


KEYS = ("fix_rate", "camera_within_5m", "camera_within_25m", "false_fix_rate", "radius95_coverage",
        "camera_median_error_m", "R@1", "R@1_verified", "R@5", "register_s_per_image", "tile_radius95_coverage",
        "tile_median_radius_m")  # fmt: skip
HEADER = (f"{'world':<34} {'features':<8} {'photos':>6} {'fix':>6} {'<=5 m':>6} {'<=25 m':>6} {'false':>6} "
          f"{'radius':>6} {'median m':>8} {'R@1 -> verified':>15} {'s/photo':>8} {'no fix: radius holds, median':>29}")


def _row(r: dict) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    med = "-" if r["camera_median_error_m"] is None else f"{r['camera_median_error_m']:.2f}"
    tile = "-" if r["tile_median_radius_m"] is None else f"{r['tile_median_radius_m']:.0f} m"
    return (f"{r['world']:<34} {r['features']:<8} {r['photos']:>6} {pct(r['fix_rate']):>6} "
            f"{pct(r['camera_within_5m']):>6} {pct(r['camera_within_25m']):>6} {pct(r['false_fix_rate']):>6} "
            f"{pct(r['radius95_coverage']):>6} {med:>8} {pct(r['R@1']) + ' -> ' + pct(r['R@1_verified']):>15} "
            f"{r['s_per_photo']:>8.2f} {pct(r['tile_radius95_coverage']):>16} % of {tile:>7}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=SEED, help="world seed (the demo's by default)")
    ap.add_argument("--locations", type=int, default=120, help="locations of each rendered world")
    ap.add_argument("--epoch-gaps", type=float, nargs="+", default=[0.0, 0.5],
                    help="reference epochs to render (0: the photos' own date; synth --epoch-gap)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024], help="drone photo sizes in px")
    ap.add_argument("--features", nargs="+", default=["sift", "xfeat", "auto"], choices=FEATURES)
    ap.add_argument("--photos", type=int, default=40, help="held-out photos localized per world and matcher")
    ap.add_argument("--large", action="store_true", help="also time a 4000x3000 photo with its EXIF focal length")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-registration-"))
    rows = []
    print(HEADER, flush=True)
    for gap in args.epoch_gaps:
        for size in args.sizes:
            cfg = SynthConfig(seed=args.seed, image_size=size, locations=args.locations, views=2, epoch_gap=gap)
            world = tmp / f"world-g{gap:g}-{size}"
            generate_world(cfg, world, workers=2, progress=False)
            label = f"seed {args.seed}, gap {gap:g}, {size} px photos"
            rows += world_rows(world, tmp, args.features, args.photos, label)
    if args.large:
        cfg = SynthConfig(seed=args.seed, image_size=256, locations=args.locations, views=2)
        big, truth = large_photo(cfg, tmp)
        world = tmp / "world-large"
        generate_world(cfg, world, workers=2)
        localizer = Localizer(*indexed(world, tmp), k=5)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            (r,) = localizer.localize_files([str(big)])
            times.append(time.perf_counter() - start)
        err = float(haversine_m(truth[0], truth[1], r.estimate["latitude"], r.estimate["longitude"]))
        print(f"4000x3000 photo (EXIF focal length), k = 5: {statistics.median(times):.2f} s, fix {r.fix}, "
              f"{err:.2f} m from the camera")  # fmt: skip
    print(f"peak memory {peak_rss_mb():.0f} MB; {args.threads} threads on {platform.processor() or platform.machine()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "peak_rss_mb": peak_rss_mb(), "threads": args.threads},
                                              indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
