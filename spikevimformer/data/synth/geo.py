"""Geo-referencing of a world image: every pixel gets a latitude/longitude.

The world is a north-up raster of `gsd_m` metres per pixel whose north-west corner (the outer corner of
pixel (0, 0)) lies at (lat0, lon0). Metres east/south of that corner map to degrees by a local
equirectangular approximation on a sphere of the IUGG mean radius:

    lat = lat0 - south / k,    lon = lon0 + east / (k * cos(lat0)),    k = R * pi / 180.

Over the few kilometres of a world this is within about 0.1 % of the geodesic distances, far below a tile
size. It is the same frame as `spikevimformer.geo.LocalFrame` with the origin at the corner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...geodesy import LocalFrame, WorldFile, parse_crs

EARTH_RADIUS_M = 6_371_008.8
_K = math.radians(1.0) * EARTH_RADIUS_M  # metres per degree of latitude


@dataclass(frozen=True)
class GeoRef:
    """Origin (north-west corner) and ground resolution of a north-up world raster."""

    lat0: float
    lon0: float
    gsd_m: float
    width_px: int
    height_px: int

    def to_latlon(self, east_m, south_m) -> tuple[np.ndarray, np.ndarray]:
        """Metres east/south of the north-west corner -> degrees."""
        east, south = np.asarray(east_m, dtype=np.float64), np.asarray(south_m, dtype=np.float64)
        return self.lat0 - south / _K, self.lon0 + east / (_K * math.cos(math.radians(self.lat0)))

    def pixel_to_latlon(self, col, row) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates of pixel centres ((0, 0) = centre of the upper-left pixel)."""
        return self.to_latlon((np.asarray(col, dtype=np.float64) + 0.5) * self.gsd_m,
                              (np.asarray(row, dtype=np.float64) + 0.5) * self.gsd_m)

    def world_file(self) -> WorldFile:
        """The ESRI world file (pixel centres, EPSG:4326 degrees) that reproduces pixel_to_latlon exactly."""
        lat, lon = self.pixel_to_latlon(0, 0)
        return WorldFile(a=self.gsd_m / (_K * math.cos(math.radians(self.lat0))), d=0.0, b=0.0, e=-self.gsd_m / _K,
                         c=float(lon), f=float(lat))

    def record(self) -> dict:
        return {
            "origin_latitude": self.lat0, "origin_longitude": self.lon0,
            "origin_is": "north-west corner of pixel (0, 0)",
            "ground_resolution_m": self.gsd_m, "size_px": [self.width_px, self.height_px],
            "size_m": [self.width_px * self.gsd_m, self.height_px * self.gsd_m],
            "projection": "local equirectangular: lat = lat0 - south/k, lon = lon0 + east/(k cos lat0), "
                          f"k = {EARTH_RADIUS_M} m * pi/180",
        }  # fmt: skip


def seeded_origin(rng: np.random.Generator) -> tuple[float, float]:
    """A plausible land-ish latitude/longitude so that two seeds sit in different places."""
    return float(rng.uniform(-45.0, 58.0)), float(rng.uniform(-170.0, 170.0))


def georef_from_world_file(wf: WorldFile, crs: str, width: int, height: int) -> tuple[GeoRef, float, float]:
    """GeoRef of a north-up raster plus its (east, north) pixel sizes in metres."""
    if wf.a <= 0 or wf.e >= 0:
        raise ValueError(f"the world file is not north-up (needs A > 0 and E < 0, got A={wf.a:g}, E={wf.e:g})")
    if abs(wf.b) > 1e-9 * abs(wf.a) or abs(wf.d) > 1e-9 * abs(wf.e):
        raise ValueError("the world file has rotation terms; only north-up orthophotos are supported")
    key = crs.strip().upper().replace(" ", "")
    corner_x, corner_y = wf.c - wf.a / 2, wf.f - wf.e / 2
    if key in ("EPSG:4326", "WGS84", "LONLAT"):
        lat0, lon0 = corner_y, corner_x
        mid_lat = lat0 + wf.e * height / 2
        gsd_e, gsd_n = wf.a * _K * math.cos(math.radians(mid_lat)), -wf.e * _K
    else:  # projected: pixel sizes on the ground, not in grid units (EPSG:3857 metres are 1/cos(lat) too small)
        lat, lon = parse_crs(crs)(corner_x + np.array([0.0, wf.a * width, 0.0]),
                                  corner_y + np.array([0.0, 0.0, wf.e * height]))
        lat0, lon0 = float(lat[0]), float(lon[0])
        east, north = LocalFrame(lat0, lon0).to_local(lat, lon)
        gsd_e = math.hypot(east[1] - east[0], north[1] - north[0]) / width
        gsd_n = math.hypot(east[2] - east[0], north[2] - north[0]) / height
    if not (-90 <= lat0 <= 90 and -180 <= lon0 <= 180):
        raise ValueError(f"the world file puts the image corner at lat {lat0:g}, lon {lon0:g}; is --crs right?")
    return GeoRef(lat0, lon0, gsd_n, width, height), gsd_e, gsd_n
