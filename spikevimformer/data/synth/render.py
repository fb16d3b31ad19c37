"""Rendering: the north-up satellite tile, and drone views of the ground plane with 2.5-D extruded buildings.

A drone view is the ground layer warped by the camera's ground-plane homography (OpenCV warpPerspective),
then every building near the camera painted far to near: its sunlit or shaded walls facing the camera
(quads between the projected footprint and roof outline, with storey lines), then its roof, which is the
orthophoto's roof warped by the homography of the roof plane. So roofs lean away from the camera and
occlude what lies behind them, as in a real oblique photo, and the drone view is not a warped tile.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .camera import Camera
from .terrain import intersect
from .world import STOREY_M, World

MAX_LEVEL = 3
_SHIFT = 4
_S = 1 << _SHIFT


def satellite_tile(world: World, centre_xy, footprint_m: float, size: int) -> np.ndarray:
    """North-up square crop of the reference view, `footprint_m` wide, centred on a point, resized to `size`."""
    g = world.gsd_m
    n = int(round(footprint_m / g))
    col, row = centre_xy[0] / g - 0.5, -centre_xy[1] / g - 0.5
    patch = cv2.getRectSubPix(world.reference_view, (n, n), (float(col), float(row)))
    interp = cv2.INTER_AREA if n > size else cv2.INTER_CUBIC
    return cv2.resize(patch, (size, size), interpolation=interp)


def _level(world: World, cam: Camera) -> int:
    ratio = cam.metres_per_pixel_at_target() / world.gsd_m
    return int(min(MAX_LEVEL, max(0, math.floor(math.log2(max(ratio, 1.0)) + 0.25))))


def drone_view(world: World, cam: Camera, extrude: bool = True) -> np.ndarray:
    """Perspective view of the world from `cam` (RGB uint8, no photometric change).

    Flat ground and a pinhole: the ground layer warped by one homography. Terrain relief or lens distortion:
    every pixel's ray cast onto the height field (terrain.intersect) and the ground sampled where it lands;
    buildings stand on the terrain at their centroid.
    """
    lvl = _level(world, cam)
    scale = float(1 << lvl)
    size = cam.size
    rays = None
    if world.terrain is None and not any(cam.dist):
        h = cam.plane_homography(0.0, world.gsd_m, scale)
        img = cv2.warpPerspective(world.level("ground", lvl), h, (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT_101)
    else:
        v, u = np.mgrid[0:size, 0:size]
        rays = cam.rays(np.c_[u.ravel(), v.ravel()])
        pts = intersect(world.terrain, cam.position, rays)
        g = world.gsd_m * scale
        col = (pts[:, 0] / g - 0.5).reshape(size, size).astype(np.float32)
        row = (-pts[:, 1] / g - 0.5).reshape(size, size).astype(np.float32)
        img = cv2.remap(world.level("ground", lvl), col, row, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if extrude and len(world.buildings):
        _draw_buildings(img, world, cam, lvl, scale, rays)
    return img


def _select(world: World, cam: Camera) -> np.ndarray:
    """Buildings that may appear in the view, far to near."""
    b = world.buildings
    corners = cam.ground_points(np.array([[0, 0], [cam.size - 1, 0]], dtype=np.float64))
    reach = float(np.sqrt(((corners - cam.position[:2]) ** 2).sum(1)).max())
    d2 = ((b.centroid - cam.position[:2]) ** 2).sum(1)
    sel = np.nonzero(d2 < (reach + b.radius_m) ** 2)[0]
    return sel[np.argsort(-d2[sel], kind="stable")]


def _draw_buildings(img: np.ndarray, world: World, cam: Camera, lvl: int, scale: float,
                    rays: np.ndarray | None = None) -> None:  # fmt: skip
    b = world.buildings
    sel = _select(world, cam)
    if not len(sel):
        return
    size = cam.size
    counts = b.count[sel]
    first = np.repeat(b.start[sel] - np.cumsum(np.r_[0, counts[:-1]]), counts)
    idx = first + np.arange(int(counts.sum()))  # vertices of the selected buildings, in order
    xy = b.verts[idx]
    bases = np.zeros(len(sel)) if world.terrain is None else world.terrain.at(*b.centroid[sel].T)
    base = np.repeat(bases, counts)
    heights = base + np.repeat(b.heights_m[sel], counts)
    uv_base, d_base = cam.project(np.c_[xy, base])
    uv_top, d_top = cam.project(np.c_[xy, heights])
    end = b.verts[b.next[idx]]  # far end of the wall that starts at each vertex
    to_cam = cam.position[:2] - (xy + end) / 2
    edge = end - xy
    facing = (edge[:, 1] * to_cam[:, 0] - edge[:, 0] * to_cam[:, 1]) > 0  # outward normal (dy, -dx) . to_cam
    mid_dist = (to_cam**2).sum(1)
    ortho = world.level("ortho", lvl)
    offsets = np.r_[0, np.cumsum(counts)]
    for k, bi in enumerate(sel):
        a, z = offsets[k], offsets[k + 1]
        if min(d_base[a:z].min(), d_top[a:z].min()) < 0.5:
            continue  # behind or under the camera
        both = np.vstack([uv_base[a:z], uv_top[a:z]])
        lo, hi = both.min(0), both.max(0)
        if hi[0] < 0 or hi[1] < 0 or lo[0] >= size or lo[1] >= size:
            continue
        base, top = uv_base[a:z], uv_top[a:z]
        nx = np.r_[1 : z - a, 0]
        walls = [j for j in np.argsort(-mid_dist[a:z], kind="stable") if facing[a + j]]
        wall_rgb = b.wall_rgb[bi]
        big = (hi - lo).max() > 6
        for j in walls:
            quad = np.array([base[j], base[nx[j]], top[nx[j]], top[j]])
            shade = b.edge_shade[idx[a + j]]
            cv2.fillPoly(img, [np.round(quad * _S).astype(np.int32)], tuple(float(c) for c in wall_rgb * shade),
                         cv2.LINE_8, _SHIFT)
        storeys = int(b.heights_m[bi] // STOREY_M)
        if big and walls and storeys > 1 and np.abs(top[:, 1] - base[:, 1]).max() > 3 * storeys:
            zs = bases[k] + np.arange(1, storeys) * STOREY_M
            ring = xy[a:z]
            pts = np.concatenate([np.c_[ring, np.full(len(ring), zz)] for zz in zs])
            uv, _ = cam.project(pts)
            uv = uv.reshape(len(zs), z - a, 2)
            segs = np.array([[uv[s, j], uv[s, nx[j]]] for s in range(len(zs)) for j in walls])
            cv2.polylines(img, list(np.round(segs * _S).astype(np.int32)), False,
                          tuple(float(c) for c in wall_rgb * 0.62), 1, cv2.LINE_8, _SHIFT)
        _draw_roof(img, ortho, cam, world.gsd_m, scale, float(bases[k] + b.heights_m[bi]), top, b.roof_rgb[bi], big,
                   rays)  # fmt: skip


def _draw_roof(img, ortho, cam: Camera, gsd: float, scale: float, height: float, top: np.ndarray, rgb,
               big: bool, rays: np.ndarray | None = None) -> None:  # fmt: skip
    """The roof plane at `height` metres: the orthophoto's roof warped by that plane's homography, or (rays of a
    distorted lens or a terrain view given) sampled where each pixel's ray meets the plane."""
    size = img.shape[0]
    pts = np.round(top * _S).astype(np.int32)
    if not big:
        cv2.fillPoly(img, [pts], tuple(int(c) for c in rgb), cv2.LINE_8, _SHIFT)
        return
    x0, y0 = np.maximum(np.floor(top.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(top.max(0)).astype(int) + 1, size)
    if x1 <= x0 or y1 <= y0:
        return
    if rays is None:
        h = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]]) @ cam.plane_homography(height, gsd, scale)
        patch = cv2.warpPerspective(ortho, h, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)
    else:
        d = rays.reshape(size, size, 3)[y0:y1, x0:x1]
        t = (cam.position[2] - height) / np.maximum(-d[..., 2], 1e-6)
        g = gsd * scale
        col = ((cam.position[0] + d[..., 0] * t) / g - 0.5).astype(np.float32)
        row = (-(cam.position[1] + d[..., 1] * t) / g - 0.5).astype(np.float32)
        patch = cv2.remap(ortho, col, row, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mask = np.zeros(patch.shape[:2], np.uint8)
    cv2.fillPoly(mask, [pts - np.array([x0, y0]) * _S], 1, cv2.LINE_8, _SHIFT)
    np.copyto(img[y0:y1, x0:x1], patch, where=mask[:, :, None].astype(bool))
