"""Calibrate the tile-level answer of a model (the radius it reports when nothing registers, and the similarity
under which a photo is probably not of a place in the index) on synthetic worlds, and check it on held-out ones.

For every seed and epoch gap a world is rendered and its test gallery indexed; its held-out photos give (top-1
similarity, distance of the top-1 tile's centre from the camera); the photos of the next seed's world, retrieved
against the same index, are places outside it. The fit (spikevimformer.geo.fallback.fit) is then checked on the
--check seeds: how often the radius holds the camera, and how many photos inside and outside get flagged.

    python scripts/calibrate_fallback.py --write    # the shipped model's calibration, about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spikevimformer.data.synth import SynthConfig, generate_world  # noqa: E402
from spikevimformer.geo import fallback  # noqa: E402
from spikevimformer.geo.encoders import TorchEncoder, encode_tiles  # noqa: E402
from spikevimformer.geo.index import GalleryIndex, IndexConfig  # noqa: E402
from spikevimformer.geo.localize import Localizer  # noqa: E402
from spikevimformer.geo.metrics import load_queries  # noqa: E402
from spikevimformer.geo.tiles import world_tiles  # noqa: E402
from spikevimformer.geodesy import haversine_m  # noqa: E402
from spikevimformer.pretrained import get_release  # noqa: E402

RESOURCES = Path(__file__).resolve().parents[1] / "spikevimformer" / "resources"


def world(seed: int, gap: float, args, tmp: Path) -> Path:
    out = tmp / f"world-{seed}-g{gap:g}"
    if not (out / "world.json").is_file():
        generate_world(SynthConfig(seed=seed, image_size=args.image_size, locations=args.locations, views=2,
                                   epoch_gap=gap), out, workers=2, progress=False)  # fmt: skip
    return out


def samples(encoder: TorchEncoder, seeds: list[int], gaps: list[float], args, tmp: Path) -> tuple[list, list]:
    """Photos inside their world's index: (top-1 similarity, top-1 tile is the photo's own, camera's distance from
    its centre in footprints, footprint in metres, distances from it to every tile in metres); the top-1
    similarities of photos of the next seed's world retrieved against the same index (outside)."""
    inside, outside = [], []
    for gap in gaps:
        for n, seed in enumerate(seeds):
            here, other = world(seed, gap, args, tmp), world(seeds[(n + 1) % len(seeds)], gap, args, tmp)
            tiles = world_tiles(here)
            lat, lon = np.array([t.latitude for t in tiles]), np.array([t.longitude for t in tiles])
            index = GalleryIndex.create(tmp / f"index-{here.name}", encoder.identity, IndexConfig(), overwrite=True)
            index.add(tiles, encode_tiles(encoder, tiles, progress=False))
            localizer = Localizer(encoder, index, k=1, register=None)
            queries = load_queries(here)
            for q, r in zip(queries, localizer.localize_files([q.image for q in queries]), strict=True):
                top = r.matches[0]
                error = float(haversine_m(q.latitude, q.longitude, top.latitude, top.longitude)) / top.footprint_m
                inside.append((top.score, top.id == q.id, error, top.footprint_m,
                               haversine_m(top.latitude, top.longitude, lat, lon)))  # fmt: skip
            outside += [r.matches[0].score for r in localizer.localize_files([q.image for q in load_queries(other)])]
            print(f"  seed {seed} gap {gap:g}: {len(inside)} photos inside, {len(outside)} outside so far", flush=True)
    return inside, outside


def main() -> None:
    class Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        """The docstring as written, and every option's default."""

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=Help)
    ap.add_argument("--model", default="pretrained", help="a shipped model's name (the calibration ships with it)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[3030, 3031, 3032], help="calibration worlds")
    ap.add_argument("--check", type=int, nargs="+", default=[4040, 4041], help="held-out worlds")
    ap.add_argument("--gaps", type=float, nargs="+", default=[0.0, 0.5], help="reference epochs (synth --epoch-gap)")
    ap.add_argument("--locations", type=int, default=300, help="locations of each rendered world")
    ap.add_argument("--image-size", type=int, default=256, help="drone photo size of the worlds in px")
    ap.add_argument("--bins", type=int, default=4, help="top-1 similarity bins (equal numbers of photos)")
    ap.add_argument("--min-odds", type=float, default=4.0,
                    help="'probably not in this index' only where it flags this many times as large a share of "
                         "photos outside an index as inside, on the calibration and the held-out worlds alike")
    ap.add_argument("--write", action="store_true", help="write resources/<release>-fallback.json")
    ap.add_argument("--work", help="keep the worlds here (none: a temporary folder)")
    args = ap.parse_args()
    if min(len(args.seeds), len(args.check)) < 2:
        ap.error("--seeds and --check need two seeds or more each (one world's photos are outside the next's index)")
    torch.set_num_threads(2)
    release = get_release(args.model)
    encoder = TorchEncoder.load(args.model)
    tmp = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="calibrate-fallback-"))
    tmp.mkdir(parents=True, exist_ok=True)
    print("calibration worlds")
    inside, outside = samples(encoder, args.seeds, args.gaps, args, tmp)
    argv = sys.argv[1:]
    if "--work" in argv:  # a cache of the worlds: the same seeds render the same worlds anywhere
        del argv[argv.index("--work") : argv.index("--work") + 2]
    command = "python scripts/calibrate_fallback.py " + shlex.join(argv)
    fit = fallback.fit([p[0] for p in inside], [p[1] for p in inside], [p[2] for p in inside if p[1]], outside,
                       encoder.identity.checkpoint_sha256,
                       encoder.identity.image_size, args.bins, min_odds=args.min_odds,
                       command=command)  # fmt: skip
    print("held-out worlds")
    held, held_outside = samples(encoder, args.check, args.gaps, args, tmp)
    radii = np.array([fit.radius_m(score, footprint, d) for score, _, _, footprint, d in held])
    errors = np.array([p[2] * p[3] for p in held])
    check = {"seeds": args.check, "photos": len(held), "coverage": float((errors <= radii).mean()),
             "top1_right": float(np.mean([p[1] for p in held])),
             "median_radius_m": float(np.median(radii)), "median_error_m": float(np.median(errors)),
             "inside_flagged": float(np.mean([fit.elsewhere(p[0]) for p in held])),
             "outside_flagged": float(np.mean([fit.elsewhere(s) for s in held_outside]))}  # fmt: skip
    measured = {**fit.measured, "held_out": check}
    if check["outside_flagged"] < args.min_odds * max(check["inside_flagged"], 1 / len(held)):
        # the flag must tell places apart on worlds it never saw, not only on those it was cut on
        measured["elsewhere_refused"] = {"cut": fit.elsewhere_below, "why": "held-out odds under --min-odds"}
        fit = fallback.TileFallback(**{**fit.__dict__, "elsewhere_below": fallback.NEVER})
    fit = fallback.TileFallback(**{**fit.__dict__, "measured": measured})
    edges, shares = (", ".join(f"{v:.3f}" for v in values) for values in (fit.score_edges, fit.p_right))
    print(f"bins split at top-1 similarities {edges}: top-1 tile right for {shares}; camera within "
          f"{fit.right_radius_footprints:.2f} footprints of a right tile's centre; 'probably not in this index' "
          f"below {fit.elsewhere_below:.3f}")  # fmt: skip
    if "elsewhere_refused" in measured:
        print("'probably not in this index' refused: on the held-out worlds the similarity cut flags "
              f"{100 * check['outside_flagged']:.1f} % of photos outside and {100 * check['inside_flagged']:.1f} % "
              "inside; this model cannot tell them apart")  # fmt: skip
    print(f"held out ({check['photos']} photos, top-1 right {100 * check['top1_right']:.1f} %): the radius holds the "
          f"camera for {100 * check['coverage']:.1f} %, median radius {check['median_radius_m']:.0f} m (median "
          f"error {check['median_error_m']:.0f} m); the similarity cut flags inside "
          f"{100 * check['inside_flagged']:.1f} %, outside {100 * check['outside_flagged']:.1f} %")  # fmt: skip
    if args.write:
        path = RESOURCES / f"{release.name}-fallback.json"
        fit.save(path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
