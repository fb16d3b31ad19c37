"""Drone cameras circling a target: poses, projections (pinhole, or with OpenCV's Brown-Conrady distortion) and
the ground-plane homographies.

World frame: X east, Y north, Z up, metres (see world.py). Camera frame: x right, y down, z forward.
`heading_deg` is the direction the camera looks, clockwise from north; `pitch_deg` its depression below
the horizon; the camera sits on the far side of the target at `altitude_m` above the target's ground (at
height `ground_z`) and looks straight at it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .config import SynthConfig


@dataclass(frozen=True)
class Camera:
    position: np.ndarray  # (3,) X, Y, Z metres
    rot: np.ndarray  # (3, 3) world -> camera, rows = right, down, forward
    focal_px: float
    size: int
    heading_deg: float
    pitch_deg: float
    altitude_m: float
    dist: tuple[float, ...] = ()  # OpenCV (k1, k2, p1, p2, k3); () = pinhole
    ground_z: float = 0.0  # terrain height at the target, metres

    @classmethod
    def look_at(cls, target_xy, heading_deg: float, pitch_deg: float, altitude_m: float, fov_deg: float,
                size: int, ground_z: float = 0.0, dist: tuple[float, ...] = ()) -> Camera:  # fmt: skip
        psi, theta = math.radians(heading_deg), math.radians(pitch_deg)
        horiz = np.array([math.sin(psi), math.cos(psi), 0.0])
        forward = horiz * math.cos(theta) + np.array([0.0, 0.0, -math.sin(theta)])
        right = np.array([math.cos(psi), -math.sin(psi), 0.0])  # forward x up, normalised
        down = np.cross(forward, right)
        back = altitude_m / math.tan(theta)
        position = np.array([target_xy[0], target_xy[1], ground_z]) - horiz * back + np.array([0.0, 0.0, altitude_m])
        focal = (size / 2) / math.tan(math.radians(fov_deg) / 2)
        return cls(position, np.stack([right, down, forward]), focal, size, heading_deg, pitch_deg, altitude_m,
                   tuple(float(v) for v in dist), float(ground_z))  # fmt: skip

    @property
    def k(self) -> np.ndarray:
        c = (self.size - 1) / 2
        return np.array([[self.focal_px, 0, c], [0, self.focal_px, c], [0, 0, 1.0]])

    def to_camera(self, pts: np.ndarray) -> np.ndarray:
        return (np.asarray(pts, dtype=np.float64) - self.position) @ self.rot.T

    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, 3) world points -> (n, 2) pixel coordinates and (n,) depths."""
        cam = self.to_camera(pts)
        depth = cam[:, 2]
        if any(self.dist):
            front = np.c_[cam[:, :2], np.maximum(depth, 1e-6)]
            uv, _ = cv2.projectPoints(front, np.zeros(3), np.zeros(3), self.k, np.asarray(self.dist, np.float64))
            return uv.reshape(-1, 2), depth
        c = (self.size - 1) / 2
        uv = self.focal_px * cam[:, :2] / np.maximum(depth, 1e-6)[:, None] + c
        return uv, depth

    def rays(self, uv: np.ndarray) -> np.ndarray:
        """(n, 2) pixels -> (n, 3) world directions of their rays (lens distortion undone)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        if any(self.dist):
            xy = cv2.undistortPoints(uv.reshape(-1, 1, 2), self.k, np.asarray(self.dist, np.float64)).reshape(-1, 2)
            local = np.c_[xy, np.ones(len(xy))]
        else:
            local = np.c_[uv, np.ones(len(uv))] @ np.linalg.inv(self.k).T
        return local @ self.rot

    def plane_homography(self, z_m: float, gsd_m: float, scale: float = 1.0) -> np.ndarray:
        """3x3 map from pixels of a north-up raster (gsd_m * scale metres per pixel) lying at height z_m."""
        g = gsd_m * scale
        a = np.array([[g, 0.0, g / 2], [0.0, -g, -g / 2], [0.0, 0.0, z_m]])
        a[:, 2] -= self.position
        return self.k @ self.rot @ a

    def ground_points(self, uv: np.ndarray) -> np.ndarray:
        """Where the rays through pixels meet the ground (Z = 0), (n, 2) X, Y metres."""
        rays = self.rays(uv)
        t = (self.ground_z - self.position[2]) / np.minimum(rays[:, 2], -1e-9)
        return self.position[:2] + rays[:, :2] * t[:, None]

    def metres_per_pixel_at_target(self) -> float:
        slant = self.altitude_m / math.sin(math.radians(self.pitch_deg))
        return slant / self.focal_px


@dataclass(frozen=True)
class ViewSpec:
    """One drone shot: where the camera is relative to the target, and which altitude folder it files under."""

    altitude_m: float
    heading_deg: float
    pitch_deg: float
    offset_m: tuple[float, float]  # look-at point minus tile centre, X/Y metres
    group: str | None = None


def plan_views(cfg: SynthConfig, rng: np.random.Generator) -> list[ViewSpec]:
    """University-1652: one descending circle; SUES-200: one circle per altitude, `views` shots each."""
    n = cfg.views
    lo, hi = cfg.pitch_deg

    def circle(altitudes, group):
        start = rng.uniform(0, 360)
        out = []
        for i, alt in enumerate(altitudes):
            heading = (start + 360.0 * i / n + rng.normal(0, cfg.heading_jitter_deg)) % 360.0
            off = rng.normal(0, cfg.target_jitter_m, 2) if cfg.target_jitter_m > 0 else np.zeros(2)
            out.append(ViewSpec(float(alt), float(heading), float(rng.uniform(lo, hi)), (float(off[0]), float(off[1])),
                                group))
        return out

    if cfg.layout == "sues200":
        return [v for a in cfg.altitudes_m for v in circle([a] * n, altitude_folder(a))]
    top, bottom = max(cfg.altitudes_m), min(cfg.altitudes_m)
    alts = np.linspace(top, bottom, n) if n > 1 else np.array([(top + bottom) / 2])
    return circle(alts, None)


def altitude_folder(alt: float) -> str:
    """SUES-200 names altitude folders by whole metres ('150')."""
    return f"{alt:g}" if alt != int(alt) else str(int(alt))


def view_reach_m(cfg: SynthConfig) -> float:
    """Farthest ground point from the tile centre that any drone view of this config can show."""
    reach = 0.0
    for alt in (min(cfg.altitudes_m), max(cfg.altitudes_m)):
        for pitch in cfg.pitch_deg:
            cam = Camera.look_at((0.0, 0.0), 0.0, pitch, alt, cfg.fov_deg, 64)
            corners = cam.ground_points(np.array([[0, 0], [63, 0], [0, 63], [63, 63]], dtype=np.float64))
            reach = max(reach, float(np.sqrt((corners**2).sum(1)).max()), alt / math.tan(math.radians(pitch)))
    return reach + 4 * cfg.target_jitter_m
