"""Reference windows for registration: a tile's footprint plus a margin, read north-up from its imagery."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from ..registration import Window
from ..registration.cache import LRU
from .terrain import TerrainGrid
from .tiles import Tile, reference_image


def window_key(tile: Tile, margin: float, max_px: int) -> tuple:
    """What identifies a window's pixels: the imagery, where the tile lies in it, and how much is read."""
    return (tile.ref_image, tile.ref_affine, tile.footprint_m, margin, max_px)


def read_window(tile: Tile, margin: float, max_px: int, terrain: TerrainGrid | None = None) -> Window:
    """The tile's reference imagery, footprint plus margin on each side, at native resolution or max_px wide,
    with the terrain under it when the index holds a DSM for that imagery.

    Raises tiles.NoReference when the index holds no imagery for the tile.
    """
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
    return Window(gray, to_ground, float(np.sqrt(abs(np.linalg.det(to_ground[:, :2])))),
                  window_key(tile, margin, max_px), terrain, to_raster)  # fmt: skip


class WindowCache:
    """The last `size` windows read (neighbouring photos share candidates); thread-safe. `terrain` maps an
    imagery path to its DSM grid (geo.terrain.load)."""

    def __init__(self, margin: float, max_px: int, size: int = 256,
                 terrain: dict[str, TerrainGrid] | None = None) -> None:  # fmt: skip
        self.margin, self.max_px = margin, max_px
        self.terrain = terrain or {}
        self._windows: LRU[Window] = LRU(size)

    def get(self, tile: Tile) -> Window:
        return self._windows.get(window_key(tile, self.margin, self.max_px),
                                 lambda: read_window(tile, self.margin, self.max_px,
                                                     self.terrain.get(tile.ref_image)))  # fmt: skip
