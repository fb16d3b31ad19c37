"""Frames -> a filtered track: each frame localized as `localize` does it, its camera fix fused by the filter.

Frames are answered one at a time in time order (online: each point depends only on the frames before it); the
smoothed pass runs over the whole flight at the end. A frame without a fix is placed where the filter predicts
it; before the first fix (and without --start) a frame has only its tile-level answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from ..geo.localize import Localization, Localizer
from ..geodesy import LocalFrame, haversine_m
from .filter import Estimate, FilterConfig, TrackFilter
from .frames import Frame
from .track import TrackPoint


@dataclass(frozen=True)
class FlightConfig:
    """Where the flight starts (the last GNSS position, if known) and the filter's motion model."""

    start: tuple[float, float] | None = None  # latitude, longitude
    start_radius_m: float = 50.0
    filter: FilterConfig = field(default_factory=FilterConfig)

    def __post_init__(self) -> None:
        if self.start is not None:
            lat, lon = self.start
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"--start {lat} {lon} is not a latitude and longitude in degrees")
        if not self.start_radius_m > 0:
            raise ValueError(f"--start-radius must be positive, got {self.start_radius_m}")


@dataclass
class Flight:
    """The track so far, with what each frame cost."""

    points: list[TrackPoint] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # wall time per frame, all stages
    warnings: list[str] = field(default_factory=list)

    @property
    def fixes(self) -> int:
        return sum(p.fix_latitude is not None for p in self.points)

    @property
    def rejected(self) -> int:
        return sum(p.rejected for p in self.points)


class FlightTracker:
    """One flight through one localizer: `add(frame)` answers a frame online, `finish()` smooths the track."""

    def __init__(self, localizer: Localizer, cfg: FlightConfig | None = None) -> None:
        self.localizer = localizer
        self.cfg = cfg or FlightConfig()
        if self.cfg.start is not None:
            _check_start(localizer, *self.cfg.start, self.cfg.start_radius_m)
            self.origin = LocalFrame(*self.cfg.start)
            start_en, start_r = np.zeros(2), self.cfg.start_radius_m
        else:
            centre = localizer.layout().mean(axis=0)
            self.origin = LocalFrame(float(centre[0]), float(centre[1]))
            start_en, start_r = None, None
        self.filter = TrackFilter(self.cfg.filter, start_en, start_r)
        self.flight = Flight()

    def add(self, frame: Frame) -> TrackPoint:
        """Localize one frame (the next in time) and fuse its fix; the online estimate for it."""
        begin = time.perf_counter()
        answer = None
        if frame.image is None:
            self.flight.warnings.append(f"{frame.name}: {frame.error}")
            est = self.filter.step(frame.time_s)
        else:
            answer = self._localize(frame)
            fix = np.array(self.origin.to_local(answer.camera["latitude"], answer.camera["longitude"])) \
                if answer.fix else None  # fmt: skip
            est = self.filter.step(frame.time_s, fix, answer.radius_m if answer.fix else None)
        point = self._point(frame, answer, est)
        self.flight.points.append(point)
        self.flight.seconds.append(time.perf_counter() - begin)
        return point

    def finish(self) -> Flight:
        """The flight with every point's smoothed position filled in (and a warning when no frame got a fix)."""
        if self.flight.points and not self.flight.fixes:
            why = next((p.reason for p in self.flight.points if p.reason), "")
            self.flight.warnings.append(
                f"no frame got a camera fix (the first frame's reason: {why or 'none given'}); frames without EXIF "
                "(a video, stripped photos) need the lens: --fov DEG or --camera FILE")  # fmt: skip
        smoothed = self.filter.smooth()
        for i, (point, est) in enumerate(zip(self.flight.points, smoothed, strict=True)):
            if est.source == "none":  # never known: the smoothed position is the online one (tile level)
                self.flight.points[i] = replace(point, smoothed_latitude=point.latitude,
                                                smoothed_longitude=point.longitude,
                                                smoothed_radius_m=point.radius_m)  # fmt: skip
                continue
            lat, lon = self.origin.to_geo(*est.en)
            self.flight.points[i] = replace(point, smoothed_latitude=float(lat), smoothed_longitude=float(lon),
                                            smoothed_radius_m=est.radius_m)  # fmt: skip
        return self.flight

    def _localize(self, frame: Frame) -> Localization:
        loc = self.localizer
        try:
            intr = loc.intrinsics(frame.image, frame.exif, frame.name, data=frame.data)
            prior = loc.photo_prior(frame.data, frame.exif, frame.name)
            return loc.localize([frame.image], [frame.name], intrinsics=[intr], priors=[prior])[0]
        except ValueError as exc:  # a frame the localizer refuses (its EXIF lens, its size): predicted over
            self.flight.warnings.append(f"{frame.name}: {exc}")
            return loc.localize([frame.image], [frame.name], intrinsics=[None])[0]

    def _point(self, frame: Frame, answer: Localization | None, est: Estimate) -> TrackPoint:
        fix = answer is not None and answer.fix
        camera = answer.camera if fix else {}
        if est.source == "none":  # nothing known yet: the tile-level answer (or nothing, for an unreadable frame)
            lat, lon = (answer.latitude, answer.longitude) if answer is not None else (np.nan, np.nan)
            radius, source = (answer.radius if answer is not None else np.nan), "tile"
        else:
            lat, lon = self.origin.to_geo(*est.en)
            radius, source = est.radius_m, est.source
        return TrackPoint(
            frame=frame.index, name=frame.name, time_s=frame.time_s, latitude=float(lat), longitude=float(lon),
            radius_m=float(radius), source=source, smoothed_latitude=float(lat), smoothed_longitude=float(lon),
            smoothed_radius_m=float(radius), height_m=camera.get("height_m"), altitude_m=camera.get("altitude_m"),
            heading_deg=camera.get("heading_deg"), inliers=int(answer.inliers) if answer is not None else 0,
            rejected=est.rejected, fix_latitude=camera.get("latitude"), fix_longitude=camera.get("longitude"),
            fix_radius_m=answer.radius_m if fix else None,
            reason=frame.error if answer is None else answer.reason,
        )  # fmt: skip


def _check_start(localizer: Localizer, lat: float, lon: float, radius_m: float) -> None:
    """Refuse a start position the index does not reach (a typo, swapped latitude and longitude)."""
    layout = localizer.layout()
    nearest = float(np.min(haversine_m(lat, lon, layout[:, 0], layout[:, 1])))
    reach = max(t.footprint_m for t in localizer.index.tiles)
    if nearest > radius_m + reach:
        raise ValueError(f"--start {lat:g} {lon:g} is {nearest / 1000:.1f} km from the nearest tile of the index "
                         f"{localizer.index.folder}: is it the flight's start (latitude first)?")  # fmt: skip


def fly(localizer: Localizer, frames: Iterable[Frame], cfg: FlightConfig | None = None,
        on_point: Callable[[TrackPoint], None] | None = None) -> Flight:  # fmt: skip
    """The track of a flight's frames (in time order), online then smoothed; `on_point` sees each online point as
    it is made (a progress bar, a stream)."""
    tracker = FlightTracker(localizer, cfg)
    for frame in frames:
        point = tracker.add(frame)
        if on_point is not None:
            on_point(point)
    return tracker.finish()
