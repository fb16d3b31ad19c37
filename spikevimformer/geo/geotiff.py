"""GeoTIFF geo-referencing read with Pillow alone, since drone orthophotos usually ship as GeoTIFFs."""

from __future__ import annotations

import struct
from pathlib import Path

from PIL import TiffImagePlugin

from ..geodesy import WorldFile, parse_crs

MODEL_PIXEL_SCALE = 33550
MODEL_TIEPOINT = 33922
MODEL_TRANSFORMATION = 34264
GEO_KEY_DIRECTORY = 34735

GT_MODEL_TYPE = 1024  # 1 projected, 2 geographic, 3 geocentric
GT_RASTER_TYPE = 1025  # 1 PixelIsArea (default), 2 PixelIsPoint
GEOGRAPHIC_TYPE = 2048
GEOG_ANGULAR_UNITS = 2054
PROJECTED_CS_TYPE = 3072
PROJ_LINEAR_UNITS = 3076
USER_DEFINED = 32767
UNIT_DEGREE, UNIT_METRE = 9102, 9001

_ADVICE = ("pass its coordinate system with --crs (an EPSG code, WKT or PROJ string), and its transform with "
           "--world-file (a .tfw world file) where the tags lack one or have it wrong")


def _refuse(path: Path, what: str) -> ValueError:
    return ValueError(f"GeoTIFF {path}: {what}; {_ADVICE}")


def _doubles(tags, tag: int) -> tuple[float, ...] | None:
    value = tags.get(tag)
    if value is None:
        return None
    return tuple(float(v) for v in (value if isinstance(value, tuple | list) else (value,)))


def _geo_keys(tags, path: Path) -> dict[int, int]:
    """GeoKeys stored inline (TIFFTagLocation 0); keys held in the double/ASCII side tags are not needed here."""
    raw = tags.get(GEO_KEY_DIRECTORY)
    if raw is None:
        raise _refuse(path, "no GeoKeyDirectoryTag (34735), so its coordinate system is unknown")
    raw = tuple(int(v) for v in (raw if isinstance(raw, tuple | list) else (raw,)))
    if len(raw) < 4 or len(raw) < 4 + 4 * raw[3]:
        raise _refuse(path, "a truncated GeoKeyDirectoryTag")
    keys: dict[int, int] = {}
    for i in range(raw[3]):
        key, location, _count, value = raw[4 + 4 * i : 8 + 4 * i]
        if location == 0:
            keys[key] = value
    return keys


def _crs_from_keys(keys: dict[int, int], path: Path) -> str:
    model = keys.get(GT_MODEL_TYPE)
    projected, geographic = keys.get(PROJECTED_CS_TYPE), keys.get(GEOGRAPHIC_TYPE)
    if model == 3:
        raise _refuse(path, "geocentric coordinates are not supported")
    if model == 1 or (model is None and projected is not None):
        if projected is None or projected == USER_DEFINED:
            return _identified(path, "a user-defined projected coordinate system")
        if keys.get(PROJ_LINEAR_UNITS, UNIT_METRE) != UNIT_METRE:
            raise _refuse(path, f"projected units {keys[PROJ_LINEAR_UNITS]} are not supported (only metres)")
        return _convertible(f"EPSG:{projected}", path)
    if geographic is None or geographic == USER_DEFINED:
        return _identified(path, "no geographic or projected coordinate system EPSG code in its GeoKeys")
    if keys.get(GEOG_ANGULAR_UNITS, UNIT_DEGREE) != UNIT_DEGREE:
        raise _refuse(path, f"angular units {keys[GEOG_ANGULAR_UNITS]} are not supported (only degrees)")
    return _convertible(f"EPSG:{geographic}", path)


def _identified(path: Path, problem: str) -> str:
    """GeoKeys without an EPSG code (a CRS spelled out in parameters or WKT, e.g. a custom transverse Mercator): the
    EPSG code PROJ identifies it as, else its WKT, through rasterio when installed, else the `problem` as a
    refusal."""
    try:
        import rasterio
    except ImportError:
        raise _refuse(path, problem + " without PROJ (pip install 'spikevimformer[deploy]')") from None
    with rasterio.Env(), rasterio.open(path) as dataset:
        crs = dataset.crs
    if crs is None or not (crs.is_projected or crs.is_geographic):
        raise _refuse(path, problem + " (and PROJ reads no coordinate system from it)")
    code = crs.to_epsg()
    return _convertible(f"EPSG:{code}" if code is not None else crs.to_wkt(), path)


def _convertible(crs: str, path: Path) -> str:
    """The CRS, once parse_crs can take it to WGS84 (our formulas, or PROJ through rasterio)."""
    try:
        parse_crs(crs)
    except ValueError as exc:
        raise _refuse(path, str(exc)) from None
    return crs


def _world_from_tags(tags, keys: dict[int, int], path: Path) -> WorldFile:
    """The raster->model affine, moved to the pixel-centre convention of world files."""
    raster_type = keys.get(GT_RASTER_TYPE, 1)
    if raster_type not in (1, 2):
        raise _refuse(path, f"raster type {raster_type} is neither PixelIsArea nor PixelIsPoint")
    # PixelIsArea: raster (0, 0) is the upper-left CORNER of pixel (0, 0), whose centre is then (0.5, 0.5).
    half = 0.5 if raster_type == 1 else 0.0
    scale, ties, matrix = (_doubles(tags, t) for t in (MODEL_PIXEL_SCALE, MODEL_TIEPOINT, MODEL_TRANSFORMATION))
    if ties is not None and len(ties) % 6:
        raise _refuse(path, "a malformed ModelTiepointTag (not a multiple of six numbers)")
    if ties is not None and len(ties) > 6:
        raise _refuse(path, f"{len(ties) // 6} tiepoints (a warped, ground-control-point image) are not supported")
    if scale is not None and ties is not None:
        if len(scale) < 2:
            raise _refuse(path, "a malformed ModelPixelScaleTag")
        i, j, _k, x, y, _z = ties
        sx, sy = scale[0], scale[1]
        # y = Y - (j - J) * Sy: the stored row scale is positive for north-up images.
        world = WorldFile(a=sx, d=0.0, b=0.0, e=-sy, c=x + (half - i) * sx, f=y - (half - j) * sy)
    elif matrix is not None:
        if len(matrix) != 16:
            raise _refuse(path, "a malformed ModelTransformationTag (not a 4x4 matrix)")
        m = matrix
        world = WorldFile(a=m[0], d=m[4], b=m[1], e=m[5], c=m[3] + half * (m[0] + m[1]), f=m[7] + half * (m[4] + m[5]))
    elif ties is not None:
        raise _refuse(path, "a tiepoint without ModelPixelScaleTag is not supported")
    else:
        raise _refuse(path, "no ModelPixelScaleTag + ModelTiepointTag or ModelTransformationTag")
    if world.a * world.e - world.b * world.d == 0:
        raise _refuse(path, "a degenerate transform (zero pixel size)")
    return world


TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders


def _tags(path: Path):
    """The first IFD's tags, parsed straight from the file: any pixel layout (16-bit RGB, float, many bands) has
    readable tags even where Pillow cannot decode the pixels."""
    if not path.is_file():
        raise FileNotFoundError(f"GeoTIFF {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(16)
        if head[:4] not in TIFF_MAGIC:
            raise _refuse(path, "it is not a TIFF")
        try:
            ifd = TiffImagePlugin.ImageFileDirectory_v2(head if head[:4] in TIFF_MAGIC[2:] else head[:8])
            f.seek(ifd.next)
            ifd.load(f)
        except (OSError, ValueError, SyntaxError, struct.error) as exc:
            raise ValueError(f"GeoTIFF {path} is not a readable TIFF ({exc})") from exc
        return dict(ifd)


def is_tiff(path: str | Path) -> bool:
    """Whether the file is a TIFF (by its first bytes, not its suffix), i.e. worth looking for GeoTIFF tags in."""
    try:
        with open(path, "rb") as f:
            return f.read(4) in TIFF_MAGIC
    except OSError:
        return False


def geotiff_crs(path: str | Path) -> str:
    """The GeoTIFF's coordinate system as a string `parse_crs` accepts ('EPSG:4326', 'EPSG:32632', or the WKT of a
    CRS without an EPSG code). Raises ValueError naming the file for GeoKeys we cannot use."""
    path = Path(path)
    return _crs_from_keys(_geo_keys(_tags(path), path), path)


def geotiff_transform(path: str | Path) -> WorldFile:
    """The pixel-centre affine of a GeoTIFF alone, for a coordinate system given by the user instead of its tags.
    Raises ValueError naming the file when the tags hold no usable transform."""
    path = Path(path)
    tags = _tags(path)
    if not any(t in tags for t in (MODEL_PIXEL_SCALE, MODEL_TIEPOINT, MODEL_TRANSFORMATION, GEO_KEY_DIRECTORY)):
        raise _refuse(path, "no GeoTIFF geo-referencing tags")
    return _world_from_tags(tags, _geo_keys(tags, path) if GEO_KEY_DIRECTORY in tags else {}, path)


def read_geotiff(path: str | Path) -> tuple[WorldFile, str]:
    """The pixel-centre affine and the CRS of a GeoTIFF, so it needs no world file beside it."""
    return geotiff_transform(path), geotiff_crs(path)
