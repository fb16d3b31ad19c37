"""Tile sources for a gallery: a folder + CSV, a world-file orthophoto cut into tiles, the synthetic world."""

from __future__ import annotations

import csv
import functools
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.images import images_by_stem
from ..fileio import require_dir
from ..geodesy import LocalFrame, WorldFile, canonical_crs, check_latlon, find_world_file, parse_crs
from .geotiff import geotiff_crs, geotiff_transform, is_tiff
from .imaging import open_image, unbounded_pixels
from .raster import Raster, RowsFlipped, empty_overview, open_raster, raster_size

MAX_TILE_NODATA = 0.5  # an orthophoto tile more than half black or transparent is padding, not imagery

ROTATIONS = (0, 90, 180, 270)


@dataclass(frozen=True)
class Tile:
    """One gallery entry: where its centre is on Earth and how to get its pixels back."""

    id: str
    latitude: float
    longitude: float
    footprint_m: float
    source: str
    image: str  # absolute path of the image file holding the pixels
    box: tuple[int, int, int, int] | None = None  # crop (left, top, right, bottom) inside `image`
    rotation: float = 0.0  # degrees counter-clockwise; multiples of 90 are exact, others resample (rotated rasters)
    scale: float = 1.0
    ref_image: str = ""  # north-up imagery around the tile at native resolution, for registration ("" = none)
    ref_affine: tuple[float, ...] | None = None  # (a, b, c, d, e, f): ref_image pixel centre (col, row) ->
    # east = a col + b row + c, north = d col + e row + f, metres about the tile centre
    flipped: bool = False  # image and ref_image are south-up (rows run north): box and ref_affine are of the
    # upside-down view, as GDAL and QGIS show it

    def as_row(self) -> dict:
        row = asdict(self)
        row["box"] = "" if self.box is None else " ".join(str(v) for v in self.box)
        row["ref_affine"] = "" if self.ref_affine is None else " ".join(repr(float(v)) for v in self.ref_affine)
        row["flipped"] = "1" if self.flipped else ""
        return row

    @classmethod
    def from_row(cls, row: dict) -> Tile:
        box = tuple(int(v) for v in row["box"].split()) if row.get("box") else None
        return cls(
            id=row["id"], latitude=float(row["latitude"]), longitude=float(row["longitude"]),
            footprint_m=float(row["footprint_m"]), source=row.get("source", ""), image=row.get("image", ""),
            box=box, rotation=float(row.get("rotation") or 0), scale=float(row.get("scale") or 1.0),
            ref_image=row.get("ref_image") or "",
            ref_affine=tuple(float(v) for v in row["ref_affine"].split()) if row.get("ref_affine") else None,
            flipped=bool(row.get("flipped")),
        )  # fmt: skip


def load_tile(tile: Tile) -> Image.Image:
    """The tile's pixels, cropped and rotated as recorded."""
    if tile.box is None:
        img = open_image(tile.image)
    elif tile.rotation % 90:
        return _rotated_crop(_raster(tile.image, tile.flipped), tile.box, tile.rotation)
    else:
        img = _raster(tile.image, tile.flipped).crop(tile.box)
    if tile.rotation % 360:
        img = img.rotate(tile.rotation, expand=True)
    return img


def _raster(path: str, flipped: bool) -> Raster | RowsFlipped:
    """The raster at `path`, upside down for a south-up one, so boxes and affines of the north-up view fit it."""
    return RowsFlipped(open_raster(path)) if flipped else open_raster(path)


def _rotated_crop(img: Image.Image | Raster | RowsFlipped, box: tuple[int, int, int, int],
                  degrees: float) -> Image.Image:  # fmt: skip
    """The `box`-sized window about the box centre, turned `degrees` counter-clockwise: crop enough around it that
    no corner comes from outside the crop, rotate about the centre, cut the middle."""
    w, h = box[2] - box[0], box[3] - box[1]
    c, s = abs(math.cos(math.radians(degrees))), abs(math.sin(math.radians(degrees)))
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = math.ceil(max(w * c + h * s, w * s + h * c) / 2) + 1
    wide = img.crop((round(cx) - half, round(cy) - half, round(cx) + half, round(cy) + half))
    turned = wide.rotate(degrees, resample=Image.Resampling.BICUBIC)
    return turned.crop((half - w // 2, half - h // 2, half - w // 2 + w, half - h // 2 + h))


class NoReference(ValueError):
    """The index holds no reference imagery for a tile (built before registration, or from bare tile images)."""


def reference_image(tile: Tile) -> tuple[Raster | RowsFlipped, tuple[float, ...]]:
    """The reference raster of a tile (opened once: neighbouring tiles share it; `crop` reads a window) and its
    ground affine."""
    if not tile.ref_image or tile.ref_affine is None:
        raise NoReference(f"the gallery index holds no reference imagery for tile {tile.id} (built before "
                          "registration, or from a world without ortho.jpg): rebuild it with `spikevimformer index "
                          "build` for camera positions")  # fmt: skip
    if not Path(tile.ref_image).is_file():
        raise NoReference(f"the reference imagery of tile {tile.id}, {tile.ref_image}, is gone; "
                          "restore it or rebuild the index")  # fmt: skip
    return _raster(tile.ref_image, tile.flipped), tile.ref_affine


def local_affine(world: WorldFile, to_geo, col: float, row: float, lat: float, lon: float,
                 step: float = 32.0) -> tuple[float, ...]:  # fmt: skip
    """Linearise pixel -> (east, north) metres about (lat, lon) at pixel (col, row), by central differences.

    Exact for equirectangular rasters; for projected ones (UTM, Web Mercator) the error over a tile window is
    far below a pixel.
    """
    frame = LocalFrame(lat, lon)
    cols = np.array([col, col + step, col - step, col, col])
    rows = np.array([row, row, row, row + step, row - step])
    e, n = frame.to_local(*to_geo(*world.apply(cols, rows)))
    a, b = (e[1] - e[2]) / (2 * step), (e[3] - e[4]) / (2 * step)
    d, f = (n[1] - n[2]) / (2 * step), (n[3] - n[4]) / (2 * step)
    return (float(a), float(b), float(e[0] - a * col - b * row), float(d), float(f), float(n[0] - d * col - f * row))


def north_up_affine(image: Path, footprint_m: float) -> tuple[float, ...]:
    """Ground affine of a bare north-up tile image `footprint_m` wide, about its centre (tile folders say no more)."""
    with unbounded_pixels(), Image.open(image) as img:
        width, height = img.size
    gx, gy = footprint_m / width, footprint_m / height
    return (gx, 0.0, -gx * (width - 1) / 2, 0.0, -gy, gy * (height - 1) / 2)


def _column(row: dict, *names: str) -> str | None:
    return next((row[n] for n in names if row.get(n) not in (None, "")), None)


def _find_image(folder: Path, tile_id: str, flat: dict[str, Path]) -> Path | None:
    """A tile's image, its suffix in any case: FOLDER/ID.jpg (from `flat`, FOLDER's images by stem), else
    FOLDER/ID/ID.jpg, else the first image in FOLDER/ID."""
    if tile_id in flat:
        return flat[tile_id]
    inside = images_by_stem(folder / tile_id)
    return inside.get(tile_id) or next(iter(inside.values()), None)


def folder_tiles(folder: str | Path, csv_path: str | Path, default_footprint_m: float | None = None) -> list[Tile]:
    """Source (a): tiles in a folder, coordinates in a CSV with id, latitude, longitude, footprint_m[, image]."""
    folder, csv_path = require_dir(folder, "tile folder (--tiles)"), Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"tile CSV {csv_path} does not exist")
    tiles: list[Tile] = []
    flat = images_by_stem(folder)  # listed once: a lookup per tile, not a folder scan per tile
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            tile_id, lat, lon = _column(row, "id"), _column(row, "latitude", "lat"), _column(row, "longitude", "lon")
            foot = _column(row, "footprint_m", "footprint") or default_footprint_m
            if tile_id is None or lat is None or lon is None or foot is None:
                raise ValueError(
                    f"{csv_path} line {line}: needs id, latitude, longitude and footprint_m "
                    "(or pass a default footprint)"
                )
            try:
                lat_f, lon_f, foot_f = float(lat), float(lon), float(foot)
            except ValueError as exc:
                raise ValueError(f"{csv_path} line {line}: {exc}") from exc
            check_latlon(lat_f, lon_f, f"{csv_path} line {line}")
            image = _column(row, "image", "path", "file")
            path = (folder / image) if image else _find_image(folder, tile_id, flat)
            if path is None or not path.is_file():
                raise FileNotFoundError(f"{csv_path} line {line}: no image for tile {tile_id!r} under {folder}")
            full = str(path.resolve())
            tiles.append(Tile(tile_id, lat_f, lon_f, foot_f, "folder", full, ref_image=full,
                              ref_affine=north_up_affine(path, foot_f)))
    if not tiles:
        raise ValueError(f"{csv_path} lists no tiles")
    return tiles


# --- source (b): one orthophoto with a world file or GeoTIFF tags --------------------------------------


@dataclass(frozen=True)
class OrthoConfig:
    """How to cut an orthophoto: tile ground side and stride in metres, scale factors, rotations, CRS.

    crs None means: the GeoTIFF's own coordinate system, else EPSG:4326 (degrees).
    """

    tile_m: float
    stride_m: float
    scales: Sequence[float] = (1.0,)
    rotations: Sequence[int] = (0,)
    crs: str | None = None
    max_nodata: float = MAX_TILE_NODATA  # tiles with more black/transparent than this are left out (1: keep all)

    def __post_init__(self) -> None:
        if self.tile_m <= 0 or self.stride_m <= 0:
            raise ValueError(f"--tile-m and --stride-m must be positive metres, got {self.tile_m} and {self.stride_m}")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales must be positive factors, got {list(self.scales)}")
        if any(r % 90 for r in self.rotations):
            raise ValueError(f"rotations must be multiples of 90 degrees, got {list(self.rotations)}")


def _starts(total: int, size: int, stride: int) -> list[int]:
    """Tile origins along one axis, the last one flush with the far edge so nothing is left uncovered, unless what
    it would add is a sliver under 1/8 of the stride (a near-duplicate row; registration margins reach it)."""
    starts = list(range(0, total - size + 1, stride))
    if total - (starts[-1] + size) > stride / 8:
        starts.append(total - size)
    return starts


@functools.cache
def _warn_once(message: str) -> None:
    """A warning on stderr once per process (the index command georeferences an orthophoto more than once)."""
    print(f"warning: {message}", file=sys.stderr)


def _given_crs(image: Path, explicit: str | None) -> str:
    """The user's --crs over the coordinate system a GeoTIFF's tags give (with a warning where they differ: the tags
    may be wrong), else the tags'."""
    if explicit is None:
        return geotiff_crs(image)
    try:
        found = geotiff_crs(image)
    except ValueError:  # GeoKeys we cannot use: --crs supplies what they lack
        return explicit
    if canonical_crs(explicit) != canonical_crs(found):
        _warn_once(f"--crs {explicit} overrides the coordinate system {_short(found)} in the GeoTIFF tags of {image}")
    return explicit


def _short(crs: str) -> str:
    """A CRS for a one-line message: a WKT cut to its name."""
    return crs if len(crs) <= 60 else crs[:57] + "..."


def georeference(
    image: str | Path, crs: str | None = None, world_file: str | Path | None = None
) -> tuple[WorldFile, str]:
    """An orthophoto's pixel-centre affine and CRS. The affine comes from `world_file` (--world-file, overriding a
    GeoTIFF's tags with a warning where they differ), else a world file beside the image (beside a GeoTIFF it must
    agree with the tags), else its GeoTIFF tags; the CRS from `crs` (--crs, overriding the tags with a warning),
    else the tags, else EPSG:4326. Raises ValueError/FileNotFoundError naming the file and the flag to pass."""
    image = Path(image)
    given = world_file is not None
    if world_file is None:
        try:
            world_file = find_world_file(image)
        except FileNotFoundError:
            if not is_tiff(image):
                raise
            return geotiff_transform(image), _given_crs(image, crs)
    world = WorldFile.read(world_file)
    if is_tiff(image):
        try:
            found = _given_crs(image, crs)
        except ValueError:  # no usable GeoKeys: the world file alone, as before GeoTIFF support
            pass
        else:
            _same_place(image, world_file, world, given)
            return world, found
    return world, crs or "EPSG:4326"


def _same_place(image: Path, world_file: str | Path, world: WorldFile, given: bool) -> None:
    """A world file beside a GeoTIFF must put it where its own tags do (within half a pixel), else which one is
    right is the user's call; one given with --world-file is that call (a warning says so)."""
    try:
        tagged = geotiff_transform(image)
    except ValueError:  # GeoKeys without a transform: nothing to compare
        return
    corners = np.array([[0.0, 0.0], [1000.0, 0.0], [0.0, 1000.0]])
    a = np.c_[world.apply(corners[:, 0], corners[:, 1])]
    b = np.c_[tagged.apply(corners[:, 0], corners[:, 1])]
    pixel = max(abs(world.a), abs(world.e), abs(world.b), abs(world.d))
    if np.abs(a - b).max() <= pixel / 2:
        return
    if given:
        _warn_once(f"--world-file {world_file} overrides the transform in the GeoTIFF tags of {image}")
        return
    raise ValueError(f"the world file {world_file} and the GeoTIFF tags of {image} put the image in different "
                     "places; remove the world file or fix it, or pass it as --world-file to use it over the "
                     "tags")  # fmt: skip


NORTH_UP_TOLERANCE_DEG = 1.0  # grid convergence near the middle of a UTM zone; less is not worth a resampling


def _mirrored(col_step: tuple[float, float], row_step: tuple[float, float]) -> bool:
    """Whether the ground (east, north) metres of one step along a column and a row turn the wrong way round: a
    south-up raster (rows run north, a positive row step), which GDAL and QGIS show upside down."""
    return bool(col_step[0] * row_step[1] - col_step[1] * row_step[0] > 0)


def _flip_rows(world: WorldFile, height: int) -> WorldFile:
    """The affine of the raster upside down: row r of the view is row height - 1 - r of the file."""
    return WorldFile(a=world.a, d=world.d, b=-world.b, e=-world.e, c=world.c + world.b * (height - 1),
                     f=world.f + world.e * (height - 1))  # fmt: skip


def _north_up_turn(col_step: tuple[float, float]) -> float:
    """Degrees counter-clockwise that turn the raster north-up, from the ground (east, north) metres of one step
    along a column; 0 within NORTH_UP_TOLERANCE_DEG."""
    turn = math.degrees(math.atan2(col_step[1], col_step[0]))
    return 0.0 if abs(turn) < NORTH_UP_TOLERANCE_DEG else turn


def _ground_steps(image: Path, world: WorldFile, crs: str,
                  size: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]]:  # fmt: skip
    """Ground (east, north) metres of one pixel step along a column and along a row at the raster's centre, whatever
    the CRS; ValueError naming --crs for coordinates that are no place on Earth in it."""
    cx, cy = (size[0] - 1) / 2, (size[1] - 1) / 2
    lat, lon = parse_crs(crs)(*world.apply([cx, cx + 1, cx], [cy, cy, cy + 1]))
    try:
        check_latlon(lat, lon, f"{image} geo-referenced in {crs}")
    except ValueError as exc:
        if canonical_crs(crs) != canonical_crs("EPSG:4326"):
            raise
        raise ValueError(f"{exc}; its coordinates look projected (metres, not degrees): pass their coordinate "
                         "system with --crs, e.g. EPSG:3857, UTM:33N, a WKT or a PROJ string") from None
    e, n = LocalFrame(float(lat[0]), float(lon[0])).to_local(lat, lon)
    return (float(e[1] - e[0]), float(n[1] - n[0])), (float(e[2] - e[0]), float(n[2] - n[0]))


def view_georeference(image: str | Path, crs: str | None = None,
                      world_file: str | Path | None = None) -> tuple[WorldFile, str, bool]:  # fmt: skip
    """`georeference` of the raster as tiles, registration and the DSM grid see it: a south-up one (rows running
    north, as GDAL and QGIS show it) upside down, its affine with rows flipped and True (read it with RowsFlipped).
    Raises ValueError/FileNotFoundError naming the file and the flag to pass."""
    image = Path(image)
    world, crs = georeference(image, crs, world_file)
    size = raster_size(image)
    flipped = _mirrored(*_ground_steps(image, world, crs, size))
    # a mirror that flipping rows leaves (columns running west as well) is then a turn, which the tiles undo
    return (_flip_rows(world, size[1]) if flipped else world), crs, flipped


def orthophoto_tiles(image: str | Path, cfg: OrthoConfig, world_file: str | Path | None = None) -> list[Tile]:
    """Source (b): overlapping square ground tiles of an orthophoto geo-referenced by a world file or GeoTIFF tags."""
    image = Path(image)
    if image.is_dir():
        raise ValueError(f"orthophoto {image} is a folder; give the image file (a GeoTIFF, or an image with a world "
                         "file beside it)")  # fmt: skip
    if not image.is_file():
        raise FileNotFoundError(f"orthophoto {image} does not exist")
    world, crs, flipped = view_georeference(image, cfg.crs, world_file)
    to_geo = parse_crs(crs)
    width, height = raster_size(image)
    (e_col, n_col), (e_row, n_row) = _ground_steps(image, world, crs, (width, height))
    gsd_col, gsd_row = math.hypot(e_col, n_col), math.hypot(e_row, n_row)
    north_up = _north_up_turn((e_col, n_col))
    tiles: list[Tile] = []
    empty, skipped = (empty_overview(image, 1024) if cfg.max_nodata < 1 else None), 0
    if empty is not None and flipped:
        empty = np.flipud(empty)
    for scale in cfg.scales:
        size_m, stride_m = cfg.tile_m * scale, cfg.stride_m * scale
        w, h = round(size_m / gsd_col), round(size_m / gsd_row)
        sw, sh = max(1, round(stride_m / gsd_col)), max(1, round(stride_m / gsd_row))
        if w < 8 or h < 8:
            raise ValueError(f"{size_m:g} m tiles are only {w}x{h} px at this orthophoto's {gsd_col:.2f} m/px"
                             + _crs_hint(crs, gsd_col))  # fmt: skip
        if w > width or h > height:
            raise ValueError(
                f"{size_m:g} m tiles ({w}x{h} px) do not fit in {image.name} ({width}x{height} px, "
                f"about {width * gsd_col:.0f} x {height * gsd_row:.0f} m)"
            )
        for top in _starts(height, h, sh):
            for left in _starts(width, w, sw):
                if empty is not None and _mostly_empty(empty, (left, top, left + w, top + h), (width, height),
                                                       cfg.max_nodata):
                    skipped += 1
                    continue
                col, row = left + (w - 1) / 2, top + (h - 1) / 2
                tlat, tlon = (float(v) for v in to_geo(*world.apply(col, row)))
                affine = local_affine(world, to_geo, col, row, tlat, tlon)
                for rot in cfg.rotations:
                    tiles.append(Tile(
                        f"{image.stem}_s{scale:g}_y{top}_x{left}_r{rot % 360}", tlat, tlon, size_m, "orthophoto",
                        str(image.resolve()), (left, top, left + w, top + h), (rot + north_up) % 360, float(scale),
                        str(image.resolve()), affine, flipped,
                    ))  # fmt: skip
    if skipped:
        print(f"note: skipped {skipped} tile(s) of {image.name} that are more than {100 * cfg.max_nodata:.0f} % "
              "nodata (black or transparent)", file=sys.stderr)  # fmt: skip
    if not tiles:
        raise ValueError(f"every tile of {image} is more than {100 * cfg.max_nodata:.0f} % nodata (black or "
                         "transparent)")  # fmt: skip
    return tiles


ABSURD_GSD_M = 1000.0  # no orthophoto worth tiling has kilometre pixels: its coordinates are read in the wrong CRS


def _crs_hint(crs: str, gsd_m: float) -> str:
    """For an absurd pixel size, the CRS the coordinates were read in and how to give the right one."""
    if gsd_m <= ABSURD_GSD_M:
        return ""
    units = " (degrees)" if canonical_crs(crs) == "EPSG:4326" else ""
    return (f"; the file says {_short(crs)}{units}: if its coordinates are metres, pass their coordinate system with "
            "--crs (an EPSG code, WKT or PROJ string)")  # fmt: skip


def _mostly_empty(empty: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int], limit: float) -> bool:
    """Whether more than `limit` of the raster box is nodata, judged on the decimated mask `empty`."""
    sy, sx = empty.shape[0] / size[1], empty.shape[1] / size[0]
    left, top = int(box[0] * sx), int(box[1] * sy)
    right, bottom = max(left + 1, math.ceil(box[2] * sx)), max(top + 1, math.ceil(box[3] * sy))
    return float(empty[top:bottom, left:right].mean()) > limit


# --- source (c): the synthetic world ---------------------------------------------------------------------

WORLD_GALLERY = {"test": "University-1652/test/gallery_satellite", "train": "University-1652/train/satellite"}
WORLD_SPLITS = {"test": ("test", "distractor"), "train": ("train",)}


def read_locations(world: str | Path) -> dict[str, dict]:
    """locations.csv of a synthetic world: id -> {split, latitude, longitude, footprint_m}."""
    path = Path(world) / "locations.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (is {world} a synthetic world folder?)")
    out: dict[str, dict] = {}
    with path.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                out[row["id"]] = {
                    "split": row["split"], "latitude": float(row["latitude"]),
                    "longitude": float(row["longitude"]), "footprint_m": float(row["footprint_m"]),
                }  # fmt: skip
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(
                    f"{path} line {line}: needs id, split, latitude, longitude, footprint_m ({exc})"
                ) from exc
    return out


def world_orthophoto(world: Path):
    """(image path, world file, CRS) of the orthophoto a synthetic world wrote beside its dataset, or None."""
    try:
        record = json.loads((world / "world.json").read_text()).get("orthophoto")
    except (OSError, ValueError):
        return None
    if not record or not (world / record["image"]).is_file():
        return None
    return world / record["image"], WorldFile.read(world / record["world_file"]), record.get("crs", "EPSG:4326")


def world_tiles(world: str | Path, split: str = "test") -> list[Tile]:
    """Source (c): the satellite tiles of a synthetic world's gallery (test: test + distractor locations),
    with the world's orthophoto as reference imagery when it wrote one."""
    if split not in WORLD_GALLERY:
        raise ValueError(f"split must be one of {sorted(WORLD_GALLERY)}, got {split!r}")
    world = Path(world)
    ortho = world_orthophoto(world)
    if ortho is not None and canonical_crs(ortho[2]) != "EPSG:4326":
        raise ValueError(f"{world}/world.json: orthophoto CRS {ortho[2]} is not EPSG:4326")
    tiles, missing = [], []
    for loc_id, loc in sorted(read_locations(world).items()):
        if loc["split"] not in WORLD_SPLITS[split]:
            continue
        path = world / WORLD_GALLERY[split] / loc_id / f"{loc_id}.jpg"
        if not path.is_file():
            missing.append(str(path))
            continue
        ref: dict = {}
        if ortho is not None:
            wf = ortho[1]
            col, row = np.linalg.solve([[wf.a, wf.b], [wf.d, wf.e]], [loc["longitude"] - wf.c, loc["latitude"] - wf.f])
            ref = {"ref_image": str(ortho[0].resolve()), "ref_affine": local_affine(
                wf, parse_crs("EPSG:4326"), float(col), float(row), loc["latitude"], loc["longitude"])}
        tiles.append(Tile(loc_id, loc["latitude"], loc["longitude"], loc["footprint_m"], "world", str(path.resolve()),
                          **ref))  # fmt: skip
    if missing:
        raise FileNotFoundError(f"{len(missing)} gallery tiles of {world} are missing, e.g. {missing[0]}")
    if not tiles:
        raise ValueError(f"{world}/locations.csv has no {split} locations")
    return tiles
