"""Relative motion between consecutive frames, so that frames the reference does not register are still placed.

Two frames a fraction of a second apart see the same ground on the same day: SIFT matches them where the
reference (another date, another sensor) does not. Their homography carries the previous frame's ground mapping
(pixels -> east/north metres on the ground plane, from a fix's footprint, or carried on from the frame before) to
the new frame; a planar PnP (OpenCV's IPPE) of each mapping gives both camera centres, and their difference is the
displacement the filter fuses. The mapping's own offset cancels in the difference; its scale and
rotation carry over, which is why a chain restarts from every accepted fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from ..registration.features import Features
from ..registration.matchers import create_matcher
from ..registration.pose import corner_pixels, ground_at_pixels

MOTION_MAX_PX = 512  # frames are matched at most this large: enough for the displacement, cheap at 1024 px
MOTION_KEYPOINTS = 1500
MIN_INLIERS = 40  # homography inliers of two frames below which no motion is reported
RANSAC_PX = 3.0  # at MOTION_MAX_PX
GRID = 5  # the PnP's ground points: a GRID x GRID lattice over the inner 80 % of the frame


@dataclass(frozen=True)
class GroundMapping:
    """A frame's flat-ground mapping: `h` (3 x 3) takes its pixels (x right, y down) to east/north metres."""

    h: np.ndarray
    size: tuple[int, int]  # (width, height) of the frame in pixels

    @classmethod
    def from_footprint(cls, corners_en: np.ndarray, size: tuple[int, int]) -> GroundMapping:
        """The mapping whose image corners (upper left, clockwise, as a Localization's footprint) land on
        `corners_en` ((4, 2) metres)."""
        px = np.float32(corner_pixels(size))
        return cls(cv2.getPerspectiveTransform(px, np.float32(corners_en)).astype(np.float64), size)

    def corners(self) -> np.ndarray | None:
        """(4, 2) east/north metres of the frame's corners (upper left, clockwise); None where one lies beyond the
        horizon."""
        w, h = self.size
        return ground_at_pixels(self.h, corner_pixels(self.size), ((w - 1) / 2, (h - 1) / 2))

    def carried(self, h_new_to_old: np.ndarray, size: tuple[int, int]) -> GroundMapping:
        """The mapping of a frame whose pixels `h_new_to_old` takes to this frame's pixels."""
        h = self.h @ h_new_to_old
        return GroundMapping(h / h[2, 2], size)


@dataclass(frozen=True)
class FrameFeatures:
    """SIFT features of one frame at matching size, and the factor back to the frame's own pixels."""

    features: Features
    scale: float  # frame pixels per matching pixel
    size: tuple[int, int]


def camera_centre(mapping: GroundMapping, k: np.ndarray) -> np.ndarray | None:
    """(3,) east, north, height (metres) of the camera that sees the ground through `mapping` with camera matrix
    `k`, by a planar PnP over a lattice of its pixels; None where the mapping is degenerate."""
    w, h = mapping.size
    xs, ys = np.meshgrid(np.linspace(0.1, 0.9, GRID) * (w - 1), np.linspace(0.1, 0.9, GRID) * (h - 1))
    pixels = np.c_[xs.ravel(), ys.ravel()]
    ground = cv2.perspectiveTransform(pixels[None].astype(np.float64), mapping.h)[0]
    if not np.all(np.isfinite(ground)):
        return None
    obj = np.c_[ground, np.zeros(len(ground))]
    ok, rvec, tvec = cv2.solvePnP(obj, pixels, k, None, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        return None
    r, _ = cv2.Rodrigues(rvec)
    centre = (-r.T @ tvec).ravel()
    if centre[2] < 0:  # the mirror solution below the ground: the camera looks down from above
        return None
    return centre


class FrameMatcher:
    """Frame-to-frame homographies (SIFT, Lowe's ratio test, OpenCV's USAC MAGSAC++)."""

    def __init__(self, max_px: int = MOTION_MAX_PX, min_inliers: int = MIN_INLIERS) -> None:
        self.max_px, self.min_inliers = max_px, min_inliers
        self.matcher = create_matcher("sift")

    def features(self, image: Image.Image) -> FrameFeatures:
        """SIFT features of an RGB frame, at most `max_px` on its long side."""
        scale = max(image.size) / self.max_px if max(image.size) > self.max_px else 1.0
        small = image if scale == 1.0 else image.resize((round(image.width / scale), round(image.height / scale)),
                                                        Image.Resampling.BILINEAR)  # fmt: skip
        gray = np.asarray(small.convert("L"))
        return FrameFeatures(self.matcher.extract(gray, MOTION_KEYPOINTS), scale, image.size)

    def homography(self, new: FrameFeatures, old: FrameFeatures) -> tuple[np.ndarray, int] | None:
        """(3 x 3 taking `new` frame pixels to `old` frame pixels, inliers), or None below `min_inliers`."""
        pairs = self.matcher.match(new.features, old.features)
        if len(pairs) < self.min_inliers:
            return None
        src = new.features.keypoints[pairs[:, 0]].astype(np.float64)
        dst = old.features.keypoints[pairs[:, 1]].astype(np.float64)
        h, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, RANSAC_PX)
        inliers = int(mask.sum()) if mask is not None else 0
        if h is None or inliers < self.min_inliers or not math.isfinite(float(np.linalg.det(h))):
            return None
        to_frame = np.diag([old.scale, old.scale, 1.0]) @ h @ np.diag([1 / new.scale, 1 / new.scale, 1.0])
        return to_frame / to_frame[2, 2], inliers
