"""`spikevimformer flight`: a synthetic flight with a featureless stretch -> a filtered track in four formats."""

from __future__ import annotations

import csv
import json
import shutil
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from spikevimformer.cli import main
from spikevimformer.data.synth import SynthConfig, generate_world
from spikevimformer.data.synth.flight import EPOCH, FlightPlan, flight_path, render_flight
from spikevimformer.flight.fly import FlightConfig, StartNames
from spikevimformer.flight.frames import exif_time, read_frames
from spikevimformer.flight.metrics import flight_truth
from spikevimformer.flight.track import GPX_NS, KML_NS, read_csv
from spikevimformer.geo.index import GalleryIndex
from spikevimformer.geodesy import haversine_m

K = "9"  # every tile verified: registration, not the random-init retrieval, decides
BLANK = (10, 16)  # frames over featureless water


@pytest.fixture(scope="module")
def flight(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("flight")
    cfg = SynthConfig(seed=11, locations=12, views=1, image_size=64, test_fraction=0.5, epoch_gap=0.0)
    generate_world(cfg, root / "world")
    assert main(["index", "build", "--out", str(root / "idx"), "--world", str(root / "world"), "--image-size", "32",
                 "--random-init"]) == 0  # fmt: skip
    render_flight(cfg, FlightPlan(frames=24, fps=2.0, speed_mps=8.0, size=256, blank=BLANK), root / "fly",
                  progress=False)  # fmt: skip
    return root, root / "fly"


def test_a_flight_becomes_a_track_that_bridges_the_water(flight, capsys) -> None:
    root, fly = flight
    out = root / "out"
    assert main(["flight", str(fly / "frames"), "--index", str(root / "idx"), "--out", str(out), "--random-init",
                 "-k", K, "--truth", str(fly)]) == 0  # fmt: skip  # the folder holding cameras.csv
    printed = capsys.readouterr().out
    assert "24 frames" in printed and "RMSE" in printed
    points = read_csv(out / "track.csv")
    assert [p.frame for p in points] == list(range(24))
    water = points[BLANK[0]:BLANK[1]]
    assert all(p.fix_latitude is None and p.source == "predicted" for p in water)  # bridged by the filter
    assert all(p.placed for p in points[next(i for i, p in enumerate(points) if p.source == "fix"):])
    metrics = json.loads((out / "summary.json").read_text())["metrics"]
    assert metrics["fix_rate"] >= 0.5 and metrics["longest_without_fix"] >= BLANK[1] - BLANK[0]
    assert metrics["smoothed_median_error_m"] < 5.0 and metrics["smoothed_max_error_m"] < 25.0
    radii = [p.radius_m for p in water]
    assert radii == sorted(radii)  # the radius grows while nothing is seen
    # the outputs parse back: GeoJSON, GPX 1.1 and KML 2.2
    geo = json.loads((out / "track.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and geo["features"][0]["geometry"]["type"] == "LineString"
    assert all(len(f["geometry"]["coordinates"]) == 2 for f in geo["features"][1:])
    assert {f["properties"]["fix"] for f in geo["features"][1:]} == {True, False}
    trkpts = ET.parse(out / "track.gpx").getroot().findall(f".//{{{GPX_NS}}}trkpt")
    assert len(trkpts) == sum(np.isfinite(p.smoothed_latitude) for p in points)
    assert all(-90 <= float(t.get("lat")) <= 90 for t in trkpts)
    started = EPOCH.replace(tzinfo=timezone.utc)  # the frames' EXIF says its zone: OffsetTimeOriginal +00:00
    assert [datetime.fromisoformat(t.find(f"{{{GPX_NS}}}time").text) for t in trkpts] == \
        [started + timedelta(seconds=p.time_s) for p in points if np.isfinite(p.smoothed_latitude)]  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert datetime.fromisoformat(summary["started"]) == started
    assert summary["frames_per_second"] == pytest.approx(1.0 / summary["seconds_per_frame"])
    assert f"{summary['frames_per_second']:.2f} frames/s" in printed  # throughput as the README's tables give it
    assert not any("no OffsetTimeOriginal" in w for w in summary["warnings"])
    coords = ET.parse(out / "track.kml").getroot().find(f".//{{{KML_NS}}}LineString/{{{KML_NS}}}coordinates")
    assert len(coords.text.split()) == len(trkpts)
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "smoothed rmse m" in page  # the map and the numbers
    assert Image.open(out / "track.png").size[0] > 1000
    # the same flight again refuses to overwrite what it wrote
    assert main(["flight", str(fly / "frames"), "--index", str(root / "idx"), "--out", str(out), "--random-init"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_frames_are_timed_by_exif_or_by_fps(flight, tmp_path) -> None:
    _, fly = flight
    frames = list(read_frames(fly / "frames"))
    assert [f.time_s for f in frames[:3]] == pytest.approx([0.0, 0.5, 1.0])
    assert exif_time(frames[0].exif) is not None
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in frames[:3]:
        f.image.save(bare / f.name.replace(".jpg", ".png"))
    with pytest.raises(ValueError, match="no EXIF DateTimeOriginal: give the frame rate"):
        list(read_frames(bare))
    assert [f.time_s for f in read_frames(bare, fps=4.0)] == [0.0, 0.25, 0.5]
    assert [f.name for f in read_frames(fly / "frames", every=10)] == [frames[i].name for i in (0, 10, 20)]
    broken = tmp_path / "broken"  # a corrupt photo among EXIF-timed ones costs only itself
    broken.mkdir()
    for f in frames[:3]:
        shutil.copy(fly / "frames" / f.name, broken / f.name)
    (broken / (frames[0].name[:-4] + "z.jpg")).write_bytes(b"\xff\xd8 not a jpeg")
    got = list(read_frames(broken))
    assert [f.name for f in got] == [frames[0].name, frames[0].name[:-4] + "z.jpg", frames[1].name, frames[2].name]
    assert got[1].image is None and "readable" in got[1].error and got[1].time_s == got[0].time_s
    assert [f.time_s for f in got[2:]] == pytest.approx([0.5, 1.0])


def test_a_video_is_read_frame_by_frame(flight, tmp_path) -> None:
    _, fly = flight
    video = tmp_path / "flight.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (256, 256))
    for path in sorted((fly / "frames").iterdir())[:6]:
        writer.write(cv2.imread(str(path)))
    writer.release()
    frames = list(read_frames(video, every=2))
    assert [f.time_s for f in frames] == pytest.approx([0.0, 0.2, 0.4]) and frames[0].image.size == (256, 256)
    root = fly.parent
    out = tmp_path / "out"
    assert main(["flight", str(video), "--index", str(root / "idx"), "--out", str(out), "--random-init", "-k", K,
                 "--truth", str(fly / "cameras.csv")]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fixes"] == 0 and "metrics" not in summary  # a video has no EXIF lens; its frames no file names
    assert any("need the lens: --fov DEG or --camera FILE" in w for w in summary["warnings"])
    assert any("reaches none of the flight's frames" in w for w in summary["warnings"])
    assert all(p.reason for p in read_csv(out / "track.csv"))
    with (fly / "cameras.csv").open(newline="") as f:  # the video's flight log: frame i at i / 10 s
        rows = list(csv.DictReader(f))[:6]
    log = tmp_path / "log.csv"
    log.write_text("time_s,latitude,longitude\n" + "".join(f"{i / 10},{r['latitude']},{r['longitude']}\n"
                                                            for i, r in enumerate(rows)))  # fmt: skip
    assert main(["flight", str(video), "--index", str(root / "idx"), "--out", str(tmp_path / "out2"), "--every",
                 "2", "--random-init", "-k", K, "--truth", str(log)]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "out2" / "summary.json").read_text())["metrics"]
    assert metrics["frames"] == metrics["evaluated"] == 3
    truth = flight_truth(log)
    assert truth.at(read_csv(tmp_path / "out2" / "track.csv")[1]) == pytest.approx(
        (float(rows[2]["latitude"]), float(rows[2]["longitude"])))  # frame 2 of the video, at 0.2 s
    log.write_text("time_s,latitude,longitude\n0,47.1,8.5\n")
    with pytest.raises(ValueError, match="at least two rows"):
        flight_truth(log)
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    with pytest.raises(ValueError, match="not a video OpenCV can open"):
        list(read_frames(broken))


def test_a_wrong_start_is_left_behind_with_a_warning(flight, tmp_path, capsys) -> None:
    root, fly = flight
    truth = flight_truth(fly)
    first = next(iter(truth.by_name.values()))
    far = max((t for t in GalleryIndex.load(str(root / "idx")).tiles),
              key=lambda t: haversine_m(first[0], first[1], t.latitude, t.longitude))  # fmt: skip
    out = tmp_path / "out"
    assert main(["flight", str(fly / "frames"), "--index", str(root / "idx"), "--out", str(out), "--random-init",
                 "-k", K, "--start", str(far.latitude), str(far.longitude)]) == 0  # fmt: skip
    warnings = json.loads((out / "summary.json").read_text())["warnings"]
    assert any("the track restarted from this fix" in w and "a wrong --start" in w for w in warnings), warnings
    points = read_csv(out / "track.csv")
    last = points[-1]
    assert haversine_m(last.latitude, last.longitude, *truth.by_name[last.name][:2]) < 10.0


def test_bad_flight_inputs_get_one_line_and_write_nothing(flight, tmp_path, capsys) -> None:
    root, fly = flight
    out = tmp_path / "out"
    base = ["flight", str(fly / "frames"), "--index", str(root / "idx"), "--out", str(out), "--random-init"]
    assert main([*base, "--start", "8.5", "47.3"]) == 2  # latitude and longitude swapped
    err = capsys.readouterr().err
    assert "--start 8.5 47.3 is" in err and "from the nearest tile of the index" in err and "--start-radius" in err
    assert main(["flight", str(tmp_path / "missing"), "--index", str(root / "idx"), "--out", str(out),
                 "--random-init"]) == 2  # fmt: skip
    assert "do not exist" in capsys.readouterr().err
    assert not out.exists()


def test_ctrl_c_keeps_the_track_so_far(flight, tmp_path, capsys, monkeypatch) -> None:
    from spikevimformer.flight.fly import FlightTracker

    root, fly = flight
    original = FlightTracker.add

    def add(self, frame):
        if frame.index == 5:
            raise KeyboardInterrupt
        return original(self, frame)

    monkeypatch.setattr(FlightTracker, "add", add)
    out = tmp_path / "out"
    assert main(["flight", str(fly / "frames"), "--index", str(root / "idx"), "--out", str(out), "--random-init",
                 "-k", K]) == 130  # fmt: skip
    assert len(read_csv(out / "track.csv")) == 5 and json.loads((out / "summary.json").read_text())["interrupted"]
    assert capsys.readouterr().err.count("interrupted") == 1


def test_a_refused_start_names_the_callers_inputs() -> None:
    with pytest.raises(ValueError, match=r"^--start 91 0 is not a latitude"):
        FlightConfig(start=(91.0, 0.0))
    with pytest.raises(ValueError, match=r"^--start-radius must be positive"):
        FlightConfig(start_radius_m=0.0)
    fields = StartNames("lat={lat}&lon={lon}", "radius")
    with pytest.raises(ValueError, match=r"^lat=91&lon=0 is not a latitude"):
        FlightConfig(start=(91.0, 0.0), names=fields)
    with pytest.raises(ValueError, match=r"^radius must be positive"):
        FlightConfig(start_radius_m=-1.0, names=fields)


def test_the_path_loops_at_the_speed_asked_with_rounded_turns() -> None:
    pos, heading = flight_path(np.array([[0.0, 0.0], [200.0, 0.0], [200.0, 200.0]]), 200, 4.0)
    steps = np.hypot(*np.diff(pos, axis=0).T)
    assert np.allclose(np.median(steps), 4.0, atol=0.05) and steps.max() < 4.1
    assert abs((heading[5] - 90.0 + 180) % 360 - 180) < 5  # east along the first leg
    turn = np.abs((np.diff(heading) + 180) % 360 - 180)
    assert turn.max() < 90 and (turn > 5).sum() >= 6  # no right angle at once: a corner takes several frames


def test_the_truth_file_lists_every_frame(flight) -> None:
    _, fly = flight
    with (fly / "cameras.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 and all((fly / r["image"]).is_file() for r in rows)
    assert Image.open(fly / rows[0]["image"]).size == (256, 256)


def test_the_motion_sees_the_frames_through_the_same_pinhole_as_the_fix(flight, tmp_path, monkeypatch) -> None:
    # a footprint maps undistorted pixels: frame-to-frame motion measured on the raw, bent frame would not fit it
    from spikevimformer.flight.fly import FlightTracker
    from spikevimformer.flight.motion import FrameMatcher
    from spikevimformer.geo.intrinsics import undistort
    from spikevimformer.geo.localize import open_localizer

    root, fly = flight
    frames = list(read_frames(fly / "frames", fps=2.0))[:3]
    w, h = frames[0].image.size
    lens = tmp_path / "lens.json"
    lens.write_text(json.dumps({"width": w, "height": h, "K": [[200.0, 0, (w - 1) / 2], [0, 200.0, (h - 1) / 2],
                                                                [0, 0, 1]], "dist": [-0.3, 0.05, 0, 0, 0]}))
    seen: list[np.ndarray] = []
    original = FrameMatcher.features
    monkeypatch.setattr(FrameMatcher, "features", lambda self, image: seen.append(np.asarray(image)) or
                        original(self, image))  # fmt: skip
    localizer = open_localizer(str(root / "idx"), random_init=True, camera=str(lens))
    tracker = FlightTracker(localizer)
    for frame in frames:
        tracker.add(frame)
    for frame, image in zip(frames, seen, strict=True):
        intr = localizer.intrinsics(frame.image, frame.exif, frame.name, data=frame.data)
        assert intr.distorted
        straight = np.asarray(undistort(frame.image, intr)[0])
        assert np.array_equal(image, straight) and not np.array_equal(image, np.asarray(frame.image.convert("RGB")))
