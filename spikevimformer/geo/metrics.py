"""Metric-space retrieval quality: how far, in metres, the retrieved tiles and the estimate are from the truth."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .coords import check_latlon, haversine_m
from .tiles import read_locations

SDM_SCALE_M = 1e-3  # DenseUAV's s for distances in metres (5e3 for degrees)


def distance_metrics(
    true_lat, true_lon, ret_lat, ret_lon, ks: Sequence[int] = (1, 5, 10),
    thresholds_m: Sequence[float] = (25, 50, 100), sdm_scale: float = SDM_SCALE_M,
    est_lat=None, est_lon=None,
) -> dict:  # fmt: skip
    """Dis@K (best of the top K, so Dis@1 is the top-1 tile), SDM@K, fraction within X m of the top-1 tile.

    `ret_lat`/`ret_lon` are (N, K) centres of the ranked tiles; with estimates, their errors are added.
    """
    t_lat, t_lon = np.asarray(true_lat, dtype=np.float64), np.asarray(true_lon, dtype=np.float64)
    r_lat, r_lon = np.atleast_2d(ret_lat).astype(np.float64), np.atleast_2d(ret_lon).astype(np.float64)
    if r_lat.shape != r_lon.shape or r_lat.shape[0] != t_lat.size or t_lat.shape != t_lon.shape or t_lat.ndim != 1:
        raise ValueError("need N true positions and (N, K) retrieved positions")
    if t_lat.size == 0:
        raise ValueError("no queries to evaluate")
    d = haversine_m(t_lat[:, None], t_lon[:, None], r_lat, r_lon)
    out: dict = {"queries": int(t_lat.size)}
    for k in ks:
        if k > d.shape[1]:
            continue
        out[f"Dis@{k}_m"] = float(d[:, :k].min(axis=1).mean())
        w = (k - np.arange(k)) / k  # w_i = (K - i + 1) / K for i = 1..K
        out[f"SDM@{k}"] = float(((np.exp(-sdm_scale * d[:, :k]) * w).sum(axis=1) / w.sum()).mean())
    out["median_top1_error_m"] = float(np.median(d[:, 0]))
    for x in thresholds_m:
        out[f"within_{x:g}m"] = float((d[:, 0] <= x).mean())
    if est_lat is not None:
        e = haversine_m(t_lat, t_lon, np.asarray(est_lat), np.asarray(est_lon))
        out["estimate_mean_error_m"] = float(e.mean())
        out["estimate_median_error_m"] = float(np.median(e))
        for x in thresholds_m:
            out[f"estimate_within_{x:g}m"] = float((e <= x).mean())
    return out


@dataclass(frozen=True)
class Query:
    image: str
    latitude: float
    longitude: float
    id: str = ""


def load_queries(source: str | Path, truth: str = "camera", split: str = "test") -> list[Query]:
    """Queries with true positions: a synthetic world (or its cameras.csv), or a CSV of image, latitude, longitude.

    For a world, `truth` is 'camera' (the drone's position) or 'location' (the centre of the imaged tile).
    """
    source = Path(source)
    if truth not in ("camera", "location"):
        raise ValueError(f"truth must be 'camera' or 'location', got {truth!r}")
    csv_path = source / "cameras.csv" if source.is_dir() else source
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} does not exist")
    root = csv_path.parent
    locations = read_locations(root) if (root / "locations.csv").is_file() else None
    if truth == "location" and locations is None:
        raise FileNotFoundError(f"truth 'location' needs {root / 'locations.csv'}")
    queries = []
    with csv_path.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                loc_id = row.get("id") or ""
                if locations is not None and loc_id:
                    loc = locations.get(loc_id)
                    if loc is None:
                        raise ValueError(f"location {loc_id!r} is not in locations.csv")
                    if loc["split"] != split:
                        continue
                if truth == "location":
                    lat, lon = locations[loc_id]["latitude"], locations[loc_id]["longitude"]
                else:
                    lat, lon = float(row["latitude"]), float(row["longitude"])
                check_latlon(lat, lon)
                queries.append(Query(str(root / row["image"]), lat, lon, loc_id))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{csv_path} line {line}: {exc}") from exc
    if not queries:
        raise ValueError(f"{csv_path} has no {split} queries")
    return queries


def evaluate_localizer(localizer, queries: Sequence[Query], ks: Sequence[int] = (1, 5, 10),
                       batch_size: int = 16, progress: bool = True) -> dict:  # fmt: skip
    """Run every query through the localizer and report distance metrics (and R@1 when ids are known)."""
    k = max(ks)
    ret_lat, ret_lon, est_lat, est_lon, hits, model_s = [], [], [], [], [], []
    bar = tqdm(total=len(queries), desc="localizing", unit="image", disable=not progress)
    for start in range(0, len(queries), batch_size):
        chunk = queries[start : start + batch_size]
        results = localizer.localize_files([q.image for q in chunk], batch_size=batch_size, k=k)
        for q, r in zip(chunk, results, strict=True):
            pad = k - len(r.matches)  # galleries smaller than k: repeat the last tile
            ms = r.matches + [r.matches[-1]] * pad
            ret_lat.append([m.latitude for m in ms])
            ret_lon.append([m.longitude for m in ms])
            est_lat.append(r.latitude)
            est_lon.append(r.longitude)
            hits.append(bool(q.id) and r.matches[0].id == q.id)
            model_s.append(r.model_s)
        bar.update(len(chunk))
    bar.close()
    report = distance_metrics(
        [q.latitude for q in queries], [q.longitude for q in queries], ret_lat, ret_lon, ks,
        est_lat=est_lat, est_lon=est_lon,
    )  # fmt: skip
    report["gallery"] = len(localizer.index)
    if all(q.id for q in queries):
        report["R@1"] = float(np.mean(hits))
    report["model_ms_per_image"] = float(np.mean(model_s) * 1e3)
    report["backend"] = localizer.backend
    report["points"] = [
        {"image": str(q.image), "true": [q.latitude, q.longitude], "estimate": [la, lo]}
        for q, la, lo in zip(queries, est_lat, est_lon, strict=True)
    ]
    return report


def format_report(report: dict) -> str:
    """Two-column table, numbers as the evaluation tables print them (percent for fractions)."""
    lines = [f"{'metric':<28} value"]
    for key, value in report.items():
        if isinstance(value, float) and (key.startswith(("within", "estimate_within", "SDM", "R@"))):
            lines.append(f"{key:<28} {100 * value:.2f} %")
        elif isinstance(value, float):
            lines.append(f"{key:<28} {value:.2f}")
        else:
            lines.append(f"{key:<28} {value}")
    return "\n".join(lines)
