"""Terrain relief: a smooth height field under the synthetic world, sampled and intersected by camera rays.

The field lives on a grid `TERRAIN_STEP` world pixels coarse (2 m at the default 0.5 m/px, like a
photogrammetric DSM); terrain pixel (i, j) has its centre at world pixel ((j + 0.5) * step - 0.5,
(i + 0.5) * step - 0.5). Heights are metres above the world's datum, 0 at the lowest point.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .paint import value_noise

TERRAIN_STEP = 4  # world pixels per terrain pixel
OCTAVES = ((400.0, 1.0), (160.0, 0.45), (60.0, 0.15))  # (feature size in metres, weight): hills, spurs, hummocks
RAY_ITERATIONS = 24


@dataclass(frozen=True)
class Terrain:
    """Heights (rows, cols) float32 metres on a grid `step` world pixels of `gsd_m` coarse."""

    heights: np.ndarray
    gsd_m: float
    step: int = TERRAIN_STEP

    @property
    def cell_m(self) -> float:
        return self.gsd_m * self.step

    def grid(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World X, Y metres -> fractional terrain (col, row)."""
        return (np.asarray(x) / self.cell_m - 0.5).astype(np.float32), (-np.asarray(y) / self.cell_m - 0.5).astype(
            np.float32
        )

    def at(self, x, y) -> np.ndarray:
        """Bilinear height (metres) at world X, Y metres (clamped at the edges)."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        n = x.size
        width = min(max(n, 1), 4096)  # remap's maps must stay under 32767 a side
        pad = -n % width
        col, row = self.grid(np.r_[x.ravel(), np.zeros(pad)], np.r_[y.ravel(), np.zeros(pad)])
        out = cv2.remap(self.heights, col.reshape(-1, width), row.reshape(-1, width), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        return out.ravel()[:n].reshape(x.shape).astype(np.float64)

    def crop(self, x0_px: int, y0_px: int, x1_px: int, y1_px: int) -> Terrain:
        """The part under world pixels [x0, x1) x [y0, y1); x0, y0 multiples of `step`."""
        s = self.step
        return Terrain(self.heights[y0_px // s : -(-y1_px // s), x0_px // s : -(-x1_px // s)].copy(), self.gsd_m, s)


def relief_field(rng: np.random.Generator, shape_px: tuple[int, int], gsd_m: float, relief_m: float) -> Terrain:
    """Smooth hills `relief_m` metres from the lowest to the highest point over a world of `shape_px` pixels."""
    rows, cols = -(-shape_px[0] // TERRAIN_STEP), -(-shape_px[1] // TERRAIN_STEP)
    cell = gsd_m * TERRAIN_STEP
    field = np.zeros((rows, cols), np.float32)
    for size_m, weight in OCTAVES:
        field += weight * value_noise(rng, (rows, cols), max(2, int(round(size_m / cell))))
    field = cv2.GaussianBlur(field, (0, 0), max(1.0, 20.0 / cell))
    field -= field.min()
    field *= relief_m / max(float(field.max()), 1e-6)
    return Terrain(field, gsd_m)


def intersect(terrain: Terrain | None, origin: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """Where rays (n, 3) from `origin` (3,) first meet the terrain (flat ground at 0 without one): (n, 3) X, Y, Z.

    Damped fixed-point iteration on the ray parameter (t = (Z_origin - h(X, Y)) / -dz); the smooth fields made
    here (slopes well under the rays' depression) converge in a few steps. Rays that do not point down return
    points far away at Z = 0.
    """
    down = np.minimum(rays[:, 2], -1e-6)
    t = (origin[2] - (0.0 if terrain is None else float(np.median(terrain.heights)))) / -down
    if terrain is not None:
        for i in range(RAY_ITERATIONS):
            p = origin + rays * t[:, None]
            target = (origin[2] - terrain.at(p[:, 0], p[:, 1])) / -down
            t = t + (0.5 if i < RAY_ITERATIONS // 2 else 1.0) * (target - t)
    p = origin + rays * t[:, None]
    if terrain is not None:
        p[:, 2] = terrain.at(p[:, 0], p[:, 1])
    else:
        p[:, 2] = 0.0
    return p


def surface(terrain: Terrain, buildings) -> np.ndarray:
    """The digital surface model a photogrammetric DSM would show: the terrain, and every building's roof (its
    base on the terrain at its centroid, as drone views draw it) over its footprint; (rows, cols) float32."""
    out = terrain.heights.copy()
    if not len(buildings):
        return out
    bases = terrain.at(*buildings.centroid.T)
    cell = terrain.cell_m
    for i, (start, count) in enumerate(zip(buildings.start, buildings.count, strict=True)):
        ring = buildings.verts[start : start + count]
        pts = np.stack([ring[:, 0] / cell, -ring[:, 1] / cell], axis=1)  # cell corner units
        mask = np.zeros(out.shape, np.uint8)
        cv2.fillPoly(mask, [np.round((pts - 0.5) * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
        np.maximum(out, np.where(mask > 0, np.float32(bases[i] + buildings.heights_m[i]), out), out=out)
    return out


GROUND_WINDOW_M = 80.0  # the widest roof or crown the ground filter takes off a surface model
GROUND_SMOOTH_M = 10.0  # and the scale it smooths the bare ground over


def ground_of(surface_px: np.ndarray, gsd_m: float) -> Terrain:
    """The bare ground under a surface model (rows, cols, metres at world pixels of `gsd_m`), on the terrain grid.

    A grey opening as wide as GROUND_WINDOW_M (the first step of the morphological ground filters of Zhang et al.
    2003, "A progressive morphological filter for removing nonground measurements from airborne LIDAR data")
    takes roofs and tree crowns off, a Gaussian of GROUND_SMOOTH_M rounds what is left, and the ground never
    rises above the surface. Wider roofs stay in the ground as low mounds.
    """
    rows, cols = -(-surface_px.shape[0] // TERRAIN_STEP), -(-surface_px.shape[1] // TERRAIN_STEP)
    cell = gsd_m * TERRAIN_STEP
    coarse = cv2.resize(surface_px.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA)
    side = 2 * max(1, int(round(GROUND_WINDOW_M / cell / 2))) + 1
    opened = cv2.morphologyEx(coarse, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (side, side)))
    smooth = cv2.GaussianBlur(opened, (0, 0), max(0.5, GROUND_SMOOTH_M / cell), borderType=cv2.BORDER_REPLICATE)
    return Terrain(np.minimum(smooth, coarse), gsd_m)
