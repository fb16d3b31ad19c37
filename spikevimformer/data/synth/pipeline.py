"""generate_world: lay out or load a world, pick locations, render and write a dataset, score a baseline."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from ...progress import progress_bar
from .baseline import retrieval_baseline
from .camera import Camera, plan_views, view_reach_m
from .config import SynthConfig
from .geo import GeoRef, seeded_origin
from .ground import orthophoto_world, window_world
from .photometric import photometric
from .procedural import procedural_world
from .render import MAX_LEVEL, drone_view, satellite_tile
from .terrain import relief_field, surface
from .world import World
from .writer import (
    CAMERA_FILE,
    DSM_FILE,
    ORTHO_IMAGE,
    ORTHO_JPEG_QUALITY,
    ORTHO_WORLD_FILE,
    ROOT,
    Staging,
    camera_exif,
    dji_xmp,
    drone_name,
    encode,
    placement,
    with_exif,
    with_xmp,
    world_file_text,
    write_bytes,
    write_camera_file,
    write_dsm,
)

FORMAT = "spikevimformer-synth/1"
SPLIT_ORDER = ("train", "test", "distractor")
CAMERA_COLUMNS = ["image", "id", "latitude", "longitude", "altitude_m", "heading_deg", "pitch_deg", "fov_deg",
                  "focal_px", "target_latitude", "target_longitude", "ground_m", "k1", "k2", "p1", "p2", "k3"]
# altitude_m: camera above the ground at the look-at point; ground_m: that ground's height above the DSM datum


@dataclass(frozen=True)
class Location:
    index: int
    id: str
    split: str
    xy: tuple[float, float]  # tile centre, metres (X east, Y north of the world corner)


@dataclass
class SynthSummary:
    """What was written, and how well a non-learned descriptor does on it."""

    out_dir: Path
    dataset_dir: Path
    layout: str
    seed: int
    counts: dict
    baseline: list[dict]
    world: dict
    seconds: float
    notes: list[str] = field(default_factory=list)
    epochs: dict | None = None  # the two dates (world.json's `epochs`), None for one


# --- locations -------------------------------------------------------------------------------------------


def pick_locations(world: World, n: int, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Up to n candidates inside the core, at least `spacing` apart (random sequential, grid-hashed)."""
    x0, x1, y0, y1 = world.core
    c = world.candidates
    ok = np.nonzero((c[:, 0] >= x0) & (c[:, 0] <= x1) & (c[:, 1] >= y0) & (c[:, 1] <= y1))[0]
    chosen: list[int] = []
    cells: dict[tuple[int, int], list[int]] = {}
    for i in rng.permutation(ok):
        p = c[i]
        gx, gy = int(p[0] // spacing), int(p[1] // spacing)
        near = [j for dx in (-1, 0, 1) for dy in (-1, 0, 1) for j in cells.get((gx + dx, gy + dy), ())]
        if near and np.min(((c[near] - p) ** 2).sum(1)) < spacing * spacing:
            continue
        cells.setdefault((gx, gy), []).append(int(i))
        chosen.append(int(i))
        if len(chosen) == n:
            break
    return c[chosen]


def assign(cfg: SynthConfig, xy: np.ndarray, rng: np.random.Generator) -> list[Location]:
    """Train locations in the west, test (and distractor) ones in the east: disjoint areas, like the
    disjoint universities of University-1652. Ids are 4-digit strings, train first."""
    n_train, n_test, n_distr = cfg.split_counts()
    order = np.argsort(xy[:, 0], kind="stable")
    east = rng.permutation(order[n_train:])
    groups = {"train": order[:n_train], "test": east[:n_test], "distractor": east[n_test:]}
    ids = [f"{i:04d}" for i in range(1, len(xy) + 1)]
    if cfg.layout == "sues200" and (n_train, n_test) == (120, 80):  # reuse the published split's ids
        train_ids = resources.files("spikevimformer").joinpath("resources/sues200-train-ids.txt").read_text().split()
        ids = train_ids + [i for i in ids if i not in set(train_ids)]
    out, k = [], 0
    for split in SPLIT_ORDER:
        for i in groups[split]:
            out.append(Location(int(i), ids[k], split, (float(xy[i, 0]), float(xy[i, 1]))))
            k += 1
    return out


def build_world(cfg: SynthConfig, reach_m: float) -> tuple[World, list[Location]]:
    """Make (or load) the world and choose its locations."""
    n = cfg.locations
    if cfg.ground is not None:
        world = orthophoto_world(cfg, reach_m, np.random.default_rng([cfg.seed, 1]))
        xy = pick_locations(world, n, cfg.spacing_m, np.random.default_rng([cfg.seed, 2]))
        if len(xy) < 4:
            raise ValueError(f"only {len(xy)} locations {cfg.spacing_m:g} m apart fit in {cfg.ground}; a world needs 4")
        if len(xy) < n:
            world.notes.append(f"only {len(xy)} of the {n} requested locations fit in the orthophoto")
            cfg = replace(cfg, locations=len(xy))
        return world, assign(cfg, xy, np.random.default_rng([cfg.seed, 3]))
    margin = reach_m + 10.0
    factor = 3.0  # built-up share and random packing: about 300 fit where 250 are asked for
    for attempt in range(6):
        core = math.sqrt(n * factor) * cfg.spacing_m
        world = procedural_world(cfg, core + 2 * margin, margin, np.random.default_rng([cfg.seed, 1, attempt]))
        xy = pick_locations(world, n, cfg.spacing_m, np.random.default_rng([cfg.seed, 2, attempt]))
        if len(xy) == n:
            lat0, lon0 = cfg.origin if cfg.origin else seeded_origin(np.random.default_rng([cfg.seed, 4]))
            world.geo = GeoRef(float(lat0), float(lon0), world.geo.gsd_m, world.geo.width_px, world.geo.height_px)
            if cfg.relief_m > 0:
                world.terrain = relief_field(np.random.default_rng([cfg.seed, 5]), world.ortho.shape[:2], world.gsd_m,
                                             cfg.relief_m)  # fmt: skip
            return world, assign(cfg, xy, np.random.default_rng([cfg.seed, 3]))
        factor *= 1.4
    raise RuntimeError(f"could not place {n} locations {cfg.spacing_m:g} m apart")  # pragma: no cover


# --- rendering (runs in worker processes) ----------------------------------------------------------------

_STATE: dict = {}


def _share(world: World) -> tuple[World, list, list]:
    """Copy the world's rasters into shared memory; returns a raster-less world for pickling and specs."""
    from multiprocessing import shared_memory

    blocks, specs = [], []
    for key, arr in world._pyramids.items():
        shm = shared_memory.SharedMemory(create=True, size=max(1, arr.nbytes))
        np.ndarray(arr.shape, arr.dtype, buffer=shm.buf)[...] = arr
        blocks.append(shm)
        specs.append((key, shm.name, arr.shape, arr.dtype.str))
    light = replace(world, ortho=None, ground=None, reference=None, _pyramids={})
    return light, specs, blocks


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT held back while processes start: a spawned child keeps the blocked mask across exec for life, so a
    Ctrl-C reaches this process alone (which then ends the workers; none prints a traceback from the middle of its
    imports), and one pressed meanwhile arrives here as soon as they have started."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _init_worker(cfg: SynthConfig, light: World, specs: list, root: Path) -> None:
    """Attach a spawned worker to the shared rasters (no copy) and keep OpenCV single-threaded."""
    from multiprocessing import shared_memory

    cv2.setNumThreads(1)
    pyramids, blocks = {}, []
    for key, name, shape, dtype in specs:
        shm = shared_memory.SharedMemory(name=name)
        blocks.append(shm)
        pyramids[tuple(key)] = np.ndarray(shape, np.dtype(dtype), buffer=shm.buf)
    if pyramids:  # a world read by windows shares no rasters: each worker reads its own windows
        light = replace(light, ortho=pyramids[("ortho", 0)], ground=pyramids[("ground", 0)],
                        reference=pyramids.get(("reference", 0)), _pyramids=pyramids)
    _STATE.update(cfg=cfg, world=light, root=root, blocks=blocks)


def _render_location(loc: Location) -> list[tuple]:
    """Render and write one location's satellite tile and drone views; returns its camera rows."""
    cfg: SynthConfig = _STATE["cfg"]
    whole: World = _STATE["world"]
    root: Path = _STATE["root"]
    world, shift = window_world(whole, loc.xy, max(view_reach_m(cfg), cfg.footprint_m))
    centre = (loc.xy[0] - shift[0], loc.xy[1] - shift[1])  # in the window's frame
    rng = np.random.default_rng([cfg.seed, 10, loc.index])
    size = cfg.image_size
    sat = satellite_tile(world, centre, cfg.footprint_m, size)
    sat = photometric(sat, rng, 0.3 * cfg.photometric, haze=False, blur=False)
    views = plan_views(cfg, rng)
    groups = sorted({v.group for v in views}, key=lambda g: (g is None, float(g) if g else 0.0))
    place = placement(cfg.layout, loc.id, loc.split, groups)
    for rel, _ in place.satellite:
        write_bytes(root, rel, encode(sat, rel, cfg.jpeg_quality))
    rows = []
    counters: dict = {}
    for v in views:
        k = counters[v.group] = counters.get(v.group, -1) + 1
        n_group = sum(1 for w in views if w.group == v.group)
        target = (centre[0] + v.offset_m[0], centre[1] + v.offset_m[1])
        ground_z = float(world.terrain.at(*target)) if world.terrain is not None else 0.0
        cam = Camera.look_at(target, v.heading_deg, v.pitch_deg, v.altitude_m, cfg.fov_deg, size, ground_z, cfg.dist)
        img = photometric(drone_view(world, cam), rng, cfg.photometric)
        pose = _pose_fields(whole.geo, cam, target, shift, cfg.fov_deg)
        name = drone_name(cfg.layout, k, n_group)
        data = None
        for folder, group in place.drone:
            if group is not None and group != v.group:
                continue
            rel = f"{folder}/{name}"
            if data is None:
                data = with_exif(encode(img, rel, cfg.jpeg_quality),
                                 camera_exif(cam.focal_px, size, size, bool(cfg.dist)))
                # a DJI-like camera records its lens and attitude
                if (cfg.dist or world.terrain is not None) and data[:2] == b"\xff\xd8":
                    data = with_xmp(data, dji_xmp(cam.focal_px, cfg.dist, cam.heading_deg, cam.pitch_deg))
            write_bytes(root, rel, data)
            rows.append((rel, loc.id, *pose))
    return rows


def _pose_fields(geo: GeoRef, cam: Camera, target_xy: tuple[float, float], shift: tuple[float, float],
                 fov_deg: float) -> tuple[str, ...]:
    """cameras.csv fields after (image, id): what pose registration needs to rebuild the pinhole. Positions are in
    the frame of the rendered window, whose corner is `shift` metres (east, north) into the world."""
    lat, lon = geo.to_latlon(cam.position[0] + shift[0], -(cam.position[1] + shift[1]))
    t_lat, t_lon = geo.to_latlon(target_xy[0] + shift[0], -(target_xy[1] + shift[1]))
    dist = list(cam.dist) + [0.0] * (5 - len(cam.dist))
    return (f"{float(lat):.8f}", f"{float(lon):.8f}", f"{cam.altitude_m:.2f}", f"{cam.heading_deg:.2f}",
            f"{cam.pitch_deg:.4f}", f"{fov_deg:.4f}", f"{cam.focal_px:.4f}", f"{float(t_lat):.8f}",
            f"{float(t_lon):.8f}", f"{cam.ground_z:.3f}", *(f"{v:g}" for v in dist))


def _render_all(cfg: SynthConfig, world: World, locations: list[Location], root: Path, workers: int,
                progress: bool) -> list[tuple]:
    """Render every location, in `workers` spawned processes sharing the world's rasters (fork is unsafe
    once OpenCV has started its thread pool). Output does not depend on the number of workers."""
    bar = progress_bar(total=len(locations), desc="rendering locations", unit="loc", progress=progress)
    rows: list[tuple] = []
    try:
        if workers > 1 and len(locations) > 2 * workers:
            light, specs, blocks = _share(world)
            try:
                with _sigint_blocked():  # the workers never see Ctrl-C: this process answers it and ends them
                    pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker,
                                                        initargs=(cfg, light, specs, root))  # fmt: skip
                with pool:
                    for r in pool.imap(_render_location, locations, chunksize=2):
                        rows += r
                        bar.update()
            finally:
                for shm in blocks:
                    shm.close()
                    shm.unlink()
        else:
            _STATE.update(cfg=cfg, world=world, root=root)
            for loc in locations:
                rows += _render_location(loc)
                bar.update()
    finally:
        bar.close()
        _STATE.clear()
    return rows


# --- outputs ---------------------------------------------------------------------------------------------


def _csv(header: list[str], rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _write_orthophoto(root: Path, world: World) -> dict | None:
    """ortho.jpg (the reference view, as the satellite tiles) and its EPSG:4326 world file, so poses can be
    registered against the full world raster; None for a world read by windows (a whole copy is what reading by
    windows avoids)."""
    if world.raster is not None:
        return None
    write_bytes(root, ORTHO_IMAGE, encode(world.reference_view, ORTHO_IMAGE, ORTHO_JPEG_QUALITY))
    (root / ORTHO_WORLD_FILE).write_text(world_file_text(world.geo.world_file()))
    height, width = world.reference_view.shape[:2]
    return {"image": ORTHO_IMAGE, "world_file": ORTHO_WORLD_FILE, "crs": "EPSG:4326",
            "ground_resolution_m": world.geo.gsd_m, "size_px": [int(width), int(height)]}


def _baselines(cfg: SynthConfig, root: Path, locations: list[Location]) -> list[dict]:
    """Drone -> satellite retrieval on the written test set (official protocol: distractors included)."""
    ds = root / ROOT[cfg.layout]
    out = []
    if cfg.layout == "university1652":
        pairs = [(None, ds / "test/query_drone", ds / "test/gallery_satellite")]
    else:
        pairs = [(p.name, p / "query_drone", p / "gallery_satellite") for p in sorted((ds / "Testing").iterdir())]
    for alt, qdir, gdir in pairs:
        queries = [(f, f.parent.name) for f in sorted(qdir.glob("*/*")) if f.is_file()]
        gallery = [(f, f.parent.name) for f in sorted(gdir.glob("*/*")) if f.is_file()]
        row = {"direction": "drone->satellite", "protocol": "official (distractors in the gallery)"}
        if alt is not None:
            row["altitude"] = alt
        row.update(retrieval_baseline(queries, gallery))
        out.append(row)
    return out


def generate_world(cfg: SynthConfig, out_dir: str | Path, *, workers: int = 1, overwrite: bool = False,
                   progress: bool = False) -> SynthSummary:
    """Write a synthetic cross-view world (dataset layout, locations.csv, cameras.csv, ortho.jpg/.jgw, world.json).

    workers > 1 renders in spawned processes, so a calling script needs the usual
    `if __name__ == "__main__":` guard; the bytes written do not depend on `workers`.
    """
    start = time.perf_counter()
    cfg = cfg.resolved()
    out = Path(out_dir)
    staging = Staging(out, cfg.layout, overwrite)
    try:
        reach = view_reach_m(cfg)
        world, locations = build_world(cfg, reach)
        if cfg.ground is not None and cfg.gsd_m is None:
            cfg = replace(cfg, gsd_m=world.gsd_m)
        world.prepare(MAX_LEVEL + 1)
        cam_rows = _render_all(cfg, world, locations, staging.path, max(1, int(workers)), progress)
        loc_rows = []
        for loc in sorted(locations, key=lambda loc: loc.id):
            lat, lon = world.geo.to_latlon(loc.xy[0], -loc.xy[1])
            loc_rows.append((loc.id, loc.split, f"{float(lat):.8f}", f"{float(lon):.8f}", f"{cfg.footprint_m:g}"))
        (staging.path / "locations.csv").write_text(
            _csv(["id", "split", "latitude", "longitude", "footprint_m"], loc_rows))
        (staging.path / "cameras.csv").write_text(_csv(CAMERA_COLUMNS, sorted(cam_rows)))
        orthophoto = _write_orthophoto(staging.path, world)
        if orthophoto is not None and world.terrain is not None:
            orthophoto["dsm"] = write_dsm(staging.path / DSM_FILE, surface(world.terrain, world.buildings),
                                          world.terrain.step, world.geo)  # fmt: skip
        write_camera_file(staging.path / CAMERA_FILE, cfg)
        baseline = _baselines(cfg, staging.path, locations)
        splits = {s: sum(1 for loc in locations if loc.split == s) for s in SPLIT_ORDER}
        counts = {**splits, "locations": len(locations), "drone_views_rendered": len(locations) * len(plan_views(
            cfg, np.random.default_rng(0))), "drone_images_written": len(cam_rows),
            "buildings": len(world.buildings)}
        record = {
            "format": FORMAT, "seed": cfg.seed, "layout": cfg.layout, "dataset": ROOT[cfg.layout],
            "source": world.source, **world.geo.record(), "orthophoto": orthophoto,
            "sun": {"azimuth_deg": world.sun_az_deg, "elevation_deg": world.sun_el_deg}, "epochs": world.epochs,
            "view_reach_m": reach, "config": cfg.to_record(), "counts": counts, "baseline": baseline,
            "notes": world.notes,
        }  # fmt: skip
        (staging.path / "world.json").write_text(json.dumps(record, indent=2) + "\n")
        staging.publish()
    except BaseException:
        staging.discard()
        raise
    return SynthSummary(out, out / ROOT[cfg.layout], cfg.layout, cfg.seed, counts, baseline, world.geo.record(),
                        time.perf_counter() - start, list(world.notes), world.epochs)


def default_workers() -> int:
    """Two processes on a two-core machine; never more than the cores this process may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))
