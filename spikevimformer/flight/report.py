"""A flight's HTML report: the track on a map in metres (and the truth when known), the per-frame error against
the 95 % radius, the numbers, the warnings; one self-contained file (the picture embedded as a data URI)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..analysis.visualize import _pyplot, save_figure
from ..fileio import atomic_write_text
from ..geodesy import LocalFrame
from .metrics import FlightTruth, frame_errors_m
from .track import TrackPoint

SOURCE_COLOURS = {"fix": "#2e7d32", "predicted": "#ef6c00", "tile": "#9e9e9e"}


def track_figure(points: Sequence[TrackPoint], truth: FlightTruth | None, out_png: Path) -> Path:
    """Left: the smoothed track, each frame's online estimate by source, rejected fixes and the truth (east/north
    metres). Right: per-frame error of the online and smoothed tracks against the online 95 % radius (with truth),
    else the radius alone."""
    plt = _pyplot()
    placed = [p for p in points if p.placed]
    origin = LocalFrame(placed[0].latitude, placed[0].longitude) if placed else LocalFrame(0.0, 0.0)
    fig, (ax, ax_err) = plt.subplots(1, 2, figsize=(13, 5.5))
    if truth:
        known = [t for p in points if (t := truth.at(p)) is not None]
        tx, ty = origin.to_local(*np.array(known).T)
        ax.plot(tx, ty, color="#1565c0", lw=2.5, alpha=0.35, label="truth")
    sx, sy = origin.to_local(np.array([p.smoothed_latitude for p in placed]),
                             np.array([p.smoothed_longitude for p in placed]))  # fmt: skip
    ax.plot(sx, sy, color="#333", lw=1.0, label="smoothed track")
    for source, colour in SOURCE_COLOURS.items():
        chosen = [p for p in placed if p.source == source]
        if chosen:
            x, y = origin.to_local(np.array([p.latitude for p in chosen]), np.array([p.longitude for p in chosen]))
            ax.scatter(x, y, s=9, color=colour, label=f"online: {source}", zorder=3)
    rejected = [p for p in points if p.rejected and p.fix_latitude is not None]
    if rejected:
        x, y = origin.to_local(np.array([p.fix_latitude for p in rejected]),
                               np.array([p.fix_longitude for p in rejected]))  # fmt: skip
        ax.scatter(x, y, s=30, marker="x", color="#c62828", label="rejected fix", zorder=4)
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", fontsize=8)
    ax.set_title("track")
    frames = np.array([p.frame for p in points])
    ax_err.plot(frames, [p.radius_m for p in points], color="#999", lw=1, label="online 95 % radius")
    if truth:
        for label, smoothed, colour in (("online error", False, "#ef6c00"), ("smoothed error", True, "#333")):
            ax_err.plot(frames, frame_errors_m(points, truth, smoothed), color=colour, lw=1.2, label=label)
    ax_err.set_yscale("log")
    ax_err.set_xlabel("frame")
    ax_err.set_ylabel("metres")
    ax_err.legend(loc="best", fontsize=8)
    ax_err.set_title("error and radius per frame" if truth else "95 % radius per frame")
    fig.tight_layout()
    return save_figure(fig, out_png)


def write_flight_report(path: str | Path, summary: dict, points: Sequence[TrackPoint],
                        truth: FlightTruth | None = None) -> Path:  # fmt: skip
    """report.html beside the track files (the figure is written next to it as track.png too)."""
    path = Path(path)
    png = track_figure(points, truth, path.with_name("track.png"))
    picture = base64.b64encode(png.read_bytes()).decode()
    sources = {s: sum(p.source == s for p in points) for s in SOURCE_COLOURS}
    rows = [("frames", summary["frames"]), ("camera fixes", summary["fixes"]),
            ("rejected by the filter", summary["rejected_fixes"]),
            ("frames placed by a fix / predicted / tile level only",
             f"{sources['fix']} / {sources['predicted']} / {sources['tile']}"),
            ("frames a second (all stages)", f"{summary['frames_per_second']:.2f}"),
            ("seconds a frame", f"{summary['seconds_per_frame']:.2f}"),
            ("interrupted", summary["interrupted"])]  # fmt: skip
    rows += [(key.replace("_", " "), f"{value:.3f}" if isinstance(value, float) else value)
             for key, value in summary.get("metrics", {}).items()]  # fmt: skip
    table = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in summary.get("warnings", []))
    files = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in summary.get("files", {}).items())
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>spikevimformer flight</title><style>"
        "body{font-family:sans-serif;max-width:1300px;margin:1em auto}th{text-align:left;padding-right:1em}"
        "img{max-width:100%}</style></head><body><h1>Flight</h1>"
        f"<img alt='track and per-frame error' src='data:image/png;base64,{picture}'>"
        f"<h2>Numbers</h2><table>{table}</table>"
        + (f"<h2>Warnings</h2><ul>{warnings}</ul>" if warnings else "")
        + f"<h2>Files</h2><ul>{files}</ul></body></html>\n"
    )
    return atomic_write_text(path, page)
