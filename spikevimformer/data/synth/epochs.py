"""Two dates of one world: the reference (orthophoto, satellite tiles) and the drone photos at different epochs.

Registration in the field fails because the reference was flown on another day by another sensor, so the
synthetic world can paint its reference and its drone photos `epoch_gap` apart (0 = the same moment, 1 = as
far apart as it gets): another sun (other cast shadows), another season (tree crowns, lawns, crops), other
cars, a few buildings built or pulled down, and a coarser, blurrier reference sensor. Everything is drawn
from the seed; geometry is untouched, so the drone cameras and the reference's georeferencing stay exact.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from .paint import value_noise

DRY = np.array([164, 146, 94], dtype=np.float32)  # a withered lawn or a stubble field
GREEN_MARGIN = 8  # a pixel is vegetation when green beats red and blue by this much
_LEVELS = np.arange(256, dtype=np.float64) / 255.0


@dataclass(frozen=True)
class Epoch:
    """One date of the world: where the sun stood and how far the season had turned."""

    sun_az_deg: float | None  # None: unknown (a user's orthophoto at its own date)
    sun_el_deg: float | None
    foliage: float  # share of their summer crown deciduous trees still carry (1 = full leaf)
    autumn: float  # share of deciduous crowns turned yellow, red or brown
    dryness: float  # share of lawns and green crops withered to straw (in patches)


@dataclass(frozen=True)
class Sensor:
    """The camera that took the reference: coarser and blurrier than a drone's, on the world's pixel grid."""

    gsd_m: float  # effective ground sampling distance (the world raster's, times the coarsening)
    blur_m: float  # optics: Gaussian sigma on the ground, before sampling
    jpeg_quality: int  # compression at the coarse sampling
    tone: float  # strength of its other exposure, colour balance, gamma and noise


@dataclass(frozen=True)
class Changes:
    """What changed on a procedural world's ground between the dates (shares 0..1 unless said otherwise)."""

    fields: float  # crop fields re-sown, harvested or ploughed
    cars: float  # parking stalls that changed hands
    traffic: float  # cars per 100 m of road lane at the reference's date
    buildings: float  # buildings not yet built at the reference's date (a construction site instead)
    new_buildings: float  # parking lots with a building on them at the reference's date (pulled down since)
    felled: float  # trees felled since the reference's date
    mown: float  # parks whose lawn shows mowing stripes at the reference's date
    texture: float  # the ground's fine texture (wear, stains, growth) that is new


@dataclass(frozen=True)
class Epochs:
    """The drone's date, the reference's date and sensor, and what changed on the ground in between."""

    gap: float
    drone: Epoch
    reference: Epoch
    sensor: Sensor
    repainted: str  # the epoch painted from the other: "reference" (procedural) or "drone" (a user's orthophoto)
    changes: Changes | None  # None: a user's orthophoto, whose roads, cars, fields and trees are not known
    applied: tuple[str, ...]  # what the world changes between the dates, in words

    def record(self, counts: dict | None = None) -> dict:
        """world.json's `epochs`: every parameter drawn from the gap, and what was counted while painting."""
        return {**asdict(self), "applied": list(self.applied), "counts": counts or {}}


def draw_epochs(seed: int, gap: float, sun_az_deg: float | None, sun_el_deg: float | None, gsd_m: float,
                source: str, applied: tuple[str, ...]) -> Epochs:
    """The world's own date (the sun given, None if unknown; summer) and another one `gap` away, from the seed.

    A procedural world (`source` "procedural") is painted at the drone's date and repainted at the reference's;
    a user's orthophoto ("orthophoto") is the reference's date, and the drone sees a repainted copy.
    """
    rng = np.random.default_rng([seed, 5])
    g = float(gap)
    base_az = 180.0 if sun_az_deg is None else sun_az_deg
    base_el = 45.0 if sun_el_deg is None else sun_el_deg
    turn = (1 if rng.random() < 0.5 else -1) * rng.uniform(70, 150)  # another hour and month: the sun elsewhere
    other = Epoch(
        sun_az_deg=float((base_az + g * turn) % 360), sun_el_deg=float(base_el + g * (rng.uniform(18, 60) - base_el)),
        foliage=float(1 - g * rng.uniform(0.4, 1.0)), autumn=float(min(1.0, g * rng.uniform(0.4, 1.2))),
        dryness=float(g * rng.uniform(0.4, 1.0)),
    )  # fmt: skip
    coarse = 1 + g * rng.uniform(1.0, 2.0)
    sensor = Sensor(gsd_m=float(gsd_m * coarse), blur_m=float(0.35 * gsd_m * coarse),
                    jpeg_quality=int(round(92 - 36 * g)), tone=float(0.6 * g))
    own = Epoch(sun_az_deg, sun_el_deg, 1.0, 0.0, 0.0)
    if source == "procedural":
        changes = Changes(fields=min(1.0, 1.6 * g), cars=min(1.0, 2 * g), traffic=3.0 * g, buildings=0.16 * g,
                          new_buildings=0.5 * g, felled=0.15 * g, mown=g, texture=0.6 * g)
        return Epochs(g, own, other, sensor, "reference", changes, applied)
    return Epochs(g, other, own, sensor, "drone", None, applied)


def sun_vector(az_deg: float) -> np.ndarray:
    """Unit vector towards the sun on the ground, (east, south), from its azimuth (clockwise from north)."""
    az = math.radians(az_deg)
    return np.array([math.sin(az), -math.cos(az)])


def wither(image: np.ndarray, dryness: float, rng: np.random.Generator, gsd_m: float, rows: int = 1024) -> None:
    """Turn a share `dryness` of the green ground straw-coloured in place, in patches some 10 m across, so a
    lawn or a crop shows other shapes at another date (a uniform tint would leave SIFT unmoved)."""
    if dryness <= 0:
        return
    h, w = image.shape[:2]
    coarse = value_noise(rng, (h // 4 + 1, w // 4 + 1), max(2, int(10 / (4 * gsd_m))))
    patches = np.round(np.clip((coarse - (1 - dryness)) / 0.2, 0, 1) * 255).astype(np.uint8)
    weight = cv2.resize(patches, (w, h), interpolation=cv2.INTER_LINEAR)
    for r in range(0, h, rows):  # in strips: a large world never needs a float copy of itself
        px = image[r:r + rows].astype(np.float32)
        green = (px[..., 1] > px[..., 0] + GREEN_MARGIN) & (px[..., 1] > px[..., 2] + GREEN_MARGIN)
        a = (weight[r:r + rows] * (green / np.float32(255)))[..., None]
        image[r:r + rows] = np.clip(px * (1 - a) + DRY * a + 0.5, 0, 255).astype(np.uint8)


def _retone(image: np.ndarray, strength: float, rng: np.random.Generator, rows: int = 1024) -> None:
    """Another camera's exposure, white balance and gamma (one table) and its noise, in place, in strips (a world
    raster is too large for float copies)."""
    gain = np.exp(rng.normal(0, 0.16 * strength)) * np.exp(rng.normal(0, 0.05 * strength, 3))
    gamma = float(np.exp(rng.normal(0, 0.12 * strength)))
    lut = (np.clip(_LEVELS[:, None] * gain, 0, 1) ** gamma * 255 + 0.5).astype(np.uint8).reshape(256, 1, 3)
    cv2.LUT(image, lut, dst=image)
    for r in range(0, image.shape[0], rows):
        strip = image[r:r + rows]
        noise = rng.standard_normal(strip.shape[:2], dtype=np.float32)[..., None] * np.float32(3 * strength)
        strip[:] = np.clip(strip + noise + 0.5, 0, 255).astype(np.uint8)


def sense(rgb: np.ndarray, sensor: Sensor, gsd_m: float, rng: np.random.Generator) -> np.ndarray:
    """What the reference sensor recorded of `rgb`: blurred, sampled at its coarser GSD, re-toned, compressed, and
    resampled onto the same pixel grid (so the georeferencing is unchanged)."""
    h, w = rgb.shape[:2]
    sharp = cv2.GaussianBlur(rgb, (0, 0), sensor.blur_m / gsd_m)
    factor = sensor.gsd_m / gsd_m
    small = cv2.resize(sharp, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)
    _retone(small, sensor.tone, rng)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY,
                                                                             sensor.jpeg_quality])
    if not ok:  # pragma: no cover - OpenCV without codecs
        raise ValueError("OpenCV could not encode the reference as JPEG")
    small = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
