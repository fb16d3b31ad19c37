"""`serve`'s flight sessions: create a flight, post frames in time order, read the filtered track back."""

from __future__ import annotations

import io
import json
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from spikevimformer.flight.fly import FlightConfig
from spikevimformer.flight.frames import DATETIME_ORIGINAL, EXIF_IFD, SUBSEC_ORIGINAL
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


def _timed_jpeg(world, i: int, stamp: str, subsec: str) -> bytes:
    """Query photo `i` as a JPEG whose EXIF says when it was taken, as a drone camera writes it."""
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD).update({DATETIME_ORIGINAL: stamp, SUBSEC_ORIGINAL: subsec})
    buf = io.BytesIO()
    Image.open(io.BytesIO(_photo(world, i))).save(buf, "JPEG", quality=95, exif=exif)
    return buf.getvalue()


def _post(url: str, flight: str, photo: bytes, time_s: float | None = None) -> httpx.Response:
    form = {} if time_s is None else {"time_s": str(time_s)}
    return httpx.post(f"{url}/flights/{flight}/frames", files={"image": ("f.png", photo, "image/png")}, data=form,
                      timeout=30)  # fmt: skip


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
