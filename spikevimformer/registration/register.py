"""Registration of a photo to reference windows of the orthophoto: matches, then a robust ground homography.

One interface: a photo (and its heading when known) plus candidate windows -> one Registration per window.

- Rotation-invariant features (SIFT, ORB) match the photo as it is, with Lowe's ratio test.
- Learned features (XFeat + LighterGlue) need the reference's orientation and scale. A coarse pass matches the
  photo at low resolution, turned to `rotations` headings (mutual nearest neighbours, cheap; with a heading
  prior, only the three nearest it), against every window; the best orientation's coarse homography then warps
  the photo into the window's frame (north-up, the reference's scale, the perspective undone) and the warped
  photo is matched again at full resolution (OrthoLoC's warp-and-rematch), its points mapped back to photo pixels.
- Where the photo is expected (a flight's frame-to-frame motion carries the last fix's footprint: `guesses`), that
  prediction warps it instead of the coarse pass, as trackers that register keyframes to an orthophoto do.

A homography from photo pixels to the window is fitted with OpenCV's USAC MAGSAC++, then another on the remaining
matches (a large roof is a plane too). The pose solver (pose.py) turns the planes' inliers into a camera.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np
from PIL import Image

from .cache import LRU
from .features import Features, Matcher
from .matchers import AUTO, FEATURES, LEARNED, create_matcher


@dataclass(frozen=True)
class RegisterConfig:
    """How to register: features, matching, robust fit, working resolutions and the checks behind a fix."""

    features: str = AUTO  # one of matchers.FEATURES; chosen by measurement on cross-epoch worlds (README)
    ratio: float = 0.8  # Lowe's ratio test for SIFT/ORB (SIFT paper, 2004: 0.8)
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
    rotations: int = 8  # learned features without a heading: orientations tried (every 360 / n degrees)
    coarse_px: int = 320  # learned features: long side of the photo in the coarse pass
    coarse_window_px: int = 384  # and of the reference window
    coarse_keypoints: int = 1024
    coarse_min_inliers: int = 8  # a window whose coarse pass finds fewer is not matched again (not verified)
    rematch_max: int = 2  # windows matched again at full resolution: the best by coarse inliers
    reference_keypoints: int = 2048  # learned features per reference window
    rematch_keypoints: int = 1024  # learned features of the warped photo, and at most as many of the reference
    # inside its footprint (LighterGlue's cost grows with the product)
    learned_min_inliers: int = 50  # learned matches verify a candidate only with this many inliers: their chance
    # fits (roofs, shadows, repeated blocks) reach 15-50 on cross-epoch worlds (calibrated on seed 3030, README)
    learned_radius_scale: float = 7.5  # the radius_scale of fixes from learned matches (calibrated likewise)
    focal_tolerance: float = 0.10  # matches that call for a focal length further than this share from the lens's
    # (and 4 standard errors): no fix, a wrong lens or unmodelled relief
    focal_doubt_scale: float = 3.0  # and within it, this many times the camera's move under the free focal
    # length joins the radius (measured on a hilly world with lenses off by 0 and +/-25 %, README)
    dense: bool = True  # learned features: the second pass (warp by the verified homography, correlate corners)
    dense_points: int = 600  # reference corners correlated in the second pass

    def min_inliers_for(self, plane: int, matcher: str = "") -> int:
        """Inliers the first plane needs (it verifies the candidate), and a further plane (it only adds one); a
        plane of learned matches needs learned_min_inliers, in its homography and its pose alike."""
        if matcher in LEARNED:
            return self.learned_min_inliers
        return self.min_inliers if plane == 0 else min(self.min_inliers, self.plane_min_inliers)

    def radius_scale_for(self, matcher: str) -> float:
        """The factor on a pose's first-order 95 % radius, by the features its matches came from."""
        return self.learned_radius_scale if matcher in LEARNED else self.radius_scale

    def __post_init__(self) -> None:
        if self.features not in FEATURES:
            raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {self.features!r}")
        if not 0 < self.ratio < 1:
            raise ValueError(f"the ratio test's ratio must lie in (0, 1), got {self.ratio}")
        if self.min_inliers < 6:
            raise ValueError(f"--min-inliers must be at least 6 (a pose has 6 unknowns), got {self.min_inliers}")
        if self.margin < 0:
            raise ValueError(f"--margin must not be negative, got {self.margin}")
        if self.rotations < 1:
            raise ValueError(f"rotations must be at least 1, got {self.rotations}")


class Heights(Protocol):
    """Surface heights by pixel of the imagery a window is read from (geo.terrain.TerrainGrid)."""

    def at_pixels(self, col: np.ndarray, row: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class Window:
    """A reference window at working resolution: grey pixels and the affine from its pixels to ground metres."""

    gray: np.ndarray  # (h, w) uint8, north up
    to_ground: np.ndarray  # (2, 3): east, north metres about the tile centre = A @ (u, v, 1)
    metres_per_px: float
    key: tuple = ()  # identifies the imagery for caches of its features (empty: not cached)
    terrain: Heights | None = None  # surface heights under the imagery (a DSM), None: flat ground
    to_raster: np.ndarray | None = None  # (3, 3) window px -> pixel of the imagery the terrain follows

    def heights_at(self, uv: np.ndarray) -> np.ndarray | None:
        """Terrain heights (n,) metres at window pixels (n, 2), NaN where unknown; None without terrain."""
        if self.terrain is None or self.to_raster is None:
            return None
        p = np.c_[np.asarray(uv, dtype=np.float64).reshape(-1, 2), np.ones(len(uv))] @ self.to_raster[:2].T
        return self.terrain.at_pixels(p[:, 0], p[:, 1])


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
    heading_deg: float | None = None  # the photo orientation matched (learned features), degrees from north
    matcher: str = ""  # the features that made it
    matches: tuple[np.ndarray, np.ndarray] | None = None  # every tentative match: photo px (n, 2), window px (n, 2),
    # for a pose through terrain, which no single homography describes

    @property
    def verified(self) -> bool:
        return not self.reason


@dataclass
class PhotoQuery:
    """One photo's working images and features, computed once and shared by all its candidate windows."""

    size: tuple[int, int]  # (width, height) of the original photo
    gray: np.ndarray  # at working resolution (photo_min_px..photo_max_px)
    scale: float  # working / original
    heading_deg: float | None  # prior: image-up azimuth (camera heading), degrees clockwise from north
    features: Features | None = None  # rotation-invariant features at working resolution, original pixels
    coarse: dict = field(default_factory=dict)  # heading -> (Features, 3x3 original px -> coarse turned px)
    done: dict = field(default_factory=dict)  # (window key, heading or matcher) -> Registration, ("coarse", window
    # key, heading) -> coarse fit: a wider candidate list after a failed first one does not pay for them twice
    guesses: dict = field(default_factory=dict)  # window key -> 3x3 original photo px -> window px where the photo
    # is expected (a flight's frame-to-frame motion): learned features match warped by it, without the coarse pass


def photo_gray(photo: Image.Image, cfg: RegisterConfig) -> tuple[np.ndarray, float]:
    """The photo in grey at the working resolution, and its scale (working / original)."""
    width, height = photo.size
    gray = cv2.cvtColor(np.asarray(photo.convert("RGB")), cv2.COLOR_RGB2GRAY)
    scale = min(max(1.0, cfg.photo_min_px / max(width, height)), cfg.photo_max_px / max(width, height))
    return _resized(gray, scale), scale


def _resized(gray: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return gray
    height, width = gray.shape
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=interp)


def _scaling(s: float) -> np.ndarray:
    """3x3 map of pixel centres under a resize by s (pixel (u, v) covers [u - 0.5, u + 0.5])."""
    return np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5], [0.0, 0.0, 1.0]])


def turned(gray: np.ndarray, heading_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """The image turned so that north is up for a camera whose image-up points `heading_deg` clockwise from
    north, on a canvas that holds all of it, and the 3x3 map from its pixels to the turned ones."""
    h, w = gray.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), -heading_deg, 1.0)  # OpenCV: counter-clockwise
    c, s = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(np.ceil(h * s + w * c)), int(np.ceil(h * c + w * s))
    m[0, 2] += (nw - w) / 2
    m[1, 2] += (nh - h) / 2
    return cv2.warpAffine(gray, m, (nw, nh), flags=cv2.INTER_LINEAR), np.vstack([m, [0.0, 0.0, 1.0]])


def up_azimuth(h: np.ndarray, size: tuple[int, int]) -> float:
    """Degrees clockwise from north of the photo's up direction at its centre, through h (photo px -> north-up
    window px)."""
    c = np.array([[(size[0] - 1) / 2, (size[1] - 1) / 2], [(size[0] - 1) / 2, (size[1] - 1) / 2 - 1.0]])
    (x0, y0), (x1, y1) = _apply(h, c)
    return float(np.degrees(np.arctan2(x1 - x0, y0 - y1)) % 360.0)


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


def _fit(src: np.ndarray, dst: np.ndarray, threshold: float) -> tuple[np.ndarray | None, np.ndarray]:
    """MAGSAC++ homography src -> dst and the inlier indices (none when it fails)."""
    if len(src) < 4:
        return None, np.zeros(0, dtype=np.int64)
    h, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, threshold, confidence=0.999, maxIters=10000)
    if h is None or mask is None:
        return None, np.zeros(0, dtype=np.int64)
    return h, np.flatnonzero(mask.ravel())


def refine(moving: np.ndarray, fixed: np.ndarray, moving_pts: np.ndarray, fixed_pts: np.ndarray, half: int = 7,
           reach: int = 3, min_score: float = 0.6) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """`moving_pts` moved to sub-pixel agreement with `fixed_pts` by normalised cross-correlation, for two images
    already aligned (same orientation and scale): the fixed patch around each point is searched within `reach`
    px in the moving image, the peak fitted by a parabola. Points whose best score is under `min_score`, or that
    sit too near a border, stay where they are (the mask says which moved). XFeat keypoints lie on whole pixels;
    SIFT's are sub-pixel."""
    out = moving_pts.astype(np.float64).copy()
    moved = np.zeros(len(out), dtype=bool)
    r = half + reach
    for j, ((mx, my), (fx, fy)) in enumerate(zip(np.rint(moving_pts).astype(int), np.rint(fixed_pts).astype(int),
                                                 strict=True)):  # fmt: skip
        if not (r <= mx < moving.shape[1] - r and r <= my < moving.shape[0] - r
                and half <= fx < fixed.shape[1] - half and half <= fy < fixed.shape[0] - half):  # fmt: skip
            continue
        patch = fixed[fy - half : fy + half + 1, fx - half : fx + half + 1]
        if patch.std() < 2.0:  # flat: no position to find
            continue
        score = cv2.matchTemplate(moving[my - r : my + r + 1, mx - r : mx + r + 1], patch, cv2.TM_CCOEFF_NORMED)
        _, best, _, (bx, by) = cv2.minMaxLoc(score)
        if best < min_score or not (0 < bx < score.shape[1] - 1 and 0 < by < score.shape[0] - 1):
            continue
        dx = _parabola(score[by, bx - 1], score[by, bx], score[by, bx + 1])
        dy = _parabola(score[by - 1, bx], score[by, bx], score[by + 1, bx])
        # the patch centred on the fixed point matches best at moving (mx + bx - reach, my + by - reach)
        out[j] = (mx + bx - reach + dx + (fixed_pts[j, 0] - fx), my + by - reach + dy + (fixed_pts[j, 1] - fy))
        moved[j] = True
    return out, moved


def _parabola(left: float, centre: float, right: float) -> float:
    denom = left - 2.0 * centre + right
    return 0.0 if abs(denom) < 1e-12 else float(np.clip(0.5 * (left - right) / denom, -0.5, 0.5))


def _origin(to_crop: np.ndarray, h: np.ndarray) -> tuple[int, int]:
    """The window pixel at a crop's (0, 0): to_crop = shift @ h, so shift = to_crop @ h^-1."""
    shift = to_crop @ np.linalg.inv(h)
    return int(round(-shift[0, 2] / shift[2, 2])), int(round(-shift[1, 2] / shift[2, 2]))


def _apply(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.c_[pts, np.ones(len(pts))] @ h.T
    return p[:, :2] / p[:, 2:3]


class Registrar:
    """The matchers of `cfg.features` and a cache of reference features (galleries repeat); thread-safe.

    `auto` matches with SIFT first (cheap, precise, rotation-invariant) and with XFeat + LighterGlue only where no
    candidate verifies (another date or sensor defeats SIFT, README "Registration across dates").
    """

    def __init__(self, cfg: RegisterConfig | None = None, cache_size: int = 256) -> None:
        self.cfg = cfg or RegisterConfig()
        name = self.cfg.features
        self.invariant = create_matcher("sift" if name == AUTO else name) if name not in LEARNED else None
        self.learned = create_matcher("xfeat" if name == AUTO else name) if name in (*LEARNED, AUTO) else None
        self._cache: LRU[tuple] = LRU(cache_size)
        self._stored: dict = {}
        self._lock = threading.Lock()

    def preload(self, entries: dict) -> None:
        """Reference features computed before (stored with a gallery index): {(window key, matcher name): entry}."""
        with self._lock:
            self._stored.update(entries)

    def query(self, photo: Image.Image, heading_deg: float | None = None) -> PhotoQuery:
        """The photo prepared for matching; `heading_deg` (image-up azimuth) narrows learned features' search."""
        gray, scale = photo_gray(photo, self.cfg)
        return PhotoQuery(photo.size, gray, scale, None if heading_deg is None else float(heading_deg) % 360.0)

    def reference(self, window: Window, matcher: Matcher) -> tuple[Features, Features | None, float]:
        """The window's features, its coarse ones (learned features) and the coarse scale (coarse / full)."""
        if not window.key:
            return self._describe(window, matcher)
        key = (window.key, matcher.name)
        with self._lock:
            stored = self._stored.get(key)
        return stored or self._cache.get(key, lambda: self._describe(window, matcher))

    def _describe(self, window: Window, matcher: Matcher) -> tuple[Features, Features | None, float]:
        learned = not matcher.rotation_invariant
        full = matcher.extract(window.gray, self.cfg.reference_keypoints if learned else None)
        if not learned:
            return full, None, 1.0
        s = min(1.0, self.cfg.coarse_window_px / max(window.gray.shape))
        return full, matcher.extract(_resized(window.gray, s), self.cfg.coarse_keypoints), s

    def register(self, q: PhotoQuery, windows: Sequence[Window], learned: bool = False) -> list[Registration]:
        """One Registration per window: the photo's matches to it and the planes they support. `learned`: the
        learned matcher alone (auto's second chance where SIFT verified a candidate but no camera came of it)."""
        if learned:
            if self.learned is None:
                raise ValueError(f"features {self.cfg.features!r} have no learned matcher")
            return self._register_learned(q, windows)
        regs = None
        if self.invariant is not None:
            regs = [self._register_invariant(q, w) for w in windows]
            if self.learned is None or any(r.verified for r in regs):
                return regs
        learned = self._register_learned(q, windows)
        if regs is None:
            return learned
        return [b if b.verified or b.inliers >= a.inliers else a for a, b in zip(regs, learned, strict=True)]

    def second_chance(self, regs: Sequence[Registration]) -> bool:
        """Whether `auto` should match again with learned features: SIFT verified a candidate (so they were not
        tried) but none of its candidates gave a camera (a chance fit of 12-20 inliers across dates)."""
        return self.invariant is not None and self.learned is not None and any(
            r.verified and r.matcher == self.invariant.name for r in regs)

    def _register_invariant(self, q: PhotoQuery, window: Window) -> Registration:
        if window.key and (window.key, self.invariant.name) in q.done:
            return q.done[window.key, self.invariant.name]
        reg = self._match_invariant(q, window)
        if window.key:
            q.done[window.key, self.invariant.name] = reg
        return reg

    def _match_invariant(self, q: PhotoQuery, window: Window) -> Registration:
        if q.features is None:
            f = self.invariant.extract(q.gray)
            q.features = Features((f.keypoints + 0.5) / q.scale - 0.5, f.descriptors, f.size)
        full, _, _ = self.reference(window, self.invariant)
        pairs = self.invariant.match(q.features, full)
        if len(pairs) < max(4, self.cfg.min_inliers):
            return Registration(len(pairs), f"{len(pairs)} feature matches, fewer than {self.cfg.min_inliers}")
        src = q.features.keypoints[pairs[:, 0]].astype(np.float64)
        dst = full.keypoints[pairs[:, 1]].astype(np.float64)
        return self._planes(src, dst, q.size, window, self.invariant.name)

    def _coarse_photo(self, q: PhotoQuery, heading: float) -> tuple[Features, np.ndarray]:
        if heading not in q.coarse:
            s = self.cfg.coarse_px / max(q.size)
            image, rot = turned(_resized(q.gray, s / q.scale), heading)
            q.coarse[heading] = (self.learned.extract(image, self.cfg.coarse_keypoints), rot @ _scaling(s))
        return q.coarse[heading]

    def _coarse(self, q: PhotoQuery, heading: float, window: Window) -> tuple[np.ndarray | None, int]:
        """Homography original photo px -> full window px from the coarse pass at one heading, and its inliers
        (kept per window: the wider candidate list after a failed first one repeats the first's windows)."""
        if window.key and ("coarse", window.key, heading) in q.done:
            return q.done["coarse", window.key, heading]
        found = self._coarse_fit(q, heading, window)
        if window.key:
            q.done["coarse", window.key, heading] = found
        return found

    def _coarse_fit(self, q: PhotoQuery, heading: float, window: Window) -> tuple[np.ndarray | None, int]:
        feats, to_coarse = self._coarse_photo(q, heading)
        _, ref, s = self.reference(window, self.learned)
        pairs = self.learned.match_fast(feats, ref)
        h, keep = _fit(feats.keypoints[pairs[:, 0]].astype(np.float64),
                       ref.keypoints[pairs[:, 1]].astype(np.float64), self.cfg.ransac_px)  # fmt: skip
        if h is None:
            return None, 0
        return np.linalg.inv(_scaling(s)) @ h @ to_coarse, len(keep)

    def _register_learned(self, q: PhotoQuery, windows: Sequence[Window]) -> list[Registration]:
        """Coarse pass over orientations and windows, then the strongest windows matched again in turn until one
        verifies (a chance homography of mutual nearest neighbours finds ~8-15 coarse inliers). Windows with a
        guess are matched warped by it first; the coarse pass runs only where none of them verifies."""
        guided = self._guided(q, windows)
        if any(r.verified for r in guided):
            return guided
        cfg = self.cfg
        step = 360.0 / cfg.rotations
        if q.heading_deg is not None:  # the grid orientation nearest the prior and its neighbours: on seed 4040
            # (40 photos across dates) the prior's own angle alone lost 3 of 16 fixes within 5 m (README)
            near = round(q.heading_deg / step) * step
            headings = sorted({(near + d) % 360.0 for d in (-step, 0.0, step)})
        else:
            headings = [i * step for i in range(cfg.rotations)]
        coarse = [[self._coarse(q, hd, w) for w in windows] for hd in headings]
        best = max(range(len(headings)), key=lambda i: max((c[1] for c in coarse[i]), default=0))
        counts = [n for _, n in coarse[best]]
        need = max(cfg.coarse_min_inliers, max(counts, default=0) // 2)
        out = [Registration(n, f"{n} coarse matches at the best orientation, fewer than {need}" if n < need else
                            f"{n} coarse matches; only the {cfg.rematch_max} candidates with the most are "
                            "matched again")  # fmt: skip
               for n in counts]
        order = sorted((i for i, n in enumerate(counts) if n >= need and coarse[best][i][0] is not None),
                       key=lambda i: -counts[i])  # fmt: skip
        for tried, i in enumerate(order):
            if tried == cfg.rematch_max:
                break
            key = (windows[i].key, headings[best])
            out[i] = q.done.get(key) or self._rematch(q, windows[i], coarse[best][i][0])
            out[i].heading_deg = headings[best]
            if windows[i].key:
                q.done[key] = out[i]
            if out[i].verified:
                break
        return out

    def _guided(self, q: PhotoQuery, windows: Sequence[Window]) -> list[Registration]:
        """The windows the photo is expected on (`q.guesses`, at most rematch_max) matched warped by the guess, in
        turn until one verifies; the others are not matched."""
        out = [Registration(0, "not matched: the photo was expected on another candidate") for _ in windows]
        tried = 0
        for i, window in enumerate(windows):
            h = q.guesses.get(window.key) if window.key else None
            if h is None or tried == self.cfg.rematch_max:
                continue
            tried += 1
            key = (window.key, "guided")
            if key not in q.done:
                q.done[key] = self._rematch(q, window, h)
                q.done[key].heading_deg = up_azimuth(h, q.size)
            out[i] = q.done[key]
            if out[i].verified:
                break
        return out

    def _warped(self, q: PhotoQuery, window: Window, h: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The photo warped by h (original px -> window px) into the part of the window it covers, and the 3x3
        map from original photo px to that crop's px; None when it covers too little."""
        wh, ww = window.gray.shape
        warp = h @ np.linalg.inv(_scaling(q.scale))  # working photo px -> window px
        gw, gh = q.gray.shape[1] - 1, q.gray.shape[0] - 1
        outline = np.array([[0, 0], [gw, 0], [gw, gh], [0, gh]], dtype=np.float64)
        left, top, right, bottom = 0, 0, ww, wh
        if np.all((np.c_[outline, np.ones(4)] @ warp[2]) > 0):  # the whole photo sees the ground: its outline
            corners = _apply(warp, outline)
            left, top = (max(0, int(np.floor(v))) for v in corners.min(0))
            right, bottom = (min(n, int(np.ceil(v)) + 1) for n, v in zip((ww, wh), corners.max(0), strict=True))
        if right - left < 32 or bottom - top < 32:
            return None
        shift = np.array([[1.0, 0.0, -left], [0.0, 1.0, -top], [0.0, 0.0, 1.0]])
        warped = cv2.warpPerspective(q.gray, shift @ warp, (right - left, bottom - top), flags=cv2.INTER_LINEAR)
        return warped, shift @ h

    def _rematch(self, q: PhotoQuery, window: Window, h_coarse: np.ndarray) -> Registration:
        """Warp the photo into the window's frame by the coarse homography, match again, map the points back;
        then the second pass (`dense`) from the homography found."""
        got = self._warped(q, window, h_coarse)
        if got is None:
            return Registration(0, "the photo maps outside the reference window")
        warped, to_crop = got
        left, top = _origin(to_crop, h_coarse)
        full, _, _ = self.reference(window, self.learned)
        right, bottom = left + warped.shape[1], top + warped.shape[0]
        inside = np.flatnonzero((full.keypoints[:, 0] >= left) & (full.keypoints[:, 0] < right)
                                & (full.keypoints[:, 1] >= top) & (full.keypoints[:, 1] < bottom))  # fmt: skip
        inside = inside[: self.cfg.rematch_keypoints]  # the strongest: extract() returns them best first
        ref = full.subset(inside)
        ref = Features(ref.keypoints - np.array([left, top], np.float32), ref.descriptors, warped.shape[::-1])
        mine = self.learned.extract(warped, self.cfg.rematch_keypoints)
        pairs = self.learned.match(mine, ref)
        if len(pairs) < max(4, self.cfg.min_inliers):
            return Registration(len(pairs), f"{len(pairs)} feature matches, fewer than {self.cfg.min_inliers}")
        dst = full.keypoints[inside[pairs[:, 1]]].astype(np.float64)
        sharp, _ = refine(warped, window.gray[top:bottom, left:right], mine.keypoints[pairs[:, 0]], dst - [left, top])
        reg = self._planes(_apply(np.linalg.inv(to_crop), sharp), dst, q.size, window, self.learned.name)
        if not (reg.verified and self.cfg.dense):
            return reg
        h1 = np.linalg.inv(np.vstack([window.to_ground, [0.0, 0.0, 1.0]])) @ reg.planes[0].h_pix_to_ground
        dense = self._dense(q, window, h1 / h1[2, 2])
        return dense if dense.verified and dense.inliers > reg.inliers else reg

    def _dense(self, q: PhotoQuery, window: Window, h: np.ndarray) -> Registration:
        """The second pass: warp by a verified homography (now within pixels), then correspondences by normalised
        cross-correlation at the reference's corners (OrthoLoC's warp-and-rematch, with NCC for the matcher)."""
        got = self._warped(q, window, h)
        if got is None:
            return Registration(0, "the photo maps outside the reference window")
        warped, to_crop = got
        left, top = _origin(to_crop, h)
        ref = window.gray[top : top + warped.shape[0], left : left + warped.shape[1]]
        corners = cv2.goodFeaturesToTrack(ref, maxCorners=self.cfg.dense_points, qualityLevel=0.01, minDistance=6,
                                          blockSize=7)  # fmt: skip
        if corners is None:
            return Registration(0, "no corners in the reference window")
        pts = corners.reshape(-1, 2).astype(np.float64)
        moved, ok = refine(warped, ref, pts, pts, reach=4, min_score=0.5)
        if ok.sum() < self.cfg.min_inliers:
            return Registration(int(ok.sum()), "too few correlated points in the second pass")
        return self._planes(_apply(np.linalg.inv(to_crop), moved[ok]), pts[ok] + [left, top], q.size, window,
                            self.learned.name)

    def _planes(self, src: np.ndarray, dst: np.ndarray, size: tuple[int, int], window: Window,
                matcher: str) -> Registration:  # fmt: skip
        """Homographies photo px -> window px fitted in turn, checked, as planes photo px -> ground metres."""
        cfg = self.cfg
        affine = np.vstack([window.to_ground, [0.0, 0.0, 1.0]])
        planes: list[Plane] = []
        remaining = np.arange(len(src))
        while len(planes) < cfg.max_planes and len(remaining) >= (need := cfg.min_inliers_for(len(planes), matcher)):
            h, idx = _fit(src[remaining], dst[remaining], cfg.ransac_px)
            keep = remaining[idx]
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
        return Registration(len(planes[0].pixels), "", tuple(planes), window, matcher=matcher, matches=(src, dst))
