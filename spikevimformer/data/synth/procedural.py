"""The procedural world: districts of rotated street grids, blocks with land uses, buildings, a river.

Layout is planned in metres (east, south); everything is drawn with OpenCV polygon fills on one raster, so a
few-kilometre world takes seconds. Locations can be told apart only by the arrangement of roads, roofs,
trees and fields, because every colour comes from palettes shared by the whole world. With an epoch gap the
layout is painted a second time, at the reference's date (epochs.py), over a copy of the bare ground.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from . import paint as P
from .config import SynthConfig
from .epochs import Changes, Epochs, draw_epochs, sense, sun_vector, wither
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
STALL_LINE = (200, 200, 196)
FOOTPRINT = (70, 70, 72)  # the ground under a roof, seen only past a roof's edge
CAR_M = np.array([[-2.2, -0.9], [2.2, -0.9], [2.2, 0.9], [-2.2, 0.9]])  # along, across the road
CHANGES = ("sun and cast shadows", "tree crowns (season, felled)", "lawns (withered, mown)", "crop fields",
           "parked cars and traffic", "buildings (built, pulled down)", "reference sensor")


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
    # what another date changes (epochs.py), all in metres (east, south)
    fields: list = field(default_factory=list)  # (frame, local rect) of each crop strip
    lots: list = field(default_factory=list)  # (frame, local rect) of each parking lot
    parks: list = field(default_factory=list)  # (frame, local rect, lawn colour)
    stalls: list = field(default_factory=list)  # (frame, local rect, ground colour, stall lines | None, fill,
    # [(car polygon, colour | None)])
    roads: list = field(default_factory=list)  # (centre lines (n, 2, 2), width) for traffic
    strokes: list = field(default_factory=list)  # (segments, colour, width) drawn over all blocks: river, arterials


def _rect(x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _area(poly: np.ndarray) -> float:
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


def _dashes(segs: np.ndarray) -> np.ndarray:
    """Centre-line markings: 3 m dashes every 9 m along each segment, (n, 2, 2)."""
    out = [np.zeros((0, 2, 2))]
    for a, b in segs:
        length = float(np.linalg.norm(b - a))
        if length < 10:
            continue
        d = (b - a) / length
        s = np.arange(0.0, length - 3.0, 9.0)
        out.append(np.stack([a + s[:, None] * d, a + (s[:, None] + 3.0) * d], 1))
    return np.concatenate(out)


def _sow(canvas: P.Canvas, frame: Frame, rect, color, step: float, along_x: bool, shade: float = 0.84,
         width: float = 0.4) -> None:
    """A crop strip: its ground, and rows `step` metres apart (`width` of a step wide) along the frame's x or y."""
    a, b, y0, y1 = rect
    poly = P.clip_rect(frame.world(_rect(*rect)), *frame.box)
    if len(poly) >= 3:
        canvas.fill([poly], color)
    if along_x:
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
            canvas.lines(np.array(keep), P.scaled(color, shade), step * width)


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
            self._stroke(np.stack([pts[:-1], pts[1:]], 1), P.pick(self.rng, P.SOIL, 6), width + 7)
            self._stroke(np.stack([pts[:-1], pts[1:]], 1), P.pick(self.rng, P.WATER, 4), width)
        asphalt = P.pick(self.rng, P.ASPHALT, 3)
        segs = []
        for x0, x1, y0, y1 in districts:
            segs += [[[x0, y0], [x1, y0]], [[x1, y0], [x1, y1]], [[x1, y1], [x0, y1]], [[x0, y1], [x0, y0]]]
        segs = np.array(segs, dtype=np.float64)
        self._stroke(segs, asphalt, ARTERIAL_M)
        self._stroke(_dashes(segs), (214, 206, 150), 0.4)
        self.plan.roads.append((segs, ARTERIAL_M))

    def _stroke(self, segs: np.ndarray, color, width_m: float) -> None:
        """Draw lines over every block, and keep them to draw again over another date's blocks."""
        self.canvas.lines(segs, color, width_m)
        self.plan.strokes.append((segs, color, width_m))

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
            self.plan.roads.append((np.array(clipped), rw))
            if rw >= 9:
                cv.lines(_dashes(np.array(clipped)), (226, 226, 226), 0.3)

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
        pave = P.pick(rng, P.PAVE[[0, 2]], 6)
        self._ground(frame, rect, pave)
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
            self._cars(frame, (x0 + 1, x1 - 1, by1 + 0.5, y1 - 0.5), 0.5, pave)

    def _cars(self, frame, rect, fill: float, ground, lines: np.ndarray | None = None) -> None:
        """Rows of parked cars (2.5 m stalls) in a strip of `ground` colour (with its stall `lines`)."""
        rng = self.rng
        x0, x1, y0, y1 = rect
        if y1 - y0 < 5 or x1 - x0 < 5:
            return
        stalls = []
        for row_y in np.arange(y0 + 0.5, y1 - 4.8, 6.5):
            for sx in np.arange(x0 + 0.3, x1 - 2.4, 2.6):
                taken = rng.random() < fill
                poly = frame.world(_rect(sx + 0.3, sx + 2.1, row_y, row_y + 4.4))
                if frame.inside(poly):
                    color = P.pick(rng, P.CAR, 6) if taken else None
                    if color is not None:
                        self.canvas.fill([poly], color)
                    stalls.append((poly, color))
        self.plan.stalls.append((frame, rect, ground, lines, fill, stalls))

    def _block_parking(self, frame, rect) -> None:
        rng = self.rng
        asphalt = P.pick(rng, P.ASPHALT, 4)
        self._ground(frame, rect, asphalt)
        x0, x1, y0, y1 = rect
        xs = np.arange(x0 + 0.3, x1 - 0.3, 2.6)
        segs = []
        for row_y in np.arange(y0 + 0.5, y1 - 4.8, 6.5):
            segs += [[[x, row_y], [x, row_y + 4.6]] for x in xs]
        lines = np.array([frame.world(np.array(s)) for s in segs]) if segs else None
        if lines is not None:
            self.canvas.lines(lines, STALL_LINE, 0.2)
        self._cars(frame, rect, rng.uniform(0.3, 0.85), asphalt, lines)
        self.plan.lots.append((frame, rect))

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
        lawn = P.pick(rng, P.GRASS, 6)
        self._ground(frame, rect, lawn)
        self.plan.parks.append((frame, rect, lawn))
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
            step = rng.uniform(2.5, 5.0)
            _sow(self.canvas, frame, (a, b, y0, y1), base, step, rng.random() < 0.5)
            self.plan.fields.append((frame, (a, b, y0, y1)))

    # --- final drawing --------------------------------------------------------------------------------
    def finish(self, margin_m: float) -> World:
        """Trees, shadows, roofs and texture (and with an epoch gap the reference's date); returns the World."""
        plan, gap = self.plan, self.cfg.epoch_gap
        texture = P.texture_gain(self.rng, self.image.shape[:2], self.g)
        # the other date starts from the layout before trees, shadows and roofs, and its roofs keep their details
        bare, roof_rng = (self.image.copy(), copy.deepcopy(self.rng)) if gap > 0 else (None, None)
        ground, ortho = self._light(self.image, texture, plan.trees, plan.rings, plan.heights, plan.roofs,
                                    [True] * len(plan.rings), self.sun_az, self.sun_el, self.rng)
        world = self._world(ground, ortho, margin_m)
        if gap > 0:
            epochs = draw_epochs(self.cfg.seed, gap, self.sun_az, self.sun_el, self.g, "procedural", CHANGES)
            rng = np.random.default_rng([self.cfg.seed, 6])
            other, counts = self._other_date(bare, texture, roof_rng, epochs, rng)
            del bare, texture  # the other date's ground: only its orthophoto is seen, through the sensor
            world.reference = sense(other, epochs.sensor, self.g, rng)
            world.epochs = epochs.record(counts)
        return world

    def _light(self, image: np.ndarray, texture: np.ndarray, trees: list, rings: list, heights: list, roofs: list,
               shown: list[bool], sun_az: float, sun_el: float, rng: np.random.Generator):
        """Paint trees, cast shadows, roofs (of the buildings `shown`; hidden ones still draw their random roof
        details, so later roofs keep theirs) and texture in place; returns (ground, orthophoto)."""
        cv, sun = P.Canvas(image, self.g), sun_vector(sun_az)
        for e, s, r, c in trees:
            cv.disc((e, s), r, c)
            cv.disc(np.array([e, s]) + sun * r * 0.3, r * 0.55, P.scaled(c, 1.18))
        standing = [i for i, keep in enumerate(shown) if keep]
        shadow = np.zeros(image.shape[:2], np.uint8)
        P.cast_shadows(P.Canvas(shadow, self.g), [rings[i] for i in standing], [heights[i] for i in standing],
                       trees, sun, sun_el)
        shade = cv2.LUT(shadow, np.round(255 - 0.45 * np.arange(256)).astype(np.uint8))
        gain = cv2.multiply(texture, shade, scale=1 / 255)
        cv.fill([rings[i] for i in standing], FOOTPRINT)
        ortho = image.copy()
        ocv, nowhere = P.Canvas(ortho, self.g), P.Canvas(np.zeros((1, 1, 3), np.uint8), self.g)
        for ring, (kind, color), keep in zip(rings, roofs, shown, strict=True):
            P.paint_roof(ocv if keep else nowhere, kind, ring, color, rng, sun)
        P.apply_gain(image, gain)
        P.apply_gain(ortho, gain)
        return image, ortho

    # --- the reference's date ---------------------------------------------------------------------------
    def _other_date(self, image: np.ndarray, texture: np.ndarray, roof_rng: np.random.Generator, ep: Epochs,
                    rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        """The orthophoto at the reference's date, painted over `image` (the bare layout), and what changed."""
        plan, other, ch, cv = self.plan, ep.reference, ep.changes, P.Canvas(image, self.g)
        counts = {"fields_changed": 0, "parked_cars_moved": 0, "cars_in_traffic": 0, "buildings_not_yet_built": 0,
                  "buildings_pulled_down_since": 0, "trees_felled_since": 0, "parks_mown": 0}
        for frame, rect in plan.fields:
            if rng.random() < ch.fields:
                counts["fields_changed"] += 1
                _resow(cv, frame, rect, rng)
        counts["parked_cars_moved"] = self._repark(cv, ch.cars, rng)
        rings, heights, roofs, shown = self._rebuild(cv, ch, rng, counts)
        for frame, rect, lawn in plan.parks:
            if rng.random() < ch.mown:
                counts["parks_mown"] += 1
                self._mow(image, frame, rect, lawn, rng)
        wither(image, other.dryness, rng, self.g)
        for segs, color, width in plan.strokes:
            cv.lines(segs, color, width)
        counts["cars_in_traffic"] = self._traffic(cv, ch.traffic, rng)
        trees = []
        for e, s, r, c in plan.trees:
            felled, deciduous, turned = rng.random() < ch.felled, rng.random() < 0.75, rng.random() < other.autumn
            tint = P.pick(rng, P.AUTUMN, 10) if turned else c
            if felled:
                counts["trees_felled_since"] += 1
                continue
            if deciduous:  # leaves turn and fall; evergreens stay as they were
                c = P.BARE_TREE + (np.array(tint, np.float32) - P.BARE_TREE) * other.foliage
                c, r = tuple(int(round(v)) for v in c), r * (0.55 + 0.45 * other.foliage)
            trees.append((e, s, r, c))
        weathered = cv2.addWeighted(texture, 1 - ch.texture, P.texture_gain(rng, texture.shape, self.g), ch.texture, 0)
        _, ortho = self._light(image, weathered, trees, rings, heights, roofs, shown, other.sun_az_deg,
                               other.sun_el_deg, roof_rng)
        return ortho, counts

    def _repark(self, cv: P.Canvas, share: float, rng: np.random.Generator) -> int:
        """Empty every parking strip and park its cars again, a `share` of the stalls changing hands; returns how
        many cars left."""
        left = 0
        for frame, rect, ground, lines, fill, stalls in self.plan.stalls:
            poly = P.clip_rect(frame.world(_rect(*rect)), *frame.box)
            if len(poly) >= 3:
                cv.fill([poly], ground)
            if lines is not None:
                cv.lines(lines, STALL_LINE, 0.2)
            for car, color in stalls:
                if rng.random() < share:
                    left += int(color is not None)
                    color = P.pick(rng, P.CAR, 6) if rng.random() < fill else None
                if color is not None:
                    cv.fill([car], color)
        return left

    def _rebuild(self, cv: P.Canvas, ch: Changes, rng: np.random.Generator,
                 counts: dict) -> tuple[list, list, list, list]:
        """Buildings at the reference's date: some still construction sites, some stores on parking lots that
        were pulled down since; returns (rings, heights, roofs, shown), the drone date's buildings first."""
        plan = self.plan
        shown = [rng.random() >= ch.buildings for _ in plan.rings]
        for ring, keep in zip(plan.rings, shown, strict=True):
            if not keep:
                counts["buildings_not_yet_built"] += 1
                c, soil = ring.mean(0), P.pick(rng, P.SOIL, 8)
                cv.fill([c + (ring - c) * 1.12], soil)
                cv.fill([c + (ring - c) * 0.7], P.scaled(soil, 0.72))  # the pit
        rings, heights, roofs = list(plan.rings), list(plan.heights), list(plan.roofs)
        for frame, (x0, x1, y0, y1) in plan.lots:
            if rng.random() >= ch.new_buildings:
                continue
            bw, bh = (x1 - x0) * rng.uniform(0.45, 0.8), (y1 - y0) * rng.uniform(0.45, 0.8)
            bx, by = x0 + rng.uniform(0, x1 - x0 - bw), y0 + rng.uniform(0, y1 - y0 - bh)
            ring = frame.world(_rect(bx, bx + bw, by, by + bh))
            kind = "metal" if rng.random() < 0.5 else "flat"
            roof = (kind, P.pick(rng, P.ROOF_METAL if kind == "metal" else P.ROOF_FLAT))
            height = float(rng.uniform(4, 12))
            if min(bw, bh) >= 6 and frame.inside(ring) and not self.wet(ring):
                counts["buildings_pulled_down_since"] += 1
                rings.append(ring)
                heights.append(height)
                roofs.append(roof)
                shown.append(True)
        return rings, heights, roofs, shown

    def _mow(self, image: np.ndarray, frame: Frame, rect, lawn, rng: np.random.Generator) -> None:
        """Mowing stripes on the lawn of a park where it shows (paths, ponds and trees keep their colours)."""
        x0, x1, y0, y1 = rect
        width, along_x = rng.uniform(3.0, 5.0), rng.random() < 0.5
        starts = np.arange(y0 if along_x else x0, y1 if along_x else x1, 2 * width)
        bands = [P.clip_rect(_rect(x0, x1, t, t + width) if along_x else _rect(t, t + width, y0, y1), x0, x1, y0, y1)
                 for t in starts]
        polys = [p for p in (P.clip_rect(frame.world(b), *frame.box) for b in bands if len(b) >= 3) if len(p) >= 3]
        if not polys:
            return
        pts = np.concatenate(polys) / self.g
        c0, r0 = np.maximum(np.floor(pts.min(0)).astype(int) - 1, 0)
        c1, r1 = np.minimum(np.ceil(pts.max(0)).astype(int) + 2, self.n)
        window = image[r0:r1, c0:c1]
        mask = np.zeros(window.shape[:2], np.uint8)
        P.Canvas(mask, self.g).fill([p - (c0 * self.g, r0 * self.g) for p in polys], 1)
        window[(mask == 1) & np.all(window == np.array(lawn, np.uint8), axis=-1)] = P.scaled(lawn, 1.14)

    def _traffic(self, cv: P.Canvas, per_100m: float, rng: np.random.Generator) -> int:
        """Cars driving in both lanes of every road, `per_100m` per lane on average; returns how many."""
        n = 0
        for segs, width in self.plan.roads:
            for a, b in segs:
                length = float(np.linalg.norm(b - a))
                if length < 10:
                    continue
                along = (b - a) / length
                axes = np.array([along, [-along[1], along[0]]])
                for side in (-0.25, 0.25):
                    for t in rng.uniform(2.5, length - 2.5, rng.poisson(per_100m * length / 100)):
                        centre = a + along * t + axes[1] * side * width
                        if not self.wet(centre[None]):
                            cv.fill([centre + CAR_M @ axes], P.pick(rng, P.CAR, 6))
                            n += 1
        return n

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


def _resow(cv: P.Canvas, frame: Frame, rect, rng: np.random.Generator) -> None:
    """A crop strip at another date: ploughed (fine furrows), harvested (stubble and windrows) or another crop."""
    state, along_x = rng.random(), rng.random() < 0.5
    if state < 1 / 3:
        _sow(cv, frame, rect, P.pick(rng, P.PLOUGHED, 8), rng.uniform(0.9, 1.6), along_x, 0.74, 0.45)
    elif state < 2 / 3:
        _sow(cv, frame, rect, P.pick(rng, P.STUBBLE, 8), rng.uniform(5.0, 9.0), along_x, 0.84, 0.25)
    else:
        _sow(cv, frame, rect, P.pick(rng, P.FIELD, 8), rng.uniform(2.5, 5.0), along_x)
