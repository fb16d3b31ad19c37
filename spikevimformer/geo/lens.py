"""Lens models from where they are written: OpenSfM/OpenDroneMap `cameras.json`, a plain OpenCV JSON, DJI XMP.

- OpenSfM (and OpenDroneMap, which writes the same `cameras.json`) normalises focal lengths and the principal
  point by the image's longer side; the principal point is an offset from the image centre. Projection types
  `perspective` (focal, k1, k2), `brown` (focal_x, focal_y, c_x, c_y, k1, k2, p1, p2, k3) and `fisheye`
  (focal, k1, k2; OpenSfM's equidistant model, OpenCV's fisheye with k3 = k4 = 0). Source: OpenSfM's
  documentation, "Camera models" (opensfm.org/docs/geometry.html).
- Plain JSON: {"width", "height", "K": 3x3, "dist": [k1, k2, p1, p2, k3]} in OpenCV's convention (pixel
  coordinates, (0, 0) the centre of the upper-left pixel), for any photo of the same aspect ratio.
- DJI's XMP `drone-dji:DewarpData` = "date;fx,fy,cx,cy,k1,k2,p1,p2,k3" in pixels of the full-resolution photo,
  cx and cy the principal point's offset from the image centre; `DewarpFlag` = 1 means the photo was already
  undistorted in the camera. (DJI, "Photo metadata of DJI enterprise drones", DewarpData.) The full resolution
  is the EXIF PixelX/YDimension, else twice XMP `CalibratedOpticalCenterX/Y` (kept by copies resized without
  their EXIF), else the photo's own size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..registration.priors import xmp_fields
from .intrinsics import FOV_RANGE_DEG, Intrinsics

PROJECTIONS = ("perspective", "brown", "fisheye")
DEWARP_KEYS = ("DewarpData", "DewarpFlag", "CalibratedOpticalCenterX", "CalibratedOpticalCenterY")
ASPECT_TOLERANCE = 0.01  # a photo whose aspect ratio differs more than this from the lens's is another camera


def _number(entry: dict, key: str, where: str, default: float | None = None) -> float:
    value = entry.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: '{key}' must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{where}: '{key}' must be a finite number, got {value!r}")
    return number


def _size(entry: dict, where: str) -> tuple[int, int]:
    width, height = _number(entry, "width", where), _number(entry, "height", where)
    if width < 1 or height < 1 or width != int(width) or height != int(height):
        raise ValueError(f"{where}: 'width' and 'height' must be whole numbers of pixels, got {width:g} x {height:g}")
    return int(width), int(height)


def opensfm_intrinsics(entry: dict, where: str) -> Intrinsics:
    """One camera of an OpenSfM `cameras.json`, in pixels of its own width x height."""
    projection = entry.get("projection_type")
    if projection not in PROJECTIONS:
        raise ValueError(f"{where}: projection type {projection!r} is not one of {', '.join(PROJECTIONS)} (an "
                         "equirectangular or spherical camera is no frame camera)")  # fmt: skip
    width, height = _size(entry, where)
    side = max(width, height)
    if projection == "brown":
        fx, fy = _number(entry, "focal_x", where), _number(entry, "focal_y", where)
        cx, cy = _number(entry, "c_x", where, 0.0), _number(entry, "c_y", where, 0.0)
        dist = tuple(_number(entry, k, where, 0.0) for k in ("k1", "k2", "p1", "p2", "k3"))
    else:
        fx = fy = _number(entry, "focal", where)
        cx = cy = 0.0
        k1, k2 = _number(entry, "k1", where, 0.0), _number(entry, "k2", where, 0.0)
        dist = (k1, k2, 0.0, 0.0) if projection == "fisheye" else (k1, k2, 0.0, 0.0, 0.0)
    if fx <= 0 or fy <= 0:
        raise ValueError(f"{where}: the focal length must be positive, got {fx:g}")
    principal = (width / 2 - 0.5 + cx * side, height / 2 - 0.5 + cy * side)
    return Intrinsics(fx * side, width, height, f"{where} ({projection})", fy * side, principal, dist,
                      projection == "fisheye")  # fmt: skip


def opencv_intrinsics(entry: dict, where: str) -> Intrinsics:
    """A plain {"width", "height", "K", "dist"} lens."""
    width, height = _size(entry, where)
    k = entry.get("K")
    if not (isinstance(k, list) and len(k) == 3 and all(isinstance(r, list) and len(r) == 3 for r in k)):
        raise ValueError(f"{where}: 'K' must be a 3x3 list of numbers (OpenCV's camera matrix)")
    k = [[_number({"v": v}, "v", f"{where} K") for v in row] for row in k]
    if k[0][1] != 0 or k[1][0] != 0 or k[2] != [0, 0, 1]:
        raise ValueError(f"{where}: 'K' must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got {k}")
    dist = entry.get("dist", [])
    if not isinstance(dist, list) or len(dist) not in (0, 4, 5, 8, 12, 14):
        raise ValueError(f"{where}: 'dist' must list OpenCV's coefficients [k1, k2, p1, p2, k3] (4, 5, 8, 12 or 14 "
                         f"numbers), got {dist!r}")  # fmt: skip
    dist = tuple(_number({"v": v}, "v", f"{where} dist") for v in dist)
    if k[0][0] <= 0 or k[1][1] <= 0:
        raise ValueError(f"{where}: the focal lengths in 'K' must be positive")
    return Intrinsics(k[0][0], width, height, f"{where} (OpenCV)", k[1][1], (k[0][2], k[1][2]), dist)


@dataclass(frozen=True)
class CameraFile:
    """The lenses of a camera file, by name; `for_photo` picks the one that fits a photo."""

    path: str
    lenses: tuple[tuple[str, Intrinsics], ...]

    def for_photo(self, width: int, height: int, name: str = "photo") -> Intrinsics:
        """The lens for a `width` x `height` photo, scaled to its size; ValueError when none or several fit."""
        aspect = width / height
        fits = [(key, lens) for key, lens in self.lenses
                if abs(lens.width / lens.height - aspect) <= ASPECT_TOLERANCE * aspect]  # fmt: skip
        exact = [(key, lens) for key, lens in fits if (lens.width, lens.height) == (width, height)]
        fits = exact or fits
        if not fits:
            sizes = ", ".join(f"{lens.width}x{lens.height}" for _, lens in self.lenses)
            raise ValueError(f"{name} is {width}x{height} px but the camera file {self.path} describes {sizes}: "
                             "give the file of the camera that took it")  # fmt: skip
        if len(fits) > 1:
            raise ValueError(f"{name}: the camera file {self.path} holds {len(fits)} cameras of its size "
                             f"({', '.join(k for k, _ in fits)}); keep only the one that took it")  # fmt: skip
        return fits[0][1].scaled(width, height)


def read_camera_file(path: str | Path) -> CameraFile:
    """Parse an OpenSfM/ODM `cameras.json` ({name: camera, ...}) or a plain OpenCV lens JSON.

    Raises FileNotFoundError, or ValueError naming the file and what is wrong (not JSON, unknown projection, a
    missing or non-numeric value, a field of view no lens has).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"camera file {path} does not exist")
    return parse_camera(path.read_bytes(), str(path))


def parse_camera(text: bytes | str, path: str) -> CameraFile:
    """read_camera_file's parser, for a camera file's contents (an upload over HTTP); `path` names it in errors."""
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"camera file {path} is not JSON ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"camera file {path} must be a JSON object: OpenSfM's cameras.json or "
                         '{"width", "height", "K", "dist"}')  # fmt: skip
    if "K" in data:
        lenses = (("", opencv_intrinsics(data, str(path))),)
    else:
        if not all(isinstance(v, dict) for v in data.values()):
            raise ValueError(f"camera file {path}: expected OpenSfM's {{name: {{projection_type, width, height, "
                             'focal, ...}}}} or a plain {"width", "height", "K", "dist"}')  # fmt: skip
        lenses = tuple((key, opensfm_intrinsics(entry, f"{path} camera {key!r}")) for key, entry in data.items())
    for _, lens in lenses:
        fov = math.degrees(2 * math.atan(max(lens.width, lens.height) / (2 * lens.focal_px)))
        if not FOV_RANGE_DEG[0] <= fov <= FOV_RANGE_DEG[1] and not lens.fisheye:
            raise ValueError(f"{lens.source}: the focal length gives a {fov:.1f} deg field of view, which no frame "
                             "camera has (is the focal length normalised by the image's longer side?)")  # fmt: skip
    return CameraFile(str(path), lenses)


def dji_dewarp(packet: bytes | None, width: int, height: int, recorded: tuple[int, int] | None,
               label: str) -> Intrinsics | None:  # fmt: skip
    """The lens in a DJI XMP packet's DewarpData, for a `width` x `height` photo (taken at `recorded` size when
    the EXIF says, else at this size); None without DewarpData or when DewarpFlag says the photo is already
    undistorted. Raises ValueError naming the file for malformed data."""
    if not packet or b"DewarpData" not in packet:
        return None
    found = xmp_fields(packet, DEWARP_KEYS, label)
    if "DewarpData" not in found or found.get("DewarpFlag", "0").strip() == "1":
        return None
    bad = f"{label}: XMP DewarpData {found['DewarpData']!r} is not 'date;fx,fy,cx,cy,k1,k2,p1,p2,k3'"
    try:
        values = [float(v) for v in found["DewarpData"].split(";")[-1].split(",")]
    except ValueError:
        raise ValueError(bad) from None
    if len(values) != 9 or not all(math.isfinite(v) for v in values) or values[0] <= 0 or values[1] <= 0:
        raise ValueError(f"{bad} with positive focal lengths")
    if recorded is None and "CalibratedOpticalCenterX" in found and "CalibratedOpticalCenterY" in found:
        try:  # DJI's optical centre is that of the full-resolution photo: a downsampled copy keeps it in XMP
            centre = float(found["CalibratedOpticalCenterX"]), float(found["CalibratedOpticalCenterY"])
        except ValueError:
            centre = (0.0, 0.0)
        if centre[0] > 0 and centre[1] > 0:
            recorded = (round(2 * centre[0]), round(2 * centre[1]))
    full_w, full_h = recorded or (width, height)
    fx, fy, cx, cy, *dist = values
    lens = Intrinsics(fx, full_w, full_h, "XMP DewarpData", fy, (full_w / 2 - 0.5 + cx, full_h / 2 - 0.5 + cy),
                      tuple(dist))  # fmt: skip
    if abs(full_w / full_h - width / height) > ASPECT_TOLERANCE * width / height:
        raise ValueError(f"{label} is {width}x{height} px but its EXIF records {full_w}x{full_h}: a crop, so its "
                         "XMP DewarpData does not apply; give the lens with --camera")  # fmt: skip
    return lens.scaled(width, height)
