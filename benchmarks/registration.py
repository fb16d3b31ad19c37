"""Registration benchmark: photo -> camera position across dates, photo sizes and matchers, at k = 5.

Renders worlds of one seed (the demo's by default) whose reference (orthophoto and tiles) was painted at the
photos' own date (gap 0) and at another (synth --epoch-gap 0.5: other sun and shadows, season, cars, buildings,
a coarser sensor), with 256 px and 1024 px drone photos; indexes each test gallery with the shipped model (and
the learned reference features `index build` stores), then localizes held-out photos with each matcher: fix
rate, camera within 5/25 m, false fixes (> 25 m), 95 % radius coverage, median error, R@1 before and after
verification, and wall seconds per photo (all stages). --large also times a 4000x3000 photo with its focal
length in EXIF, rendered by the world generator's camera.

Real cameras over real ground: --relief-m and --distortion render hilly worlds seen through a distorting lens
(synth's knobs; the photos carry DJI XMP with the lens and the gimbal's attitude); each is localized with the
world's dsm.tif in the index and without it (flat ground assumed), and --focal-errors also gives the localizer
a lens file whose focal length is off by those shares.

    python benchmarks/registration.py                          # about 25 minutes on 2 cores
    python benchmarks/registration.py --sizes 256 --photos 20 --features sift auto
    python benchmarks/registration.py --epoch-gaps 0 --sizes 256 --features auto --relief-m 80 --distortion -0.25 \
        --focal-errors 0 -0.25 0.25
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
from spikevimformer.geo import reference_features, terrain  # noqa: E402
from spikevimformer.geo.encoders import TorchEncoder, encode_tiles  # noqa: E402
from spikevimformer.geo.index import GalleryIndex, IndexConfig  # noqa: E402
from spikevimformer.geo.lens import CameraFile, read_camera_file  # noqa: E402
from spikevimformer.geo.localize import Localizer  # noqa: E402
from spikevimformer.geo.metrics import evaluate_localizer, load_queries  # noqa: E402
from spikevimformer.geo.raster import raster_size  # noqa: E402
from spikevimformer.geo.tiles import world_orthophoto, world_tiles  # noqa: E402
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


def indexed(world: Path, tmp: Path, dsm: bool = False) -> tuple[TorchEncoder, GalleryIndex]:
    """The shipped model and an index of the world's gallery with stored learned reference features (and the
    world's dsm.tif as terrain, as `index build --dsm` stores it)."""
    encoder = TorchEncoder.load("pretrained")  # tagged with the release's SHA-256, as the CLI tags it
    tiles = world_tiles(world)
    index = GalleryIndex.create(tmp / f"index-{world.name}-{'dsm' if dsm else 'flat'}", encoder.identity,
                                IndexConfig())  # fmt: skip
    index.add(tiles, encode_tiles(encoder, tiles, progress=False))
    reference_features.store(index, tiles)
    if dsm:
        image, wf, crs = world_orthophoto(world)
        terrain.store(index.folder, [terrain.resample_dsm(world / "dsm.tif", image, wf, crs, raster_size(image))])
    return encoder, index


def lens_file(world: Path, tmp: Path, error: float) -> CameraFile:
    """The world's cameras.json with its focal length off by `error` (a share: -0.25 = 25 % short)."""
    entries = json.loads((world / "cameras.json").read_text())
    for entry in entries.values():
        entry["focal_x"] *= 1 + error
        entry["focal_y"] *= 1 + error
    path = tmp / f"cameras-{world.name}-{error:+g}.json"
    path.write_text(json.dumps(entries))
    return read_camera_file(path)


def world_rows(world: Path, tmp: Path, features: list[str], photos: int, label: str, dsm: bool = False,
               focal_errors: tuple[float, ...] = ()) -> list[dict]:  # fmt: skip
    """Localize the world's held-out photos with each matcher at k = 5: accuracy in metres, seconds per photo;
    with `focal_errors`, once more per wrong lens given as a camera file."""
    encoder, index = indexed(world, tmp, dsm)
    queries = load_queries(world)
    pick = np.linspace(0, len(queries) - 1, num=min(photos, len(queries))).astype(int)
    chosen = [queries[i] for i in pick]
    rows = []
    for name in features:
        for error in focal_errors or (None,):
            camera = lens_file(world, tmp, error) if error is not None else None
            localizer = Localizer(encoder, index, k=5, register=RegisterConfig(features=name), camera=camera)
            localizer.localize_files([chosen[0].image])  # warm-up: weights, allocator, threads
            start = time.perf_counter()
            rep = evaluate_localizer(localizer, chosen, (1, 5), batch_size=1, progress=False)
            wall = (time.perf_counter() - start) / len(chosen)
            tag = label + (f", focal {100 * error:+.0f} %" if error else "")
            rows.append({"world": tag, "features": name, "photos": len(chosen), "s_per_photo": wall,
                         **{key: rep.get(key) for key in KEYS}})
            print(_row(rows[-1]), flush=True)
    return rows


KEYS = ("fix_rate", "camera_within_5m", "camera_within_25m", "false_fix_rate", "radius95_coverage",
        "fix_median_radius_m", "camera_median_error_m", "R@1", "R@1_verified", "R@5", "register_s_per_image",
        "tile_radius95_coverage", "tile_median_radius_m")  # fmt: skip
HEADER = (f"{'world':<60} {'features':<8} {'photos':>6} {'fix':>6} {'<=5 m':>6} {'<=25 m':>6} {'false':>6} "
          f"{'radius':>6} {'r med':>6} {'median m':>8} {'R@1 -> verified':>15} {'s/photo':>8} "
          f"{'no fix: radius holds, median':>29}")


def _row(r: dict) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    med = "-" if r["camera_median_error_m"] is None else f"{r['camera_median_error_m']:.2f}"
    rmed = "-" if r["fix_median_radius_m"] is None else f"{r['fix_median_radius_m']:.1f}"
    tile = "-" if r["tile_median_radius_m"] is None else f"{r['tile_median_radius_m']:.0f} m"
    return (f"{r['world']:<60} {r['features']:<8} {r['photos']:>6} {pct(r['fix_rate']):>6} "
            f"{pct(r['camera_within_5m']):>6} {pct(r['camera_within_25m']):>6} {pct(r['false_fix_rate']):>6} "
            f"{pct(r['radius95_coverage']):>6} {rmed:>6} {med:>8} "
            f"{pct(r['R@1']) + ' -> ' + pct(r['R@1_verified']):>15} "
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
    ap.add_argument("--relief-m", type=float, default=0.0, help="terrain relief of the worlds (synth --relief-m)")
    ap.add_argument("--distortion", type=float, default=0.0, help="lens k1 of the worlds (synth --distortion)")
    ap.add_argument("--focal-errors", type=float, nargs="+", default=[],
                    help="also localize with the world's lens file, its focal length off by these shares (0 = "
                         "the right lens given as a file)")  # fmt: skip
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
            cfg = SynthConfig(seed=args.seed, image_size=size, locations=args.locations, views=2, epoch_gap=gap,
                              relief_m=args.relief_m, distortion=args.distortion)  # fmt: skip
            world = tmp / f"world-g{gap:g}-{size}"
            generate_world(cfg, world, workers=2, progress=False)
            label = f"seed {args.seed}, gap {gap:g}, {size} px photos"
            if not args.relief_m:
                rows += world_rows(world, tmp, args.features, args.photos, label, False, tuple(args.focal_errors))
                continue
            label = label.replace("photos", f"relief {args.relief_m:g} m, k1 {args.distortion:g}")
            for dsm in (True, False):
                rows += world_rows(world, tmp, args.features, args.photos, label + (", dsm" if dsm else ", flat"),
                                   dsm, tuple(args.focal_errors))  # fmt: skip
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
