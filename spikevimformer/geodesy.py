"""Geodesy below both the gallery (geo/) and the world generator: distances, a local metre frame, CRSs, world files."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius
WGS84_A = 6_378_137.0
WGS84_F = 1 / 298.257223563


def check_latlon(lat: np.ndarray | float, lon: np.ndarray | float, what: str = "coordinates") -> None:
    """Reject swapped or out-of-range coordinates early, where the mistake is still easy to see."""
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(lon))):
        raise ValueError(f"{what}: latitude/longitude must be finite numbers")
    if np.any(np.abs(lat) > 90) or np.any(np.abs(lon) > 180):
        raise ValueError(f"{what}: latitude must lie in [-90, 90] and longitude in [-180, 180] degrees")


def haversine_m(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in metres (spherical Earth: < 0.5 % error, far below tile sizes)."""
    p1, p2 = np.radians(np.asarray(lat1, dtype=np.float64)), np.radians(np.asarray(lat2, dtype=np.float64))
    dp = p2 - p1
    dl = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


@dataclass(frozen=True)
class LocalFrame:
    """Equirectangular east/north metres around an origin; exact enough over a few kilometres."""

    lat0: float
    lon0: float

    def to_local(self, lat, lon) -> tuple[np.ndarray, np.ndarray]:
        k = math.radians(1.0) * EARTH_RADIUS_M
        east = (np.asarray(lon, dtype=np.float64) - self.lon0) * k * math.cos(math.radians(self.lat0))
        north = (np.asarray(lat, dtype=np.float64) - self.lat0) * k
        return east, north

    def to_geo(self, east, north) -> tuple[np.ndarray, np.ndarray]:
        k = math.radians(1.0) * EARTH_RADIUS_M
        lat = self.lat0 + np.asarray(north, dtype=np.float64) / k
        lon = self.lon0 + np.asarray(east, dtype=np.float64) / (k * math.cos(math.radians(self.lat0)))
        return lat, lon


# --- projected coordinates of world files -------------------------------------------------------------


def web_mercator_to_geo(x, y) -> tuple[np.ndarray, np.ndarray]:
    """EPSG:3857 metres -> WGS84 degrees."""
    lon = np.degrees(np.asarray(x, dtype=np.float64) / WGS84_A)
    lat = np.degrees(2 * np.arctan(np.exp(np.asarray(y, dtype=np.float64) / WGS84_A)) - math.pi / 2)
    return lat, lon


def utm_to_geo(easting, northing, zone: int, north: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """UTM (WGS84) metres -> degrees by the Krüger series to n^3 (sub-millimetre inside a zone)."""
    if not 1 <= zone <= 60:
        raise ValueError(f"UTM zone must be 1..60, got {zone}")
    n = WGS84_F / (2 - WGS84_F)
    big_a = WGS84_A / (1 + n) * (1 + n**2 / 4 + n**4 / 64)
    beta = (n / 2 - 2 * n**2 / 3 + 37 * n**3 / 96, n**2 / 48 + n**3 / 15, 17 * n**3 / 480)
    delta = (2 * n - 2 * n**2 / 3 - 2 * n**3, 7 * n**2 / 3 - 8 * n**3 / 5, 56 * n**3 / 15)
    k0 = 0.9996
    xi = (np.asarray(northing, dtype=np.float64) - (0.0 if north else 10_000_000.0)) / (k0 * big_a)
    eta = (np.asarray(easting, dtype=np.float64) - 500_000.0) / (k0 * big_a)
    xi_p, eta_p = xi.copy(), eta.copy()
    for j, b in enumerate(beta, start=1):
        xi_p = xi_p - b * np.sin(2 * j * xi) * np.cosh(2 * j * eta)
        eta_p = eta_p - b * np.cos(2 * j * xi) * np.sinh(2 * j * eta)
    chi = np.arcsin(np.sin(xi_p) / np.cosh(eta_p))
    lat = chi + sum(d * np.sin(2 * j * chi) for j, d in enumerate(delta, start=1))
    lon0 = math.radians(6 * zone - 183)
    lon = lon0 + np.arctan2(np.sinh(eta_p), np.cos(xi_p))
    return np.degrees(lat), np.degrees(lon)


def canonical_crs(crs: str) -> str:
    """One spelling per coordinate system ('UTM:32N' -> 'EPSG:32632', 'WGS84' -> 'EPSG:4326')."""
    key = crs.strip().upper().replace(" ", "")
    if key in ("WGS84", "LONLAT"):
        return "EPSG:4326"
    if key in ("EPSG:900913", "WEBMERCATOR"):
        return "EPSG:3857"
    if key.startswith("UTM:") and key[-1:] in ("N", "S") and key[4:-1].isdigit():
        return f"EPSG:{(32600 if key[-1] == 'N' else 32700) + int(key[4:-1])}"
    return key if _is_epsg(key) else crs.strip()  # WKT and PROJ strings are case-sensitive: kept as written


def _is_epsg(key: str) -> bool:
    """Whether a canonical spelling is an EPSG code (compared and looked up by number, unlike WKT/PROJ strings)."""
    return key.startswith("EPSG:") and key[5:].isdigit()


def parse_crs(crs: str):
    """A function (x, y) -> (lat, lon) for 'EPSG:4326', 'EPSG:3857', 'EPSG:326zz'/'EPSG:327zz' or 'UTM:33N' (our own
    formulas), or any other coordinate system PROJ reads (an EPSG code such as the national grids EPSG:31256,
    EPSG:2056, EPSG:27700; a WKT; a PROJ string such as '+proj=tmerc +lon_0=10.3 ...') when rasterio (the `deploy`
    extra) is installed.

    Raises ValueError for a coordinate system neither knows."""
    key = canonical_crs(crs)
    if key == "EPSG:4326":
        return lambda x, y: (np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64))
    if key == "EPSG:3857":
        return web_mercator_to_geo
    if key[:8] in ("EPSG:326", "EPSG:327") and key[8:].isdigit():
        zone, north = int(key[8:]), key[7] == "6"
        if not 1 <= zone <= 60:
            raise ValueError(f"unknown coordinate system {crs!r} (UTM zones are 1..60)")
        return lambda x, y: utm_to_geo(*_in_utm_range(x, y, crs), zone, north)
    builtin = "EPSG:4326 (degrees), EPSG:3857, EPSG:326zz/327zz or UTM:33N"
    epsg = _is_epsg(key)
    try:
        import rasterio
        from rasterio.crs import CRS
        from rasterio.errors import CRSError
    except ImportError:
        raise ValueError(f"coordinate system {crs!r} needs PROJ: pip install 'spikevimformer[deploy]' (rasterio), "
                         f"or reproject the orthophoto to {builtin}") from None
    try:
        with rasterio.Env():  # GDAL's own error line stays off stderr; the ValueError says it
            source = CRS.from_epsg(int(key[5:])) if epsg else CRS.from_user_input(key)
    except CRSError as exc:
        if epsg:
            raise ValueError(f"unknown coordinate system {crs!r} (not an EPSG code PROJ knows)") from None
        raise ValueError(f"unsupported coordinate system {crs!r} (PROJ: {exc}); use an EPSG code (e.g. {builtin}), "
                         "a WKT or a PROJ string (+proj=...)") from None
    if not (source.is_projected or source.is_geographic):
        raise ValueError(f"coordinate system {crs!r} is neither geographic nor projected")
    return lambda x, y: _proj_to_geo(source, x, y)


def _proj_to_geo(source, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in `source` (a rasterio CRS) -> WGS84 degrees, by PROJ (GDAL's transformer). Coordinates PROJ
    cannot carry there and back within a metre (outside the projection's domain, e.g. a world file read in the
    wrong CRS) raise ValueError rather than landing somewhere else on Earth."""
    from rasterio.warp import transform

    x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    flat_x, flat_y = x.ravel(), y.ravel()
    lon, lat = (np.asarray(v) for v in transform(source, "EPSG:4326", flat_x, flat_y))
    back_x, back_y = (np.asarray(v) for v in transform("EPSG:4326", source, lon, lat))
    bad = ~np.isfinite(lat) | ~(np.abs(back_x - flat_x) < 1.0) | ~(np.abs(back_y - flat_y) < 1.0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"({flat_x[i]:.6g}, {flat_y[i]:.6g}) lies outside what {source} can place on Earth: is the "
                         "coordinate system (--crs) right?")  # fmt: skip
    return lat.reshape(x.shape), lon.reshape(x.shape)


UTM_EASTING_M = (0.0, 1_200_000.0)  # a zone is ~670 km wide at the equator; national grids stretch one zone further
UTM_NORTHING_M = (0.0, 10_000_000.0)


def _in_utm_range(x, y, crs: str) -> tuple[np.ndarray, np.ndarray]:
    """The UTM coordinates, once they lie where a UTM zone can (else ValueError: a world file read in the wrong CRS
    would otherwise land far away, since the series extrapolates)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    bx, by = np.broadcast_arrays(x, y)
    outside = ~((bx >= UTM_EASTING_M[0]) & (bx <= UTM_EASTING_M[1]) & (by >= UTM_NORTHING_M[0])
                & (by <= UTM_NORTHING_M[1]))  # fmt: skip
    if outside.any():
        i = np.unravel_index(int(np.argmax(outside)), outside.shape)
        raise ValueError(f"easting {bx[i]:.6g} m, northing {by[i]:.6g} m lie outside any UTM zone ({crs}): is the "
                         "coordinate system (--crs) right?")  # fmt: skip
    return x, y


# --- world files (the six-line affine geotransform beside an orthophoto) ----------------------------------

WORLD_FILE_SUFFIXES = (".jgw", ".pgw", ".tfw", ".wld", ".jpgw", ".pngw", ".tifw", ".bpw", ".bmpw")


@dataclass(frozen=True)
class WorldFile:
    """The six affine terms of an ESRI world file: x = A*col + B*row + C, y = D*col + E*row + F."""

    a: float
    d: float
    b: float
    e: float
    c: float
    f: float

    @classmethod
    def read(cls, path: str | Path) -> WorldFile:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"world file {path} does not exist")
        values = [v for v in path.read_text(encoding="utf-8", errors="replace").split() if v]
        if len(values) != 6:
            raise ValueError(f"world file {path} must hold six numbers (A D B E C F), found {len(values)}")
        try:
            a, d, b, e, c, f = (float(v) for v in values)
        except ValueError as exc:
            raise ValueError(f"world file {path}: {exc}") from exc
        if a * e - b * d == 0:
            raise ValueError(f"world file {path} describes a degenerate transform (zero pixel size)")
        return cls(a, d, b, e, c, f)

    def apply(self, col, row) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates of a pixel centre ((0, 0) is the centre of the upper-left pixel)."""
        col, row = np.asarray(col, dtype=np.float64), np.asarray(row, dtype=np.float64)
        return self.a * col + self.b * row + self.c, self.d * col + self.e * row + self.f


def find_world_file(image: str | Path) -> Path:
    image = Path(image)
    for suffix in WORLD_FILE_SUFFIXES:
        for candidate in (image.with_suffix(suffix), image.with_suffix(suffix.upper())):
            if candidate.is_file():
                return candidate
    looked = ", ".join(image.with_suffix(s).name for s in WORLD_FILE_SUFFIXES[:4])
    raise FileNotFoundError(f"no world file next to {image} (looked for {looked}, ...); pass it explicitly")
