"""A flight, not a photo: frames or a video -> each frame localized -> a filtered track and its files."""

from .filter import Estimate, FilterConfig, TrackFilter
from .fly import Flight, FlightConfig, FlightTracker, fly
from .frames import Frame, read_frames
from .metrics import flight_metrics
from .track import TrackPoint, write_all

__all__ = [
    "Estimate", "FilterConfig", "Flight", "FlightConfig", "FlightTracker", "Frame", "TrackFilter", "TrackPoint",
    "flight_metrics", "fly", "read_frames", "write_all",
]
