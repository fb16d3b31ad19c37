"""`spikevimformer flight FRAMES --index DIR`: a folder of frames or a video -> a filtered track (CSV, GeoJSON,
GPX, KML); --truth for its errors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..engine.signals import Interrupted
from ..fileio import atomic_write_text, refuse_overwrite
from ..flight.filter import FilterConfig
from ..flight.fly import FlightConfig, FlightTracker
from ..flight.frames import read_frames
from ..flight.metrics import flight_metrics, flight_truth, format_metrics
from ..flight.report import write_flight_report
from ..flight.track import write_all
from ..progress import progress_bar
from .common import add_device, add_model, add_overwrite, add_registration, open_localizer_from_args

OUTPUTS = ("track.csv", "track.geojson", "track.gpx", "track.kml", "summary.json", "report.html", "track.png")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flight", help="localize a flight's frames (a folder of photos or a video) into a track")
    p.add_argument("frames", help="a folder of photos (timed by EXIF DateTimeOriginal, else --fps in name order) "
                                  "or a video file OpenCV reads")  # fmt: skip
    p.add_argument("--index", required=True, help="gallery index folder (spikevimformer index build)")
    p.add_argument("--out", default="runs/flight", help="output folder (track.csv/.geojson/.gpx/.kml, summary.json, "
                                                        "report.html)")  # fmt: skip
    p.add_argument("--fps", type=float, help="frames per second: times a folder's photos in name order (instead "
                                             "of their EXIF time), or overrides a video's own rate; frames so timed "
                                             "have no date, so the GPX and KML carry no times")  # fmt: skip
    p.add_argument("--every", type=int, default=1, help="use every N-th frame of a video (or photo of a folder)")
    p.add_argument("--start", type=float, nargs=2, metavar=("LAT", "LON"),
                   help="where the flight starts (the last GNSS position)")
    p.add_argument("--start-radius", type=float, default=50.0, metavar="M", help="95 %% radius of --start, metres")
    p.add_argument("--accel", type=float, default=FilterConfig.accel_sigma, metavar="M_S2",
                   help="the filter's acceleration noise (standard deviation, m/s^2)")
    p.add_argument("--truth", metavar="CSV_OR_FOLDER",
                   help="true camera positions matched to frames by file name: a CSV image,latitude,longitude (the "
                        "cameras.csv `synth --flight` writes), or the folder holding it, or that world's folder; or "
                        "a flight log time_s,latitude,longitude (interpolated to each frame's time: a video's "
                        "seconds from its first frame); prints the track's errors")  # fmt: skip
    add_model(p, onnx=True, index=True)
    add_device(p)
    p.add_argument("-k", "--top-k", type=int, default=5, help="tiles verified by registration per frame")
    add_registration(p)
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    refuse_overwrite([out / name for name in OUTPUTS], args.overwrite)
    cfg = FlightConfig(tuple(args.start) if args.start else None, args.start_radius,
                       FilterConfig(accel_sigma=args.accel))  # fmt: skip
    truth = flight_truth(args.truth) if args.truth else None  # a bad file is refused before the frames are read
    frames = read_frames(args.frames, args.fps, args.every)
    localizer = open_localizer_from_args(args)
    tracker = FlightTracker(localizer, cfg)
    interrupted = False
    bar = progress_bar(desc="frames", unit="frame", progress=not args.no_progress)
    try:
        for frame in frames:
            point = tracker.add(frame)
            bar.update()
            bar.set_postfix_str(f"{point.source}, radius {point.radius_m:.0f} m", refresh=False)
    except KeyboardInterrupt:  # the frames so far are a track: it is written below
        interrupted = True
    finally:
        bar.close()
    flight = tracker.finish()
    if not flight.points:
        if interrupted:
            print("\ninterrupted before the first frame was localized: nothing written", file=sys.stderr)
            raise Interrupted
        raise ValueError(f"{args.frames} gave no frames")
    files = write_all(out, flight.points, Path(args.frames).name, flight.started)
    summary = {"frames": len(flight.points), "fixes": flight.fixes, "rejected_fixes": flight.rejected,
               "started": None if flight.started is None else flight.started.isoformat(timespec="milliseconds"),
               "seconds_per_frame": sum(flight.seconds) / len(flight.seconds),
               "frames_per_second": len(flight.seconds) / max(sum(flight.seconds), 1e-9), "warnings": flight.warnings,
               "interrupted": interrupted, "files": {k: str(v.resolve()) for k, v in files.items()}}  # fmt: skip
    if truth is not None:
        try:
            summary["metrics"] = flight_metrics(flight.points, truth)
        except ValueError as exc:  # the track stands; only its errors cannot be told
            flight.warnings.append(f"--truth {args.truth}: {exc}")
    summary["files"]["report"] = str((out / "report.html").resolve())
    write_flight_report(out / "report.html", summary, flight.points, truth if "metrics" in summary else None)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    for warning in flight.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{len(flight.points)} frames, {flight.fixes} camera fixes ({flight.rejected} rejected by the filter), "
          f"{summary['frames_per_second']:.2f} frames/s ({summary['seconds_per_frame']:.2f} s a frame); track in "
          f"{out}/track.{{csv,geojson,gpx,kml}}, report "
          f"{out}/report.html")
    if "metrics" in summary:
        print(format_metrics(summary["metrics"]))
    if interrupted:
        print(f"\ninterrupted after {len(flight.points)} frames: the track so far is in {out}", file=sys.stderr)
        raise Interrupted
    return 0
