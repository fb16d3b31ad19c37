"""How good a track is against the truth: trajectory RMSE, error percentiles, frames within 5/10/25 m, the longest
stretch without a fix, rejected fixes, and how often the 95 % radius holds the camera (online and smoothed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..geo.metrics import load_queries
from ..geodesy import haversine_m
from .track import TrackPoint


def flight_truth(source: str | Path) -> dict[str, tuple[float, float]]:
    """(latitude, longitude) by frame file name from a flight's cameras.csv, the folder holding it, or the world
    folder `synth --flight` wrote it into."""
    path = Path(source)
    if path.is_dir() and (path / "flight" / "cameras.csv").is_file():  # the world `synth --flight` wrote
        path = path / "flight"
    return {Path(q.image).name: (q.latitude, q.longitude) for q in load_queries(path)}


def frame_errors_m(points: Sequence[TrackPoint], truth: dict[str, tuple[float, float]],
                   smoothed: bool = False) -> np.ndarray:  # fmt: skip
    """(n,) metres from each frame's online (or smoothed) position to its true one; NaN without truth or position."""
    true = np.array([truth.get(p.name, (np.nan, np.nan)) for p in points], dtype=np.float64).reshape(-1, 2)
    lat = np.array([p.smoothed_latitude if smoothed else p.latitude for p in points], dtype=np.float64)
    lon = np.array([p.smoothed_longitude if smoothed else p.longitude for p in points], dtype=np.float64)
    return haversine_m(true[:, 0], true[:, 1], lat, lon)


def flight_metrics(points: Sequence[TrackPoint], truth: dict[str, tuple[float, float]],
                   thresholds_m: Sequence[float] = (5, 10, 25)) -> dict:  # fmt: skip
    """Metrics over the frames whose name `truth` holds ((latitude, longitude) by frame name); ValueError when it
    holds none of them."""
    known = [p for p in points if p.name in truth]
    if not known:
        raise ValueError("the truth names none of the flight's frames (match them by file name)")
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
