"""A synthetic flight over a synthetic world: frames along a path at a constant speed, with their true cameras.

The path is a loop through the world's test locations (those an index of the world's gallery holds), nearest
first, with rounded corners; the camera looks ahead along it at a fixed pitch. Each frame is a JPEG with the
lens's EXIF focal length and its time (DateTimeOriginal + SubSecTimeOriginal); `cameras.csv` holds the true camera
per frame (image, latitude, longitude, height_agl_m, heading_deg, pitch_deg, time_s), which `flight --truth` reads.
Frames in `blank` show a featureless field (water): no registration is possible there and the filter must bridge
them.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ...fileio import atomic_write_text
from ...progress import progress_bar
from .camera import Camera, view_reach_m
from .config import SynthConfig
from .pipeline import build_world
from .render import MAX_LEVEL, drone_view
from .writer import camera_exif, with_exif

FLIGHT_COLUMNS = ("image", "latitude", "longitude", "height_agl_m", "heading_deg", "pitch_deg", "time_s")
EPOCH = datetime(2026, 6, 1, 10, 0, 0)  # the frames' camera clock at the first frame
TURN_M = 15.0  # corners rounded over about this much path: 8 m/s through a right angle in ~4 s


@dataclass(frozen=True)
class FlightPlan:
    """How the drone flies: frames, rate, speed (m/s), height above the ground (m), pitch below the horizon
    (deg), frame size (px) and the frames [first, last) over featureless ground."""

    frames: int = 60
    fps: float = 2.0
    speed_mps: float = 8.0
    altitude_m: float = 100.0
    pitch_deg: float = 60.0
    size: int = 256
    blank: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.frames < 2 or self.fps <= 0 or self.speed_mps <= 0 or self.altitude_m <= 0:
            raise ValueError(f"a flight needs 2 or more frames and a positive rate, speed and height, got {self}")
        if not 20 <= self.pitch_deg <= 90:
            raise ValueError(f"pitch must lie in 20..90 degrees below the horizon, got {self.pitch_deg}")


def flight_path(points: np.ndarray, n: int, step_m: float, turn_m: float = TURN_M) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) positions every `step_m` metres along the closed loop through `points` (flown round again when it is
    too short), its corners rounded by a Gaussian of `turn_m` metres of path (a drone turns with finite
    acceleration), and (n,) headings in degrees clockwise from north (X east, Y north)."""
    loop = np.vstack([points, points[:1]]).astype(np.float64)
    seg = np.diff(loop, axis=0)
    lengths = np.hypot(*seg.T)
    if lengths.sum() < 4 * turn_m:
        raise ValueError("a flight path needs points further apart than its turns")
    cum = np.r_[0.0, np.cumsum(lengths)]
    total = cum[-1]
    dense_s = np.arange(0.0, total, 1.0)  # one sample a metre, then smoothed round the loop
    dense = np.c_[np.interp(dense_s, cum, loop[:, 0]), np.interp(dense_s, cum, loop[:, 1])]
    half = int(3 * turn_m)
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / turn_m) ** 2)
    kernel /= kernel.sum()
    wrapped = np.vstack([dense[-half:], dense, dense[:half]])
    smooth = np.c_[np.convolve(wrapped[:, 0], kernel, "valid"), np.convolve(wrapped[:, 1], kernel, "valid")]
    smooth = np.vstack([smooth, smooth[:1]])
    arc = np.r_[0.0, np.cumsum(np.hypot(*np.diff(smooth, axis=0).T))]
    def at(d: np.ndarray) -> np.ndarray:
        d = d % arc[-1]
        return np.c_[np.interp(d, arc, smooth[:, 0]), np.interp(d, arc, smooth[:, 1])]

    s = np.arange(n) * step_m
    pos = at(s)
    forward = at(s + 1.0) - pos
    heading = np.degrees(np.arctan2(forward[:, 0], forward[:, 1])) % 360.0
    return pos, heading


def render_flight(cfg: SynthConfig, plan: FlightPlan, out_dir: str | Path, progress: bool = True) -> Path:
    """Render the flight over the world of `cfg` (the one `synth` writes for it) into out_dir/frames/ and
    out_dir/cameras.csv; returns out_dir."""
    cfg = cfg.resolved()
    out = Path(out_dir)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    world, locations = build_world(cfg, view_reach_m(cfg))
    world.prepare(MAX_LEVEL + 1)
    test = [np.array(loc.xy) for loc in locations if loc.split == "test"]
    if len(test) < 2:
        raise ValueError("the world has fewer than two test locations to fly over; give it more --locations")
    order = [test.pop(0)]
    while test:  # nearest first: a path without long jumps
        j = int(np.argmin([np.hypot(*(p - order[-1])) for p in test]))
        order.append(test.pop(j))
    back = plan.altitude_m / math.tan(math.radians(plan.pitch_deg))
    pos, heading = flight_path(np.array(order), plan.frames, plan.speed_mps / plan.fps)
    rows = []
    for i in progress_bar(range(plan.frames), desc="flight frames", unit="frame", progress=progress):
        psi = math.radians(heading[i])
        target = pos[i] + back * np.array([math.sin(psi), math.cos(psi)])
        ground_z = float(world.terrain.at(*target)) if world.terrain is not None else 0.0
        cam = Camera.look_at(target, heading[i], plan.pitch_deg, plan.altitude_m, cfg.fov_deg, plan.size, ground_z,
                             cfg.dist)  # fmt: skip
        if plan.blank is not None and plan.blank[0] <= i < plan.blank[1]:
            rgb = _featureless(plan.size, np.random.default_rng([cfg.seed, 77, i]))
        else:
            rgb = drone_view(world, cam)
        name = f"frame-{i:05d}.jpg"
        (out / "frames" / name).write_bytes(_jpeg(rgb, cam.focal_px, i / plan.fps))
        lat, lon = world.geo.to_latlon(cam.position[0], -cam.position[1])
        rows.append((f"frames/{name}", f"{float(lat):.8f}", f"{float(lon):.8f}", f"{plan.altitude_m:g}",
                     f"{heading[i]:.3f}", f"{plan.pitch_deg:g}", f"{i / plan.fps:.3f}"))  # fmt: skip
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(FLIGHT_COLUMNS)
    writer.writerows(rows)
    atomic_write_text(out / "cameras.csv", buf.getvalue())
    return out


def _featureless(size: int, rng: np.random.Generator) -> np.ndarray:
    """Water seen from above: one colour and fine noise, nothing a feature detector can hold on to."""
    base = np.array([40, 70, 90], dtype=np.float32)
    noise = cv2.GaussianBlur(rng.normal(0, 3, (size, size)).astype(np.float32), (0, 0), 3)
    return np.clip(base + noise[..., None], 0, 255).astype(np.uint8)  # GaussianBlur drops the channel axis


def _jpeg(rgb: np.ndarray, focal_px: float, time_s: float) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise ValueError("could not encode a flight frame as JPEG")
    exif = Image.Exif()
    exif.load(camera_exif(focal_px, rgb.shape[1], rgb.shape[0]))
    when = EPOCH + timedelta(seconds=time_s)
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = when.strftime("%Y:%m:%d %H:%M:%S")  # DateTimeOriginal
    sub[0x9291] = f"{when.microsecond // 1000:03d}"  # SubSecTimeOriginal, milliseconds
    sub[0x9011] = "+00:00"  # OffsetTimeOriginal: the clock is UTC (a zoneless time is a camera's local guess)
    return with_exif(buf.tobytes(), exif.tobytes())
