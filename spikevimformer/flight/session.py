"""Live flights for a service: a companion computer posts frames one at a time and reads the filtered track back.

A registry holds at most `max_flights` flights, drops those idle for `idle_s` seconds (on the next call that
touches the registry: no background thread) and lets each flight keep at most `max_frames` frames. A flight takes
one frame at a time (`claim` refuses a second while one is posted; a frame that waited would lag behind the drone)
and its track is read under the same state lock the frame is fused under, so a read never sees half a frame.
"""

from __future__ import annotations

import copy
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone

from PIL import Image

from ..geo.localize import Localizer
from .fly import Flight, FlightConfig, FlightTracker
from .frames import Frame, epoch_s, exif_datetime
from .track import TrackPoint

MAX_FLIGHTS = 16
IDLE_S = 600.0  # a companion computer that lost its link for 10 minutes starts a new flight
MAX_FRAMES = 20_000  # 67 min at 5 frames/s; about 2 KB a frame kept (its point and the filter's state)
SMOOTHED_FIELDS = ("smoothed_latitude", "smoothed_longitude", "smoothed_radius_m")
WARNINGS_SHOWN = 10  # the latest of a flight's warnings in its summary (frames the localizer refused, ...)


class UnknownFlight(LookupError):
    """No flight by that id: never created, deleted, or dropped when idle."""


class TooManyFlights(RuntimeError):
    """The registry holds its maximum of flights; `retry_after_s` is when the stalest one expires."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class FrameConflict(Exception):
    """A frame the flight's state refuses: one already posted, time going back, another clock, the frame limit."""


@dataclass(frozen=True)
class SessionLimits:
    """How many flights live at once, how long one may stay idle (seconds), how many frames each keeps."""

    max_flights: int = MAX_FLIGHTS
    idle_s: float = IDLE_S
    max_frames: int = MAX_FRAMES

    def __post_init__(self) -> None:
        if self.max_flights < 1 or self.max_frames < 1 or not self.idle_s > 0:
            raise ValueError(f"--max-flights and --max-flight-frames must be at least 1 and --flight-idle-s "
                             f"positive, got {self.max_flights}, {self.max_frames} and {self.idle_s}")  # fmt: skip


@dataclass(frozen=True)
class Progress:
    """What a flight's summary shows without waiting for a frame in work (replaced whole after each frame)."""

    frames: int = 0
    fixes: int = 0
    rejected: int = 0
    last: TrackPoint | None = None


class FlightSession:
    """One live flight: its tracker, its clock (what times its frames), and when it was last touched."""

    def __init__(self, flight_id: str, tracker: FlightTracker, name: str, fps: float | None, limits: SessionLimits,
                 clock: Callable[[], float]) -> None:  # fmt: skip
        self.id, self.tracker, self.name, self.fps, self.limits = flight_id, tracker, name, fps, limits
        self.created = datetime.now(timezone.utc)
        self._clock = clock
        self.touched = self._born = clock()
        self.progress = Progress()
        self.time_source: str | None = None  # "time_s", "fps" or "exif": set by the first frame, kept by the rest
        self._t0: float | None = None  # the first frame's time on that clock, seconds
        self._last_t: float | None = None
        self._posting = threading.Lock()  # held from a frame's arrival to its answer
        self._state = threading.Lock()  # held while a frame is fused or the track is read

    @property
    def busy(self) -> bool:
        return self._posting.locked()

    @property
    def last_seen(self) -> datetime:
        """When a request last touched the flight (UTC; measured on the registry's clock since `created`)."""
        return self.created + timedelta(seconds=self.touched - self._born)

    def idle_s(self) -> float:
        return self._clock() - self.touched

    def claim(self) -> None:
        """Take the flight's turn for one frame (release() gives it back); FrameConflict when a frame is already
        posted or the flight holds its limit of frames."""
        if not self._posting.acquire(blocking=False):
            raise FrameConflict(f"flight {self.id} is localizing a frame already; post each frame after the answer "
                                "to the one before (frames are not queued: a queued frame lags behind the drone)")
        if self.progress.frames >= self.limits.max_frames:
            self._posting.release()
            raise FrameConflict(f"flight {self.id} holds its limit of {self.limits.max_frames} frames (serve "
                                "--max-flight-frames); create a new flight starting at this one's last position")
        self.touched = self._clock()

    def release(self) -> None:
        self.touched = self._clock()
        self._posting.release()

    def add(self, image: Image.Image, exif: Image.Exif, data: bytes | None, name: str,
            time_s: float | None = None) -> TrackPoint:  # fmt: skip
        """Localize the next frame and fuse it; the online estimate. Its time: `time_s` (seconds on any clock) if
        given, else the frame count over the flight's fps, else the photo's EXIF DateTimeOriginal (+ SubSec). The
        flight's date (its GPX and KML times) is the first frame's EXIF time where that times it, else the moment
        the first frame arrived: a live flight's frames are posted as they are taken.

        Raises ValueError for a frame with no time or a non-finite one, FrameConflict for a time before the previous
        frame's or on another clock than the first frame's."""
        with self._state:
            source, when, taken = self._frame_time(exif, time_s)
            if self.time_source is not None and source != self.time_source:
                raise FrameConflict(f"frame {name} is timed by {source} but this flight's first frame was timed by "
                                    f"{self.time_source}; time every frame of a flight the same way")  # fmt: skip
            if self._last_t is not None and when < self._last_t:
                raise FrameConflict(f"frame {name} is at {when - self._t0:.3f} s, before the previous frame at "
                                    f"{self._last_t - self._t0:.3f} s; post a flight's frames in time order (drop a "
                                    "frame that arrives late)")  # fmt: skip
            t0 = when if self._t0 is None else self._t0
            point = self.tracker.add(Frame(self.progress.frames, name, when - t0, image, exif, data, taken=taken))
            self.time_source, self._t0, self._last_t = source, t0, when  # only once the frame is in the track
            p = self.progress
            self.progress = Progress(p.frames + 1, p.fixes + (point.fix_latitude is not None),
                                     p.rejected + point.rejected, point)  # fmt: skip
        return point

    def track(self, smoothed: bool = False) -> Flight:
        """The flight so far: online estimates (each from the frames before it) in both the online and the
        smoothed fields, or with `smoothed` the Rauch-Tung-Striebel pass over every frame so far. Waits for a frame
        in work."""
        with self._state:
            live = self.tracker.flight
            view = replace(live, points=list(live.points), warnings=list(live.warnings))
            if not smoothed:
                view.points = [replace(p, **dict(zip(SMOOTHED_FIELDS, (p.latitude, p.longitude, p.radius_m),
                                                     strict=True))) for p in view.points]  # fmt: skip
                return view
            finishing = copy.copy(self.tracker)  # finish() fills in this copy's points; the live flight goes on
            finishing.flight = view
            return finishing.finish()

    def brief(self) -> dict:
        """The flight in a list of flights, as JSON: its id, name, times (UTC), counts and last online position
        (null until a frame is placed; never waits for a frame in work)."""
        p = self.progress
        placed = p.last is not None and p.last.placed
        return {"id": self.id, "name": self.name, "created": self.created.isoformat(timespec="seconds"),
                "last_seen": self.last_seen.isoformat(timespec="seconds"), "frames": p.frames, "fixes": p.fixes,
                "busy": self.busy,
                "position": {"latitude": p.last.latitude, "longitude": p.last.longitude, "radius_m": p.last.radius_m,
                             "source": p.last.source, "time_s": p.last.time_s} if placed else None}  # fmt: skip

    def summary(self) -> dict:
        """The flight's brief, settings, counts and last online point, as JSON (never waits for a frame in work)."""
        cfg, p, started = self.tracker.cfg, self.progress, self.tracker.flight.started
        return {**self.brief(),
                "start": None if cfg.start is None else {"latitude": cfg.start[0], "longitude": cfg.start[1],
                                                         "radius_m": cfg.start_radius_m},
                "fps": self.fps, "accel": cfg.filter.accel_sigma, "time_source": self.time_source,
                "started": None if started is None else started.isoformat(timespec="milliseconds"),
                "rejected": p.rejected, "max_frames": self.limits.max_frames,
                "expires_after_idle_s": self.limits.idle_s, "warnings": self.tracker.flight.warnings[-WARNINGS_SHOWN:],
                "last": None if p.last is None else point_json(p.last)}  # fmt: skip

    def _frame_time(self, exif: Image.Exif, time_s: float | None) -> tuple[str, float, datetime]:
        """(clock, seconds, when taken) of the next frame: when taken is its EXIF time on the exif clock, else now."""
        if time_s is not None:
            if not math.isfinite(time_s):
                raise ValueError(f"time_s must be a finite number of seconds, got {time_s}")
            return "time_s", float(time_s), datetime.now(timezone.utc)
        if self.fps is not None:
            return "fps", self.progress.frames / self.fps, datetime.now(timezone.utc)
        taken = exif_datetime(exif)
        if taken is None:
            raise ValueError("the frame has no time: send it in field time_s (seconds), as a photo with EXIF "
                             "DateTimeOriginal, or create the flight with fps")  # fmt: skip
        return "exif", epoch_s(taken), taken


def point_json(point: TrackPoint) -> dict:
    """A frame's online estimate as JSON: the track's CSV columns less the smoothed ones, NaN as null, and `fix`
    (a camera fix was fused)."""
    out = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(point).items()
           if k not in SMOOTHED_FIELDS}  # fmt: skip
    out["fix"] = point.source == "fix"
    return out


class FlightRegistry:
    """The live flights of one localizer, safe to call from any thread."""

    def __init__(self, localizer: Localizer, limits: SessionLimits | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.localizer, self.limits, self._clock = localizer, limits or SessionLimits(), clock
        self._flights: dict[str, FlightSession] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._sweep()
            return len(self._flights)

    def create(self, cfg: FlightConfig, fps: float | None = None, name: str | None = None) -> FlightSession:
        """A new flight. Raises ValueError for a non-positive fps or a start the index does not reach,
        TooManyFlights when the registry is full."""
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be positive, got {fps}")
        with self._lock:  # refused before building the tracker, which may check the start against the whole index
            self._check_room()
        tracker = FlightTracker(self.localizer, cfg)
        flight_id = secrets.token_hex(8)  # not guessable: one client cannot post into another's flight by chance
        session = FlightSession(flight_id, tracker, name or flight_id, fps, self.limits, self._clock)
        with self._lock:
            self._check_room()
            self._flights[flight_id] = session
        return session

    def live(self) -> list[FlightSession]:
        """Every live flight, oldest first, untouched (a listing keeps no flight alive)."""
        with self._lock:
            self._sweep()
            return list(self._flights.values())

    def get(self, flight_id: str) -> FlightSession:
        """The flight, touched (its idle time starts again); UnknownFlight when there is none by that id."""
        with self._lock:
            self._sweep()
            session = self._flights.get(flight_id)
            if session is None:
                raise UnknownFlight(self._unknown(flight_id))
            session.touched = self._clock()
            return session

    def delete(self, flight_id: str) -> FlightSession:
        """Drop the flight (a frame in work still gets its answer); UnknownFlight when there is none."""
        with self._lock:
            self._sweep()
            session = self._flights.pop(flight_id, None)
            if session is None:
                raise UnknownFlight(self._unknown(flight_id))
            return session

    def _check_room(self) -> None:
        """TooManyFlights when full after the idle ones are dropped (the registry's lock held)."""
        self._sweep()
        if len(self._flights) < self.limits.max_flights:
            return
        stalest = max((s.idle_s() for s in self._flights.values() if not s.busy), default=0.0)
        raise TooManyFlights(f"the service holds its limit of {self.limits.max_flights} flights (serve "
                             "--max-flights); delete finished ones (DELETE /flights/{id}) or wait for idle ones to "
                             f"expire after {self.limits.idle_s:g} s", max(1.0, self.limits.idle_s - stalest))

    def _sweep(self) -> None:
        """Drop the flights idle longer than the limit (never one with a frame in work)."""
        for flight_id in [i for i, s in self._flights.items() if not s.busy and s.idle_s() > self.limits.idle_s]:
            del self._flights[flight_id]

    def _unknown(self, flight_id: str) -> str:
        return (f"no flight {flight_id!r}: it was never created, was deleted, or was dropped after "
                f"{self.limits.idle_s:g} s idle (serve --flight-idle-s); GET /flights lists the live ones, POST "
                "/flights starts a new one")  # fmt: skip
