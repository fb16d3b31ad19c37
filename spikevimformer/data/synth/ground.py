"""A user's own orthophoto as the world: training and test sets of a real region.

The image is the ground (and the satellite view); what rises out of it comes from a surface model, a DSM
GeoTIFF (`dsm`, any CRS, resampled onto the image's grid) or a height image aligned with it pixel for pixel
(`heights`, grey level x height_scale metres): one notion either way. Its bare ground (terrain.ground_of) becomes
the terrain the views are ray-cast onto, and what stands more than 2.5 m above it becomes prisms at their median
height (buildings; trees too, as a DSM shows them). Without a world file the
coordinates are relative to `origin` (or 0, 0), which the notes say. With an epoch gap the image is the
reference's date, seen by a coarser sensor, and the drone sees a copy at another date: withered vegetation and
the shadows of the extruded buildings under another sun (what the image's pixels allow; its roads, cars and
fields are not known, so they stay).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from rasterio.fill import fillnodata

from ...geo.terrain import resample_dsm
from ...geodesy import WorldFile
from . import paint as P
from .config import SynthConfig
from .epochs import Epochs, draw_epochs, sense, sun_vector, wither
from .geo import GeoRef, georef_from_world_file
from .render import MAX_LEVEL
from .terrain import ground_of
from .world import Buildings, World

MIN_BUILDING_M = 2.5
MIN_TARGET_AREA_M2 = 120.0
MAX_NODATA_SHARE = 0.1  # a location whose tile footprint is more than this black (nodata) is not rendered
WINDOWED_PIXELS = 64_000_000  # above this a GeoTIFF is rendered from windows (geo.raster.LARGE_PIXELS' rule)
FLAT_RELIEF_M = 1.0  # a height image whose ground varies less than this is taken as flat (the fast renderer)


def _read_image(path: str, flags: int, what: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} does not exist")
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # not one warning per unknown GeoTIFF tag
    try:
        img = cv2.imread(str(p), flags)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if img is None:
        raise ValueError(f"{what} {p} is not a readable image")
    return img


def _buildings_from_heights(hmap: np.ndarray, rgb: np.ndarray, gsd: float, sun_az_deg: float,
                            sun_el_deg: float) -> tuple[Buildings, np.ndarray]:
    mask = (hmap > MIN_BUILDING_M).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    rings, heights, roofs, areas = [], [], [], []
    for i in range(1, n):
        x, y, w, h, area = stats[i]
        if area * gsd * gsd < 30:
            continue
        comp = (labels[y:y + h, x:x + w] == i).astype(np.uint8)
        contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        c = max(contours, key=cv2.contourArea)
        poly = cv2.approxPolyDP(c, max(1.0, 0.6 / gsd), True).reshape(-1, 2).astype(np.float64)
        if len(poly) < 3:
            continue
        col, row = poly[:, 0] + x, poly[:, 1] + y
        rings.append(np.stack([(col + 0.5) * gsd, -(row + 0.5) * gsd], 1))
        sel = comp.astype(bool)
        heights.append(float(np.median(hmap[y:y + h, x:x + w][sel])))
        roofs.append(rgb[y:y + h, x:x + w][sel].mean(0))
        areas.append(area * gsd * gsd)
    walls = [(170, 165, 155)] * len(rings)
    return Buildings.from_rings(rings, heights, walls, roofs, sun_az_deg, sun_el_deg), np.array(areas)


def nodata_share(empty: np.ndarray, full_shape: tuple[int, int], points: np.ndarray, half_m: float,
                 gsd: float) -> np.ndarray:
    """Share (0..1) of nodata in the square of half side `half_m` metres about each point (x east, y north, metres
    from the image's north-west corner), from a summed-area table of the nodata mask `empty` (any resolution; the
    image is `full_shape` (rows, cols) pixels of `gsd` metres), reduced to <= 2048 px."""
    if len(points) == 0 or not empty.any():
        return np.zeros(len(points))
    factor = max(1, -(-max(empty.shape) // 2048))
    h, w = max(1, empty.shape[0] // factor), max(1, empty.shape[1] // factor)
    small = cv2.resize(empty.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    table = cv2.integral(small, sdepth=cv2.CV_64F)
    step = gsd * full_shape[1] / w, gsd * full_shape[0] / h  # metres per cell, x and y
    col, row = points[:, 0] / step[0], -points[:, 1] / step[1]
    c0 = np.clip(np.floor(col - half_m / step[0]), 0, w).astype(int)
    c1 = np.clip(np.ceil(col + half_m / step[0]), 0, w).astype(int)
    r0 = np.clip(np.floor(row - half_m / step[1]), 0, h).astype(int)
    r1 = np.clip(np.ceil(row + half_m / step[1]), 0, h).astype(int)
    area = np.maximum((c1 - c0) * (r1 - r0), 1)
    return (table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]) / area


def _window_size(cfg: SynthConfig) -> tuple[int, int] | None:
    """(width, height) px when --ground is rendered window by window (a GeoTIFF rasterio reads, above
    WINDOWED_PIXELS, without a surface model: buildings come from the whole of it), else None."""
    from ...geo.raster import _windowed, raster_size

    if cfg.heights or cfg.dsm or not _windowed(cfg.ground):
        return None
    width, height = raster_size(cfg.ground)
    return (width, height) if width * height > WINDOWED_PIXELS else None


def window_world(world: World, xy: tuple[float, float], half_m: float) -> tuple[World, tuple[float, float]]:
    """The part of a world read by windows that a location's tile and views can show: the square of half side
    `half_m` metres about `xy` (clipped to the raster, its corner on the coarsest pyramid level's grid so the
    pyramids match the whole raster's), as a world of its own, and the metres (east, north) of its corner in the
    whole world's frame. A world in memory is returned whole, offset (0, 0)."""
    from ...geo.raster import open_raster

    if world.raster is None:
        return world, (0.0, 0.0)
    g, (width, height), align = world.gsd_m, world.raster_size, 1 << (MAX_LEVEL + 1)
    col, row = xy[0] / g, -xy[1] / g
    half = half_m / g + 2 * align  # pixels; the margin keeps pyramid borders out of reach
    x0, y0 = max(0, int(col - half) // align * align), max(0, int(row - half) // align * align)
    x1, y1 = min(width, int(np.ceil(col + half))), min(height, int(np.ceil(row + half)))
    rgb = np.asarray(open_raster(world.raster).crop((x0, y0, x1, y1)))
    shift = (x0 * g, -y0 * g)
    core = tuple(c - shift[i // 2] for i, c in enumerate(world.core))
    local = replace(world, ortho=rgb, ground=rgb, raster=None, core=core, _pyramids={})
    return local, shift


def orthophoto_world(cfg: SynthConfig, reach_m: float, rng: np.random.Generator) -> World:
    """Load --ground (and --world-file, --heights) into a World."""
    notes: list[str] = []
    size = _window_size(cfg)
    windowed = size is not None
    if windowed:
        rgb, (w0, h0) = None, size
        notes.append(f"the orthophoto ({w0}x{h0} px) is read window by window around each location; ortho.jpg "
                     "(a whole copy) is not written")  # fmt: skip
        if cfg.epoch_gap > 0:
            raise ValueError(f"an epoch gap repaints the whole orthophoto, but {cfg.ground} ({w0}x{h0} px) is read "
                             "window by window; pass --epoch-gap 0")  # fmt: skip
    else:
        rgb = cv2.cvtColor(_read_image(cfg.ground, cv2.IMREAD_COLOR, "orthophoto"), cv2.COLOR_BGR2RGB)
        h0, w0 = rgb.shape[:2]
    hmap = _surface(cfg, (w0, h0), notes)
    if cfg.world_file:
        geo, gsd_e, gsd_n = georef_from_world_file(WorldFile.read(cfg.world_file), cfg.crs, w0, h0)
        if cfg.gsd_m is not None and abs(cfg.gsd_m - gsd_n) > 0.05 * gsd_n:
            raise ValueError(f"--gsd {cfg.gsd_m:g} disagrees with the world file's {gsd_n:.3g} m per pixel")
        gsd = gsd_n
        if abs(gsd_e - gsd_n) > 0.01 * gsd_n:  # degree pixels are not square on the ground: make them so
            if windowed:
                raise ValueError(f"{cfg.ground} ({w0}x{h0} px) has pixels {gsd_e:.3g} x {gsd_n:.3g} m: too large to "
                                 "resample whole; reproject it to a metric grid (UTM) first")  # fmt: skip
            w1 = int(round(w0 * gsd_e / gsd_n))
            rgb = cv2.resize(rgb, (w1, h0), interpolation=cv2.INTER_AREA if w1 < w0 else cv2.INTER_LINEAR)
            if hmap is not None:
                hmap = cv2.resize(hmap, (w1, h0), interpolation=cv2.INTER_NEAREST)
            notes.append(f"resampled the orthophoto from {w0} to {w1} px wide for square {gsd:.3g} m pixels")
        geo = GeoRef(geo.lat0, geo.lon0, gsd, *((w0, h0) if windowed else (rgb.shape[1], rgb.shape[0])))
    else:
        gsd = float(cfg.gsd_m)
        lat0, lon0 = cfg.origin if cfg.origin else (0.0, 0.0)
        geo = GeoRef(float(lat0), float(lon0), gsd, w0, h0)
        if not cfg.origin:
            notes.append("no world file or origin given: latitudes/longitudes are relative to (0, 0) at the image's "
                         "north-west corner")
    width, height = (w0, h0) if windowed else (rgb.shape[1], rgb.shape[0])
    half = cfg.footprint_m / 2 + 2 * gsd
    core = (half, width * gsd - half, -(height * gsd - half), -half)
    if core[1] <= core[0] or core[3] <= core[2]:
        raise ValueError(f"the orthophoto ({width * gsd:.0f} x {height * gsd:.0f} m) is smaller than one "
                         f"{cfg.footprint_m:g} m tile")
    epochs = None
    if cfg.epoch_gap > 0:
        applied = ("withered vegetation", *(("cast shadows of the extruded buildings under another sun",)
                                            if hmap is not None else ()), "reference sensor")
        epochs = draw_epochs(cfg.seed, cfg.epoch_gap, None, None, gsd, "orthophoto", applied)
        notes.append(f"epoch gap {cfg.epoch_gap:g} on a user orthophoto: only {', '.join(applied)} (its roads, cars, "
                     "fields and trees are not known)")  # fmt: skip
    sun = (180.0, 45.0) if epochs is None else (epochs.drone.sun_az_deg, epochs.drone.sun_el_deg)
    terrain = None
    if hmap is not None:
        terrain = ground_of(hmap, gsd)
        rows, cols = terrain.heights.shape
        base = cv2.resize(terrain.heights, (cols * terrain.step, rows * terrain.step), interpolation=cv2.INTER_LINEAR)
        hmap = hmap - base[: hmap.shape[0], : hmap.shape[1]]
        relief = float(np.ptp(terrain.heights))
        if cfg.dsm:
            notes.append(f"terrain from {Path(cfg.dsm).name}: ground {float(terrain.heights.min()):.1f}.."
                         f"{float(terrain.heights.max()):.1f} m; the views are cast onto it")  # fmt: skip
        elif relief < FLAT_RELIEF_M:
            terrain = None
        buildings, areas = _buildings_from_heights(hmap, rgb, gsd, *sun)
        cands, weight = buildings.centroid[areas >= MIN_TARGET_AREA_M2], areas[areas >= MIN_TARGET_AREA_M2]
    else:
        buildings = Buildings.from_rings([], [], [], [], *sun)
        notes.append("no surface model (--dsm or --heights): buildings are not extruded, drone views are "
                     "perspective warps of the ground")  # fmt: skip
        step = cfg.spacing_m / 2
        xs = np.arange(core[0], core[1] + 1e-9, step)
        ys = np.arange(core[2], core[3] + 1e-9, step)
        grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
        cands = grid + rng.uniform(-step / 4, step / 4, grid.shape)
        cands = np.clip(cands, (core[0], core[2]), (core[1], core[3]))
        weight = np.ones(len(cands))
    if windowed:
        from ...geo.raster import empty_overview

        empty = empty_overview(cfg.ground, max_side=2048)
    else:
        empty = np.all(rgb == 0, axis=-1)
    share = nodata_share(empty, (height, width), cands, cfg.footprint_m / 2, gsd)
    keep = share <= MAX_NODATA_SHARE
    if not keep.all():
        if not keep.any():
            raise ValueError(f"every candidate location of {cfg.ground} has more than {100 * MAX_NODATA_SHARE:.0f} % "
                             "nodata (black) under its tile: crop the orthophoto to the imaged area")  # fmt: skip
        notes.append(f"skipped {int((~keep).sum())} of {len(keep)} candidate locations over nodata (black) areas")
        cands, weight = cands[keep], weight[keep]
    if min(core[0], width * gsd - core[1]) < reach_m:
        notes.append(f"drone views reach {reach_m:.0f} m from a tile centre; near the image border they see the "
                     "mirrored orthophoto")
    ground, reference = rgb, None
    if epochs is not None:
        ground, reference = _drone_date(rgb, buildings, epochs, gsd, np.random.default_rng([cfg.seed, 6]))
    return World(ortho=ground, ground=ground, geo=geo, buildings=buildings, candidates=cands,
                 candidate_weight=weight, sun_az_deg=sun[0], sun_el_deg=sun[1], source="orthophoto", core=core,
                 notes=notes, raster=cfg.ground if windowed else None, raster_size=(width, height),
                 reference=reference, epochs=None if epochs is None else epochs.record(), terrain=terrain)


def _surface(cfg: SynthConfig, size: tuple[int, int], notes: list[str]) -> np.ndarray | None:
    """The surface heights (metres) on the orthophoto's `size` (width, height) pixels: the --dsm GeoTIFF
    resampled onto its grid (gaps filled from their edges, rasterio.fill), or the --heights image x height_scale;
    None without either. Raises FileNotFoundError or ValueError naming the file."""
    if cfg.heights:
        raw = _read_image(cfg.heights, cv2.IMREAD_UNCHANGED, "height image")
        raw = raw[..., 0] if raw.ndim == 3 else raw
        if raw.shape != size[::-1]:
            raise ValueError(f"height image {cfg.heights} is {raw.shape[1]}x{raw.shape[0]} px but the orthophoto "
                             f"is {size[0]}x{size[1]} px; they must match pixel for pixel")
        return raw.astype(np.float32) * float(cfg.height_scale)
    if not cfg.dsm:
        return None
    grid = resample_dsm(cfg.dsm, cfg.ground, WorldFile.read(cfg.world_file), cfg.crs, size, cfg.dsm_units)
    known = np.isfinite(grid.heights)
    heights = np.nan_to_num(grid.heights, nan=float(np.nanmedian(grid.heights)))
    if not known.all():
        heights = fillnodata(heights, mask=known.astype(np.uint8), max_search_distance=max(heights.shape))
        notes.append(f"the DSM {Path(cfg.dsm).name} has heights under {100 * known.mean():.0f} % of the orthophoto; "
                     "the rest is filled in from the nearest heights")  # fmt: skip
    return cv2.resize(heights, size, interpolation=cv2.INTER_LINEAR)


def _drone_date(rgb: np.ndarray, buildings: Buildings, epochs: Epochs, gsd: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(what the drone sees, what the reference sensor recorded): the orthophoto's vegetation withered and the
    extruded buildings' shadows cast under the drone's sun on a copy; the orthophoto coarsened for the reference."""
    drone = rgb.copy()
    wither(drone, epochs.drone.dryness, rng, gsd)
    if len(buildings):
        rings = [buildings.verts[s:s + n] * (1.0, -1.0) for s, n in zip(buildings.start, buildings.count, strict=True)]
        shadow = np.zeros(drone.shape[:2], np.uint8)
        P.cast_shadows(P.Canvas(shadow, gsd), rings, buildings.heights_m, [], sun_vector(epochs.drone.sun_az_deg),
                       epochs.drone.sun_el_deg)
        P.apply_gain(drone, cv2.LUT(shadow, np.round(128 - 0.45 * 128 / 255 * np.arange(256)).astype(np.uint8)))
    return drone, sense(rgb, epochs.sensor, gsd, rng)
