"""How good a track is against the truth: trajectory RMSE, error percentiles, frames within 5/10/25 m, the longest
stretch without a fix, rejected fixes, and how often the 95 % radius holds the camera (online and smoothed)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..geo.metrics import load_queries
from ..geodesy import haversine_m
from .track import TrackPoint


@dataclass(frozen=True)
class FlightTruth:
    """Where each frame really was: by frame file name (a photo folder's cameras.csv or truth CSV), or by time along
    the flight (a flight log beside a video: positions at `times` seconds on the frames' clock, interpolated)."""

    by_name: dict[str, tuple[float, float]] = field(default_factory=dict)
    times: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (n,) seconds, increasing
    positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (n, 2) latitude, longitude

    def at(self, point: TrackPoint) -> tuple[float, float] | None:
        """The frame's true (latitude, longitude), or None where the truth does not reach it (no name, or a time
        outside the log: never extrapolated)."""
        if point.name in self.by_name:
            return self.by_name[point.name]
        if len(self.times) < 2 or not self.times[0] <= point.time_s <= self.times[-1]:
            return None
        return (float(np.interp(point.time_s, self.times, self.positions[:, 0])),
                float(np.interp(point.time_s, self.times, self.positions[:, 1])))  # fmt: skip

    def __bool__(self) -> bool:
        return bool(self.by_name) or len(self.times) >= 2


def flight_truth(source: str | Path) -> FlightTruth:
    """The truth of a flight: a cameras.csv or truth CSV by frame file name (or the folder holding it, or the world
    folder `synth --flight` wrote it into), or a CSV of `time_s,latitude,longitude` rows (a flight log; time on the
    frames' clock: seconds from a video's first frame, or the flight's EXIF/--fps clock). Raises ValueError naming
    the file for a time log without two usable rows or with a position that is no latitude/longitude."""
    path = Path(source)
    if path.is_dir() and (path / "flight" / "cameras.csv").is_file():  # the world `synth --flight` wrote
        path = path / "flight"
    if path.is_file() and _is_time_log(path):
        return _time_log(path)
    return FlightTruth(by_name={Path(q.image).name: (q.latitude, q.longitude) for q in load_queries(path)})


def _is_time_log(path: Path) -> bool:
    with path.open(newline="", encoding="utf-8-sig") as f:
        header = {h.strip().lower() for h in next(csv.reader(f), [])}
    return "time_s" in header and "image" not in header


def _time_log(path: Path) -> FlightTruth:
    rows = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            try:
                t, lat, lon = float(row["time_s"]), float(row["latitude"]), float(row["longitude"])
            except (KeyError, ValueError):
                raise ValueError(f"{path} line {line}: a flight log needs numbers in time_s, latitude and longitude, "
                                 f"got {row.get('time_s')!r}, {row.get('latitude')!r}, {row.get('longitude')!r}"
                                 ) from None  # fmt: skip
            if not (np.isfinite(t) and -90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"{path} line {line}: {lat}, {lon} at {t} s is not a latitude and longitude")
            rows.append((t, lat, lon))
    rows.sort()
    if len({t for t, _, _ in rows}) < 2:
        raise ValueError(f"{path}: a flight log needs at least two rows at different times (time_s, latitude, "
                         "longitude)")  # fmt: skip
    data = np.array(rows, dtype=np.float64)
    return FlightTruth(times=data[:, 0], positions=data[:, 1:])


def frame_errors_m(points: Sequence[TrackPoint], truth: FlightTruth, smoothed: bool = False) -> np.ndarray:
    """(n,) metres from each frame's online (or smoothed) position to its true one; NaN without truth or position."""
    true = np.array([truth.at(p) or (np.nan, np.nan) for p in points], dtype=np.float64).reshape(-1, 2)
    lat = np.array([p.smoothed_latitude if smoothed else p.latitude for p in points], dtype=np.float64)
    lon = np.array([p.smoothed_longitude if smoothed else p.longitude for p in points], dtype=np.float64)
    return haversine_m(true[:, 0], true[:, 1], lat, lon)


def flight_metrics(points: Sequence[TrackPoint], truth: FlightTruth,
                   thresholds_m: Sequence[float] = (5, 10, 25)) -> dict:  # fmt: skip
    """Metrics over the frames the truth reaches (by name, or by time within its log); ValueError when it reaches
    none of them."""
    known = [p for p in points if truth.at(p) is not None]
    if not known:
        raise ValueError("the truth reaches none of the flight's frames: a truth CSV matches them by file name, a "
                         "flight log (time_s, latitude, longitude) by time on the frames' clock")  # fmt: skip
    out: dict = {"frames": len(points), "evaluated": len(known), "fix_rate": float(np.mean([p.fix_latitude is not None
                                                                                            for p in points])),
                 "rejected_fixes": sum(p.rejected for p in points), "placed": sum(p.placed for p in points),
                 "longest_without_fix": _longest_gap(points)}  # fmt: skip
    for prefix, smoothed in (("online", False), ("smoothed", True)):
        err = frame_errors_m(known, truth, smoothed)
        radius = np.array([p.smoothed_radius_m if smoothed else p.radius_m for p in known], dtype=np.float64)
        ok = np.isfinite(err)
        if not ok.any():
            continue
        err, radius = err[ok], radius[ok]
        out[f"{prefix}_rmse_m"] = float(np.sqrt(np.mean(err**2)))
        out[f"{prefix}_median_error_m"] = float(np.median(err))
        out[f"{prefix}_p95_error_m"] = float(np.percentile(err, 95))
        out[f"{prefix}_max_error_m"] = float(err.max())
        for t in thresholds_m:
            out[f"{prefix}_within_{t:g}m"] = float(np.mean(err <= t))
        out[f"{prefix}_radius95_coverage"] = float(np.mean(err <= radius))
    return out


def _longest_gap(points: Sequence[TrackPoint]) -> int:
    """The most frames in a row without a fused fix."""
    longest = run = 0
    for p in points:
        run = 0 if p.source == "fix" else run + 1
        longest = max(longest, run)
    return longest


def format_metrics(m: dict) -> str:
    lines = [f"frames {m['frames']} ({m['evaluated']} with truth), camera fixes {100 * m['fix_rate']:.1f} %, "
             f"rejected by the filter {m['rejected_fixes']}, longest stretch without a fix {m['longest_without_fix']} "
             "frames"]  # fmt: skip
    for prefix in ("online", "smoothed"):
        if f"{prefix}_rmse_m" not in m:
            continue
        within = ", ".join(f"{100 * v:.1f} % within {k.split('_within_')[1][:-1]} m" for k, v in m.items()
                           if k.startswith(f"{prefix}_within_"))  # fmt: skip
        lines.append(f"{prefix:>8}: RMSE {m[f'{prefix}_rmse_m']:.2f} m, median {m[f'{prefix}_median_error_m']:.2f} m, "
                     f"95th percentile {m[f'{prefix}_p95_error_m']:.2f} m, max {m[f'{prefix}_max_error_m']:.1f} m; "
                     f"{within}; 95 % radius holds {100 * m[f'{prefix}_radius95_coverage']:.1f} %")  # fmt: skip
    return "\n".join(lines)
