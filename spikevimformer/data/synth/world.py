"""World: the orthophoto a satellite sees, the bare ground a drone camera warps, and 2.5-D buildings.

Metric frame used everywhere: X metres east and Y metres north of the north-west corner of the raster
(so Y <= 0 inside the world), Z metres up. Pixel (col, row) has its centre at
X = (col + 0.5) * gsd, Y = -(row + 0.5) * gsd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .geo import GeoRef
from .terrain import Terrain

STOREY_M = 3.2


@dataclass
class Buildings:
    """Extrudable footprints as one flat vertex array (rings counter-clockwise in X/Y)."""

    verts: np.ndarray  # (V, 2) X, Y metres
    start: np.ndarray  # (n,) first vertex of each ring
    count: np.ndarray  # (n,) vertices per ring
    heights_m: np.ndarray  # (n,)
    wall_rgb: np.ndarray  # (n, 3) float32, unlit wall colour
    roof_rgb: np.ndarray  # (n, 3) uint8, mean roof colour for buildings a few pixels large
    edge_shade: np.ndarray = field(default=None)  # (V,) light on the wall from vertex j to j+1
    centroid: np.ndarray = field(default=None)  # (n, 2)
    radius_m: np.ndarray = field(default=None)  # (n,) farthest vertex from the centroid
    next: np.ndarray = field(default=None)  # (V,) index of the following vertex of the same ring

    def __len__(self) -> int:
        return len(self.start)

    @classmethod
    def from_rings(cls, rings: list[np.ndarray], heights_m, wall_rgb, roof_rgb, sun_az_deg: float,
                   sun_el_deg: float) -> Buildings:
        """Orient rings, and precompute centroids and the sunlight on every wall."""
        fixed = []
        for ring in rings:
            ring = np.asarray(ring, dtype=np.float64)
            x, y = ring[:, 0], ring[:, 1]
            area2 = float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
            fixed.append(ring if area2 > 0 else ring[::-1])
        count = np.array([len(r) for r in fixed], dtype=np.int64)
        start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64) if fixed else np.zeros(0, np.int64)
        verts = np.concatenate(fixed) if fixed else np.zeros((0, 2))
        b = cls(verts, start, count, np.asarray(heights_m, dtype=np.float64),
                np.asarray(wall_rgb, dtype=np.float32).reshape(-1, 3), np.asarray(roof_rgb, np.uint8).reshape(-1, 3))
        b.centroid = np.array([r.mean(axis=0) for r in fixed]).reshape(-1, 2)
        radii = [np.sqrt(((r - c) ** 2).sum(1)).max() for r, c in zip(fixed, b.centroid, strict=True)]
        b.radius_m = np.array(radii, dtype=np.float64).reshape(-1)
        b.next = nxt = b.next_index()
        edge = verts[nxt] - verts
        normal = np.stack([edge[:, 1], -edge[:, 0]], axis=1)  # outward for counter-clockwise rings
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
        az, el = math.radians(sun_az_deg), math.radians(sun_el_deg)
        sun = np.array([math.sin(az), math.cos(az)]) * math.cos(el)
        b.edge_shade = (0.55 + 0.55 * np.clip(normal @ sun, 0, None)).astype(np.float32)
        b.edge_shade *= (0.92 + 0.08 * np.abs(normal[:, 0])).astype(np.float32)  # east/west faces differ a bit
        return b

    def next_index(self) -> np.ndarray:
        """Index of the following vertex of the same ring, for every vertex."""
        owner = np.repeat(np.arange(len(self.start)), self.count)
        idx = np.arange(len(self.verts))
        return np.where(idx + 1 < self.start[owner] + self.count[owner], idx + 1, self.start[owner])


@dataclass
class World:
    """A geo-referenced world ready to be photographed."""

    ortho: np.ndarray | None  # (H, W, 3) uint8 RGB, roofs included: what a satellite sees at the drone's date
    ground: np.ndarray | None  # (H, W, 3) uint8 RGB, roofs removed: the plane a drone warps
    geo: GeoRef
    buildings: Buildings
    candidates: np.ndarray  # (m, 2) X, Y metres of possible locations (building centres or a grid)
    candidate_weight: np.ndarray  # (m,) preference for picking (larger buildings first)
    sun_az_deg: float
    sun_el_deg: float
    source: str  # "procedural" or "orthophoto"
    core: tuple[float, float, float, float]  # X0, X1, Y0, Y1 where tile centres may lie
    notes: list[str] = field(default_factory=list)
    raster: str | None = None  # an orthophoto too large to hold: ortho/ground are None, read by windows around
    # each location (ground.window_world)
    raster_size: tuple[int, int] | None = None  # (width, height) px of the whole raster
    reference: np.ndarray | None = None  # (H, W, 3) what the reference sensor saw at another date (epochs.py);
    # None: the orthophoto itself
    epochs: dict | None = None  # world.json's record of the two dates, None for one date
    terrain: Terrain | None = None  # relief under the world (terrain.py); None: flat ground at Z = 0
    _pyramids: dict = field(default_factory=dict, repr=False)

    @property
    def gsd_m(self) -> float:
        return self.geo.gsd_m

    @property
    def reference_view(self) -> np.ndarray:
        """What the satellite tiles and ortho.jpg show: the reference's date and sensor, or the orthophoto."""
        return self.ortho if self.reference is None else self.reference

    def level(self, layer: str, lvl: int) -> np.ndarray:
        """Image pyramid of a layer, so minified drone views sample without aliasing."""
        key = (layer, lvl)
        if key not in self._pyramids:
            img = getattr(self, layer) if lvl == 0 else self.level(layer, lvl - 1)
            if lvl > 0:
                import cv2

                img = cv2.pyrDown(img)
            self._pyramids[key] = img
        return self._pyramids[key]

    def prepare(self, levels: int) -> None:
        """Build the pyramids before worker processes fork, so they share one copy (a world read by windows has
        none: each window builds its own)."""
        if self.raster is not None:
            return
        for layer in ("ground", "ortho"):
            self.level(layer, levels - 1)
        if self.reference is not None:  # tiles crop it at full resolution only
            self.level("reference", 0)
