"""Terrain for registration: a DSM resampled onto the orthophoto's grid and stored with the gallery index.

`index build --dsm DSM.tif` reprojects the DSM (any CRS rasterio reads, its nodata kept as NaN) onto a grid
aligned with the orthophoto's pixels, `factor` orthophoto pixels per cell (the orthophoto's grid itself for
orthophotos up to MAX_CELLS a side), with rasterio.warp.reproject (bilinear). Registration then lifts every
matched orthophoto pixel to (east, north, height) and the pose is a full 6-DoF PnP (pose.solve_pose). Heights are
metres above the DSM's own vertical datum.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio import atomic_write, atomic_write_text
from ..geodesy import WorldFile, canonical_crs

TERRAIN_HEIGHTS, TERRAIN_RECORD = "terrain.npy", "terrain.json"
MAX_CELLS = 2048  # cells on the longer side of the stored grid (16 MiB of float32 at most)
FEET = {"foot", "feet", "us survey foot", "us_survey_foot", "ft", "us-ft", "foot_us"}
HEIGHT_RANGE_M = (-500.0, 9000.0)  # surface heights outside this are no DSM in metres


@dataclass(frozen=True)
class TerrainGrid:
    """Heights (rows, cols) float32 metres, NaN where unknown, on cells `factor` orthophoto pixels wide."""

    heights: np.ndarray
    factor: int
    image: str  # the orthophoto whose pixel grid the cells follow
    source: str  # the DSM file it came from

    def at_pixels(self, col: np.ndarray, row: np.ndarray) -> np.ndarray:
        """Bilinear height at orthophoto pixel coordinates (pixel centres at integers); NaN outside or where a
        neighbouring cell is unknown."""
        c = (np.asarray(col, dtype=np.float64) + 0.5) / self.factor - 0.5
        r = (np.asarray(row, dtype=np.float64) + 0.5) / self.factor - 0.5
        rows, cols = self.heights.shape
        c0, r0 = np.floor(c).astype(np.int64), np.floor(r).astype(np.int64)
        inside = (c0 >= 0) & (r0 >= 0) & (c0 + 1 < cols) & (r0 + 1 < rows)
        c0, r0 = np.clip(c0, 0, max(cols - 2, 0)), np.clip(r0, 0, max(rows - 2, 0))
        fc, fr = c - c0, r - r0
        h = self.heights
        c1, r1 = np.minimum(c0 + 1, cols - 1), np.minimum(r0 + 1, rows - 1)
        out = ((h[r0, c0] * (1 - fc) + h[r0, c1] * fc) * (1 - fr) + (h[r1, c0] * (1 - fc) + h[r1, c1] * fc) * fr)
        return np.where(inside, out, np.nan)


def _transform(world: WorldFile, factor: int):
    """rasterio Affine of the cell grid: the world file's pixel-centre terms moved to the corner, scaled."""
    from rasterio.transform import Affine

    corner_x = world.c - (world.a + world.b) / 2
    corner_y = world.f - (world.d + world.e) / 2
    return Affine(world.a * factor, world.b * factor, corner_x, world.d * factor, world.e * factor, corner_y)


def resample_dsm(dsm: str | Path, ortho: str | Path, world: WorldFile, crs: str, size: tuple[int, int],
                 units: str | None = None) -> TerrainGrid:  # fmt: skip
    """The DSM on the orthophoto's grid (`size` = its width, height in pixels; `world`, `crs` its georeference).

    `units` ('m' or 'ft') says what the heights are in when the file does not; a DSM in a feet-based CRS without
    it is refused. Raises FileNotFoundError, or ValueError naming the file: not a raster rasterio reads, no CRS,
    heights in unknown units, no overlap with the orthophoto, no valid height under it.
    """
    import rasterio
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioIOError
    from rasterio.warp import reproject

    dsm = Path(dsm)
    if not dsm.is_file():
        raise FileNotFoundError(f"DSM {dsm} does not exist")
    try:
        dataset = rasterio.open(dsm)
    except RasterioIOError as exc:
        raise ValueError(f"DSM {dsm} is not a raster rasterio can read ({exc})") from None
    with dataset:
        if dataset.crs is None:
            raise ValueError(f"DSM {dsm} has no coordinate system: give it one (gdal_edit.py -a_srs EPSG:xxxx)")
        linear = (dataset.crs.linear_units or "").lower() if dataset.crs.is_projected else "metre"
        scale = 1.0
        if units is None and linear in FEET:
            raise ValueError(f"DSM {dsm} is in a feet-based coordinate system ({dataset.crs.to_string()}) and does "
                             "not say what its heights are in: pass --dsm-units ft or --dsm-units m")  # fmt: skip
        if units == "ft":
            scale = 0.3048
        elif units not in (None, "m"):
            raise ValueError(f"--dsm-units must be 'm' or 'ft', got {units!r}")
        width, height = size
        factor = max(1, math.ceil(max(width, height) / MAX_CELLS))
        rows, cols = math.ceil(height / factor), math.ceil(width / factor)
        out = np.full((rows, cols), np.nan, np.float32)
        src = dataset.read(1, masked=True).astype(np.float32).filled(np.nan)
        reproject(src, out, src_transform=dataset.transform, src_crs=dataset.crs, src_nodata=np.nan,
                  dst_transform=_transform(world, factor), dst_crs=CRS.from_user_input(canonical_crs(crs)),
                  dst_nodata=np.nan, resampling=Resampling.bilinear)  # fmt: skip
    valid = np.isfinite(out)
    if not valid.any():
        raise ValueError(f"DSM {dsm} does not overlap the orthophoto {ortho} (or holds only nodata there): give the "
                         "DSM of the same ground")  # fmt: skip
    out *= scale
    lo, hi = float(np.nanmin(out)), float(np.nanmax(out))
    if lo < HEIGHT_RANGE_M[0] or hi > HEIGHT_RANGE_M[1]:
        raise ValueError(f"DSM {dsm} holds heights {lo:g}..{hi:g} under the orthophoto, not surface heights in "
                         "metres: pass --dsm-units if they are feet, or give a DSM in metres")  # fmt: skip
    return TerrainGrid(out, factor, str(Path(ortho).resolve()), str(dsm.resolve()))


def store(folder: str | Path, grids: list[TerrainGrid]) -> None:
    """Write the grids into an index folder (one heights file per orthophoto, one record); no grids: the folder's
    terrain is removed (an index rebuilt without --dsm must not answer with the old one's)."""
    folder = Path(folder)
    if not grids:
        (folder / TERRAIN_RECORD).unlink(missing_ok=True)
        for stale in folder.glob("terrain-*.npy"):
            stale.unlink()
        return
    records = []
    for i, grid in enumerate(grids):
        name = f"terrain-{i}.npy"
        atomic_write(folder / name, lambda tmp, g=grid: _save(tmp, g.heights), suffix=".npy")
        records.append({"heights": name, "factor": grid.factor, "image": grid.image, "source": grid.source,
                        "valid_share": float(np.isfinite(grid.heights).mean()),
                        "height_range_m": [float(np.nanmin(grid.heights)), float(np.nanmax(grid.heights))]})
    atomic_write_text(folder / TERRAIN_RECORD, json.dumps({"grids": records}, indent=2) + "\n")
    for stale in set(folder.glob("terrain-*.npy")) - {folder / r["heights"] for r in records}:
        stale.unlink()


def _save(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def record(folder: str | Path) -> dict | None:
    """terrain.json of an index folder (sources, coverage, height range), None when built without --dsm."""
    path = Path(folder) / TERRAIN_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def load(folder: str | Path) -> dict[str, TerrainGrid]:
    """The index's terrain by orthophoto path ({} when built without --dsm); ValueError for a damaged record."""
    folder = Path(folder)
    record = folder / TERRAIN_RECORD
    if not record.is_file():
        return {}
    try:
        grids = json.loads(record.read_text())["grids"]
        out = {}
        for g in grids:
            heights = np.load(folder / g["heights"], allow_pickle=False)
            out[g["image"]] = TerrainGrid(heights, int(g["factor"]), g["image"], g["source"])
        return out
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"the terrain of the gallery index {folder} is damaged ({exc}): rebuild the index with "
                         "--dsm") from None  # fmt: skip
