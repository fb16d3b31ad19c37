"""The procedural world: districts of rotated street grids, blocks with land uses, buildings, a river.

Layout is planned in metres (east, south); everything is drawn with OpenCV polygon fills on one raster, so a
few-kilometre world takes seconds. Locations can be told apart only by the arrangement of roads, roofs,
trees and fields, because every colour comes from palettes shared by the whole world.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from . import paint as P
from .config import SynthConfig
from .geo import GeoRef
from .world import STOREY_M, Buildings, World

BLOCK_USES = {
    "urban": {"urban": 0.74, "plaza": 0.06, "park": 0.10, "parking": 0.10},
    "suburban": {"suburban": 0.82, "park": 0.10, "water": 0.04, "parking": 0.04},
    "industrial": {"industrial": 0.70, "parking": 0.15, "field": 0.10, "park": 0.05},
    "rural": {"field": 0.60, "park": 0.12, "suburban": 0.16, "water": 0.12},
}
DISTRICT_P = {"urban": 0.36, "suburban": 0.32, "industrial": 0.14, "rural": 0.18}
ROAD_SPACING_M = {"urban": (55, 100), "suburban": (60, 110), "industrial": (90, 160), "rural": (110, 220)}
ROAD_WIDTH_M = {"urban": (10, 15), "suburban": (7, 10), "industrial": (10, 14), "rural": (6, 8)}
ARTERIAL_M = 18.0
MIN_TARGET_AREA_M2 = 120.0


@dataclass
class Frame:
    """A district's rotated street frame and the box its blocks are clipped to."""

    centre: np.ndarray
    rot: np.ndarray
    box: tuple[float, float, float, float]

    def world(self, local: np.ndarray) -> np.ndarray:
        return self.centre + np.asarray(local, dtype=np.float64) @ self.rot.T

    def inside(self, pts: np.ndarray) -> bool:
        x0, x1, y0, y1 = self.box
        return bool(np.all((pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)))


@dataclass
class Plan:
    """Objects collected while laying out, drawn in a fixed order afterwards."""

    rings: list = field(default_factory=list)  # (k, 2) east/south metres
    heights: list = field(default_factory=list)
    walls: list = field(default_factory=list)
    roofs: list = field(default_factory=list)  # (kind, colour)
    trees: list = field(default_factory=list)  # (east, south, radius, colour)


def _rect(x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _area(poly: np.ndarray) -> float:
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


def _bsp(
    rect, rng, min_side: float, max_side: float, out: list,
    cut: tuple[float, float] = (0.38, 0.62), stop_p: float | None = None,
) -> None:
    """Split a rectangle along its longer side until the parts are small enough.

    A part at most `max_side` long stops splitting (with `stop_p`: only with that probability, which
    leaves some large districts); one shorter than `2 * min_side` always stops.
    """
    x0, x1, y0, y1 = rect
    w, h = x1 - x0, y1 - y0
    if max(w, h) < 2 * min_side or (max(w, h) <= max_side and (stop_p is None or rng.random() < stop_p)):
        out.append(rect)
        return
    f = rng.uniform(*cut)
    if w >= h:
        c = x0 + w * f
        _bsp((x0, c, y0, y1), rng, min_side, max_side, out, cut, stop_p)
        _bsp((c, x1, y0, y1), rng, min_side, max_side, out, cut, stop_p)
    else:
        c = y0 + h * f
        _bsp((x0, x1, y0, c), rng, min_side, max_side, out, cut, stop_p)
        _bsp((x0, x1, c, y1), rng, min_side, max_side, out, cut, stop_p)


class WorldPainter:
    """Lays out and paints one procedural world."""

    def __init__(self, cfg: SynthConfig, side_m: float, rng: np.random.Generator):
        self.cfg, self.rng = cfg, rng
        self.g = cfg.gsd_m
        self.n = int(math.ceil(side_m / self.g))
        self.side = self.n * self.g
        self.image = np.empty((self.n, self.n, 3), np.uint8)
        self.image[:] = P.pick(rng, P.GRASS, 4)
        self.canvas = P.Canvas(self.image, self.g)
        self.sun_az = float(rng.uniform(110, 250))
        self.sun_el = float(rng.uniform(35, 65))
        az = math.radians(self.sun_az)
        self.sun_dir = np.array([math.sin(az), -math.cos(az)])  # towards the sun, east/south
        self.plan = Plan()
        self.water = np.zeros((int(self.side // 2) + 2, int(self.side // 2) + 2), np.uint8)  # 2 m cells
        self.river = self._river()

    # --- geometry tests -------------------------------------------------------------------------------
    def wet(self, pts: np.ndarray) -> bool:
        ij = np.clip((np.asarray(pts) / 2).astype(int), 0, self.water.shape[0] - 1)
        return bool(self.water[ij[:, 1], ij[:, 0]].any())

    def _river(self):
        rng = self.rng
        if rng.random() > 0.55:
            return None
        t = np.arange(-60.0, self.side + 60.0, 20.0)
        lateral = self.side * rng.uniform(0.25, 0.75) + sum(
            rng.uniform(30, 140) * np.sin(2 * math.pi * t / rng.uniform(500, 1800) + rng.uniform(0, 6.3))
            for _ in range(3)
        )
        pts = np.stack([t, lateral], 1) if rng.random() < 0.5 else np.stack([lateral, t], 1)
        width = float(rng.uniform(16, 36))
        cv2.polylines(self.water, [np.round(pts / 2).astype(np.int32)], False, 1, int(width / 2 + 8))
        return pts, width

    # --- layout ---------------------------------------------------------------------------------------
    def lay_out(self) -> None:
        districts: list = []
        _bsp((0.0, self.side, 0.0, self.side), self.rng, 280.0, 700.0, districts, (0.35, 0.65), stop_p=0.35)
        for rect in districts:
            self._district(rect)
        if self.river is not None:
            pts, width = self.river
            self.canvas.lines(np.stack([pts[:-1], pts[1:]], 1), P.pick(self.rng, P.SOIL, 6), width + 7)
            self.canvas.lines(np.stack([pts[:-1], pts[1:]], 1), P.pick(self.rng, P.WATER, 4), width)
        asphalt = P.pick(self.rng, P.ASPHALT, 3)
        segs = []
        for x0, x1, y0, y1 in districts:
            segs += [[[x0, y0], [x1, y0]], [[x1, y0], [x1, y1]], [[x1, y1], [x0, y1]], [[x0, y1], [x0, y0]]]
        segs = np.array(segs, dtype=np.float64)
        self.canvas.lines(segs, asphalt, ARTERIAL_M)
        self._dashes(segs, 0.4, (214, 206, 150))

    def _dashes(self, segs: np.ndarray, width_m: float, color) -> None:
        """Centre-line markings: 3 m dashes every 9 m along each segment."""
        out = []
        for a, b in segs:
            length = float(np.linalg.norm(b - a))
            if length < 10:
                continue
            d = (b - a) / length
            s = np.arange(0.0, length - 3.0, 9.0)
            out.append(np.stack([a + s[:, None] * d, a + (s[:, None] + 3.0) * d], 1))
        if out:
            self.canvas.lines(np.concatenate(out), color, width_m)

    def _district(self, rect) -> None:
        rng, cv = self.rng, self.canvas
        kind = str(rng.choice(list(DISTRICT_P), p=list(DISTRICT_P.values())))
        x0, x1, y0, y1 = rect
        cv.fill([_rect(x0, x1, y0, y1)], P.pick(rng, P.ASPHALT, 3))
        theta = 0.0 if rng.random() < 0.3 else float(rng.uniform(-0.7, 0.7))
        inset = ARTERIAL_M / 2
        frame = Frame(np.array([(x0 + x1) / 2, (y0 + y1) / 2]), P.rotation(theta),
                      (x0 + inset, x1 - inset, y0 + inset, y1 - inset))
        half = math.hypot(x1 - x0, y1 - y0) / 2
        lo, hi = ROAD_SPACING_M[kind]
        gx, gy = [-half - rng.uniform(0, lo)], [-half - rng.uniform(0, lo)]
        while gx[-1] < half:
            gx.append(gx[-1] + rng.uniform(lo, hi))
        while gy[-1] < half:
            gy.append(gy[-1] + rng.uniform(lo, hi))
        rw = float(rng.uniform(*ROAD_WIDTH_M[kind]))
        uses, probs = list(BLOCK_USES[kind]), list(BLOCK_USES[kind].values())
        pave = P.pick(rng, P.PAVE, 4)
        for i in range(len(gx) - 1):
            for j in range(len(gy) - 1):
                bx0, bx1, by0, by1 = gx[i] + rw / 2, gx[i + 1] - rw / 2, gy[j] + rw / 2, gy[j + 1] - rw / 2
                outer = P.clip_rect(frame.world(_rect(bx0, bx1, by0, by1)), *frame.box)
                if _area(outer) < 150:
                    continue
                cv.fill([outer], pave)  # sidewalk
                use = str(rng.choice(uses, p=probs))
                getattr(self, f"_block_{use}")(frame, (bx0 + 2, bx1 - 2, by0 + 2, by1 - 2))
        if rw >= 9:
            lines = [[[x, gy[0]], [x, gy[-1]]] for x in gx] + [[[gx[0], y], [gx[-1], y]] for y in gy]
            segs = np.array([frame.world(np.array(s)) for s in lines])
            clipped = []
            for a, b in segs:  # keep the part of each centre line inside the district box
                poly = P.clip_rect(np.array([a, b, b + 1e-3, a + 1e-3]), *frame.box)
                if len(poly) >= 2:
                    d = b - a
                    t = (poly - a) @ d / (d @ d)
                    clipped.append([a + t.min() * d, a + t.max() * d])
            if clipped:
                self._dashes(np.array(clipped), 0.3, (226, 226, 226))

    def _ground(self, frame: Frame, rect, color) -> None:
        poly = P.clip_rect(frame.world(_rect(*rect)), *frame.box)
        if len(poly) >= 3:
            self.canvas.fill([poly], color)

    def _building(self, frame: Frame, ring_local: np.ndarray, height: float, wall, roof) -> bool:
        ring = frame.world(ring_local)
        if not frame.inside(ring) or self.wet(np.vstack([ring, ring.mean(0, keepdims=True)])):
            return False
        p = self.plan
        p.rings.append(ring)
        p.heights.append(min(height, self.cfg.max_height_m))
        p.walls.append(wall)
        p.roofs.append(roof)
        return True

    def _tree(self, frame: Frame, local_xy, radius: float, color=None) -> None:
        pt = frame.world(np.asarray(local_xy, dtype=np.float64)[None])
        if frame.inside(pt) and not self.wet(pt):
            c = color if color is not None else P.pick(self.rng, P.TREE, 7)
            self.plan.trees.append((pt[0, 0], pt[0, 1], radius, c))

    # --- block land uses ------------------------------------------------------------------------------
    def _block_urban(self, frame, rect) -> None:
        rng = self.rng
        self._ground(frame, rect, P.pick(rng, P.PAVE, 6))
        lots: list = []
        _bsp(rect, rng, 12.0, float(rng.uniform(22, 36)), lots)
        for x0, x1, y0, y1 in lots:
            if rng.random() < 0.08:
                self._tree(frame, ((x0 + x1) / 2, (y0 + y1) / 2), rng.uniform(3, 5))
                continue
            sb = rng.uniform(0.5, 2.5)
            x0, x1, y0, y1 = x0 + sb, x1 - sb, y0 + sb, y1 - sb
            if min(x1 - x0, y1 - y0) < 6:
                continue
            storeys = int(min(14, 3 + rng.gamma(1.6, 1.8)))
            height = storeys * STOREY_M + rng.uniform(0.3, 1.5)
            if rng.random() < 0.25 and min(x1 - x0, y1 - y0) > 14:
                cx, cy = x0 + (x1 - x0) * rng.uniform(0.45, 0.65), y0 + (y1 - y0) * rng.uniform(0.45, 0.65)
                ring = np.array([[x0, y0], [x1, y0], [x1, cy], [cx, cy], [cx, y1], [x0, y1]])
                roof = ("flat", P.pick(rng, P.ROOF_FLAT))
            else:
                ring = _rect(x0, x1, y0, y1)
                r = rng.random()
                if height < 16 and r < 0.18:
                    roof = (str(rng.choice(["gable", "hip"])), P.pick(rng, P.ROOF_PITCHED))
                elif r < 0.30:
                    roof = ("solar", P.pick(rng, P.ROOF_FLAT))
                elif r < 0.36:
                    roof = ("green", P.pick(rng, P.ROOF_FLAT))
                else:
                    roof = ("flat", P.pick(rng, P.ROOF_FLAT))
            self._building(frame, ring, height, P.pick(rng, P.WALL), roof)

    def _block_suburban(self, frame, rect) -> None:
        rng = self.rng
        self._ground(frame, rect, P.pick(rng, P.GRASS, 5))
        lots: list = []
        _bsp(rect, rng, 11.0, float(rng.uniform(16, 24)), lots)
        for x0, x1, y0, y1 in lots:
            self._ground(frame, (x0 + 0.3, x1 - 0.3, y0 + 0.3, y1 - 0.3), P.pick(rng, P.GRASS, 9))
            w, h = x1 - x0, y1 - y0
            if min(w, h) < 8:
                continue
            bw, bh = min(w - 5, rng.uniform(8, 15)), min(h - 5, rng.uniform(8, 12))
            if min(bw, bh) < 5:
                continue
            cx = x0 + rng.uniform(2.5 + bw / 2, max(2.6 + bw / 2, w - 2.5 - bw / 2))
            cy = y0 + rng.uniform(2.5 + bh / 2, max(2.6 + bh / 2, h - 2.5 - bh / 2))
            bx0, bx1, by0, by1 = cx - bw / 2, cx + bw / 2, cy - bh / 2, cy + bh / 2
            r = rng.random()
            kind = "gable" if r < 0.45 else "hip" if r < 0.85 else "flat"
            palette = P.ROOF_FLAT if kind == "flat" else P.ROOF_PITCHED
            height = STOREY_M * rng.integers(1, 3) + rng.uniform(0.5, 2.5)
            self._building(frame, _rect(bx0, bx1, by0, by1), height, P.pick(rng, P.WALL[[0, 1, 2, 4, 6]]),
                           (kind, P.pick(rng, palette)))
            if rng.random() < 0.12 and h - (by1 - y0) > 6:  # a pool behind the house
                self._ground(frame, (cx - 2.5, cx + 2.5, by1 + 1.5, by1 + 4.0), (70, 150, 190))
            for _ in range(int(rng.integers(0, 4))):
                tx, ty, tr = rng.uniform(x0 + 1, x1 - 1), rng.uniform(y0 + 1, y1 - 1), rng.uniform(1.8, 3.6)
                if not (bx0 - tr < tx < bx1 + tr and by0 - tr < ty < by1 + tr):
                    self._tree(frame, (tx, ty), tr)

    def _block_industrial(self, frame, rect) -> None:
        rng = self.rng
        self._ground(frame, rect, P.pick(rng, P.PAVE[[0, 2]], 6))
        lots: list = []
        _bsp(rect, rng, 28.0, float(rng.uniform(45, 75)), lots)
        for x0, x1, y0, y1 in lots:
            sb = rng.uniform(3, 8)
            bx0, bx1, by0, by1 = x0 + sb, x1 - sb, y0 + sb, y1 - sb * rng.uniform(1.0, 2.2)
            if min(bx1 - bx0, by1 - by0) < 8:
                continue
            kind = "metal" if rng.random() < 0.7 else "flat"
            self._building(frame, _rect(bx0, bx1, by0, by1), rng.uniform(6, 14), P.pick(rng, P.WALL[[1, 2, 5]]),
                           (kind, P.pick(rng, P.ROOF_METAL if kind == "metal" else P.ROOF_FLAT)))
            self._cars(frame, (x0 + 1, x1 - 1, by1 + 0.5, y1 - 0.5), 0.5)

    def _cars(self, frame, rect, fill: float) -> None:
        """Rows of parked cars (2.5 m stalls) in a strip."""
        rng = self.rng
        x0, x1, y0, y1 = rect
        if y1 - y0 < 5 or x1 - x0 < 5:
            return
        for row_y in np.arange(y0 + 0.5, y1 - 4.8, 6.5):
            for sx in np.arange(x0 + 0.3, x1 - 2.4, 2.6):
                if rng.random() < fill:
                    poly = frame.world(_rect(sx + 0.3, sx + 2.1, row_y, row_y + 4.4))
                    if frame.inside(poly):
                        self.canvas.fill([poly], P.pick(rng, P.CAR, 6))

    def _block_parking(self, frame, rect) -> None:
        rng = self.rng
        self._ground(frame, rect, P.pick(rng, P.ASPHALT, 4))
        x0, x1, y0, y1 = rect
        xs = np.arange(x0 + 0.3, x1 - 0.3, 2.6)
        segs = []
        for row_y in np.arange(y0 + 0.5, y1 - 4.8, 6.5):
            segs += [[[x, row_y], [x, row_y + 4.6]] for x in xs]
        if segs:
            self.canvas.lines(np.array([frame.world(np.array(s)) for s in segs]), (200, 200, 196), 0.2)
        self._cars(frame, rect, rng.uniform(0.3, 0.85))

    def _block_plaza(self, frame, rect) -> None:
        rng = self.rng
        self._ground(frame, rect, P.pick(rng, P.PAVE, 4))
        x0, x1, y0, y1 = rect
        step = rng.uniform(7, 11)
        for tx in np.arange(x0 + 3, x1 - 2, step):
            for ty in np.arange(y0 + 3, y1 - 2, step):
                self._tree(frame, (tx, ty), rng.uniform(1.8, 3.0))

    def _block_park(self, frame, rect) -> None:
        rng = self.rng
        self._ground(frame, rect, P.pick(rng, P.GRASS, 6))
        x0, x1, y0, y1 = rect
        w, h = x1 - x0, y1 - y0
        if rng.random() < 0.3 and min(w, h) > 30:
            self._pond(frame, rect)
        t = np.linspace(0, 1, 12)
        for _ in range(int(rng.integers(1, 4))):
            a, b = rng.uniform((x0, y0), (x1, y1)), rng.uniform((x0, y0), (x1, y1))
            bend = rng.normal(0, 0.25, 2) * (w, h)
            path = a + t[:, None] * (b - a) + np.sin(t * math.pi)[:, None] * bend
            path = np.clip(path, (x0, y0), (x1, y1))
            segs = frame.world(path.reshape(-1, 2)).reshape(-1, 2)
            self.canvas.lines(np.stack([segs[:-1], segs[1:]], 1), P.pick(rng, P.PAVE, 4), rng.uniform(1.5, 3.0))
        n = int(w * h * rng.uniform(0.002, 0.01))
        centres = rng.uniform((x0, y0), (x1, y1), (max(1, n // 8 + 1), 2))
        for _ in range(n):
            c = centres[rng.integers(len(centres))] + rng.normal(0, 9, 2)
            if x0 < c[0] < x1 and y0 < c[1] < y1:
                self._tree(frame, c, rng.uniform(2.0, 5.0))

    def _pond(self, frame, rect) -> None:
        rng = self.rng
        x0, x1, y0, y1 = rect
        c = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) + rng.normal(0, 3, 2)
        ang = np.linspace(0, 2 * math.pi, 28, endpoint=False)
        rad = 1 + 0.12 * np.sin(ang * rng.integers(2, 5) + rng.uniform(0, 6))
        rx, ry = (x1 - x0) * rng.uniform(0.25, 0.42), (y1 - y0) * rng.uniform(0.25, 0.42)
        poly = c + np.stack([rx * rad * np.cos(ang), ry * rad * np.sin(ang)], 1)
        shore = c + (poly - c) * 1.08
        for pts, col in ((shore, P.pick(rng, P.SOIL, 6)), (poly, P.pick(rng, P.WATER, 5))):
            wp = P.clip_rect(frame.world(pts), *frame.box)
            if len(wp) >= 3:
                self.canvas.fill([wp], col)

    def _block_water(self, frame, rect) -> None:
        self._ground(frame, rect, P.pick(self.rng, P.GRASS, 6))
        self._pond(frame, rect)

    def _block_field(self, frame, rect) -> None:
        rng = self.rng
        x0, x1, y0, y1 = rect
        cuts = np.sort(rng.uniform(x0, x1, int(rng.integers(0, 3))))
        edges = np.concatenate([[x0], cuts, [x1]])
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            if b - a < 4:
                continue
            base = P.pick(rng, P.FIELD, 8)
            self._ground(frame, (a, b, y0, y1), base)
            step = rng.uniform(2.5, 5.0)
            if rng.random() < 0.5:
                ys = np.arange(y0 + step / 2, y1, step)
                segs = np.stack([np.stack([np.full_like(ys, a + 0.5), ys], 1),
                                 np.stack([np.full_like(ys, b - 0.5), ys], 1)], 1)
            else:
                xs = np.arange(a + step / 2, b, step)
                segs = np.stack([np.stack([xs, np.full_like(xs, y0 + 0.5)], 1),
                                 np.stack([xs, np.full_like(xs, y1 - 0.5)], 1)], 1)
            if len(segs):
                world = frame.world(segs.reshape(-1, 2)).reshape(-1, 2, 2)
                keep = [s for s in world if frame.inside(s)]
                if keep:
                    self.canvas.lines(np.array(keep), P.scaled(base, 0.84), step * 0.4)

    # --- final drawing --------------------------------------------------------------------------------
    def finish(self, margin_m: float) -> World:
        """Trees, shadows, roofs and texture; returns the World."""
        rng, cv, plan = self.rng, self.canvas, self.plan
        for e, s, r, c in plan.trees:
            cv.disc((e, s), r, c)
            cv.disc(np.array([e, s]) + self.sun_dir * r * 0.3, r * 0.55, P.scaled(c, 1.18))
        shadow = np.zeros(self.image.shape[:2], np.uint8)
        scv = P.Canvas(shadow, self.g)
        reach = 1.0 / math.tan(math.radians(self.sun_el))
        polys = []
        for ring, h in zip(plan.rings, plan.heights, strict=True):
            both = np.vstack([ring, ring - self.sun_dir * h * reach]).astype(np.float32)
            polys.append(cv2.convexHull(both).reshape(-1, 2).astype(np.float64))
        scv.fill(polys, 255)
        for e, s, r, _ in plan.trees:
            scv.disc(np.array([e, s]) - self.sun_dir * r * 1.6 * reach, r, 255)
        scv.fill(plan.rings, 0)  # a roof is not in its own shadow
        gain = P.texture_gain(rng, shadow.shape, self.g)
        shade = cv2.LUT(shadow, np.round(255 - 0.45 * np.arange(256)).astype(np.uint8))
        gain = cv2.multiply(gain, shade, scale=1 / 255)
        cv.fill(plan.rings, (70, 70, 72))
        ground = self.image
        ortho = ground.copy()
        ocv = P.Canvas(ortho, self.g)
        for ring, (kind, color) in zip(plan.rings, plan.roofs, strict=True):
            P.paint_roof(ocv, kind, ring, color, rng, self.sun_dir)
        P.apply_gain(ground, gain)
        P.apply_gain(ortho, gain)
        return self._world(ground, ortho, margin_m)

    def _world(self, ground, ortho, margin_m) -> World:
        plan = self.plan
        rings_xy = [np.stack([r[:, 0], -r[:, 1]], 1) for r in plan.rings]
        roof_rgb = [c for _, c in plan.roofs]
        b = Buildings.from_rings(rings_xy, plan.heights, plan.walls, roof_rgb, self.sun_az, self.sun_el)
        areas = np.array([_area(r) for r in plan.rings])
        big = np.nonzero(areas >= MIN_TARGET_AREA_M2)[0] if len(areas) else np.zeros(0, int)
        geo = GeoRef(0.0, 0.0, self.g, self.n, self.n)  # origin set by the caller
        core = (margin_m, self.side - margin_m, -(self.side - margin_m), -margin_m)
        return World(ortho=ortho, ground=ground, geo=geo, buildings=b, candidates=b.centroid[big],
                     candidate_weight=areas[big], sun_az_deg=self.sun_az, sun_el_deg=self.sun_el,
                     source="procedural", core=core)


def procedural_world(cfg: SynthConfig, side_m: float, margin_m: float, rng: np.random.Generator) -> World:
    """Lay out and paint a square procedural world `side_m` metres wide."""
    painter = WorldPainter(cfg, side_m, rng)
    painter.lay_out()
    return painter.finish(margin_m)
