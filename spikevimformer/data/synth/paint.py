"""Drawing primitives for the procedural orthophoto: shared palettes, polygons in metres, roofs, noise.

All layout geometry is in metres (east, south) from the world's north-west corner; the raster pixel
(col, row) has its centre at ((col + 0.5) * gsd, (row + 0.5) * gsd). Colours come from palettes shared
by the whole world, so no location owns a colour and a colour histogram cannot tell places apart.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

SHIFT = 2  # sub-pixel bits for cv2 polygon drawing
_SCALE = 1 << SHIFT

ROOF_FLAT = np.array([(188, 188, 182), (150, 150, 146), (112, 114, 118), (205, 198, 180), (226, 226, 220),
                      (92, 96, 104), (170, 160, 140), (128, 122, 112)], dtype=np.float32)
ROOF_PITCHED = np.array([(168, 86, 60), (140, 66, 52), (118, 84, 66), (96, 98, 104), (72, 74, 80),
                         (150, 108, 80), (186, 120, 82)], dtype=np.float32)
ROOF_METAL = np.array([(200, 204, 206), (170, 178, 186), (120, 138, 160), (214, 214, 208)], dtype=np.float32)
WALL = np.array([(206, 196, 172), (180, 176, 170), (224, 220, 210), (158, 96, 72), (196, 176, 140),
                 (150, 150, 152), (214, 204, 170)], dtype=np.float32)
GRASS = np.array([(96, 128, 62), (112, 140, 72), (84, 116, 58), (128, 142, 82), (146, 146, 96)], dtype=np.float32)
TREE = np.array([(48, 84, 42), (62, 98, 46), (38, 70, 36), (78, 104, 52), (56, 76, 44)], dtype=np.float32)
FIELD = np.array([(156, 144, 92), (118, 140, 70), (176, 162, 112), (98, 124, 60), (142, 112, 82),
                  (190, 176, 120), (132, 150, 84)], dtype=np.float32)
PAVE = np.array([(158, 156, 150), (176, 170, 160), (134, 134, 130), (190, 184, 172)], dtype=np.float32)
ASPHALT = np.array([(72, 74, 78), (88, 88, 90), (62, 64, 68)], dtype=np.float32)
WATER = np.array([(52, 82, 100), (44, 72, 86), (62, 96, 108)], dtype=np.float32)
CAR = np.array([(230, 230, 230), (30, 30, 34), (170, 172, 176), (150, 40, 36), (40, 70, 140), (100, 100, 104)],
               dtype=np.float32)
SOIL = np.array([(130, 112, 88), (150, 128, 98)], dtype=np.float32)
AUTUMN = np.array([(176, 122, 46), (188, 92, 40), (150, 132, 52), (124, 82, 42)], dtype=np.float32)
BARE_TREE = np.array([112, 100, 86], dtype=np.float32)  # a leafless crown: branches over the ground
STUBBLE = np.array([(196, 180, 124), (184, 166, 108), (206, 190, 140)], dtype=np.float32)
PLOUGHED = np.array([(112, 92, 70), (128, 104, 78), (96, 80, 62)], dtype=np.float32)


def pick(rng: np.random.Generator, palette: np.ndarray, jitter: float = 8.0) -> tuple[int, int, int]:
    """A palette colour with a little per-object variation."""
    base = palette[int(rng.integers(len(palette)))]
    c = base * (1.0 + rng.normal(0.0, jitter / 160)) + rng.normal(0.0, jitter / 3, 3)  # mostly brightness
    return tuple(min(255, max(0, int(v))) for v in c.tolist())


def scaled(color, factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(c * factor)))) for c in color)


class Canvas:
    """A raster plus the metres -> pixel mapping, so layout code never thinks in pixels."""

    def __init__(self, image: np.ndarray, gsd_m: float):
        self.image = image
        self.gsd = gsd_m

    def pts(self, poly_m: np.ndarray) -> np.ndarray:
        return np.round((np.asarray(poly_m, dtype=np.float64) / self.gsd - 0.5) * _SCALE).astype(np.int32)

    def fill(self, polys_m: list[np.ndarray], color, image: np.ndarray | None = None) -> None:
        if polys_m:
            cv2.fillPoly(self.image if image is None else image, [self.pts(p) for p in polys_m], color,
                         cv2.LINE_8, SHIFT)

    def lines(self, segs_m: np.ndarray, color, width_m: float, image: np.ndarray | None = None) -> None:
        """Open polylines of two points each, (n, 2, 2) metres."""
        if len(segs_m):
            thick = max(1, int(round(width_m / self.gsd)))
            cv2.polylines(self.image if image is None else image, list(self.pts(segs_m)), False, color, thick,
                          cv2.LINE_8, SHIFT)

    def disc(self, centre_m, radius_m: float, color, image: np.ndarray | None = None) -> None:
        c = self.pts(centre_m)
        cv2.circle(self.image if image is None else image, (int(c[0]), int(c[1])),
                   max(1, int(round(radius_m / self.gsd * _SCALE))), color, -1, cv2.LINE_8, SHIFT)


def clip_rect(poly: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a convex polygon to an axis-aligned rectangle."""
    out = np.asarray(poly, dtype=np.float64)
    if out[:, 0].min() >= x0 and out[:, 0].max() <= x1 and out[:, 1].min() >= y0 and out[:, 1].max() <= y1:
        return out
    for axis, bound, keep_low in ((0, x0, False), (0, x1, True), (1, y0, False), (1, y1, True)):
        if len(out) == 0:
            break
        inside = out[:, axis] <= bound if keep_low else out[:, axis] >= bound
        res = []
        for i in range(len(out)):
            p, q = out[i], out[(i + 1) % len(out)]
            pin, qin = inside[i], inside[(i + 1) % len(out)]
            if pin:
                res.append(p)
            if pin != qin:
                t = (bound - p[axis]) / (q[axis] - p[axis])
                res.append(p + t * (q - p))
        out = np.array(res) if res else np.zeros((0, 2))
    return out


def value_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: int) -> np.ndarray:
    """Smooth noise in [0, 1] with features about `cell_px` pixels wide (bicubic up-sampled lattice)."""
    h, w = shape
    lh, lw = max(2, h // cell_px + 2), max(2, w // cell_px + 2)
    lattice = rng.random((lh, lw), dtype=np.float32)
    big = cv2.resize(lattice, (lw * cell_px, lh * cell_px), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[:h, :w], 0, 1)


def texture_gain(rng: np.random.Generator, shape: tuple[int, int], gsd_m: float) -> np.ndarray:
    """Per-pixel brightness gain (uint8, 128 = 1.0): 1-2 px grain plus metre-scale blotches."""
    h, w = shape
    hh, hw = h // 2 + 1, w // 2 + 1
    grain = rng.integers(0, 256, (hh, hw), dtype=np.uint8)
    blotch = value_noise(rng, (hh, hw), max(2, int(3 / gsd_m)))
    half = cv2.addWeighted(grain, 0.16, blotch, 34.0, 128 - 0.16 * 128 - 17.0, dtype=cv2.CV_8U)
    return cv2.resize(half, (w, h), interpolation=cv2.INTER_LINEAR)[:h, :w]


def apply_gain(image: np.ndarray, gain: np.ndarray, rows: int = 1024) -> None:
    """image *= gain / 128 in place, in strips so a large world never needs a float copy."""
    for r in range(0, image.shape[0], rows):
        g = cv2.merge([gain[r:r + rows]] * 3)
        image[r:r + rows] = cv2.multiply(image[r:r + rows], g, scale=1 / 128)


def cast_shadows(canvas: Canvas, rings: list[np.ndarray], heights, trees, sun_dir: np.ndarray,
                 sun_el_deg: float) -> None:
    """Paint 255 where prisms (rings, heights) and tree crowns (east, south, radius, ...) shade the ground, away from
    the sun (length = height / tan(elevation)); roofs are not in their own shadow."""
    reach = 1.0 / math.tan(math.radians(sun_el_deg))
    polys = []
    for ring, h in zip(rings, heights, strict=True):
        both = np.vstack([ring, ring - sun_dir * h * reach]).astype(np.float32)
        polys.append(cv2.convexHull(both).reshape(-1, 2).astype(np.float64))
    canvas.fill(polys, 255)
    for e, s, r, *_ in trees:
        canvas.disc(np.array([e, s]) - sun_dir * r * 1.6 * reach, r, 255)  # a crown about 1.6 radii up
    canvas.fill(rings, 0)


def roof_shade(normal_xy: np.ndarray, sun_dir: np.ndarray) -> float:
    """Brightness of a pitched roof face from its horizontal normal (east, south) and the sun."""
    return 0.82 + 0.32 * float(np.clip(np.dot(normal_xy, sun_dir), -1, 1))


def paint_roof(canvas: Canvas, kind: str, corners: np.ndarray, color, rng: np.random.Generator,
               sun_dir: np.ndarray) -> None:
    """Draw one roof on the orthophoto; corners are the footprint (a rectangle c0..c3 unless kind is flat)."""
    if kind in ("gable", "hip") and len(corners) == 4:
        c0, c1, c2, c3 = corners
        if np.linalg.norm(c1 - c0) < np.linalg.norm(c3 - c0):  # make c0->c1 the long side
            c0, c1, c2, c3 = c1, c2, c3, c0
        ma, mb = (c0 + c3) / 2, (c1 + c2) / 2
        long_dir = (mb - ma) / max(np.linalg.norm(mb - ma), 1e-9)
        across = (c0 - c3) / max(np.linalg.norm(c0 - c3), 1e-9)
        if kind == "gable":
            faces = [([c0, c1, mb, ma], across), ([ma, mb, c2, c3], -across)]
        else:
            inset = min(np.linalg.norm(c3 - c0) / 2, np.linalg.norm(mb - ma) / 2 - 0.3)
            ra, rb = ma + long_dir * inset, mb - long_dir * inset
            faces = [([c0, c1, rb, ra], across), ([ra, rb, c2, c3], -across), ([c0, ra, c3], -long_dir),
                     ([c1, c2, rb], long_dir)]
        for pts, normal in faces:
            canvas.fill([np.array(pts)], scaled(color, roof_shade(normal, sun_dir)))
        ridge = np.array([[ma, mb]]) if kind == "gable" else np.array([[ra, rb]])
        canvas.lines(ridge, scaled(color, 0.7), 0.3)
        return
    canvas.fill([corners], color)
    closed = np.concatenate([corners, corners[:1]])
    canvas.lines(np.stack([closed[:-1], closed[1:]], axis=1), scaled(color, 0.78), 0.6)  # parapet
    if len(corners) != 4:
        return
    c0, u, v = corners[0], corners[1] - corners[0], corners[3] - corners[0]
    lu, lv = float(np.linalg.norm(u)), float(np.linalg.norm(v))

    def quad(a0: float, a1: float, b0: float, b1: float) -> np.ndarray:  # roof-local rectangle, [0, 1] units
        return np.array([c0 + a * u + b * v for a, b in ((a0, b0), (a1, b0), (a1, b1), (a0, b1))])

    if kind == "solar":
        rows = int((lv - 2.0) // 3.0)
        for k in range(rows):
            b0 = (1.0 + 3.0 * k + 0.6) / lv
            canvas.fill([quad(0.15, 0.85, b0, b0 + 1.6 / lv)], (36, 48, 84))
    elif kind == "green":
        canvas.fill([quad(0.08, 0.92, 0.08, 0.92)], pick(rng, GRASS, 10))
    elif kind == "metal":
        a = np.arange(2.5, lu - 1.0, 2.5) / lu
        segs = np.stack([c0 + a[:, None] * u + 0.03 * v, c0 + a[:, None] * u + 0.97 * v], axis=1)
        canvas.lines(segs, scaled(color, 0.86), 0.25)
    else:  # flat: a few roof-top units
        for _ in range(int(rng.integers(0, 4))):
            w, h = rng.uniform(1.0, 3.0) / lu, rng.uniform(1.0, 3.0) / lv
            a0, b0 = rng.uniform(0.1, max(0.11, 0.9 - w)), rng.uniform(0.1, max(0.11, 0.9 - h))
            shade = 1.18 if rng.random() < 0.5 else 0.72
            canvas.fill([quad(a0, min(0.95, a0 + w), b0, min(0.95, b0 + h))], scaled(color, shade))


def rotation(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])
