"""`serve`'s flight sessions: create a flight, post frames in time order, read the filtered track back."""

from __future__ import annotations

import io
import json
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from PIL import Image

from spikevimformer.flight.fly import FlightConfig
from spikevimformer.flight.frames import DATETIME_ORIGINAL, EXIF_IFD, OFFSET_ORIGINAL, SUBSEC_ORIGINAL
from spikevimformer.flight.session import FlightRegistry, FrameConflict, SessionLimits, UnknownFlight
from spikevimformer.flight.track import GPX_NS, KML_NS
from spikevimformer.geo.localize import Localizer
from spikevimformer.geo.serve import create_app
from tests.geo_world import LAT0, LON0, served_gallery
from tests.live_server import live_server

START = {"start_latitude": LAT0, "start_longitude": LON0, "start_radius_m": 300.0}


@pytest.fixture(scope="module")
def localizer(tmp_path_factory):
    encoder, index, world = served_gallery(tmp_path_factory.mktemp("serve-flight"))
    return Localizer(encoder, index, k=3), world


@pytest.fixture(scope="module")
def server(localizer):
    loc, world = localizer
    with live_server(create_app(loc)) as url:
        yield url, world


def _photo(world, i: int) -> bytes:
    return (world / f"University-1652/test/query_drone/{i:04d}/image-01.png").read_bytes()


def _timed_jpeg(world, i: int, stamp: str, subsec: str, offset: str | None = None) -> bytes:
    """Query photo `i` as a JPEG whose EXIF says when it was taken (in the zone `offset`, if given), as a drone
    camera writes it."""
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD).update({DATETIME_ORIGINAL: stamp, SUBSEC_ORIGINAL: subsec} |
                                   ({OFFSET_ORIGINAL: offset} if offset else {}))  # fmt: skip
    buf = io.BytesIO()
    Image.open(io.BytesIO(_photo(world, i))).save(buf, "JPEG", quality=95, exif=exif)
    return buf.getvalue()


def _post(url: str, flight: str, photo: bytes, time_s: float | None = None) -> httpx.Response:
    form = {} if time_s is None else {"time_s": str(time_s)}
    return httpx.post(f"{url}/flights/{flight}/frames", files={"image": ("f.png", photo, "image/png")}, data=form,
                      timeout=30)  # fmt: skip


def _track_times(url: str, flight: str) -> tuple[list[datetime], list[datetime]]:
    """The times a flight's GPX points and KML fixes carry, parsed back."""
    gpx = ET.fromstring(httpx.get(f"{url}/flights/{flight}/track.gpx").content)
    kml = ET.fromstring(httpx.get(f"{url}/flights/{flight}/track.kml").content)
    return ([datetime.fromisoformat(t.text) for t in gpx.iter(f"{{{GPX_NS}}}time")],
            [datetime.fromisoformat(t.text) for t in kml.iter(f"{{{KML_NS}}}when")])  # fmt: skip


def _fly(url: str, world, frames: list[int], times: list[float]) -> str:
    flight = httpx.post(f"{url}/flights").json()["id"]
    for i, t in zip(frames, times, strict=True):
        assert _post(url, flight, _photo(world, i), t).status_code == 200
    return flight


def test_a_flight_streams_frames_and_reads_its_track_back(server) -> None:
    url, world = server
    created = httpx.post(f"{url}/flights", params={"start_latitude": LAT0, "start_longitude": LON0, "fps": 2})
    assert created.status_code == 201, created.text
    flight = created.json()["id"]
    assert created.headers["location"] == f"/flights/{flight}" and created.json()["frames"] == 0
    answers = []
    for i in range(3):  # timed by the flight's fps: 0, 0.5, 1.0 s
        r = _post(url, flight, _photo(world, i))
        assert r.status_code == 200, r.text
        answers.append(r.json())
    raw = httpx.post(f"{url}/flights/{flight}/frames", content=_photo(world, 3), headers={"content-type": "image/png"})
    assert raw.status_code == 200 and raw.json()["name"] == "frame-3"
    answers.append(raw.json())
    assert [a["frame"] for a in answers] == [0, 1, 2, 3] and [a["time_s"] for a in answers] == [0, 0.5, 1.0, 1.5]
    for a in answers:  # a start was given: every frame is placed, with its 95 % radius
        assert abs(a["latitude"] - LAT0) < 0.01 and abs(a["longitude"] - LON0) < 0.01 and a["radius_m"] > 0
        assert a["source"] in ("fix", "predicted") and a["fix"] == (a["source"] == "fix")
        assert isinstance(a["inliers"], int) and isinstance(a["rejected"], bool) and a["seconds"] > 0
        assert "smoothed_latitude" not in a and a["flight"] == flight
    summary = httpx.get(f"{url}/flights/{flight}").json()
    assert summary["frames"] == 4 and summary["time_source"] == "fps" and summary["start"]["radius_m"] == 50.0
    assert summary["last"] == {k: v for k, v in answers[-1].items() if k not in ("flight", "seconds")}
    assert httpx.get(f"{url}/health").json()["flights"] >= 1
    for smoothed in ("0", "1"):  # the GeoJSON parses back: a LineString and one Point per frame
        r = httpx.get(f"{url}/flights/{flight}/track.geojson", params={"smoothed": smoothed})
        assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
        doc = json.loads(r.text)
        line, *points = doc["features"]
        assert doc["type"] == "FeatureCollection" and line["geometry"]["type"] == "LineString"
        assert len(line["geometry"]["coordinates"]) == 4 and [p["properties"]["frame"] for p in points] == [0, 1, 2, 3]
        assert line["properties"]["name"] == ("track (smoothed)" if smoothed == "1" else "track (online)")
    online = json.loads(httpx.get(f"{url}/flights/{flight}/track.geojson").text)
    assert [f["geometry"]["coordinates"] for f in online["features"][1:]] == \
        [[a["longitude"], a["latitude"]] for a in answers]  # fmt: skip
    gpx = ET.fromstring(httpx.get(f"{url}/flights/{flight}/track.gpx").content)
    assert len(gpx.findall(f".//{{{GPX_NS}}}trkpt")) == 4
    kml = ET.fromstring(httpx.get(f"{url}/flights/{flight}/track.kml?smoothed=1").content)
    assert len(kml.find(f".//{{{KML_NS}}}LineString/{{{KML_NS}}}coordinates").text.split()) == 4
    assert httpx.get(f"{url}/flights/{flight}/track.csv").status_code == 404
    assert httpx.delete(f"{url}/flights/{flight}").json()["frames"] == 4
    assert httpx.get(f"{url}/flights/{flight}").status_code == 404


def test_frame_times_must_not_go_back_and_keep_one_clock(server) -> None:
    url, world = server
    flight = httpx.post(f"{url}/flights", json=START).json()["id"]
    no_time = _post(url, flight, _photo(world, 0))
    assert no_time.status_code == 400 and "time_s" in no_time.json()["detail"]
    assert _post(url, flight, _photo(world, 0), 10.0).status_code == 200
    back = _post(url, flight, _photo(world, 1), 9.5)
    assert back.status_code == 409 and "before the previous frame" in back.json()["detail"]
    assert _post(url, flight, _photo(world, 1), 10.0).status_code == 200  # the same time again is no step back
    assert httpx.get(f"{url}/flights/{flight}").json()["frames"] == 2
    both = httpx.post(f"{url}/flights/{flight}/frames?time_s=11", files={"image": ("f.png", _photo(world, 2))},
                      data={"time_s": "11"})  # fmt: skip
    assert both.status_code == 400 and "once" in both.json()["detail"]
    # EXIF time (DateTimeOriginal + SubSecTimeOriginal) when no time_s is sent; a flight keeps its first clock
    exif_flight = httpx.post(f"{url}/flights", json=START).json()["id"]
    times = [_post(url, exif_flight, _timed_jpeg(world, i, "2026:05:01 10:00:00", sub)).json()["time_s"]
             for i, sub in ((0, "25"), (1, "75"))]  # fmt: skip
    assert times == [0.0, 0.5]
    mixed = _post(url, exif_flight, _photo(world, 2), 3.0)
    assert mixed.status_code == 409 and "timed by exif" in mixed.json()["detail"]
    gpx_times, _ = _track_times(url, exif_flight)  # no zone in the EXIF: the camera clock taken as UTC, and said
    utc_clock = datetime(2026, 5, 1, 10, 0, 0, 250_000, tzinfo=timezone.utc)
    assert gpx_times == [utc_clock, utc_clock + timedelta(seconds=0.5)]
    assert any("no OffsetTimeOriginal" in w for w in httpx.get(f"{url}/flights/{exif_flight}").json()["warnings"])


def test_gpx_and_kml_times_come_from_exif_or_from_arrival(server) -> None:
    url, world = server
    zoned = httpx.post(f"{url}/flights", json=START).json()["id"]
    answers = [_post(url, zoned, _timed_jpeg(world, i, "2026:05:01 10:00:00", sub, "+02:00")).json()
               for i, sub in ((0, "25"), (1, "75"))]  # fmt: skip
    started = datetime(2026, 5, 1, 8, 0, 0, 250_000, tzinfo=timezone.utc)
    gpx_times, kml_times = _track_times(url, zoned)
    assert gpx_times == [started, started + timedelta(seconds=0.5)]
    assert kml_times == [started + timedelta(seconds=a["time_s"]) for a in answers if a["fix_latitude"] is not None]
    summary = httpx.get(f"{url}/flights/{zoned}").json()
    assert datetime.fromisoformat(summary["started"]) == started and not summary["warnings"]
    before = datetime.now(timezone.utc).replace(microsecond=0)  # the files carry milliseconds
    live = _fly(url, world, [0, 1], [100.0, 102.5])  # time_s on the client's own clock: dated by the first arrival
    gpx_times, _ = _track_times(url, live)
    assert before <= gpx_times[0] <= datetime.now(timezone.utc)
    assert gpx_times[1] - gpx_times[0] == timedelta(seconds=2.5)


def test_bad_settings_and_unknown_flights_get_one_sentence(server) -> None:
    url, world = server
    for path in ("/flights/nope", "/flights/nope/track.geojson"):
        r = httpx.get(url + path)
        assert r.status_code == 404 and "no flight 'nope'" in r.json()["detail"]
    assert httpx.delete(f"{url}/flights/nope").status_code == 404
    assert _post(url, "nope", _photo(world, 0), 0.0).status_code == 404
    for bad in ({"start_latitude": LAT0}, {"fps": -1}, {"start_lat": 1}, {"start_latitude": 91, "start_longitude": 0}):
        r = httpx.post(f"{url}/flights", json=bad)
        assert r.status_code == 400 and isinstance(r.json()["detail"], str), (bad, r.text)
    far = httpx.post(f"{url}/flights", json={"start_latitude": -LAT0, "start_longitude": LON0})
    assert far.status_code == 400 and "km from the nearest tile" in far.json()["detail"]
    assert "start_latitude" in far.json()["detail"] and "widen start_radius_m" in far.json()["detail"]
    assert "--start" not in far.json()["detail"]  # the request's own fields, not the command line's flags
    assert "/" not in far.json()["detail"]  # nor the server's index folder
    both = httpx.post(f"{url}/flights", params={"fps": 2}, json={"fps": 3})
    assert both.status_code == 400 and "not both" in both.json()["detail"]


def test_flights_frames_and_idle_time_are_bounded(localizer) -> None:
    loc, world = localizer
    with live_server(create_app(loc, max_flights=2, max_flight_frames=2, flight_idle_s=60)) as url:
        first, _ = (httpx.post(f"{url}/flights").json()["id"] for _ in range(2))
        full = httpx.post(f"{url}/flights")
        assert full.status_code == 503 and "--max-flights" in full.json()["detail"]
        assert 1 <= int(full.headers["retry-after"]) <= 60
        assert httpx.delete(f"{url}/flights/{first}").status_code == 200
        flight = httpx.post(f"{url}/flights", json=START).json()["id"]  # a place was freed
        assert [_post(url, flight, _photo(world, i), i).status_code for i in range(3)] == [200, 200, 409]
        assert "--max-flight-frames" in _post(url, flight, _photo(world, 0), 5).json()["detail"]
    with live_server(create_app(loc, flight_idle_s=0.3)) as url:
        flight = httpx.post(f"{url}/flights").json()["id"]
        time.sleep(0.5)
        gone = httpx.get(f"{url}/flights/{flight}")
        assert gone.status_code == 404 and "0.3 s idle" in gone.json()["detail"]


def test_the_registry_expires_idle_flights_but_not_busy_ones(localizer) -> None:
    loc, _ = localizer
    now = [0.0]
    registry = FlightRegistry(loc, SessionLimits(max_flights=2, idle_s=10.0), clock=lambda: now[0])
    idle, busy = registry.create(FlightConfig()), registry.create(FlightConfig())
    busy.claim()
    with pytest.raises(FrameConflict, match="one before"):  # one frame of a flight at a time, not queued
        busy.claim()
    now[0] = 11.0
    assert len(registry) == 1 and registry.get(busy.id) is busy
    with pytest.raises(UnknownFlight, match="10 s idle"):
        registry.get(idle.id)
    busy.release()
    now[0] = 22.0
    assert len(registry) == 0


def test_interleaved_flights_give_the_tracks_each_gives_alone(server) -> None:
    url, world = server
    plans = {"a": ([0, 1, 2], [0.0, 1.0, 2.0]), "b": ([5, 4, 3], [0.0, 0.4, 0.8])}
    alone = {k: _fly(url, world, *plan) for k, plan in plans.items()}  # no start: each frame placed by its own
    together = {k: httpx.post(f"{url}/flights").json()["id"] for k in plans}  # tile, so a mix-up would show

    def stream(key: str) -> None:
        for i, t in zip(*plans[key], strict=True):
            assert _post(url, together[key], _photo(world, i), t).status_code == 200

    with ThreadPoolExecutor(2) as pool:  # both flights at once, within the service's two workers
        list(pool.map(stream, plans))
    for key in plans:
        for query in ("", "?smoothed=1"):
            one, two = (httpx.get(f"{url}/flights/{f}/track.geojson{query}").json() for f in (alone[key],
                                                                                                together[key]))
            assert one == two
    tracks = [httpx.get(f"{url}/flights/{alone[k]}/track.geojson").json()["features"][0] for k in plans]
    assert tracks[0]["geometry"] != tracks[1]["geometry"]


@pytest.mark.parametrize(("body", "words"), [
    ({"content": b'{"fps": 2', "headers": {"content-type": "application/json"}}, "the body is not valid JSON"),
    ({"content": b'{"fps": 2}', "headers": {"content-type": "text/plain"}}, "the body is text/plain, not JSON"),
    ({"json": [2]}, "must be a JSON object of the flight's settings (start_latitude, "),
    ({"json": {"fps": "fast"}}, "fps: Input should be a valid number"),
    ({"json": {"fps": True}}, "fps: Input should be a number, not true or false (got true)"),
    ({"json": {"name": 7}}, "name: Input should be a valid string"),
    ({"json": {"start_lat": 1}}, "start_lat is not a flight setting; the settings are start_latitude, "),
    ({"params": {"bogus": 1}}, "bogus is not a flight setting"),
    ({"content": b'{"accel": Infinity}', "headers": {"content-type": "application/json"}},
     "accel: Input should be a finite number"),
    ({"params": {"start_radius_m": "inf"}}, "start_radius_m: Input should be a finite number"),
])  # fmt: skip
def test_malformed_settings_get_one_line_naming_the_field(server, body: dict, words: str) -> None:
    url, _ = server
    r = httpx.post(f"{url}/flights", **body)
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert words in detail and "\n" not in detail and len(detail) < 300, detail


def test_get_flights_lists_the_live_flights(localizer) -> None:
    loc, world = localizer
    with live_server(create_app(loc, max_flights=3)) as url:
        assert httpx.get(f"{url}/flights").json() == {"flights": [], "max_flights": 3, "expires_after_idle_s": 600.0}
        flown = httpx.post(f"{url}/flights", json=START | {"name": "survey"}).json()["id"]
        idle = httpx.post(f"{url}/flights").json()["id"]
        point = _post(url, flown, _photo(world, 0), 0.0).json()
        listed = httpx.get(f"{url}/flights").json()["flights"]
        assert [f["id"] for f in listed] == [flown, idle] and [f["frames"] for f in listed] == [1, 0]
        first = listed[0]
        assert first["name"] == "survey" and first["fixes"] == int(point["fix"]) and first["busy"] is False
        assert first["position"] == {k: point[k] for k in ("latitude", "longitude", "radius_m", "source", "time_s")}
        assert listed[1]["position"] is None
        assert datetime.fromisoformat(first["created"]) <= datetime.fromisoformat(first["last_seen"])
        assert httpx.delete(f"{url}/flights/{idle}").status_code == 200
        assert [f["id"] for f in httpx.get(f"{url}/flights").json()["flights"]] == [flown]
        docs = httpx.get(f"{url}/openapi.json").json()["paths"]["/flights"]["get"]["description"]
        assert "last_seen" in docs and "position" in docs


def test_a_listing_keeps_no_flight_alive(localizer) -> None:
    loc, _ = localizer
    now = [0.0]
    registry = FlightRegistry(loc, SessionLimits(idle_s=10.0), clock=lambda: now[0])
    flight = registry.create(FlightConfig())
    now[0] = 6.0
    registry.get(flight.id)  # a request touches it
    assert flight.last_seen - flight.created == timedelta(seconds=6)
    now[0] = 12.0
    assert registry.live() == [flight]  # listed, untouched
    now[0] = 16.5
    assert registry.live() == []
