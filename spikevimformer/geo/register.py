"""Registration of a photo to the orthophoto around a retrieved tile: local features, a robust ground homography.

For each candidate tile the reference window (the tile's footprint plus a margin, read at native resolution from
the imagery the index recorded) is matched to the photo with OpenCV features and Lowe's ratio test, and a
homography from photo pixels to the ground is fitted with OpenCV's USAC MAGSAC++. Candidates are re-ranked by
their inlier count; the pose solver (pose.py) turns the winner's inliers into a camera position.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from .tiles import Tile, reference_image

# AKAZE left OpenCV's main modules in 5.0; offered where the installed OpenCV still has it
FEATURES = ("sift", "orb", *(("akaze",) if hasattr(cv2, "AKAZE_create") else ()))


@dataclass(frozen=True)
class RegisterConfig:
    """How to register: features, matching, robust fit, working resolutions and the checks behind a fix."""

    features: str = "sift"  # sift | orb (| akaze with OpenCV 4.x)
    ratio: float = 0.8  # Lowe's ratio test (SIFT paper, 2004: 0.8)
    expand_k: int = 10  # when none of the top k gives a fix, candidates k+1..expand_k are verified too
    margin: float = 0.5  # reference window = footprint plus this many footprints on every side
    min_inliers: int = 12  # fewer homography (and PnP) inliers: the candidate is not verified
    ransac_px: float = 3.0  # MAGSAC++ threshold in reference-window pixels (at most reference_max_px wide)
    photo_min_px: int = 256  # small photos are upsampled to this long side before detection (more SIFT octaves)
    photo_max_px: int = 1024  # large photos are downsampled to this long side
    reference_max_px: int = 1024  # reference windows wider than this are downsampled
    min_spread: float = 0.02  # inliers must span this share of the photo's area (convex hull): no degenerate fits
    max_planes: int = 2  # homographies fitted in turn (ground, then e.g. a large roof); the lowest plane wins
    plane_min_inliers: int = 8  # inliers a further plane needs
    max_anisotropy: float = 8.0  # local stretch of photo -> ground beyond this is no view (pitch ~7 deg or less)
    min_height_m: float = 10.0  # camera fixes below this height above the ground are implausible for a survey
    max_height_m: float = 3000.0  # and above this
    radius_scale: float = 2.5  # first-order 95 % radius x this covers model errors (calibrated, see README)
    radius_floor_m: float = 1.0  # no fix is better than a metre: reference pixels and the flat-ground model
    max_radius_m: float = 30.0  # a wider 95 % radius is no fix: better none than a vague one

    def min_inliers_for(self, plane: int) -> int:
        """Inliers the first plane needs (it verifies the candidate), and a further plane (it only adds one)."""
        return self.min_inliers if plane == 0 else min(self.min_inliers, self.plane_min_inliers)

    def __post_init__(self) -> None:
        if self.features not in FEATURES:
            raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {self.features!r}")
        if not 0 < self.ratio < 1:
            raise ValueError(f"the ratio test's ratio must lie in (0, 1), got {self.ratio}")
        if self.min_inliers < 6:
            raise ValueError(f"--min-inliers must be at least 6 (a pose has 6 unknowns), got {self.min_inliers}")
        if self.margin < 0:
            raise ValueError(f"--margin must not be negative, got {self.margin}")


@dataclass(frozen=True)
class Window:
    """A reference window at working resolution: grey pixels and the affine from its pixels to ground metres."""

    gray: np.ndarray  # (h, w) uint8
    to_ground: np.ndarray  # (2, 3): east, north metres about the tile centre = A @ (u, v, 1)
    metres_per_px: float


@dataclass(frozen=True, eq=False)
class Plane:
    """One plane's homography fit: photo pixels (original size) -> east/north metres about the tile centre."""

    h_pix_to_ground: np.ndarray  # 3x3
    pixels: np.ndarray  # (n, 2) inlier photo pixels
    ground: np.ndarray  # (n, 2) their east/north metres
    window_pts: np.ndarray  # (n, 2) their reference-window pixels, for pictures


@dataclass
class Registration:
    """The outcome for one candidate: inliers of the dominant plane, and every plane found when verified.

    Scenes with buildings hold several planes (the ground, large roofs); the pose stage takes the lowest.
    """

    inliers: int
    reason: str = ""  # why it is not verified, empty when it is
    planes: tuple[Plane, ...] = ()  # most inliers first
    window: Window | None = None

    @property
    def verified(self) -> bool:
        return not self.reason


def _detector(name: str):
    if name == "sift":
        return cv2.SIFT_create()
    return cv2.ORB_create(nfeatures=4000) if name == "orb" else cv2.AKAZE_create()


def read_window(tile: Tile, margin: float, max_px: int) -> Window:
    """The tile's reference imagery, footprint plus margin on each side, at native resolution or max_px wide."""
    image, affine = reference_image(tile)
    a = np.asarray(affine, dtype=np.float64).reshape(2, 3)
    half = tile.footprint_m * (0.5 + margin)
    inv = np.linalg.inv(a[:, :2])
    corners = (np.array([[-half, -half], [half, -half], [-half, half], [half, half]]) - a[:, 2]) @ inv.T
    left, top = np.floor(corners.min(0)).astype(int)
    right, bottom = np.ceil(corners.max(0)).astype(int)
    crop = image.crop((int(left), int(top), int(right), int(bottom)))  # outside the raster: black, no features
    width, height = crop.size
    scale = min(1.0, max_px / max(width, height))
    if scale < 1.0:
        crop = crop.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BOX)
    sx, sy = width / crop.size[0], height / crop.size[1]
    # working pixel (u, v) -> raster pixel (left - 0.5 + (u + 0.5) * sx, top - 0.5 + (v + 0.5) * sy)
    to_raster = np.array([[sx, 0.0, left - 0.5 + 0.5 * sx], [0.0, sy, top - 0.5 + 0.5 * sy], [0.0, 0.0, 1.0]])
    to_ground = a @ to_raster
    gray = cv2.cvtColor(np.asarray(crop.convert("RGB")), cv2.COLOR_RGB2GRAY)
    return Window(gray, to_ground, float(np.sqrt(abs(np.linalg.det(to_ground[:, :2])))))


def photo_gray(photo: Image.Image, cfg: RegisterConfig) -> tuple[np.ndarray, float]:
    """The photo in grey at the working resolution, and its scale (working / original)."""
    width, height = photo.size
    long_side = max(width, height)
    scale = min(max(1.0, cfg.photo_min_px / long_side), cfg.photo_max_px / long_side)
    gray = cv2.cvtColor(np.asarray(photo.convert("RGB")), cv2.COLOR_RGB2GRAY)
    if scale != 1.0:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        gray = cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=interp)
    return gray, scale


def homography_jacobian(h: np.ndarray, uv) -> np.ndarray | None:
    """2x2 derivative of the homography's mapping at pixel uv (None where it sends uv to infinity)."""
    p = h @ np.array([uv[0], uv[1], 1.0])
    if abs(p[2]) < 1e-12:
        return None
    return (h[:2, :2] * p[2] - np.outer(p[:2], h[2, :2])) / p[2] ** 2


def _degenerate(h: np.ndarray, uv: np.ndarray, max_anisotropy: float) -> str:
    """Why a photo -> window homography cannot be a camera looking at the ground near uv, or ''.

    Both images have y down, so a real view keeps orientation (positive Jacobian determinant); a collapsed or
    extremely stretched mapping is a fit to a repeated pattern, not a view.
    """
    jac = homography_jacobian(h, uv)
    if jac is None:
        return "the homography sends the inliers to infinity"
    s = np.linalg.svd(jac, compute_uv=False)
    if np.linalg.det(jac) <= 0:
        return "the homography mirrors the photo (no camera sees the ground that way)"
    if s[1] <= 1e-9 or s[0] / s[1] > max_anisotropy:
        return f"the homography stretches the photo {s[0] / max(s[1], 1e-12):.0f}:1 (degenerate fit)"
    return ""


def _check(h: np.ndarray | None, inliers: np.ndarray, size: tuple[int, int], cfg: RegisterConfig, need: int) -> str:
    """Why a homography and its inliers do not verify a candidate (or add a plane to it), or ''."""
    if h is None:
        return "no homography fits the matches"
    if len(inliers) < need:
        return f"{len(inliers)} homography inliers, fewer than {need}"
    spread = _hull_share(inliers, *size)
    if spread < cfg.min_spread:
        return f"the inliers cover {100 * spread:.1f} % of the photo (degenerate fit)"
    return _degenerate(h, inliers.mean(0), cfg.max_anisotropy)


def _hull_share(points: np.ndarray, width: int, height: int) -> float:
    if len(points) < 3:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(points.astype(np.float32)))) / float(width * height)


class Registrar:
    """Feature extraction with a cache of reference windows (galleries repeat), safe to call from several threads."""

    def __init__(self, cfg: RegisterConfig | None = None, cache_size: int = 256) -> None:
        self.cfg = cfg or RegisterConfig()
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._local = threading.local()

    def _features(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if not hasattr(self._local, "detector"):  # OpenCV detectors are not shared across threads
            self._local.detector = _detector(self.cfg.features)
        kps, desc = self._local.detector.detectAndCompute(gray, None)
        return np.array([k.pt for k in kps], dtype=np.float32).reshape(-1, 2), desc

    def _window(self, tile: Tile) -> tuple[Window, np.ndarray, np.ndarray | None]:
        key = (tile.ref_image, tile.ref_affine, tile.footprint_m)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        window = read_window(tile, self.cfg.margin, self.cfg.reference_max_px)
        entry = (window, *self._features(window.gray))
        with self._lock:
            self._cache[key] = entry
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return entry

    def photo_features(self, photo: Image.Image) -> tuple[np.ndarray, np.ndarray | None, float]:
        """Keypoints in original photo pixels, descriptors, and the working scale."""
        gray, scale = photo_gray(photo, self.cfg)
        pts, desc = self._features(gray)
        return (pts + 0.5) / scale - 0.5, desc, scale

    def register(self, photo_pts: np.ndarray, photo_desc: np.ndarray | None, size: tuple[int, int],
                 tile: Tile) -> Registration:  # fmt: skip
        """Match the photo's features to one candidate's reference window and fit the ground homography."""
        cfg = self.cfg
        window, ref_pts, ref_desc = self._window(tile)
        if photo_desc is None or ref_desc is None or len(photo_pts) < 4 or len(ref_pts) < 4:
            return Registration(0, "too few features")
        norm = cv2.NORM_L2 if cfg.features == "sift" else cv2.NORM_HAMMING
        pairs = cv2.BFMatcher(norm).knnMatch(photo_desc, ref_desc, k=2)
        good = [m[0] for m in pairs if len(m) == 2 and m[0].distance < cfg.ratio * m[1].distance]
        if len(good) < max(4, cfg.min_inliers):
            return Registration(len(good), f"{len(good)} feature matches, fewer than {cfg.min_inliers}")
        src = photo_pts[[m.queryIdx for m in good]].astype(np.float64)
        dst = ref_pts[[m.trainIdx for m in good]].astype(np.float64)
        affine = np.vstack([window.to_ground, [0.0, 0.0, 1.0]])
        planes: list[Plane] = []
        remaining = np.arange(len(src))
        while len(planes) < cfg.max_planes and len(remaining) >= (need := cfg.min_inliers_for(len(planes))):
            h, mask = cv2.findHomography(src[remaining], dst[remaining], cv2.USAC_MAGSAC, cfg.ransac_px,
                                         confidence=0.999, maxIters=10000)  # fmt: skip
            keep = remaining[mask.ravel().astype(bool)] if h is not None and mask is not None else remaining[:0]
            problem = _check(h, src[keep], size, cfg, need)
            if problem:
                if not planes:
                    return Registration(len(keep), problem)
                break
            to_ground = affine @ h
            ground = dst[keep] @ window.to_ground[:, :2].T + window.to_ground[:, 2]
            planes.append(Plane(to_ground / to_ground[2, 2], src[keep], ground, dst[keep]))
            remaining = np.setdiff1d(remaining, keep)
        if not planes:
            return Registration(0, "no homography fits the matches")
        return Registration(len(planes[0].pixels), "", tuple(planes), window)
