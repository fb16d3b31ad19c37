"""Camera pose from ground correspondences: OpenCV's planar PnP (IPPE) refined by Levenberg-Marquardt.

World frame: east, north, up metres (right-handed) about a local origin: the ground at up = 0 (flat ground), or
at the heights of a DSM (terrain), where the pose is a general 6-DoF PnP (OpenCV's SQPnP).
Camera frame: x right, y down, z forward (OpenCV). `rvec`, `tvec` map world to camera: x_c = R x_w + t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

CHI2_2DOF_95 = 5.991464547107979  # 95 % quantile of chi-square with 2 degrees of freedom


@dataclass(frozen=True)
class Pose:
    """A solved camera: where it is, where it looks, and how well the fit pins its horizontal position."""

    rvec: np.ndarray  # (3,) Rodrigues, world -> camera
    tvec: np.ndarray  # (3,)
    centre: np.ndarray  # (3,) east, north, up metres
    heading_deg: float  # direction of the optical axis, clockwise from north
    pitch_deg: float  # depression of the optical axis below the horizon (90 = straight down)
    rms_px: float  # reprojection RMS over the correspondences
    covariance_en: np.ndarray  # (2, 2) m^2, first-order covariance of the centre's east/north
    inliers: np.ndarray  # (n,) bool, the correspondences the pose was fitted to
    object_points: np.ndarray  # (m, 3) east, north, up metres of the inliers
    image_points: np.ndarray  # (m, 2) their pixels
    ground_below_m: float | None = None  # terrain height under the camera (set by the caller that knows a DSM)

    def radius95_m(self) -> float:
        """Radius of the circle holding the 95 % ellipse of the centre's east/north (first order, no model error)."""
        if not np.all(np.isfinite(self.covariance_en)):
            return math.inf
        return math.sqrt(CHI2_2DOF_95 * max(float(np.linalg.eigvalsh(self.covariance_en)[-1]), 0.0))


def rotation(rvec: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(rvec, dtype=np.float64).reshape(3, 1))[0]


def camera_centre(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """C = -R^T t."""
    return -rotation(rvec).T @ np.asarray(tvec, dtype=np.float64).reshape(3)


NADIR_PITCH_DEG = 80.0  # steeper than this, the heading is the image-up azimuth


def orientation(rvec: np.ndarray) -> tuple[float, float]:
    """(heading, pitch) in degrees; heading clockwise from north, pitch of the optical axis below the horizon.

    The heading is the optical axis's azimuth, or for a camera within NADIR_PITCH_DEG of straight down the
    image-up azimuth (the optical axis of a nadir photo has no horizontal direction to speak of; for a camera
    without roll the two agree).
    """
    r = rotation(rvec)
    f = r[2]  # the camera's z axis in world coordinates
    pitch = math.degrees(math.asin(float(np.clip(-f[2], -1.0, 1.0))))
    axis = f if pitch <= NADIR_PITCH_DEG else -r[1]  # -y: image up
    return math.degrees(math.atan2(axis[0], axis[1])) % 360.0, pitch


def _residuals(obj: np.ndarray, img: np.ndarray, rvec, tvec, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    proj, jac = cv2.projectPoints(obj, rvec, tvec, k, None)
    return (proj.reshape(-1, 2) - img).ravel(), jac[:, :6]


def _centre_covariance(obj, img, rvec, tvec, k) -> tuple[np.ndarray, float]:
    """First-order covariance of the centre's east/north from the pose's, sigma^2 from the residuals."""
    res, jac = _residuals(obj, img, rvec, tvec, k)
    dof = max(res.size - 6, 1)
    sigma2 = float(res @ res) / dof
    try:
        cov_pose = sigma2 * np.linalg.pinv(jac.T @ jac)
    except np.linalg.LinAlgError:  # a pose the points barely constrain
        return np.full((2, 2), np.inf), math.sqrt(float(res @ res) / (res.size / 2))
    params = np.r_[np.ravel(rvec), np.ravel(tvec)]
    base = camera_centre(params[:3], params[3:])
    d = np.empty((3, 6))
    for i in range(6):
        step = np.zeros(6)
        step[i] = 1e-6 * max(1.0, abs(params[i]))
        q = params + step
        d[:, i] = (camera_centre(q[:3], q[3:]) - base) / step[i]
    cov = d @ cov_pose @ d.T
    return cov[:2, :2], math.sqrt(float(res @ res) / (res.size / 2))


def solve_pose(ground: np.ndarray, pixels: np.ndarray, k: np.ndarray, ransac_px: float | None = None,
               min_inliers: int = 6) -> Pose | None:  # fmt: skip
    """Pose of a pinhole camera K from >= 4 ground points and their pixels (n, 2).

    `ground` is (n, 2) east/north metres on flat ground (up = 0), or (n, 3) east/north/up metres (points lifted
    through a DSM). With `ransac_px`, OpenCV's PnP RANSAC (AP3P, reprojection threshold in pixels) first drops
    correspondences no camera with this focal length explains (off-plane points a homography can absorb, chance
    matches); fewer than `min_inliers` left gives None. Planar points: both IPPE solutions refined
    (Levenberg-Marquardt), the one with the camera above the ground and the smaller reprojection error wins.
    Points in relief: SQPnP's global minimum, refined likewise. None when no solution puts the camera above the
    points and in front of them.
    """
    ground, pixels = np.asarray(ground, dtype=np.float64), np.asarray(pixels, dtype=np.float64)
    if (ground.ndim != 2 or ground.shape[1] not in (2, 3) or pixels.shape != (len(ground), 2)
            or len(ground) < 4):  # fmt: skip
        raise ValueError(f"need n >= 4 ground points (n, 2) or (n, 3) and pixels (n, 2), got {ground.shape}, "
                         f"{pixels.shape}")  # fmt: skip
    k = np.asarray(k, dtype=np.float64)
    obj = ground if ground.shape[1] == 3 else np.c_[ground, np.zeros(len(ground))]
    keep = np.ones(len(obj), dtype=bool)
    if ransac_px is not None:
        ok, _, _, idx = cv2.solvePnPRansac(obj, pixels, k, None, iterationsCount=2000,
                                           reprojectionError=float(ransac_px), confidence=0.999,
                                           flags=cv2.SOLVEPNP_AP3P)  # fmt: skip
        if not ok or idx is None or len(idx) < max(4, min_inliers):
            return None
        keep = np.zeros(len(obj), dtype=bool)
        keep[idx.ravel()] = True
        obj, pixels = obj[keep], pixels[keep]
    if np.ptp(obj[:, 2]) < 1e-9:
        n, rvecs, tvecs, _ = cv2.solvePnPGeneric(obj, pixels, k, None, flags=cv2.SOLVEPNP_IPPE)
        starts = list(zip(rvecs[:n], tvecs[:n], strict=True))
    else:
        ok, rvec, tvec = cv2.solvePnP(obj, pixels, k, None, flags=cv2.SOLVEPNP_SQPNP)
        starts = [(rvec, tvec)] if ok else []
    floor = float(np.median(obj[:, 2]))
    best = None
    for rvec, tvec in starts:
        rvec, tvec = cv2.solvePnPRefineLM(obj, pixels, k, None, rvec.copy(), tvec.copy())
        centre = camera_centre(rvec, tvec)
        depth = (obj @ rotation(rvec).T + tvec.reshape(1, 3))[:, 2]
        if centre[2] <= floor or np.any(depth <= 0):
            continue
        res, _ = _residuals(obj, pixels, rvec, tvec, k)
        err = float(res @ res)
        if best is None or err < best[0]:
            best = (err, rvec.reshape(3), tvec.reshape(3), centre)
    if best is None:
        return None
    _, rvec, tvec, centre = best
    cov, rms = _centre_covariance(obj, pixels, rvec, tvec, k)
    heading, pitch = orientation(rvec)
    return Pose(rvec, tvec, centre, heading, pitch, rms, cov, keep, obj, pixels)


def corner_pixels(size: tuple[int, int]) -> np.ndarray:
    """(4, 2) float64 pixel centres of an image's corners, (width, height) `size`: upper left, clockwise (the order
    of a footprint)."""
    w, h = size
    return np.array([[0.0, 0.0], [w - 1, 0.0], [w - 1, h - 1], [0.0, h - 1]])


def ground_at_pixels(h_pix_to_ground: np.ndarray, uv: np.ndarray, anchor_uv: np.ndarray) -> np.ndarray | None:
    """Ground east/north (n, 2) of pixels through a pixel -> ground homography, or None if a ray misses the ground.

    `anchor_uv` is a pixel known to see the ground (an inlier): a pixel whose homogeneous scale has the other sign
    lies beyond the horizon line, where the homography maps it to the wrong side of the camera.
    """
    h = np.asarray(h_pix_to_ground, dtype=np.float64)
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    p = np.c_[uv, np.ones(len(uv))] @ h.T
    w_anchor = float(h[2] @ np.r_[np.asarray(anchor_uv, dtype=np.float64).reshape(2), 1.0])
    if abs(w_anchor) < 1e-12 or np.any(p[:, 2] * w_anchor <= 0):
        return None
    return p[:, :2] / p[:, 2:3]


FREE_FOCAL_FLAGS = (cv2.CALIB_USE_INTRINSIC_GUESS | cv2.CALIB_FIX_PRINCIPAL_POINT | cv2.CALIB_FIX_ASPECT_RATIO
                    | cv2.CALIB_ZERO_TANGENT_DIST | cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3)  # fmt: skip


def _one_view(pose: Pose, k: np.ndarray, flags: int, least: int) -> tuple | None:
    """calibrateCameraExtended on the pose's inliers alone, started from K: (K, dist, rvec, tvec, std), or None
    with fewer than `least` points or when OpenCV fails."""
    obj, px = pose.object_points, pose.image_points
    if len(obj) < least:
        return None
    size = (int(round(2 * k[0, 2] + 1)), int(round(2 * k[1, 2] + 1)))
    try:
        _, found, dist, rvecs, tvecs, std, *_ = cv2.calibrateCameraExtended(
            [obj.astype(np.float32)], [px.astype(np.float32)], size, k.copy(), np.zeros(5), flags=flags)
    except cv2.error:
        return None
    return found, dist.ravel(), rvecs[0], tvecs[0], std.ravel()


def free_focal(pose: Pose, k: np.ndarray) -> tuple[float, float, np.ndarray] | None:
    """The focal length (px) the pose's inliers call for, its standard error (px), and the camera centre (3,)
    with it: OpenCV's calibrateCameraExtended on one view, principal point and aspect ratio held, no distortion
    (the photo is undistorted already), started from K. A view of a plane pins the focal length only when oblique
    (Zhang, 2000); None when the fit fails."""
    fit = _one_view(pose, k, FREE_FOCAL_FLAGS, 6)
    if fit is None:
        return None
    found, _, rvec, tvec, std = fit
    focal, sigma = float(found[0, 0]), float(std[1])  # with the aspect ratio held, fy carries the error
    if not (math.isfinite(focal) and focal > 0 and math.isfinite(sigma)):
        return None
    return focal, sigma, camera_centre(rvec, tvec)


def radial_distortion(pose: Pose, k: np.ndarray) -> tuple[float, float, float] | None:
    """(k1, its standard error, k1 x r^2 at the farthest inlier) that the pose's inliers call for, focal length and
    k1 set free (OpenCV's radial model, normalised by the focal length; calibrateCameraExtended on one view). The
    photo is undistorted already, so a lens that models it leaves k1 near 0 (|k1 r^2| <= 0.4 % on four real DJI
    frames); an unmodelled one shows (k1 -0.14..-0.25, 2-9 % at the edge, for the same frames with a bare field of
    view). None when the fit fails."""
    fit = _one_view(pose, k, FREE_FOCAL_FLAGS & ~cv2.CALIB_FIX_K1, 8)
    if fit is None:
        return None
    found, dist, _, _, std = fit
    k1, sigma = float(dist[0]), float(std[4])  # std: fx, fy, cx, cy, k1, ...
    reach = float(np.hypot(*(pose.image_points - k[:2, 2]).T).max() / found[0, 0])
    if not (math.isfinite(k1) and math.isfinite(sigma) and abs(k1) <= 2.0):  # beyond: a degenerate fit
        return None
    return k1, sigma, k1 * reach * reach
