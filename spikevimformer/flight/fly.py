"""Frames -> a filtered track: each frame localized as `localize` does it, its camera fix fused by the filter.

Frames are answered one at a time in time order (online: each point depends only on the frames before it); the
smoothed pass runs over the whole flight at the end. Once the track is known, a frame searches only the tiles
around where the filter predicts it (the region widens while nothing is seen), and its motion since the frame
before (motion.py) is fused as a displacement, so that a frame without a fix is placed along the way the drone flew;
before the first fix (and without --start) a frame has only its tile-level answer. That motion also carries the
last fix's footprint to the frame, and learned features match the frame warped there rather than searching its
orientation (on a 300-frame flight across dates: 63.7 % fixes instead of 52.0 %, 2.4 times the frames a second).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

import numpy as np
from PIL import Image

from ..geo.intrinsics import Intrinsics, undistort
from ..geo.localize import Localization, Localizer, Region
from ..geodesy import LocalFrame, haversine_m
from ..registration.priors import Prior
from .filter import Estimate, FilterConfig, TrackFilter
from .frames import Frame
from .motion import FrameFeatures, FrameMatcher, GroundMapping, camera_centre
from .track import TrackPoint


@dataclass(frozen=True)
class StartNames:
    """What the caller calls the start and its radius (command-line flags, request fields), so that a refused
    start names the caller's own inputs; `position` formats the start with `{lat}` and `{lon}`."""

    position: str
    radius: str

    def start(self, lat: float, lon: float) -> str:
        return self.position.format(lat=f"{lat:g}", lon=f"{lon:g}")


FLAGS = StartNames("--start {lat} {lon}", "--start-radius")


@dataclass(frozen=True)
class FlightConfig:
    """Where the flight starts (the last GNSS position, if known) and the filter's motion model; `names` words
    the refusal of a bad start in the caller's terms."""

    start: tuple[float, float] | None = None  # latitude, longitude
    start_radius_m: float = 50.0
    filter: FilterConfig = field(default_factory=FilterConfig)
    region_search: bool = True  # search only the tiles around the prediction once the track is known
    relative_motion: bool = True  # fuse the motion between consecutive frames
    motion_scale_sigma: float = 0.05  # relative motion's error: this share of the displacement ...
    motion_floor_m: float = 0.5  # ... plus this much (metres, standard deviation)
    names: StartNames = field(default=FLAGS, compare=False)

    def __post_init__(self) -> None:
        if self.start is not None:
            lat, lon = self.start
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"{self.names.start(lat, lon)} is not a latitude and longitude in degrees; give "
                                 "the latitude first, both in decimal degrees")  # fmt: skip
        if not self.start_radius_m > 0:
            raise ValueError(f"{self.names.radius} must be positive metres, got {self.start_radius_m}")


@dataclass
class Flight:
    """The track so far, with what each frame cost, and when it started (UTC) where its first frame says."""

    points: list[TrackPoint] = field(default_factory=list)
    started: datetime | None = None  # when time_s was 0: GPX and KML times are this plus each point's time_s
    seconds: list[float] = field(default_factory=list)  # wall time per frame, all stages
    stages: list[dict[str, float]] = field(default_factory=list)  # per frame: motion, model, search, register s
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
            _check_start(localizer, self.cfg)
            self.origin = LocalFrame(*self.cfg.start)
            start_en, start_r = np.zeros(2), self.cfg.start_radius_m
        else:
            centre = localizer.layout().mean(axis=0)
            self.origin = LocalFrame(float(centre[0]), float(centre[1]))
            start_en, start_r = None, None
        self.filter = TrackFilter(self.cfg.filter, start_en, start_r)
        self.flight = Flight()
        self.motion = FrameMatcher() if self.cfg.relative_motion else None
        self._last: _Seen | None = None  # the last readable frame, for the motion to the next
        self._look_ahead_m = max(t.footprint_m for t in localizer.index.tiles)  # camera to look-at point, last fix
        # a distorted frame is remapped once, at the size registration works at (as `localize` does it)
        self._work_px = localizer.registrar.cfg.photo_max_px if localizer.registrar is not None else None

    def add(self, frame: Frame) -> TrackPoint:
        """Localize one frame (the next in time) and fuse its fix; the online estimate for it."""
        begin = time.perf_counter()
        answer, motion_s = None, 0.0
        if not self.flight.points and frame.taken is not None:
            self.flight.started = self._started(frame)
        if frame.image is None:
            self.flight.warnings.append(f"{frame.name}: {frame.error}")
            est = self.filter.step(frame.time_s)
        else:
            intr, prior = self._lens(frame)
            # one pinhole for the motion and the fix: a footprint maps undistorted pixels, and a lens's bending
            # (a DJI Phantom 4's k1 -0.26) moves a raw frame's edges by several per cent
            image, intr = undistort(frame.image, intr, self._work_px)
            seen = self.motion.features(image) if self.motion is not None else None
            moved, mapping = self._relative_motion(image.size, seen, intr)
            motion_s = time.perf_counter() - begin
            answer = self._localize(frame, image, intr, prior, self._region(frame.time_s, mapping))
            fix = np.array(self.origin.to_local(answer.camera["latitude"], answer.camera["longitude"])) \
                if answer is not None and answer.fix else None  # fmt: skip
            est = self.filter.step(frame.time_s, fix, answer.radius_m if fix is not None else None, *moved)
            if fix is not None and est.source == "fix" and not est.rejected:  # a fresh anchor for the motion
                mapping = self._anchor(answer, image.size) or mapping
                self._warn_restart(frame, est, fix)
                look = answer.look_at
                if look is not None:
                    self._look_ahead_m = float(haversine_m(answer.camera["latitude"], answer.camera["longitude"],
                                                           look["latitude"], look["longitude"]))  # fmt: skip
            if seen is not None:
                self._last = _Seen(seen, mapping, intr, frame.time_s)
        point = self._point(frame, answer, est)
        self.flight.points.append(point)
        self.flight.seconds.append(time.perf_counter() - begin)
        self.flight.stages.append({"motion": motion_s} | ({"model": answer.model_s, "search": answer.search_s,
                                                          "register": answer.register_s} if answer else {}))
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

    def _warn_restart(self, frame: Frame, est: Estimate, fix: np.ndarray) -> None:
        """A warning where a fix restarted a track that was known (a segment starts: no prediction before it)."""
        last = self.flight.points[-1] if self.flight.points else None
        if est.prior_mean is not None or last is None or last.source == "tile":
            return
        off = float(np.hypot(*(fix - np.array(self.origin.to_local(last.latitude, last.longitude)))))
        self.flight.warnings.append(
            f"{frame.name}: the track restarted from this fix, {off:.0f} m from where the frame before had the drone "
            "(a wrong --start, or a track that drifted while nothing was seen); the frames before it are placed "
            "again by the smoothed track")  # fmt: skip

    def _started(self, frame: Frame) -> datetime:
        """When the flight's clock read 0, in UTC, from the first frame's time taken; a camera clock without a zone
        is taken as UTC, with a warning (EXIF before 2.31 records none)."""
        taken = frame.taken
        if taken.tzinfo is None:
            self.flight.warnings.append(
                f"{frame.name}: its EXIF time has no zone (no OffsetTimeOriginal), so the track's GPX and KML times "
                "take the camera clock as UTC; shift them by the camera's UTC offset if it was not UTC")  # fmt: skip
            taken = taken.replace(tzinfo=timezone.utc)
        return taken.astimezone(timezone.utc) - timedelta(seconds=frame.time_s)

    def _lens(self, frame: Frame) -> tuple[Intrinsics | None, Prior | None]:
        """The frame's lens and what it records of its attitude; a refused record is a warning and no lens."""
        loc = self.localizer
        try:
            return (loc.intrinsics(frame.image, frame.exif, frame.name, data=frame.data),
                    loc.photo_prior(frame.data, frame.exif, frame.name))  # fmt: skip
        except ValueError as exc:
            self.flight.warnings.append(f"{frame.name}: {exc}")
            return None, None

    def _localize(self, frame: Frame, image: Image.Image, intr: Intrinsics | None, prior: Prior | None,
                  region: Region | None) -> Localization | None:  # fmt: skip
        """The frame's answer, or None (a warning) for a frame the localizer refuses (too small): predicted over."""
        try:
            return self.localizer.localize([image], [frame.name], intrinsics=[intr], priors=[prior],
                                           regions=[region])[0]  # fmt: skip
        except ValueError as exc:
            self.flight.warnings.append(f"{frame.name}: {exc}")
            return None

    def _region(self, time_s: float, mapping: GroundMapping | None) -> Region | None:
        """The tiles worth searching: around the predicted camera, by its 95 % radius and how far ahead of the
        camera it looks, and where the frame's motion puts its corners; None (the whole index) while the track is
        unknown."""
        if not self.cfg.region_search or self.filter.mean is None:
            return None
        ahead = self.filter.predict(time_s)
        lat, lon = self.origin.to_geo(*ahead.en)
        footprint = None
        if mapping is not None:
            corners = mapping.corners()
            if corners is not None:
                footprint = tuple((float(a), float(b)) for a, b in zip(*self.origin.to_geo(*corners.T), strict=True))
        return Region(float(lat), float(lon), ahead.radius_m + self._look_ahead_m, footprint)

    def _relative_motion(self, size: tuple[int, int], seen: FrameFeatures | None, intr: Intrinsics | None,
                         ) -> tuple[tuple[np.ndarray | None, float | None], GroundMapping | None]:  # fmt: skip
        """((displacement east/north metres, its standard deviation) or (None, None), this frame's ground mapping
        or None) since the frame before, where both are matched and the one before has a ground mapping."""
        last = self._last
        if seen is None or last is None or last.mapping is None or intr is None or last.intr is None:
            return (None, None), None
        found = self.motion.homography(seen, last.features)
        if found is None:
            return (None, None), None
        mapping = last.mapping.carried(found[0], size)
        before, now = camera_centre(last.mapping, last.intr.matrix), camera_centre(mapping, intr.matrix)
        if before is None or now is None:
            return (None, None), None
        if last.time_s != self.filter.time_s:  # an unreadable frame between: the filter's last step is not `last`
            return (None, None), mapping
        moved = now[:2] - before[:2]
        return (moved, self.cfg.motion_scale_sigma * float(np.hypot(*moved)) + self.cfg.motion_floor_m), mapping

    def _anchor(self, answer: Localization, size: tuple[int, int]) -> GroundMapping | None:
        """The ground mapping a fix's footprint gives (None without one)."""
        if not answer.footprint:
            return None
        corners = np.array([self.origin.to_local(lat, lon) for lat, lon in answer.footprint])
        return GroundMapping.from_footprint(corners, size)

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
            reason=(frame.error or "not localized (see the warnings)") if answer is None else answer.reason,
        )  # fmt: skip


@dataclass(frozen=True)
class _Seen:
    """What the motion to the next frame needs of a frame."""

    features: FrameFeatures
    mapping: GroundMapping | None
    intr: Intrinsics | None
    time_s: float


def _check_start(localizer: Localizer, cfg: FlightConfig) -> None:
    """Refuse a start position the index does not reach (a typo, swapped latitude and longitude)."""
    lat, lon = cfg.start
    layout = localizer.layout()
    nearest = float(np.min(haversine_m(lat, lon, layout[:, 0], layout[:, 1])))
    reach = max(t.footprint_m for t in localizer.index.tiles)
    if nearest > cfg.start_radius_m + reach:
        # no folder named: the message reaches HTTP clients too, who have no use for a server path
        raise ValueError(f"{cfg.names.start(lat, lon)} is {nearest / 1000:.1f} km from the nearest tile of the "
                         "index: is it the flight's start, latitude and longitude not swapped? If it is known only "
                         f"roughly, widen {cfg.names.radius} (metres)")  # fmt: skip


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
