"""Metric-space retrieval quality: how far, in metres, the retrieved tiles and the estimate are from the truth."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..geodesy import check_latlon, haversine_m
from ..progress import progress_bar
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
    look_at: tuple[float, float] | None = None  # true ground point at the photo centre (synthetic worlds)
    heading_deg: float | None = None  # true camera heading
    height_m: float | None = None  # true camera height above the ground at the look-at point
    altitude_m: float | None = None  # true camera height above the DSM's datum (worlds with terrain: ground_m +
    # altitude_m of cameras.csv)


def _optional(row: dict, key: str) -> float | None:
    value = (row.get(key) or "").strip()
    return float(value) if value else None


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
    if csv_path.suffix.lower() != ".csv":
        raise ValueError(f"{csv_path} is not a CSV; --evaluate takes a synthetic world folder (with cameras.csv) "
                         "or a CSV of image, latitude, longitude")  # fmt: skip
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
                target = _optional(row, "target_latitude"), _optional(row, "target_longitude")
                height, ground = _optional(row, "altitude_m"), _optional(row, "ground_m")
                queries.append(Query(str(root / row["image"]), lat, lon, loc_id,
                                     target if None not in target else None, _optional(row, "heading_deg"), height,
                                     height + ground if None not in (height, ground) else None))  # fmt: skip
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{csv_path} line {line}: {exc}") from exc
    if any("/query_drone/" in q.image for q in queries):  # a world lists each test photo in query_ and gallery_drone
        queries = [q for q in queries if "/query_drone/" in q.image]
    if not queries:
        raise ValueError(f"{csv_path} has no {split} queries")
    return queries


def _within(errors: np.ndarray, prefix: str, thresholds: Sequence[float]) -> dict:
    out = {f"{prefix}_median_error_m": float(np.median(errors))}
    out.update({f"{prefix}_within_{x:g}m": float((errors <= x).mean()) for x in thresholds})
    return out


def registration_metrics(queries: Sequence[Query], results: Sequence, thresholds_m: Sequence[float] = (5, 10, 25),
                         false_fix_m: float = 25.0, by_id: bool = True) -> dict:  # fmt: skip
    """Camera-position and look-at accuracy over all photos (a photo without a fix counts with its tile-level
    estimate), the fix and false-fix rates (fixes farther than `false_fix_m` from the truth), the share of fixes
    whose 95 % radius covers the truth (and of the tile-level answers, whose radius does), heading and height
    errors, and (`by_id`: the queries' ids name gallery
    tiles) R@1 before and after verification."""
    n = len(queries)
    est = np.array([[r.estimate["latitude"], r.estimate["longitude"]] for r in results])
    true = np.array([[q.latitude, q.longitude] for q in queries])
    err = haversine_m(true[:, 0], true[:, 1], est[:, 0], est[:, 1])
    fix = np.array([r.fix for r in results])
    out: dict = {"fix_rate": float(fix.mean()), "false_fix_rate": float((fix & (err > false_fix_m)).mean())}
    out.update(_within(err, "camera", thresholds_m))
    if fix.any():
        radius = np.array([r.radius_m if r.fix else np.nan for r in results])
        out["radius95_coverage"] = float((err[fix] <= radius[fix]).mean())
        out["fix_median_error_m"] = float(np.median(err[fix]))
        out["fix_median_radius_m"] = float(np.median(radius[fix]))
        headed = [(q.heading_deg, r.camera["heading_deg"]) for q, r in zip(queries, results, strict=True)
                  if r.fix and q.heading_deg is not None]  # fmt: skip
        if headed:
            d = np.abs((np.array(headed)[:, 0] - np.array(headed)[:, 1] + 180) % 360 - 180)
            out["heading_median_error_deg"] = float(np.median(d))
        heights = [_height_pair(q, r.camera) for q, r in zip(queries, results, strict=True) if r.fix]
        heights = [pair for pair in heights if pair is not None]
        if heights:
            out["height_median_error_m"] = float(np.median(np.abs(np.subtract(*np.array(heights).T))))
    if not fix.all():  # the tile-level answers: how often their stated radius holds the camera
        radius = np.array([r.estimate["radius_m"] for r in results])
        out["tile_radius95_coverage"] = float((err[~fix] <= radius[~fix]).mean())
        out["tile_median_radius_m"] = float(np.median(radius[~fix]))
    if all(q.look_at is not None for q in queries):
        # without a registered look-at point, the top-1 tile centre is the answer for where the photo looks
        pts = np.array([[r.look_at["latitude"], r.look_at["longitude"]] if r.look_at else
                        [r.matches[0].latitude, r.matches[0].longitude] for r in results])  # fmt: skip
        tgt = np.array([q.look_at for q in queries])
        out["look_at_rate"] = float(np.mean([r.look_at is not None for r in results]))
        out.update(_within(haversine_m(tgt[:, 0], tgt[:, 1], pts[:, 0], pts[:, 1]), "look_at", thresholds_m))
    if by_id and all(q.id for q in queries):
        out["R@1"] = float(np.mean([r.matches[0].id == q.id for q, r in zip(queries, results, strict=True)]))
        top = [min(r.matches, key=lambda m: m.verified_rank or m.rank) for r in results]
        out["R@1_verified"] = float(np.mean([m.id == q.id for q, m in zip(queries, top, strict=True)]))
        out["R@5"] = float(np.mean([q.id in {m.id for m in r.matches[:5]} for q, r in zip(queries, results,
                                                                                       strict=True)]))  # fmt: skip
    out["register_s_per_image"] = float(np.mean([r.register_s for r in results])) if n else 0.0
    return out


def _height_pair(q: Query, camera: dict) -> tuple[float, float] | None:
    """(true, found) camera height: above the DSM's datum for a fix through terrain (its height above the surface
    under the camera is above whatever roof stands there), else above the ground."""
    if camera.get("altitude_m") is not None and q.altitude_m is not None:
        return q.altitude_m, camera["altitude_m"]
    return (q.height_m, camera["height_m"]) if q.height_m is not None else None


def evaluate_localizer(localizer, queries: Sequence[Query], ks: Sequence[int] = (1, 5, 10),
                       batch_size: int = 16, progress: bool = True) -> dict:  # fmt: skip
    """Run every query through the localizer: distance metrics of the tiles and, with registration, of the camera.

    Each photo gets the localizer's k tiles (all of them verified when registering); Dis@K and SDM@K for K <= k.
    """
    k = localizer.k
    ks = [x for x in ks if x <= k] or [k]
    ret_lat, ret_lon, est_lat, est_lon, results = [], [], [], [], []
    bar = progress_bar(total=len(queries), desc="localizing", unit="image", progress=progress)
    for start in range(0, len(queries), batch_size):
        chunk = queries[start : start + batch_size]
        for r in localizer.localize_files([q.image for q in chunk], batch_size=batch_size, k=k):
            ms = r.matches[:k]  # a photo whose top k failed carries the further candidates it verified too
            ms = ms + [ms[-1]] * (k - len(ms))  # galleries smaller than k: repeat the last tile
            ret_lat.append([m.latitude for m in ms])
            ret_lon.append([m.longitude for m in ms])
            est_lat.append(r.latitude)
            est_lon.append(r.longitude)
            results.append(r)
        bar.update(len(chunk))
    bar.close()
    report = distance_metrics(
        [q.latitude for q in queries], [q.longitude for q in queries], ret_lat, ret_lon, ks,
        est_lat=est_lat, est_lon=est_lon,
    )  # fmt: skip
    report = {key.replace("estimate_", "tile_estimate_"): v for key, v in report.items()}
    report["gallery"] = len(localizer.index)
    # R@K by id only where the queries' location ids name gallery tiles (a synthetic world's own gallery); an
    # orthophoto index names its tiles by pixel position, so there the distances above are the measure
    by_id = all(q.id for q in queries) and any(localizer.index.has(q.id) for q in queries)
    if localizer.registrar is not None:
        report.update(registration_metrics(queries, results, by_id=by_id))
    elif by_id:
        report["R@1"] = float(np.mean([r.matches[0].id == q.id for q, r in zip(queries, results, strict=True)]))
    report["model_ms_per_image"] = float(np.mean([r.model_s for r in results]) * 1e3)
    report["backend"] = localizer.backend
    report["points"] = [
        {"image": str(q.image), "true": [q.latitude, q.longitude],
         "estimate": [r.estimate["latitude"], r.estimate["longitude"]], "fix": r.fix,
         "look_at": [r.look_at["latitude"], r.look_at["longitude"]] if r.look_at else None,
         "true_look_at": list(q.look_at) if q.look_at else None}
        for q, r in zip(queries, results, strict=True)
    ]  # fmt: skip
    return report


def is_fraction(key: str) -> bool:
    """Metrics held as fractions in [0, 1], shown as percentages (here and in the demo report)."""
    return "within" in key or key.startswith(("SDM", "R@")) or key.endswith(("_rate", "_coverage"))


def format_report(report: dict) -> str:
    """Two-column table, numbers as the evaluation tables print them (percent for fractions)."""
    lines = [f"{'metric':<28} value"]
    for key, value in report.items():
        if key == "points":
            continue
        if isinstance(value, float) and is_fraction(key):
            lines.append(f"{key:<28} {100 * value:.2f} %")
        elif isinstance(value, float):
            lines.append(f"{key:<28} {value:.2f}")
        else:
            lines.append(f"{key:<28} {value}")
    return "\n".join(lines)
