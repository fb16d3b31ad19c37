"""Registration benchmark: seconds per photo for photo -> camera position, at k = 1, 5, 10 and for a 4000x3000 photo.

Renders the demo's world (seed 2026) with 256 px drone photos unless --world names one, indexes its test
gallery with the shipped pretrained model at 64 px, then localizes the same photos at every k in turn (photo by
photo, the k order rotating, so drift hits every k alike) and reports medians. The large photo is rendered from
the same world by the world generator's camera at 4000x4000 px and cropped to 4000x3000 (principal point kept at
the centre), with its focal length in EXIF like a drone photo.

    python benchmarks/registration.py                 # about 2 minutes on 2 cores
    python benchmarks/registration.py --photos 100 --threads 2 --json out.json
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
from spikevimformer.geo.encoders import TorchEncoder, encode_tiles  # noqa: E402
from spikevimformer.geo.index import GalleryIndex, IndexConfig  # noqa: E402
from spikevimformer.geo.localize import Localizer  # noqa: E402
from spikevimformer.geo.metrics import load_queries  # noqa: E402
from spikevimformer.geo.tiles import world_tiles  # noqa: E402
from spikevimformer.geodesy import haversine_m  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", help="a synthetic world with ortho.jpg (default: render the demo world at 256 px)")
    ap.add_argument("--photos", type=int, default=40, help="held-out photos timed at each k")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-registration-"))
    cfg = SynthConfig(seed=SEED, image_size=256)
    world = Path(args.world) if args.world else tmp / "world"
    if not args.world:
        print("rendering the demo world at 256 px ...", flush=True)
        generate_world(cfg, world, workers=2)
    from spikevimformer.pretrained import load_pretrained

    model = load_pretrained()
    encoder = TorchEncoder(model, model.image_size, "pretrained")
    tiles = world_tiles(world)
    index = GalleryIndex.create(tmp / "index", encoder.identity, IndexConfig())
    index.add(tiles, encode_tiles(encoder, tiles, progress=False))
    localizer = Localizer(encoder, index)
    queries = load_queries(world)
    pick = np.linspace(0, len(queries) - 1, num=min(args.photos, len(queries))).astype(int)
    paths = [queries[i].image for i in pick]
    ks = (1, 5, 10)
    seconds: dict[int, list[float]] = {k: [] for k in ks}
    register: dict[int, list[float]] = {k: [] for k in ks}
    fixes: dict[int, int] = dict.fromkeys(ks, 0)
    localizer.localize_files(paths[:2], k=10)  # warm-up: reference windows, allocator, threads
    for n, path in enumerate(paths):
        for k in ks[n % 3 :] + ks[: n % 3]:
            start = time.perf_counter()
            (r,) = localizer.localize_files([path], k=k)
            seconds[k].append(time.perf_counter() - start)
            register[k].append(r.register_s)
            fixes[k] += r.fix
    rows = [{"photo": "256 px (demo world)", "k": k, "photos": len(paths),
             "s_per_photo_median": statistics.median(seconds[k]),
             "registration_s_median": statistics.median(register[k]), "fix_rate": fixes[k] / len(paths)}
            for k in ks]  # fmt: skip
    print("rendering a 4000x3000 photo ...", flush=True)
    big, truth = large_photo(cfg, tmp)
    times, errors = [], []
    for _ in range(5):
        start = time.perf_counter()
        (r,) = localizer.localize_files([str(big)], k=5)
        times.append(time.perf_counter() - start)
        est = r.estimate
        errors.append(float(haversine_m(truth[0], truth[1], est["latitude"], est["longitude"])))
    rows.append({"photo": "4000x3000 (EXIF focal length)", "k": 5, "photos": 1, "s_per_photo_median":
                 statistics.median(times), "registration_s_median": r.register_s, "fix_rate": float(r.fix),
                 "camera_error_m": errors[-1]})  # fmt: skip
    print(f"\n{'photo':<32} {'k':>3} {'photos':>6} {'s/photo':>8} {'of which registration':>22} {'fix rate':>9}")
    for row in rows:
        print(f"{row['photo']:<32} {row['k']:>3} {row['photos']:>6} {row['s_per_photo_median']:>8.3f} "
              f"{row['registration_s_median']:>22.3f} {100 * row['fix_rate']:>8.1f}%")  # fmt: skip
    print(f"4000x3000 camera error {errors[-1]:.2f} m; peak memory {peak_rss_mb():.0f} MB; "
          f"{args.threads} threads on {platform.processor() or platform.machine()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "peak_rss_mb": peak_rss_mb(), "threads": args.threads},
                                              indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
