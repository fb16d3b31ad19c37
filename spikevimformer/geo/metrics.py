"""Metric-space retrieval quality: how far, in metres, the retrieved tiles and the estimate are from the truth."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..geodesy import check_latlon, haversine_m
from ..progress import progress_bar
from .tiles import read_locations


@dataclass(frozen=True)
class SdmConvention:
    """One published SDM@K scale: exp(-scale * d) with d in `unit`, weighted (K - i + 1) / K over the top K."""

    scale: float
    unit: str  # "m": great-circle metres; "deg": Euclidean distance of (longitude, latitude) in degrees
    label: str  # how every report and printout names it


SDM_CONVENTIONS = {
    # GTA-UAV / Game4Loc (Ji et al., AAAI 2025; Game4Loc/game4loc/evaluate/gta.py, sdm(s=0.001)): metres
    "gta-uav": SdmConvention(1e-3, "m", "s=1e-3/m, GTA-UAV"),
    # DenseUAV (Dai et al., IEEE TIP 2024; evaluateDistance.py, exp(-5e3 d)): d the Euclidean distance of the
    # (longitude, latitude) pairs in degrees, not scaled by cos(latitude)
    "denseuav": SdmConvention(5e3, "deg", "s=5e3/deg, DenseUAV"),
}


def metric_name(key: str, report: dict) -> str:
    """A metric's printed name, SDM@K with the scale the report records ('SDM@5 (s=1e-3/m, GTA-UAV)'), since the
    two published scales give numbers that cannot be compared."""
    return f"{key} ({report['sdm']})" if key.startswith("SDM@") and report.get("sdm") else key


def _sdm_distances(t_lat, t_lon, r_lat, r_lon, d_m: np.ndarray, convention: str) -> np.ndarray:
    """The distances SDM's exponential takes, in the convention's unit."""
    if SDM_CONVENTIONS[convention].unit == "m":
        return d_m
    return np.hypot(r_lat - t_lat[:, None], r_lon - t_lon[:, None])


def distance_metrics(
    true_lat, true_lon, ret_lat, ret_lon, ks: Sequence[int] = (1, 5, 10),
    thresholds_m: Sequence[float] = (25, 50, 100), sdm: str = "gta-uav",
    est_lat=None, est_lon=None,
) -> dict:  # fmt: skip
    """Dis@K (best of the top K, so Dis@1 is the top-1 tile), SDM@K, fraction within X m of the top-1 tile.

    `ret_lat`/`ret_lon` are (N, K) centres of the ranked tiles; with estimates, their errors are added. `sdm` names
    the SDM@K scale (a key of SDM_CONVENTIONS, recorded as the report's "sdm"). Raises ValueError for mismatched
    shapes, no queries or an unknown convention.
    """
    if sdm not in SDM_CONVENTIONS:
        raise ValueError(f"--sdm must be one of {', '.join(SDM_CONVENTIONS)}, got {sdm!r}")
    t_lat, t_lon = np.asarray(true_lat, dtype=np.float64), np.asarray(true_lon, dtype=np.float64)
    r_lat, r_lon = np.atleast_2d(ret_lat).astype(np.float64), np.atleast_2d(ret_lon).astype(np.float64)
    if r_lat.shape != r_lon.shape or r_lat.shape[0] != t_lat.size or t_lat.shape != t_lon.shape or t_lat.ndim != 1:
        raise ValueError("need N true positions and (N, K) retrieved positions")
    if t_lat.size == 0:
        raise ValueError("no queries to evaluate")
    d = haversine_m(t_lat[:, None], t_lon[:, None], r_lat, r_lon)
    d_sdm = SDM_CONVENTIONS[sdm].scale * _sdm_distances(t_lat, t_lon, r_lat, r_lon, d, sdm)
    out: dict = {"queries": int(t_lat.size)}
    for k in ks:
        if k > d.shape[1]:
            continue
        out[f"Dis@{k}_m"] = float(d[:, :k].min(axis=1).mean())
        w = (k - np.arange(k)) / k  # w_i = (K - i + 1) / K for i = 1..K
        out[f"SDM@{k}"] = float(((np.exp(-d_sdm[:, :k]) * w).sum(axis=1) / w.sum()).mean())
    out["sdm"] = SDM_CONVENTIONS[sdm].label
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


TRUTHS = ("camera", "look-at", "location")  # what a query's latitude/longitude are


@dataclass(frozen=True)
class Query:
    image: str
    latitude: float
    longitude: float
    id: str = ""
    look_at: tuple[float, float] | None = None  # true ground point at the photo centre
    heading_deg: float | None = None  # true camera heading
    height_m: float | None = None  # true camera height above the ground (AGL; a world's: at the look-at point)
    altitude_m: float | None = None  # true camera height above the DSM's datum (AMSL; a world's: ground_m +
    # altitude_m of cameras.csv)
    truth: str = "camera"  # what latitude/longitude are: the camera, the look-at point or the imaged tile centre


def _optional(row: dict, key: str) -> float | None:
    value = (row.get(key) or "").strip()
    return float(value) if value else None


ALIASES = {"lat": "latitude", "lon": "longitude", "lng": "longitude", "filename": "image", "file": "image"}
UNNAMED_HEIGHTS = ("altitude_m", "altitude", "alt", "height", "height_m", "elevation")


def _header(fields: Sequence[str] | None, csv_path: Path, ours: bool) -> dict[str, str]:
    """The truth CSV's column names (lower case, aliases resolved) -> as written. An altitude column that does not
    say what it is measured from is refused, since read as height above ground an AMSL one is off by the terrain
    (our own worlds write altitude_m above their ground_m, and say so)."""
    names = {ALIASES.get(f.strip().lower(), f.strip().lower()): f for f in fields or ()}
    missing = [c for c in ("image", "latitude", "longitude") if c not in names]
    if missing:
        raise ValueError(f"{csv_path} has no {', '.join(missing)} column(s); a truth CSV needs image, latitude and "
                         "longitude")  # fmt: skip
    unnamed = [names[c] for c in UNNAMED_HEIGHTS if c in names and not (ours and c == "altitude_m")]
    if unnamed:
        raise ValueError(f"{csv_path}: column {unnamed[0]!r} does not say what the height is measured from; rename "
                         "it height_agl_m (camera above the ground) or altitude_amsl_m (above sea level, scored "
                         "against the index's DSM)")  # fmt: skip
    return names


def load_queries(source: str | Path, truth: str = "camera", split: str = "test") -> list[Query]:
    """Queries with true positions: a synthetic world (or its cameras.csv), or a truth CSV.

    A truth CSV holds image (relative to the CSV's folder), latitude, longitude and optionally heading_deg,
    height_agl_m (camera above the ground), altitude_amsl_m (above sea level), target_latitude/target_longitude
    (the ground point at the image centre). `truth` says what latitude/longitude are: 'camera' (the drone),
    'look-at' (the ground point at the image centre, as UAV-VisLoc's CSV holds; for a world, its target columns)
    or 'location' (a world's imaged tile centre). Raises ValueError naming the file (and line) for a missing or
    ambiguous column, FileNotFoundError for a missing file.
    """
    source = Path(source)
    if truth not in TRUTHS:
        raise ValueError(f"--truth must be one of {', '.join(TRUTHS)}, got {truth!r}")
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
    ours = locations is not None or (root / "world.json").is_file() or (root.parent / "world.json").is_file()
    queries = []
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        names = _header(reader.fieldnames, csv_path, ours)
        if truth == "look-at" and ours and "target_latitude" not in names:  # a world's latitude is the camera
            raise ValueError(f"--truth look-at needs the target_latitude, target_longitude columns of {csv_path}")
        for line, raw in enumerate(reader, start=2):
            row = {key: raw.get(name) for key, name in names.items()}
            try:
                query = _query(row, root, truth, locations, split, ours)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{csv_path} line {line}: {exc}") from exc
            if query is not None:
                queries.append(query)
    queries = _found_in_any_case(queries)
    if any("/query_drone/" in q.image for q in queries):  # a world lists each test photo in query_ and gallery_drone
        queries = [q for q in queries if "/query_drone/" in q.image]
    if not queries:
        raise ValueError(f"{csv_path} has no {split} queries")
    return queries


def _found_in_any_case(queries: list[Query]) -> list[Query]:
    """Queries whose image is missing as named but present with its name in another case (X.JPEG for X.jpeg, as
    cameras and the tools that list their files disagree) point to that file."""
    listings: dict[Path, dict[str, str]] = {}
    out = []
    for q in queries:
        path = Path(q.image)
        if not path.exists() and path.parent.is_dir():
            names = listings.setdefault(path.parent, {p.name.lower(): p.name for p in path.parent.iterdir()})
            if (other := names.get(path.name.lower())) is not None:
                q = replace(q, image=str(path.parent / other))
        out.append(q)
    return out


def _query(row: dict, root: Path, truth: str, locations: dict | None, split: str, ours: bool) -> Query | None:
    """One truth row as a Query (None: another split's)."""
    loc_id = row.get("id") or ""
    if locations is not None and loc_id:
        loc = locations.get(loc_id)
        if loc is None:
            raise ValueError(f"location {loc_id!r} is not in locations.csv")
        if loc["split"] != split:
            return None
    target = _optional(row, "target_latitude"), _optional(row, "target_longitude")
    look_at = target if None not in target else None
    if truth == "location":
        lat, lon = locations[loc_id]["latitude"], locations[loc_id]["longitude"]
    elif truth == "look-at" and look_at is not None:  # a world's: the camera is its own column
        lat, lon = look_at
    else:
        lat, lon = float(row["latitude"]), float(row["longitude"])
    check_latlon(lat, lon)
    if truth == "look-at":
        look_at = (lat, lon)
    height, altitude = _optional(row, "height_agl_m"), _optional(row, "altitude_amsl_m")
    if ours and height is None:  # a world's cameras.csv: altitude_m above its ground_m
        height, ground = _optional(row, "altitude_m"), _optional(row, "ground_m")
        altitude = height + ground if None not in (height, ground) else altitude
    return Query(str(root / row["image"]), lat, lon, loc_id, look_at, _optional(row, "heading_deg"), height,
                 altitude, truth)  # fmt: skip


def truth_hint(report: dict) -> str | None:
    """A sentence when camera truth looks like image-centre points (as UAV-VisLoc's CSV holds): the answers' look-at
    points several times closer to it than their cameras, which are then scored tens of metres off."""
    if report.get("truth", "camera") != "camera":
        return None
    camera, look = report.get("fix_median_error_m"), report.get("look_at_to_truth_median_m")
    if camera is None or look is None or camera < 10 or look > camera / 4:
        return None
    return (f"the fixes' look-at points lie {look:.1f} m (median) from the truth's positions and their cameras "
            f"{camera:.1f} m: if the truth holds where each photo looks (image centres), score it with "
            "--truth look-at")


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
    tiles) R@1 before and after verification. Where the truth is the look-at point (image centres), the answers
    scored, false fixes included, are the look-at points, and the camera's radius is not scored."""
    n = len(queries)
    look = all(q.truth == "look-at" for q in queries)
    est = _look_at_answers(results) if look else np.array([[r.estimate["latitude"], r.estimate["longitude"]]
                                                           for r in results])  # fmt: skip
    true = np.array([[q.latitude, q.longitude] for q in queries])
    err = haversine_m(true[:, 0], true[:, 1], est[:, 0], est[:, 1])
    fix = np.array([r.fix for r in results])
    out: dict = {"fix_rate": float(fix.mean()), "false_fix_rate": float((fix & (err > false_fix_m)).mean())}
    if look:
        out["look_at_rate"] = float(np.mean([r.look_at is not None for r in results]))
    out.update(_within(err, "look_at" if look else "camera", thresholds_m))
    if fix.any():
        radius = np.array([r.radius_m if r.fix else np.nan for r in results])
        if not look:
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
    if not fix.all() and not look:  # the tile-level answers: how often their stated radius holds the camera
        radius = np.array([r.estimate["radius_m"] for r in results])
        out["tile_radius95_coverage"] = float((err[~fix] <= radius[~fix]).mean())
        out["tile_median_radius_m"] = float(np.median(radius[~fix]))
    if not look and fix.any():  # what truth_hint compares: the fixes' look-at points against the truth
        seen = _look_at_answers(results)[fix]
        out["look_at_to_truth_median_m"] = float(np.median(haversine_m(true[fix, 0], true[fix, 1], seen[:, 0],
                                                                       seen[:, 1])))  # fmt: skip
    if not look and all(q.look_at is not None for q in queries):
        pts = _look_at_answers(results)
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


def _look_at_answers(results: Sequence) -> np.ndarray:
    """(N, 2) where each photo looks: its registered look-at point, else the top-1 tile centre."""
    return np.array([[r.look_at["latitude"], r.look_at["longitude"]] if r.look_at else
                     [r.matches[0].latitude, r.matches[0].longitude] for r in results])  # fmt: skip


def _height_pair(q: Query, camera: dict) -> tuple[float, float] | None:
    """(true, found) camera height: above the DSM's datum for a fix through terrain (its height above the surface
    under the camera is above whatever roof stands there), else above the ground."""
    if camera.get("altitude_m") is not None and q.altitude_m is not None:
        return q.altitude_m, camera["altitude_m"]
    return (q.height_m, camera["height_m"]) if q.height_m is not None else None


def evaluate_localizer(localizer, queries: Sequence[Query], ks: Sequence[int] = (1, 5, 10),
                       batch_size: int = 16, progress: bool = True, sdm: str = "gta-uav") -> dict:  # fmt: skip
    """Run every query through the localizer: distance metrics of the tiles and, with registration, of the camera.

    Each photo gets the localizer's k tiles (all of them verified when registering); Dis@K and SDM@K for K <= k,
    SDM in the `sdm` convention. Raises ValueError before any photo is read when heights above sea level are to be
    scored and the index holds no DSM to put the ground under them.
    """
    _check_heights(localizer, queries)
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
        sdm=sdm, est_lat=est_lat, est_lon=est_lon,
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


def _check_heights(localizer, queries: Sequence[Query]) -> None:
    """Heights above sea level are scored against the camera's altitude over the index's DSM; without a DSM they
    would be compared with a height above the ground, off by the terrain, so they are refused."""
    if localizer.registrar is None or localizer.windows.terrain:
        return
    amsl = next((q for q in queries if q.altitude_m is not None and q.height_m is None), None)
    if amsl is not None:
        raise ValueError(f"the truth of {amsl.image} is an altitude above sea level (altitude_amsl_m), and the index "
                         "holds no DSM to give the ground under the camera: build the index with --dsm, or give "
                         "height_agl_m (camera above the ground) instead")  # fmt: skip


def is_fraction(key: str) -> bool:
    """Metrics held as fractions in [0, 1], shown as percentages (here and in the demo report)."""
    return "within" in key or key.startswith(("SDM", "R@")) or key.endswith(("_rate", "_coverage"))


def format_report(report: dict) -> str:
    """Two-column table, numbers as the evaluation tables print them (percent for fractions)."""
    lines = [f"{'metric':<28} value"]
    for key, value in report.items():
        if key == "points":
            continue
        name = metric_name(key, report)
        if isinstance(value, float) and is_fraction(key):
            lines.append(f"{name:<28} {100 * value:.2f} %")
        elif isinstance(value, float):
            lines.append(f"{name:<28} {value:.2f}")
        else:
            lines.append(f"{name:<28} {value}")
    return "\n".join(lines)
