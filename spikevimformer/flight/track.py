"""A flight's track, frame by frame, and the files it is handed on in: CSV, GeoJSON (RFC 7946), GPX 1.1, KML 2.2.

Every file is written whole to a temporary name and renamed (fileio.atomic_write): a reader never sees half a
track. Positions are WGS84 degrees; heights in metres above the ground under the camera (GPX `ele` and KML
altitude are the camera's height above the DSM datum where the fix had a DSM, else omitted). GPX and KML carry
times (UTC, ISO 8601 as both formats require) only where the flight's start is known as a date: a point is at
`started` plus its `time_s`; a track timed only by a frame rate (or a video's frames) has no date, so its GPX and
KML carry no times (the CSV and GeoJSON always carry `time_s`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..fileio import atomic_write_text

GPX_NS, KML_NS = "http://www.topografix.com/GPX/1/1", "http://www.opengis.net/kml/2.2"


@dataclass(frozen=True)
class TrackPoint:
    """One frame of the track: the online (causal) estimate, the smoothed one, and what the frame's photo gave."""

    frame: int
    name: str
    time_s: float  # seconds from the first frame
    latitude: float  # online estimate (NaN before anything is known)
    longitude: float
    radius_m: float  # its 95 % radius
    source: str  # "fix" (a camera fix fused), "predicted" (none, or rejected), "tile" (tile-level answer only)
    smoothed_latitude: float
    smoothed_longitude: float
    smoothed_radius_m: float
    height_m: float | None = None  # the fix's camera height above the ground under it
    altitude_m: float | None = None  # above the DSM's datum (fixes through a DSM)
    heading_deg: float | None = None  # the fix's
    inliers: int = 0
    rejected: bool = False  # the frame had a fix and the filter's gate refused it
    fix_latitude: float | None = None  # the frame's own camera fix, fused or not
    fix_longitude: float | None = None
    fix_radius_m: float | None = None
    reason: str = ""  # why the frame's photo gave no camera fix (the localizer's words)

    @property
    def placed(self) -> bool:
        return math.isfinite(self.latitude) and math.isfinite(self.longitude)


COLUMNS = [f.name for f in fields(TrackPoint)]


def write_csv(path: str | Path, points: Sequence[TrackPoint]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for p in points:
        writer.writerow({k: ("" if v is None else f"{v:.8f}" if isinstance(v, float) else v)
                         for k, v in asdict(p).items()})  # fmt: skip
    return atomic_write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> list[TrackPoint]:
    """A track written by write_csv (for reports and tests)."""
    types = {f.name: f.type for f in fields(TrackPoint)}
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            values = {}
            for key, text in row.items():
                kind = str(types[key])
                if text == "":
                    values[key] = None
                elif "float" in kind:
                    values[key] = float(text)
                elif "int" in kind:
                    values[key] = int(text)
                elif "bool" in kind:
                    values[key] = text == "True"
                else:
                    values[key] = text
            out.append(TrackPoint(**values))
    return out


def geojson(points: Sequence[TrackPoint], label: str = "smoothed") -> dict:
    """The smoothed track as a LineString and every placed frame as a Point with its online estimate's radius,
    source and fix flag (RFC 7946: longitude first); `label` names the line ("online" for points whose smoothed
    fields hold the online estimates)."""
    line = [[p.smoothed_longitude, p.smoothed_latitude] for p in points
            if math.isfinite(p.smoothed_latitude) and math.isfinite(p.smoothed_longitude)]  # fmt: skip
    features = [{"type": "Feature", "geometry": {"type": "LineString", "coordinates": line},
                 "properties": {"name": f"track ({label})", "frames": len(points)}}]  # fmt: skip
    for p in points:
        if not p.placed:
            continue
        props = {k: v for k, v in asdict(p).items() if k not in ("latitude", "longitude")}
        props = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in props.items()}
        props["fix"] = p.source == "fix"
        features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [p.longitude, p.latitude]},
                         "properties": props})  # fmt: skip
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | Path, points: Sequence[TrackPoint]) -> Path:
    return atomic_write_text(path, json.dumps(geojson(points), indent=1, allow_nan=False))


def write_gpx(path: str | Path, points: Sequence[TrackPoint], name: str = "flight",
              started: datetime | None = None) -> Path:  # fmt: skip
    return atomic_write_text(path, gpx_text(points, name, started))


def gpx_text(points: Sequence[TrackPoint], name: str = "flight", started: datetime | None = None) -> str:
    """The smoothed track as one GPX 1.1 track segment (frame names and sources in each point's <desc>), each
    point's <time> `started` (aware) plus its time_s, where `started` is given."""
    ET.register_namespace("", GPX_NS)
    gpx = ET.Element(f"{{{GPX_NS}}}gpx", {"version": "1.1", "creator": "spikevimformer"})
    trk = ET.SubElement(gpx, f"{{{GPX_NS}}}trk")
    ET.SubElement(trk, f"{{{GPX_NS}}}name").text = name
    seg = ET.SubElement(trk, f"{{{GPX_NS}}}trkseg")
    for p in points:
        if not (math.isfinite(p.smoothed_latitude) and math.isfinite(p.smoothed_longitude)):
            continue
        pt = ET.SubElement(seg, f"{{{GPX_NS}}}trkpt", {"lat": f"{p.smoothed_latitude:.8f}",
                                                        "lon": f"{p.smoothed_longitude:.8f}"})  # fmt: skip
        if p.altitude_m is not None:
            ET.SubElement(pt, f"{{{GPX_NS}}}ele").text = f"{p.altitude_m:.2f}"
        if started is not None:  # GPX 1.1 orders <time> after <ele>, before <name>
            ET.SubElement(pt, f"{{{GPX_NS}}}time").text = utc_text(started, p.time_s)
        ET.SubElement(pt, f"{{{GPX_NS}}}name").text = p.name
        ET.SubElement(pt, f"{{{GPX_NS}}}desc").text = (f"t={p.time_s:.3f} s, {p.source}, 95 % radius "
                                                         f"{p.smoothed_radius_m:.1f} m")  # fmt: skip
    return _xml(gpx)


def write_kml(path: str | Path, points: Sequence[TrackPoint], name: str = "flight",
              started: datetime | None = None) -> Path:  # fmt: skip
    return atomic_write_text(path, kml_text(points, name, started=started))


def kml_text(points: Sequence[TrackPoint], name: str = "flight", label: str = "smoothed",
             started: datetime | None = None) -> str:  # fmt: skip
    """The smoothed track as a KML LineString (named by `label`, as in geojson), and each camera fix as a
    Placemark; where `started` (aware) is given, the track's <TimeSpan> runs from its first placed point to its
    last and each fix has its <TimeStamp>, `started` plus its time_s."""
    ET.register_namespace("", KML_NS)
    kml = ET.Element(f"{{{KML_NS}}}kml")
    doc = ET.SubElement(kml, f"{{{KML_NS}}}Document")
    ET.SubElement(doc, f"{{{KML_NS}}}name").text = name
    track = ET.SubElement(doc, f"{{{KML_NS}}}Placemark")
    ET.SubElement(track, f"{{{KML_NS}}}name").text = f"track ({label})"
    line_points = [p for p in points if math.isfinite(p.smoothed_latitude) and math.isfinite(p.smoothed_longitude)]
    if started is not None and line_points:  # KML 2.2 orders a TimePrimitive before the geometry
        span = ET.SubElement(track, f"{{{KML_NS}}}TimeSpan")
        ET.SubElement(span, f"{{{KML_NS}}}begin").text = utc_text(started, line_points[0].time_s)
        ET.SubElement(span, f"{{{KML_NS}}}end").text = utc_text(started, line_points[-1].time_s)
    line = ET.SubElement(track, f"{{{KML_NS}}}LineString")
    ET.SubElement(line, f"{{{KML_NS}}}tessellate").text = "1"
    ET.SubElement(line, f"{{{KML_NS}}}coordinates").text = " ".join(
        f"{p.smoothed_longitude:.8f},{p.smoothed_latitude:.8f}" for p in line_points)
    for p in points:
        if p.fix_latitude is None or p.fix_longitude is None:
            continue
        mark = ET.SubElement(doc, f"{{{KML_NS}}}Placemark")
        ET.SubElement(mark, f"{{{KML_NS}}}name").text = p.name
        ET.SubElement(mark, f"{{{KML_NS}}}description").text = (
            f"camera fix, 95 % radius {p.fix_radius_m:.1f} m" + (", rejected by the filter" if p.rejected else ""))
        if started is not None:
            ET.SubElement(ET.SubElement(mark, f"{{{KML_NS}}}TimeStamp"), f"{{{KML_NS}}}when").text = \
                utc_text(started, p.time_s)  # fmt: skip
        point = ET.SubElement(mark, f"{{{KML_NS}}}Point")
        ET.SubElement(point, f"{{{KML_NS}}}coordinates").text = f"{p.fix_longitude:.8f},{p.fix_latitude:.8f}"
    return _xml(kml)


def write_all(folder: str | Path, points: Sequence[TrackPoint], name: str = "flight",
              started: datetime | None = None) -> dict[str, Path]:  # fmt: skip
    """track.csv, track.geojson, track.gpx and track.kml in `folder` (the last two timed from `started`)."""
    folder = Path(folder)
    return {"csv": write_csv(folder / "track.csv", points), "geojson": write_geojson(folder / "track.geojson", points),
            "gpx": write_gpx(folder / "track.gpx", points, name, started),
            "kml": write_kml(folder / "track.kml", points, name, started)}  # fmt: skip


def utc_text(started: datetime, time_s: float) -> str:
    """`started` (aware) plus `time_s` seconds as ISO 8601 UTC to the millisecond: 2026-06-01T10:00:00.500Z."""
    when = (started + timedelta(seconds=time_s)).astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _xml(root: ET.Element) -> str:
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
