"""A track's files carry its times: GPX <time> and KML <TimeStamp>/<TimeSpan> from the flight's date, read back."""

from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import pytest
from PIL import Image

from spikevimformer.flight.frames import (
    DATETIME_ORIGINAL,
    EXIF_IFD,
    OFFSET_ORIGINAL,
    SUBSEC_ORIGINAL,
    exif_datetime,
    exif_time,
)
from spikevimformer.flight.track import GPX_NS, KML_NS, TrackPoint, gpx_text, kml_text, utc_text

STARTED = datetime(2026, 6, 1, 8, 0, 0, 250_000, tzinfo=timezone.utc)
TIMES = [0.0, 0.5, 1.25, 3.0]


def _points() -> list[TrackPoint]:
    """Four frames, the second unplaced (no line vertex, no trkpt) and the last two with camera fixes."""
    out = []
    for i, t in enumerate(TIMES):
        lat = math.nan if i == 1 else 47.37 + i * 1e-4
        fix = {"fix_latitude": lat, "fix_longitude": 8.54, "fix_radius_m": 4.0} if i >= 2 else {}
        out.append(TrackPoint(i, f"f{i}.jpg", t, lat, 8.54, 5.0, "fix" if fix else "predicted", lat, 8.54, 5.0,
                              **fix))  # fmt: skip
    return out


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_gpx_points_carry_their_utc_times() -> None:
    root = ET.fromstring(gpx_text(_points(), "flight", STARTED))
    trkpts = root.findall(f".//{{{GPX_NS}}}trkpt")
    texts = [p.find(f"{{{GPX_NS}}}time").text for p in trkpts]
    assert all(t.endswith("Z") for t in texts)  # GPX 1.1: UTC
    assert [_when(t) for t in texts] == [STARTED + timedelta(seconds=t) for i, t in enumerate(TIMES) if i != 1]
    assert [c.tag.split("}")[1] for c in trkpts[0]] == ["time", "name", "desc"]  # the schema's order


def test_kml_fixes_and_track_carry_their_utc_times() -> None:
    root = ET.fromstring(kml_text(_points(), "flight", started=STARTED))
    track, *fixes = root.findall(f".//{{{KML_NS}}}Placemark")
    span = track.find(f"{{{KML_NS}}}TimeSpan")
    assert _when(span.find(f"{{{KML_NS}}}begin").text) == STARTED
    assert _when(span.find(f"{{{KML_NS}}}end").text) == STARTED + timedelta(seconds=TIMES[-1])
    whens = [_when(f.find(f"{{{KML_NS}}}TimeStamp/{{{KML_NS}}}when").text) for f in fixes]
    assert whens == [STARTED + timedelta(seconds=t) for t in TIMES[2:]]
    assert [c.tag.split("}")[1] for c in fixes[0]] == ["name", "description", "TimeStamp", "Point"]


def test_without_a_date_the_files_carry_no_times() -> None:
    gpx, kml = gpx_text(_points()), kml_text(_points())
    assert "<time>" not in gpx and "TimeStamp" not in kml and "TimeSpan" not in kml
    assert len(ET.fromstring(gpx).findall(f".//{{{GPX_NS}}}trkpt")) == 3


def test_utc_text_converts_a_zone_and_keeps_milliseconds() -> None:
    plus_two = datetime(2026, 6, 1, 10, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    assert utc_text(plus_two, 0.5) == "2026-06-01T08:00:00.500Z"
    assert utc_text(STARTED, 59.75) == "2026-06-01T08:01:00.000Z"


@pytest.mark.parametrize(("offset", "expected"), [
    ("+02:00", datetime(2026, 5, 1, 10, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=2)))),
    (None, datetime(2026, 5, 1, 10, 0, 0, 250_000)),  # no zone recorded: naive
    ("   :  ", datetime(2026, 5, 1, 10, 0, 0, 250_000)),  # a blank offset, as some cameras write it
])  # fmt: skip
def test_exif_dates_keep_the_zone_the_camera_recorded(offset: str | None, expected: datetime) -> None:
    written = Image.Exif()
    tags = {DATETIME_ORIGINAL: "2026:05:01 10:00:00", SUBSEC_ORIGINAL: "25"}
    written.get_ifd(EXIF_IFD).update(tags | ({OFFSET_ORIGINAL: offset} if offset else {}))
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG", exif=written)  # read back from a file, as a camera's photo is
    exif = Image.open(buf).getexif()
    when = exif_datetime(exif)
    assert when == expected and when.tzinfo == expected.tzinfo
    naive_as_utc = expected if expected.tzinfo else expected.replace(tzinfo=timezone.utc)
    assert exif_time(exif) == naive_as_utc.timestamp()  # the same on any machine, whatever its zone
    assert exif_datetime(Image.Exif()) is None
