"""Intrinsics of a photo: from a camera file or DJI's DewarpData (lens.py), its EXIF focal length, a field of
view, or none.

Conventions: pixel (0, 0) is the centre of the upper-left pixel; without a lens model the principal point is the
image centre ((w - 1) / 2, (h - 1) / 2), pixels square and the lens distortion-free. Distortion follows OpenCV:
(k1, k2, p1, p2, k3) for the Brown-Conrady model, (k1, k2, k3, k4) for the equidistant fisheye model. Camera frame
x right, y down, z forward. `undistort` turns a photo with a lens model into the pinhole photo the pose solver
assumes (same focal length, centred principal point).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np
from PIL import Image

from ..registration.cache import LRU

EXIF_IFD = 0x8769
FOCAL_LENGTH = 0x920A  # mm
FOCAL_PLANE_X_RES = 0xA20E
FOCAL_PLANE_UNIT = 0xA210  # 2 inch, 3 cm, 4 mm, 5 um (CIPA DC-008; 4 and 5 are common extensions)
FOCAL_35MM = 0xA405  # mm, integer
PIXEL_X, PIXEL_Y = 0xA002, 0xA003  # PixelXDimension / PixelYDimension: the image size the camera wrote
FULL_FRAME_DIAGONAL_MM = 43.2666  # 36 x 24 mm; CIPA DC-008 equates 35 mm focal lengths by the diagonal
MM_PER_UNIT = {2: 25.4, 3: 10.0, 4: 1.0, 5: 1e-3}
FOV_RANGE_DEG = (2.0, 170.0)  # outside this no real lens: an EXIF value that implies it is refused


@dataclass(frozen=True)
class Intrinsics:
    """Focal length in pixels for an image of `width` x `height`, and where it came from."""

    focal_px: float
    width: int
    height: int
    source: str  # "exif: ...", "--fov 60", "camera file cameras.json (brown)", "synthetic world"
    focal_y_px: float | None = None  # None: square pixels
    principal: tuple[float, float] | None = None  # (cx, cy) px; None: the image centre
    dist: tuple[float, ...] = ()  # OpenCV order; () or all zero: no distortion
    fisheye: bool = False  # dist holds the equidistant model's (k1, k2, k3, k4)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.focal_px) and self.focal_px > 0):
            raise ValueError(f"focal length must be a positive number of pixels, got {self.focal_px}")
        if self.focal_y_px is not None and not (math.isfinite(self.focal_y_px) and self.focal_y_px > 0):
            raise ValueError(f"focal length must be a positive number of pixels, got {self.focal_y_px}")
        if not all(math.isfinite(v) for v in self.dist):
            raise ValueError(f"distortion coefficients must be finite numbers, got {list(self.dist)}")

    @property
    def matrix(self) -> np.ndarray:
        """3x3 camera matrix K."""
        cx, cy = self.principal or ((self.width - 1) / 2, (self.height - 1) / 2)
        fy = self.focal_y_px or self.focal_px
        return np.array([[self.focal_px, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    @property
    def distorted(self) -> bool:
        """Whether the lens model departs from a centred pinhole (distortion, an offset principal point, or
        non-square pixels)."""
        centred = self.principal is None or np.allclose(self.principal, ((self.width - 1) / 2, (self.height - 1) / 2))
        square = self.focal_y_px is None or self.focal_y_px == self.focal_px
        return any(self.dist) or not centred or not square

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same lens for the photo resized to `width` x `height` (pixel centres scale about the corner)."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        principal = None
        if self.principal is not None:
            principal = ((self.principal[0] + 0.5) * sx - 0.5, (self.principal[1] + 0.5) * sy - 0.5)
        return replace(self, focal_px=self.focal_px * sx, width=width, height=height, principal=principal,
                       focal_y_px=None if self.focal_y_px is None else self.focal_y_px * sy)  # fmt: skip

    @property
    def hfov_deg(self) -> float:
        return math.degrees(2 * math.atan(self.width / (2 * self.focal_px)))



def check_fov(fov_deg: float) -> None:
    """Refuse a field of view no lens has."""
    if not FOV_RANGE_DEG[0] <= fov_deg <= FOV_RANGE_DEG[1]:
        lo, hi = FOV_RANGE_DEG
        raise ValueError(f"field of view must lie in {lo:g}..{hi:g} degrees, got {fov_deg:g}")


def from_fov(fov_deg: float, width: int, height: int, flag: str = "--fov") -> Intrinsics:
    """Horizontal field of view in degrees -> focal length in pixels; `flag` names where it was given."""
    check_fov(fov_deg)
    return Intrinsics((width / 2) / math.tan(math.radians(fov_deg) / 2), width, height, f"{flag} {fov_deg:g}")


def _positive(value, what: str, label: str) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        raise ValueError(f"{label}: EXIF {what} {value!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        if v == 0:
            return None  # cameras write 0 for "unknown"
        raise ValueError(f"{label}: EXIF {what} {v:g} is not a positive number")
    return v


def lens_gap(exif: Image.Exif | None) -> str:
    """What a photo's EXIF lacks for a focal length in pixels, said exactly for an error: a FocalLength in mm alone
    is not one, it needs the sensor's pixel pitch (FocalPlaneXResolution) or the 35 mm equivalent."""
    sub = exif.get_ifd(EXIF_IFD) if exif else {}
    focal, res, unit = sub.get(FOCAL_LENGTH), sub.get(FOCAL_PLANE_X_RES), sub.get(FOCAL_PLANE_UNIT, 2)
    if focal is None:
        return "its EXIF has no focal length (neither FocalLength nor FocalLengthIn35mmFilm)"
    if not float(focal) > 0:
        return f"its EXIF records FocalLength {float(focal):g} mm, which is no focal length"
    if res and unit not in MM_PER_UNIT:
        lacks = f"FocalPlaneResolutionUnit {unit} is no length unit, and there is no FocalLengthIn35mmFilm"
    else:
        lacks = "it has neither the sensor size (FocalPlaneXResolution) nor FocalLengthIn35mmFilm"
    return f"its EXIF records FocalLength {float(focal):g} mm, but {lacks} to turn it into pixels"


def recorded_size(exif: Image.Exif | None) -> tuple[int, int] | None:
    """The image size the camera wrote in EXIF (PixelXDimension, PixelYDimension), if it did."""
    if not exif:
        return None
    sub = exif.get_ifd(EXIF_IFD)
    size = sub.get(PIXEL_X), sub.get(PIXEL_Y)
    return (int(size[0]), int(size[1])) if all(isinstance(v, int) and v > 0 for v in size) else None


def from_exif(exif: Image.Exif | None, width: int, height: int, label: str = "photo") -> Intrinsics | None:
    """Focal length in pixels from EXIF, or None when the photo does not say.

    `width` x `height` is the image as displayed (after EXIF orientation); the focal length in pixels is the
    same either way. Preferred: FocalLength (mm) x FocalPlaneXResolution (px per unit of the sensor), which is
    exact; else FocalLengthIn35mmFilm scaled by the image diagonal (CIPA DC-008's diagonal convention).
    Raises ValueError, naming the value, for a focal length no lens has (field of view outside 2..170 deg).
    """
    if exif is None:
        return None
    sub = exif.get_ifd(EXIF_IFD)
    focal_mm = _positive(sub.get(FOCAL_LENGTH), "FocalLength", label)
    res = _positive(sub.get(FOCAL_PLANE_X_RES), "FocalPlaneXResolution", label)
    unit = sub.get(FOCAL_PLANE_UNIT, 2)
    f35 = _positive(sub.get(FOCAL_35MM), "FocalLengthIn35mmFilm", label)
    if focal_mm is not None and res is not None and unit in MM_PER_UNIT:
        focal_px = focal_mm * res / MM_PER_UNIT[unit]
        source = f"exif: FocalLength {focal_mm:g} mm x FocalPlaneXResolution"
        recorded = recorded_size(exif)
        if recorded is not None and max(recorded) != max(width, height):
            # resized after capture: the focal plane resolution counts the sensor's pixels, not these
            focal_px *= max(width, height) / max(recorded)
            source += f" (photo resized from {recorded[0]}x{recorded[1]})"
    elif f35 is not None:
        focal_px = f35 * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM
        source = f"exif: FocalLengthIn35mmFilm {f35:g} mm"
    else:
        return None
    fov = math.degrees(2 * math.atan(max(width, height) / (2 * focal_px)))
    if not FOV_RANGE_DEG[0] <= fov <= FOV_RANGE_DEG[1]:
        raise ValueError(f"{label}: {source.removeprefix('exif: ')} gives a {fov:.1f} deg field of view, which no "
                         "camera lens has; give the lens's field of view instead (--fov DEG; ?fov=DEG over "
                         "HTTP)")  # fmt: skip
    return Intrinsics(focal_px, width, height, source)


_MAPS: LRU[tuple[np.ndarray, np.ndarray]] = LRU(8)  # a flight uses one lens: its maps are made once


def _undistort_maps(intr: Intrinsics, pinhole: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    def make() -> tuple[np.ndarray, np.ndarray]:
        size = (pinhole.width, pinhole.height)
        if intr.fisheye:
            return cv2.fisheye.initUndistortRectifyMap(intr.matrix, np.asarray(intr.dist[:4], np.float64), np.eye(3),
                                                       pinhole.matrix, size, cv2.CV_32FC1)  # fmt: skip
        return cv2.initUndistortRectifyMap(intr.matrix, np.asarray(intr.dist, np.float64), None, pinhole.matrix, size,
                                           cv2.CV_32FC1)  # fmt: skip

    return _MAPS.get((intr, pinhole.width, pinhole.height), make)


def undistort(image: Image.Image, intr: Intrinsics | None, max_px: int | None = None) -> tuple[Image.Image,
                                                                                                Intrinsics | None]:
    """The photo as a centred pinhole with the lens's focal length would have taken it, and that pinhole.

    Photos without a lens model (or without intrinsics) come back as they are. With `max_px`, a larger photo is
    resampled to that long side in the same step (registration works at that size anyway). OpenCV's
    initUndistortRectifyMap (fisheye: cv2.fisheye's) and remap; the maps are kept for the next photo.
    """
    if intr is None or not intr.distorted:
        return image, intr
    intr = intr.scaled(*image.size)
    s = min(1.0, max_px / max(image.size)) if max_px else 1.0
    width, height = max(1, round(image.width * s)), max(1, round(image.height * s))
    focal = math.sqrt(intr.focal_px * (intr.focal_y_px or intr.focal_px)) * width / image.width
    pinhole = Intrinsics(focal, width, height, f"{intr.source}, undistorted")
    map_x, map_y = _undistort_maps(intr, pinhole)
    out = cv2.remap(np.asarray(image.convert("RGB")), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return Image.fromarray(out), pinhole
