"""`spikevimformer synth`: write the embedded synthetic cross-view world (University-1652 or SUES-200 layout)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..data.synth import LAYOUTS, NEW_WORLD_EPOCH_GAP, SynthConfig, default_workers, generate_world
from ..data.synth.flight import FlightPlan, render_flight
from ..fileio import folder_lock
from .common import add_image_size


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth", help="generate a synthetic drone/satellite geo-localization dataset (deterministic per seed)",
        description="Render a procedural (or your own) geo-referenced world as a University-1652 or SUES-200 "
                    "dataset, with ortho.jpg/.jgw, locations.csv, cameras.csv and world.json, and score a "
                    "non-learned baseline.",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="output folder (gets University-1652/ or SUES-200/ and the CSVs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=LAYOUTS, default="university1652")
    p.add_argument("--locations", type=int, help="total locations (default 250 University-1652, 200 SUES-200)")
    p.add_argument("--views", type=int, help="drone views per location (per altitude for SUES-200; default 8 / 5)")
    add_image_size(p, default=256)
    g = p.add_argument_group("difficulty")
    g.add_argument("--altitudes", type=float, nargs="+", metavar="M",
                   help="camera altitudes in metres: MIN MAX of the descending circle (University-1652, default "
                        "70 120) or the SUES-200 heights (default 150 200 250 300)")
    g.add_argument("--pitch", type=float, nargs=2, metavar=("MIN", "MAX"), default=(45.0, 60.0),
                   help="camera depression below the horizon, degrees (tilt spread)")
    g.add_argument("--heading-jitter", type=float, default=12.0, help="heading spread around the circle, degrees")
    g.add_argument("--photometric", type=float, default=1.0, help="light/colour/haze/blur/noise strength (0 = off)")
    g.add_argument("--epoch-gap", type=epoch_gap, metavar="G",
                   help="how far apart (0..1) the dates of the reference (ortho.jpg, satellite tiles) and the drone "
                        "photos are: another sun and shadows, season, crops, cars, some buildings, and a coarser, "
                        f"blurrier reference sensor; 0 = one date (default: {NEW_WORLD_EPOCH_GAP:g}; 0 with --ground)")
    g.add_argument("--fov", type=float, help="drone lens field of view, degrees (default: fitted to --coverage)")
    g.add_argument("--distortion", type=float, default=0.0, metavar="K1",
                   help="radial distortion k1 of the drone lens, -0.4..0.4 (DJI Phantom 4: about -0.26; k2 = -0.4 "
                        "k1), written to cameras.csv, cameras.json and each photo's DJI XMP DewarpData (default: 0, "
                        "a pinhole)")  # fmt: skip
    g.add_argument("--relief-m", type=float, default=0.0, metavar="M",
                   help="terrain relief of the procedural world, lowest to highest point, 0..500 m: the drone views "
                        "see the hills, the orthophoto is a true ortho of them and dsm.tif gives their heights "
                        "(default: 0, flat ground)")  # fmt: skip
    g.add_argument("--coverage", type=float, default=1.1, help="drone view width at the target / tile footprint")
    w = p.add_argument_group("world")
    w.add_argument("--footprint", type=float, default=100.0, help="ground side of a satellite tile, metres")
    w.add_argument("--gsd", type=float, help="ground resolution in metres per pixel (procedural default 0.5)")
    w.add_argument("--spacing", type=float, help="least distance between locations, metres (default: footprint)")
    w.add_argument("--test-fraction", type=float, help="share of test locations (default 0.2; SUES-200 0.4)")
    w.add_argument("--distractor-fraction", type=float, default=0.16, help="University-1652 gallery-only locations")
    w.add_argument("--origin", type=float, nargs=2, metavar=("LAT", "LON"),
                   help="latitude/longitude of the world's north-west corner (default: drawn from the seed)")
    w.add_argument("--ground", metavar="IMAGE", help="your own north-up RGB orthophoto instead of the procedural one")
    w.add_argument("--world-file", metavar="F", help="its world file (.jgw/.tfw/.wld) for the geotransform")
    w.add_argument("--crs", default="EPSG:4326", help="the world file's coordinate system (EPSG:4326, UTM:33N, ...)")
    w.add_argument("--dsm", metavar="DSM.tif",
                   help="surface heights of --ground in metres (a GeoTIFF in any CRS; needs --world-file): the "
                        "views are cast onto its bare ground and what stands on it is extruded; dsm.tif is "
                        "written for index build --dsm")  # fmt: skip
    w.add_argument("--dsm-units", choices=("m", "ft"), help="what the DSM's heights are in, when its CRS is "
                                                           "feet-based (default: metres)")  # fmt: skip
    w.add_argument("--heights", metavar="IMAGE", help="or the surface heights as an image aligned with --ground "
                                                      "pixel for pixel (grey level x --height-scale = metres)")
    w.add_argument("--height-scale", type=float, default=1.0)
    f = p.add_argument_group("flight", "also fly over the world: OUT/flight/frames/ and OUT/flight/cameras.csv, "
                             "for `spikevimformer flight --truth`")  # fmt: skip
    f.add_argument("--flight", type=int, metavar="FRAMES", help="frames of a flight through the test locations")
    f.add_argument("--flight-fps", type=float, default=FlightPlan.fps, help="frames per second")
    f.add_argument("--flight-speed", type=float, default=FlightPlan.speed_mps, help="metres per second")
    f.add_argument("--flight-height", type=float, default=FlightPlan.altitude_m, help="metres above the ground")
    f.add_argument("--flight-pitch", type=float, default=FlightPlan.pitch_deg, help="degrees below the horizon")
    f.add_argument("--flight-size", type=int, default=FlightPlan.size, help="frame size in px")
    f.add_argument("--flight-blank", type=int, nargs=2, metavar=("FIRST", "END"),
                   help="frames [FIRST, END) over featureless water (nothing to register)")
    p.add_argument("--workers", type=int, default=default_workers(), help="rendering processes")
    p.add_argument("--overwrite", action="store_true", help="replace an existing world in --out")
    p.add_argument("--no-progress", "--quiet", dest="quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def epoch_gap(text: str) -> float:
    """argparse type: an epoch gap, a number in 0..1, checked before any work."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in 0..1, got {text!r}") from None
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise argparse.ArgumentTypeError(f"must lie in 0..1, got {value:g}")
    return value


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    return SynthConfig(
        seed=args.seed, layout=args.layout, locations=args.locations, views=args.views, image_size=args.image_size,
        footprint_m=args.footprint, gsd_m=args.gsd, spacing_m=args.spacing,
        altitudes_m=tuple(args.altitudes) if args.altitudes else None, pitch_deg=tuple(args.pitch),
        heading_jitter_deg=args.heading_jitter, coverage=args.coverage, fov_deg=args.fov,
        photometric=args.photometric, test_fraction=args.test_fraction,
        epoch_gap=(0.0 if args.ground else NEW_WORLD_EPOCH_GAP) if args.epoch_gap is None else args.epoch_gap,
        distractor_fraction=args.distractor_fraction, origin=tuple(args.origin) if args.origin else None,
        ground=args.ground, world_file=args.world_file, crs=args.crs, heights=args.heights,
        height_scale=args.height_scale, dsm=args.dsm, dsm_units=args.dsm_units, relief_m=args.relief_m,
        distortion=args.distortion,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.relief_m and args.ground:
        raise ValueError("--relief-m shapes the procedural world's terrain; a --ground orthophoto keeps its own")
    if args.dsm and args.ground and not args.world_file:
        raise ValueError("--dsm lies on the orthophoto's georeference: pass its world file too (--world-file F)")
    if (args.world_file or args.heights or args.dsm) and not args.ground:
        raise ValueError("--world-file, --dsm and --heights describe a --ground orthophoto; pass --ground IMAGE too "
                         "(the procedural world's hills: --relief-m)")  # fmt: skip
    plan = None
    if args.flight is not None:  # checked before minutes of rendering
        plan = FlightPlan(args.flight, args.flight_fps, args.flight_speed, args.flight_height, args.flight_pitch,
                          args.flight_size, tuple(args.flight_blank) if args.flight_blank else None)  # fmt: skip
    with folder_lock(args.out, "synth"):
        summary = generate_world(config_from_args(args), args.out, workers=args.workers, overwrite=args.overwrite,
                                 progress=not args.quiet)
        if plan is not None:
            render_flight(config_from_args(args), plan, Path(args.out) / "flight", progress=not args.quiet)
    if args.json:
        print(json.dumps({"out": str(summary.out_dir), "dataset": str(summary.dataset_dir), "seed": summary.seed,
                          "counts": summary.counts, "baseline": summary.baseline, "world": summary.world,
                          "seconds": summary.seconds, "notes": summary.notes, "epochs": summary.epochs}, indent=2))
        return 0
    c = summary.counts
    w = summary.world
    print(f"synthetic world (seed {summary.seed}) written to {summary.out_dir} in {summary.seconds:.1f} s")
    print(f"  {summary.dataset_dir.name}: {c['train']} train, {c['test']} test, {c['distractor']} distractor "
          f"locations; "
          f"{c['drone_views_rendered']} drone views rendered ({c['drone_images_written']} files), "
          f"{c['buildings']} buildings")
    print(f"  ground {w['size_m'][0]:.0f} x {w['size_m'][1]:.0f} m at {w['ground_resolution_m']:g} m/px, north-west "
          f"corner at ({w['origin_latitude']:.6f}, {w['origin_longitude']:.6f})")
    for row in summary.baseline:
        alt = f" at {row['altitude']} m" if "altitude" in row else ""
        print(f"  non-learned drone->satellite{alt} ({row['queries']} queries, {row['gallery']} gallery, chance R@1 "
              f"{100 * row['chance_r1']:.1f}%): colour histogram R@1 {100 * row['colour_histogram']['r1']:.1f}%, "
              f"down-sampled pixels R@1 {100 * row['downsampled_pixels']['r1']:.1f}%")
    if summary.epochs:
        e = summary.epochs
        print(f"  epoch gap {e['gap']:g}: ortho.jpg and the satellite tiles show another date than the drone photos, "
              f"through a {e['sensor']['gsd_m']:.2g} m sensor (world.json: epochs; --epoch-gap 0 for one date)")
    for note in summary.notes:
        print(f"  note: {note}")
    if plan is not None:
        print(f"  flight: {plan.frames} frames at {plan.fps:g} fps in {Path(args.out) / 'flight'} (next: "
              f"spikevimformer flight {Path(args.out) / 'flight' / 'frames'} --index INDEX --truth "
              f"{Path(args.out) / 'flight' / 'cameras.csv'})")
    print(f"  next: spikevimformer data check {summary.dataset_dir}")
    return 0
