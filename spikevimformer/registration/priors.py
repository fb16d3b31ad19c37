"""Orientation priors where cameras write them: DJI's XMP packet, EXIF GPSImgDirection, or flags.

DJI drones record the gimbal's attitude in XMP (`drone-dji:GimbalYawDegree`, degrees clockwise from north;
`GimbalPitchDegree`, 0 = horizon, -90 = straight down; `FlightYawDegree`, the airframe; `RelativeAltitude`,
metres above take-off). Registration turns a photo north-up by its heading before learned features see it.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace

from PIL import Image

GPS_IFD = 0x8825
GPS_IMG_DIRECTION = 0x11  # EXIF 2.3: direction of the image when captured, degrees 0..359.99
XMP_START, XMP_END = b"<x:xmpmeta", b"</x:xmpmeta>"
DJI_KEYS = ("GimbalYawDegree", "FlightYawDegree", "GimbalPitchDegree", "GimbalRollDegree", "RelativeAltitude")


@dataclass(frozen=True)
class Prior:
    """What is known of the camera before matching; None where nothing is known."""

    heading_deg: float | None = None  # image-up azimuth, degrees clockwise from north, [0, 360)
    pitch_deg: float | None = None  # depression of the optical axis below the horizon, 0..90 (90 = straight down)
    altitude_m: float | None = None  # height above the take-off point (DJI) or as given
    roll_deg: float | None = None  # rotation about the optical axis (DJI gimbal, right side down > 0); with the
    # pitch it fixes gravity in the camera frame (a gimbal's roll is 0 when it does not say)
    source: str = ""  # where the values came from, for the answer
    problem: str = ""  # why a record in the file was not used (the photo is still answered), for its warnings

    @property
    def empty(self) -> bool:
        return self.heading_deg is None and self.pitch_deg is None and self.altitude_m is None


def check_heading(value: float, label: str = "--heading") -> float:
    """The heading wrapped to [0, 360) (DJI writes -180..180); ValueError naming it beyond one turn either way."""
    if not math.isfinite(value) or not -360.0 <= value <= 360.0:
        raise ValueError(f"{label} {value:g} is no heading: give degrees clockwise from north, -360 to 360")
    return round(value % 360.0, 6) % 360.0


def check_pitch(value: float, label: str = "--pitch") -> float:
    """The depression angle in [0, 90]; ValueError naming it otherwise."""
    if not math.isfinite(value) or not 0.0 <= value <= 90.0:
        raise ValueError(f"{label} {value:g} is no pitch: give degrees below the horizon, 0-90 (90 = straight down)")
    return value


def check_altitude(value: float, label: str = "--altitude") -> float:
    if not math.isfinite(value) or not 0.0 < value <= 10_000.0:
        raise ValueError(f"{label} {value:g} is no altitude: give metres above the ground, more than 0")
    return value


def xmp_packet(data: bytes) -> bytes | None:
    """The XMP packet embedded in an image file's bytes (JPEG APP1, TIFF, PNG iTXt all store it as text)."""
    start = data.find(XMP_START)
    if start < 0:
        return None
    end = data.find(XMP_END, start)
    return data[start : end + len(XMP_END)] if end >= 0 else data[start:]


def xmp_fields(packet: bytes, keys: tuple[str, ...], label: str) -> dict[str, str]:
    """The `keys` found in an XMP packet, as attributes or elements of any namespace prefix, as text.

    Raises ValueError naming the file for a packet that is not XML.
    """
    try:
        root = ET.fromstring(packet)
    except ET.ParseError as exc:
        raise ValueError(f"{label}: its XMP packet is malformed ({exc})") from exc
    found: dict[str, str] = {}
    for element in root.iter():
        for name, value in element.attrib.items():
            local = name.rsplit("}", 1)[-1]
            if local in keys:
                found.setdefault(local, value)
        local = element.tag.rsplit("}", 1)[-1] if isinstance(element.tag, str) else ""
        if local in keys and element.text:
            found.setdefault(local, element.text)
    return found


def dji_values(packet: bytes, label: str) -> dict[str, float]:
    """DJI_KEYS found in an XMP packet (xmp_fields), as floats.

    Raises ValueError naming the file for a packet that is not XML or a value that is not a number.
    """
    found = xmp_fields(packet, DJI_KEYS, label)
    out = {}
    for key, value in found.items():
        try:
            number = float(value.strip())
        except ValueError as exc:
            raise ValueError(f"{label}: XMP {key} is {value!r}, not a number") from exc
        if not math.isfinite(number):
            raise ValueError(f"{label}: XMP {key} is {value!r}, not a finite number")
        out[key] = number
    return out


def exif_direction(exif: Image.Exif | None) -> float | None:
    """EXIF GPSImgDirection in degrees, or None."""
    if not exif:
        return None
    value = exif.get_ifd(GPS_IFD).get(GPS_IMG_DIRECTION)
    try:
        number = float(value) if value is not None else None
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if number is not None and math.isfinite(number) and 0.0 <= number <= 360.0 else None


def read_prior(data: bytes, exif: Image.Exif | None, label: str) -> Prior:
    """The orientation the file records: DJI XMP gimbal yaw/pitch and relative altitude, else EXIF
    GPSImgDirection for the heading. Raises ValueError naming the file and value for malformed records
    (recorded_prior turns that into a warning)."""
    packet = xmp_packet(data)
    dji = dji_values(packet, label) if packet else {}
    heading, pitch, altitude, roll, sources = None, None, None, 0.0, []
    for key in ("GimbalYawDegree", "FlightYawDegree"):
        if key in dji:
            heading = round(dji[key] % 360.0, 6) % 360.0
            sources.append(f"XMP {key}")
            break
    if heading is None and (direction := exif_direction(exif)) is not None:
        heading = direction % 360.0
        sources.append("EXIF GPSImgDirection")
    if "GimbalPitchDegree" in dji:
        pitch = -dji["GimbalPitchDegree"]  # DJI: -90 straight down; ours: 90 straight down
        if not -1.0 <= pitch <= 91.0:
            raise ValueError(f"{label}: XMP GimbalPitchDegree {dji['GimbalPitchDegree']:g} looks above the "
                             "horizon")  # fmt: skip
        pitch = min(max(pitch, 0.0), 90.0)
        sources.append("XMP GimbalPitchDegree")
        roll = dji.get("GimbalRollDegree", 0.0)
        if not -45.0 <= roll <= 45.0:
            raise ValueError(f"{label}: XMP GimbalRollDegree {roll:g} is no gimbal roll (-45..45)")
    if "RelativeAltitude" in dji and dji["RelativeAltitude"] > 0:
        altitude = dji["RelativeAltitude"]
        sources.append("XMP RelativeAltitude")
    return Prior(heading, pitch, altitude, roll if pitch is not None else None, ", ".join(sources))


def merged(recorded: Prior, heading: float | None = None, pitch: float | None = None,
           altitude: float | None = None, label: str = "--{}") -> Prior:  # fmt: skip
    """The recorded prior with the values given by the user in their place; `label` formats a value's name in
    errors ("--{}" for flags, "?{}=" for query parameters)."""
    given = []
    if heading is not None:
        recorded = replace(recorded, heading_deg=check_heading(heading, label.format("heading")))
        given.append("heading")
    if pitch is not None:  # a pitch given for every photo: a gimbal held level (roll 0)
        recorded = replace(recorded, pitch_deg=check_pitch(pitch, label.format("pitch")), roll_deg=0.0)
        given.append("pitch")
    if altitude is not None:
        recorded = replace(recorded, altitude_m=check_altitude(altitude, label.format("altitude")))
        given.append("altitude")
    if given:
        recorded = replace(recorded, source=", ".join(filter(None, [recorded.source, "given " + "/".join(given)])))
    return recorded


def recorded_prior(data: bytes, exif: Image.Exif | None, label: str) -> Prior:
    """read_prior, but a malformed record costs only itself: the photo is answered without it (the orientation is
    then searched) and `problem` says why, in one line naming the file and the value."""
    try:
        return read_prior(data, exif, label)
    except ValueError as exc:
        direction = exif_direction(exif)
        return Prior(heading_deg=direction, source="EXIF GPSImgDirection" if direction is not None else "",
                     problem=f"{exc}; its XMP orientation is ignored (give --heading/--pitch to set it)")  # fmt: skip
