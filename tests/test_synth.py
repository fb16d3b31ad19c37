"""The embedded synthetic world: layout and CSV contract, orthophoto, EXIF, determinism, extrusion, user
orthophotos, cross-epoch references, CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import multiprocessing as mp
import signal
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import spikevimformer
from spikevimformer.cli import build_parser, main
from spikevimformer.cli.synth import config_from_args
from spikevimformer.data.synth import Camera, GeoRef, SynthConfig, build_world, drone_view, generate_world, view_reach_m
from spikevimformer.data.synth.epochs import Sensor, sense
from spikevimformer.data.synth.geo import georef_from_world_file
from spikevimformer.data.synth.pipeline import CAMERA_COLUMNS, _sigint_blocked, assign
from spikevimformer.data.synth.writer import camera_exif, with_exif
from spikevimformer.geodesy import WorldFile, haversine_m

TINY = dict(locations=8, views=3, image_size=64, gsd_m=1.0, footprint_m=60.0)
# SHA-256 of the ground and orthophoto rasters of SynthConfig(seed=3, **TINY), painted by the code before the
# epoch gap existed: an epoch gap of 0 must keep every world made before it, bit for bit
ONE_DATE_TINY_SHA256 = "a7357db825a3a9803af5c36153afcf8bd24df282978a05d11f3eef0c3f0c8c34"


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _ids(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_dir()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "world"
    return generate_world(SynthConfig(seed=3, **TINY), out)


def test_university_layout_and_csv_contract(world):
    out, ds = world.out_dir, world.dataset_dir
    assert ds == out / "University-1652"
    locs = _rows(out / "locations.csv")
    assert list(locs[0]) == ["id", "split", "latitude", "longitude", "footprint_m"]
    split = {r["id"]: r["split"] for r in locs}
    ids = {s: {i for i, v in split.items() if v == s} for s in ("train", "test", "distractor")}
    assert all(len(i) == 4 and i.isdigit() for i in split)
    assert len(ids["train"]) == 5 and len(ids["test"]) == 2 and len(ids["distractor"]) == 1
    assert not ids["train"] & (ids["test"] | ids["distractor"])
    assert {float(r["footprint_m"]) for r in locs} == {60.0}
    assert _ids(ds / "train/satellite") == _ids(ds / "train/drone") == ids["train"]
    assert _ids(ds / "test/query_drone") == _ids(ds / "test/query_satellite") == ids["test"]
    assert _ids(ds / "test/gallery_satellite") == _ids(ds / "test/gallery_drone") == ids["test"] | ids["distractor"]
    for i in ids["train"]:
        assert (ds / f"train/satellite/{i}/{i}.jpg").is_file()
        assert sorted(p.name for p in (ds / f"train/drone/{i}").iterdir()) == [
            "image-01.jpeg", "image-02.jpeg", "image-03.jpeg"]
    img = cv2.imread(str(ds / f"test/gallery_satellite/{min(ids['distractor'])}/{min(ids['distractor'])}.jpg"))
    assert img.shape == (64, 64, 3)
    cams = _rows(out / "cameras.csv")
    assert list(cams[0]) == ["image", "id", "latitude", "longitude", "altitude_m", "heading_deg", "pitch_deg",
                             "fov_deg", "focal_px", "target_latitude", "target_longitude", "ground_m", "k1", "k2",
                             "p1", "p2", "k3"] == CAMERA_COLUMNS
    drone_files = {str(p.relative_to(out)) for p in ds.rglob("*.jpeg")}
    assert {r["image"] for r in cams} == drone_files and len(cams) == len(drone_files)
    assert all(Path(r["image"]).parent.name == r["id"] for r in cams)
    assert all(70.0 <= float(r["altitude_m"]) <= 120.0 for r in cams)
    # camera positions are within a few hundred metres of their location (same local frame)
    loc = {r["id"]: (float(r["latitude"]), float(r["longitude"])) for r in locs}
    for r in cams:
        lat, lon = loc[r["id"]]
        assert abs(float(r["latitude"]) - lat) * 111_000 < 200
    assert not [p for p in out.iterdir() if p.name.startswith(".synth")]


def test_world_json_records_geo_and_baseline(world):
    rec = json.loads((world.out_dir / "world.json").read_text())
    assert rec["seed"] == 3 and rec["layout"] == "university1652" and rec["ground_resolution_m"] == 1.0
    assert rec["counts"]["locations"] == 8 and rec["config"]["footprint_m"] == 60.0
    assert -90 <= rec["origin_latitude"] <= 90 and -180 <= rec["origin_longitude"] <= 180
    (row,) = rec["baseline"]
    assert row["queries"] == 2 * 3 and row["gallery"] == 3 and row["chance_r1"] == pytest.approx(1 / 3)
    for name in ("colour_histogram", "downsampled_pixels"):
        assert 0.0 <= row[name]["r1"] <= row[name]["r5"] <= 1.0


def _georef(out: Path) -> GeoRef:
    """The world's geo-referencing as world.json records it."""
    rec = json.loads((out / "world.json").read_text())
    w, h = rec["size_px"]
    return GeoRef(rec["origin_latitude"], rec["origin_longitude"], rec["ground_resolution_m"], w, h)


def test_orthophoto_and_world_file_reproduce_the_georef(world):
    out = world.out_dir
    rec = json.loads((out / "world.json").read_text())
    geo = _georef(out)
    assert rec["orthophoto"] == {"image": "ortho.jpg", "world_file": "ortho.jgw", "crs": "EPSG:4326",
                                 "ground_resolution_m": 1.0, "size_px": [geo.width_px, geo.height_px]}
    img = cv2.imread(str(out / "ortho.jpg"))
    assert img.shape == (geo.height_px, geo.width_px, 3)
    wf = WorldFile.read(out / "ortho.jgw")
    assert wf.b == wf.d == 0.0
    cols = np.array([0, geo.width_px - 1, 0, geo.width_px - 1, geo.width_px // 3])
    rows = np.array([0, 0, geo.height_px - 1, geo.height_px - 1, geo.height_px // 2 + 7])
    lon, lat = wf.apply(cols, rows)
    want_lat, want_lon = geo.pixel_to_latlon(cols, rows)
    assert np.abs(lat - want_lat).max() < 1e-9 and np.abs(lon - want_lon).max() < 1e-9
    back, _, gsd_n = georef_from_world_file(wf, "EPSG:4326", geo.width_px, geo.height_px)  # reads as --ground
    assert back.lat0 == pytest.approx(geo.lat0, abs=1e-9) and back.lon0 == pytest.approx(geo.lon0, abs=1e-9)
    assert gsd_n == pytest.approx(1.0, rel=1e-9)


def test_projected_world_file_pixels_are_ground_metres():
    """A Web Mercator pixel of 0.5 grid metres at 60 deg N is 0.25 m on the ground; a UTM one near its grid size."""
    mercator = WorldFile(a=0.5, d=0.0, b=0.0, e=-0.5, c=2_500_000.25, f=8_399_737.75)  # about 60.0 N, 22.5 E
    geo, gsd_e, gsd_n = georef_from_world_file(mercator, "EPSG:3857", 1000, 1000)
    assert 59.9 < geo.lat0 < 60.1 and gsd_e == pytest.approx(0.25, rel=3e-3) and gsd_n == pytest.approx(0.25, rel=3e-3)
    utm = WorldFile(a=0.3, d=0.0, b=0.0, e=-0.3, c=500_000.15, f=5_300_000.15)
    _, gsd_e, gsd_n = georef_from_world_file(utm, "UTM:33N", 1000, 1000)
    assert gsd_e == pytest.approx(0.3, rel=3e-3) and gsd_n == pytest.approx(0.3, rel=3e-3)


def test_cameras_csv_has_the_pose_and_lens(world):
    out = world.out_dir
    locs = {r["id"]: r for r in _rows(out / "locations.csv")}
    cfg = SynthConfig(seed=3, **TINY).resolved()
    for r in _rows(out / "cameras.csv"):
        loc = locs[r["id"]]
        assert float(r["fov_deg"]) == pytest.approx(cfg.fov_deg, abs=1e-4)
        assert float(r["focal_px"]) == pytest.approx(32 / math.tan(math.radians(cfg.fov_deg) / 2), abs=1e-4)
        assert 45.0 <= float(r["pitch_deg"]) <= 60.0
        t_lat, t_lon = float(r["target_latitude"]), float(r["target_longitude"])
        assert haversine_m(t_lat, t_lon, float(loc["latitude"]), float(loc["longitude"])) < 15.0  # 3 m jitter
        # the camera stands back from its look-at point by altitude / tan(pitch)
        back = float(r["altitude_m"]) / math.tan(math.radians(float(r["pitch_deg"])))
        assert haversine_m(float(r["latitude"]), float(r["longitude"]), t_lat, t_lon) == pytest.approx(back, rel=5e-3)


def test_drone_jpegs_carry_the_focal_length_in_exif(world):
    out = world.out_dir
    for r in _rows(out / "cameras.csv"):
        with Image.open(out / r["image"]) as im:
            exif = im.getexif()
            size = im.size
        sub = exif.get_ifd(0x8769)
        assert exif[0x010F] == "spikevimformer" and exif[0x0110] == "synthetic pinhole"
        assert sub[0xA210] == 3 and (sub[0xA002], sub[0xA003]) == size == (64, 64)
        focal = float(sub[0x920A]) * float(sub[0xA20E]) / 10
        assert focal == pytest.approx(float(r["focal_px"]), rel=1e-3)
        assert sub[0xA405] == round(float(r["focal_px"]) * 43.2666 / math.hypot(64, 64))
    sat = next((world.dataset_dir / "train/satellite").glob("*/*.jpg"))
    with Image.open(sat) as im:
        assert len(im.getexif()) == 0


def _decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def test_spliced_exif_leaves_the_pixels_alone(world):
    rgb = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 90])
    plain = buf.tobytes()
    tagged = with_exif(plain, camera_exif(50.0, 56, 40))
    assert tagged[:4] == b"\xff\xd8\xff\xe1" and tagged.endswith(plain[2:])
    assert np.array_equal(_decode(plain), _decode(tagged))
    # a written drone view is OpenCV's JPEG with one APP1 segment after SOI: the same pixels without it
    drone = next(world.dataset_dir.glob("train/drone/*/*.jpeg")).read_bytes()
    n = int.from_bytes(drone[4:6], "big")
    assert drone[2:4] == b"\xff\xe1" and drone[6:12] == b"Exif\x00\x00"
    stripped = drone[:2] + drone[4 + n:]
    assert stripped[2:4] == b"\xff\xe0"  # OpenCV's JFIF header follows
    assert np.array_equal(_decode(stripped), _decode(drone))
    with pytest.raises(ValueError, match="SOI"):
        with_exif(b"not a jpeg", camera_exif(50.0, 56, 40))


def test_same_seed_same_bytes_different_seed_differs(world, tmp_path):
    again = generate_world(SynthConfig(seed=3, **TINY), tmp_path / "again", workers=2)
    assert _hashes(again.out_dir) == _hashes(world.out_dir)
    other = generate_world(SynthConfig(seed=4, **TINY), tmp_path / "other")
    a, b = _hashes(world.dataset_dir), _hashes(other.dataset_dir)
    assert set(a.values()).isdisjoint(b.values())
    assert (tmp_path / "other/locations.csv").read_text() != (world.out_dir / "locations.csv").read_text()


def test_existing_world_needs_overwrite(world, tmp_path):
    out = tmp_path / "w"
    generate_world(SynthConfig(seed=1, **TINY), out)
    with pytest.raises(ValueError, match="overwrite"):
        generate_world(SynthConfig(seed=1, **TINY), out)
    generate_world(SynthConfig(seed=2, **TINY), out, overwrite=True)
    assert json.loads((out / "world.json").read_text())["seed"] == 2
    assert not [p for p in out.iterdir() if p.name.startswith(".synth")]


def test_buildings_rise_out_of_the_ground():
    cfg = SynthConfig(seed=5, **TINY).resolved()
    w, locs = build_world(cfg, view_reach_m(cfg))
    assert len(w.buildings) > 20 and w.buildings.heights_m.max() > 6
    loc = locs[0]
    cam = Camera.look_at(loc.xy, 30.0, 50.0, 90.0, cfg.fov_deg, 96)
    flat, solid = drone_view(w, cam, extrude=False), drone_view(w, cam, extrude=True)
    plain = cv2.warpPerspective(w.ground, cam.plane_homography(0.0, w.gsd_m), (96, 96), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT_101)
    assert np.abs(flat.astype(int) - plain.astype(int)).mean() < 1.0  # no extrusion = a plain homography
    diff = np.abs(solid.astype(int) - plain.astype(int)).max(axis=2) > 30
    assert diff.mean() > 0.05  # walls and lifted roofs change a good part of the view
    # the target (a building centre) is at the image centre, and its roof is drawn there
    assert diff[40:56, 40:56].mean() > 0.3


def test_sues200_layout(tmp_path):
    cfg = SynthConfig(seed=2, layout="sues200", locations=6, views=2, image_size=48, gsd_m=1.0, footprint_m=60.0,
                      altitudes_m=(60.0, 80.0, 100.0, 120.0))
    s = generate_world(cfg, tmp_path)
    ds = tmp_path / "SUES-200"
    locs = _rows(tmp_path / "locations.csv")
    train = {r["id"] for r in locs if r["split"] == "train"}
    test = {r["id"] for r in locs if r["split"] == "test"}
    assert len(train) + len(test) == 6 and train and test and not train & test
    for alt in ("60", "80", "100", "120"):
        assert _ids(ds / f"Training/{alt}/drone") == _ids(ds / f"Training/{alt}/satellite") == train
        assert _ids(ds / f"Testing/{alt}/query_drone") == _ids(ds / f"Testing/{alt}/query_satellite") == test
        gallery = _ids(ds / f"Testing/{alt}/gallery_satellite")
        assert gallery == _ids(ds / f"Testing/{alt}/gallery_drone") == train | test
        assert all((ds / f"Training/{alt}/satellite/{i}/0.png").is_file() for i in train)
        assert len(list((ds / f"Training/{alt}/drone").glob("*/*.jpg"))) == 2 * len(train)
    assert [row["altitude"] for row in s.baseline] == ["100", "120", "60", "80"]
    assert {float(r["altitude_m"]) for r in _rows(tmp_path / "cameras.csv")} == {60.0, 80.0, 100.0, 120.0}


def test_split_is_west_east_and_sues200_reuses_the_published_train_ids():
    xy = np.random.default_rng(0).uniform(0, 3000, (200, 2))
    locs = assign(SynthConfig(layout="sues200").resolved(), xy, np.random.default_rng(1))
    train = [loc for loc in locs if loc.split == "train"]
    test = [loc for loc in locs if loc.split == "test"]
    published = (Path(spikevimformer.__file__).parent / "resources/sues200-train-ids.txt").read_text().split()
    assert sorted(loc.id for loc in train) == sorted(published) and len(test) == 80
    assert len({loc.id for loc in locs}) == 200
    assert max(loc.xy[0] for loc in train) <= min(loc.xy[0] for loc in test)


def _orthophoto(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A small orthophoto with a height image, cut from a procedural world, and a degree world file."""
    cfg = SynthConfig(seed=7, **TINY).resolved()
    w, _ = build_world(cfg, view_reach_m(cfg))
    n = 400
    ortho = w.ortho[:n, :n]
    heights = np.zeros((n, n), np.uint16)
    b = w.buildings
    for i in range(len(b)):
        ring = b.verts[b.start[i]: b.start[i] + b.count[i]]
        pts = np.round(np.stack([ring[:, 0] / w.gsd_m - 0.5, -ring[:, 1] / w.gsd_m - 0.5], 1)).astype(np.int32)
        cv2.fillPoly(heights, [pts], int(b.heights_m[i] * 10))
    img, hp, wf = tmp_path / "ortho.png", tmp_path / "heights.png", tmp_path / "ortho.pgw"
    cv2.imwrite(str(img), cv2.cvtColor(ortho, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(hp), heights)
    deg = 1.0 / 111_195.0  # about 1 m at the equator
    wf.write_text(f"{deg}\n0\n0\n{-deg}\n{10 + deg / 2}\n{-(deg / 2)}\n")
    return img, hp, wf


def test_user_orthophoto_with_heights_and_world_file(tmp_path):
    img, hp, wf = _orthophoto(tmp_path)
    cfg = SynthConfig(seed=1, locations=6, views=2, image_size=48, footprint_m=60.0, ground=str(img),
                      world_file=str(wf), heights=str(hp), height_scale=0.1)
    s = generate_world(cfg, tmp_path / "mine")
    rec = json.loads((tmp_path / "mine/world.json").read_text())
    assert rec["source"] == "orthophoto" and rec["ground_resolution_m"] == pytest.approx(1.0, rel=1e-3)
    assert rec["counts"]["buildings"] > 10 and s.counts["locations"] == 6
    assert rec["origin_latitude"] == pytest.approx(0.0, abs=1e-9)
    assert rec["origin_longitude"] == pytest.approx(10.0, abs=1e-9)
    geo = _georef(tmp_path / "mine")
    assert cv2.imread(str(tmp_path / "mine/ortho.jpg")).shape == (geo.height_px, geo.width_px, 3) == (400, 400, 3)
    lon, lat = WorldFile.read(tmp_path / "mine/ortho.jgw").apply([0, 399], [0, 250])
    want_lat, want_lon = geo.pixel_to_latlon([0, 399], [0, 250])
    assert np.abs(lat - want_lat).max() < 1e-9 and np.abs(lon - want_lon).max() < 1e-9
    for r in _rows(tmp_path / "mine/locations.csv"):
        assert -400 / 111_195 < float(r["latitude"]) < 0
        assert 10 < float(r["longitude"]) < 10 + 400 / 111_195


def _dsm(tmp_path: Path, heights_png: Path) -> tuple[Path, callable]:
    """A DSM GeoTIFF of _orthophoto's ground on a 2 m grid: a 30 m hill and the buildings of its height image;
    returns it and the hill's height (m) at pixel (col, row) of the orthophoto."""
    import rasterio
    from rasterio.transform import Affine

    def hill(col, row):
        return 30.0 * np.exp(-((np.asarray(col) - 200.0) ** 2 + (np.asarray(row) - 200.0) ** 2) / (2 * 110.0**2))

    rows, cols = np.mgrid[0:200, 0:200] * 2.0 + 1.0
    buildings = cv2.imread(str(heights_png), cv2.IMREAD_UNCHANGED).astype(np.float32) / 10.0
    surface = hill(cols, rows) + buildings[1::2, 1::2]
    deg = 1.0 / 111_195.0
    path = tmp_path / "dsm.tif"
    with rasterio.open(path, "w", driver="GTiff", width=200, height=200, count=1, dtype="float32", crs="EPSG:4326",
                       transform=Affine(2 * deg, 0, 10.0, 0, -2 * deg, 0.0)) as dst:
        dst.write(surface.astype(np.float32), 1)
    return path, hill


def test_user_orthophoto_over_a_dsm_stands_on_its_ground(tmp_path):
    """--dsm: the views stand on the DSM's bare ground (its hill, not its roofs), what rises from it is extruded as
    --heights would extrude it, and the world's own dsm.tif and cameras.csv ground_m say so."""
    img, hp, wf = _orthophoto(tmp_path)
    dsm, hill = _dsm(tmp_path, hp)
    cfg = SynthConfig(seed=1, locations=6, views=2, image_size=48, footprint_m=60.0, ground=str(img),
                      world_file=str(wf), dsm=str(dsm), epoch_gap=0.0)  # fmt: skip
    s = generate_world(cfg, tmp_path / "hilly")
    flat = generate_world(SynthConfig(seed=1, locations=6, views=2, image_size=48, footprint_m=60.0, ground=str(img),
                                      world_file=str(wf), heights=str(hp), height_scale=0.1), tmp_path / "flat")
    assert any("terrain from dsm.tif" in n for n in s.notes)
    assert s.counts["buildings"] >= 0.4 * flat.counts["buildings"] > 10  # a 2 m DSM loses the smallest sheds
    tall = [build_world(c.resolved(), view_reach_m(c.resolved()))[0].buildings for c in (cfg, replace(
        cfg, dsm=None, heights=str(hp), height_scale=0.1))]  # fmt: skip
    # heights above the ground, not the datum (the hill would add up to 30 m); the 2 m DSM blurs roof edges
    assert abs(np.median(tall[0].heights_m) / np.median(tall[1].heights_m) - 1) < 0.25
    assert (tmp_path / "hilly/dsm.tif").is_file() and not (tmp_path / "flat/dsm.tif").exists()
    deg = 1.0 / 111_195.0
    errors, grounds = [], []
    for r in _rows(tmp_path / "hilly/cameras.csv"):
        col, row = (float(r["target_longitude"]) - 10.0) / deg, -float(r["target_latitude"]) / deg
        grounds.append(float(r["ground_m"]))
        errors.append(abs(float(r["ground_m"]) - hill(col, row)))
    assert max(grounds) > 10 and np.median(errors) < 2.5
    assert all(float(r["ground_m"]) == 0 for r in _rows(tmp_path / "flat/cameras.csv"))
    with pytest.raises(ValueError, match="--world-file"):
        generate_world(SynthConfig(ground=str(img), gsd_m=1.0, dsm=str(dsm)), tmp_path / "x")
    with pytest.raises(ValueError, match="pass one"):
        generate_world(SynthConfig(ground=str(img), world_file=str(wf), dsm=str(dsm), heights=str(hp)), tmp_path / "y")
    with pytest.raises(ValueError, match="does not overlap"):
        far = tmp_path / "far.pgw"
        far.write_text(wf.read_text().replace("10.0", "12.0", 1).replace(f"{10 + deg / 2}", f"{12 + deg / 2}"))
        generate_world(SynthConfig(ground=str(img), world_file=str(far), dsm=str(dsm)), tmp_path / "z")


def test_user_orthophoto_without_heights_is_flat(tmp_path):
    img, _, _ = _orthophoto(tmp_path)
    s = generate_world(SynthConfig(seed=1, locations=5, views=2, image_size=48, footprint_m=60.0, ground=str(img),
                                   gsd_m=1.0), tmp_path / "flat")
    assert s.counts["buildings"] == 0 and any("not extruded" in n for n in s.notes)
    with pytest.raises(FileNotFoundError):
        generate_world(SynthConfig(ground=str(tmp_path / "missing.png"), gsd_m=1.0), tmp_path / "x")
    with pytest.raises(ValueError, match="ground resolution"):
        generate_world(SynthConfig(ground=str(img)), tmp_path / "y")


def test_user_orthophoto_locations_keep_off_nodata(tmp_path):
    """The west half of the area is black (nodata, as GIS exports pad a footprint): no location lands over it."""
    img, _, _ = _orthophoto(tmp_path)
    ortho = cv2.imread(str(img))
    ortho[:, :200] = 0
    cv2.imwrite(str(img), ortho)
    s = generate_world(SynthConfig(seed=1, locations=5, views=1, image_size=48, footprint_m=60.0, ground=str(img),
                                   gsd_m=1.0), tmp_path / "half")  # fmt: skip
    assert any("over nodata" in n for n in s.notes)
    geo = _georef(tmp_path / "half")
    for r in _rows(tmp_path / "half/locations.csv"):
        east = (float(r["longitude"]) - geo.lon0) * (np.pi / 180 * 6_371_008.8) * np.cos(np.radians(geo.lat0))
        col = east / geo.gsd_m
        assert col > 200 + 30 - 60 * 0.1, col  # the tile (60 px) is at most 10 % over the black half
    ortho[:] = 0
    cv2.imwrite(str(img), ortho)
    with pytest.raises(ValueError, match="nodata"):
        generate_world(SynthConfig(seed=1, locations=5, views=1, image_size=48, footprint_m=60.0, ground=str(img),
                                   gsd_m=1.0), tmp_path / "black")  # fmt: skip


def test_bad_settings_are_one_sentence_errors():
    with pytest.raises(ValueError, match="layout"):
        SynthConfig(layout="cvusa").resolved()
    with pytest.raises(ValueError, match="altitude"):
        SynthConfig(altitudes_m=(30.0, 40.0)).resolved()
    with pytest.raises(ValueError, match="horizon"):
        SynthConfig(pitch_deg=(15.0, 20.0), fov_deg=60.0).resolved()


def test_cli_synth_refuses_a_dsm_it_cannot_place(tmp_path, capsys):
    for extra, words in [(["--dsm-units", "ft"], "--dsm-units describes a --dsm"),
                         (["--ground", "o.jpg", "--dsm", "d.tif"], "pass its world file too (--world-file F)"),
                         (["--dsm", "d.tif"], "pass --ground IMAGE too")]:  # fmt: skip
        assert main(["synth", "--out", str(tmp_path / "x"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
        assert not (tmp_path / "x").exists()


def test_cli_synth(tmp_path, capsys):
    args = ["synth", "--out", str(tmp_path / "cli"), "--locations", "8", "--views", "2", "--image-size", "48",
            "--gsd", "1", "--footprint", "60", "--seed", "9", "--quiet", "--workers", "1"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "colour histogram R@1" in text and "chance R@1" in text and "5 train, 2 test, 1 distractor" in text
    assert "epoch gap 0.5: ortho.jpg and the satellite tiles show another date" in text  # a new world's default
    assert (tmp_path / "cli/University-1652/test/gallery_satellite").is_dir()
    assert main(args) == 2  # refuses to overwrite silently
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["counts"]["locations"] == 8 and answer["epochs"]["gap"] == 0.5


def test_large_geotiff_renders_by_windows_the_same_world(tmp_path, monkeypatch):
    """Above WINDOWED_PIXELS a GeoTIFF is read window by window around each location (never whole): the dataset
    is the one rendered from the whole raster (cameras exactly, pixels up to rounding), without the whole-area
    ortho.jpg copy."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    from spikevimformer.data.synth import ground
    from spikevimformer.geo import raster

    img, _, _ = _orthophoto(tmp_path)
    rgb = np.tile(cv2.cvtColor(cv2.imread(str(img)), cv2.COLOR_BGR2RGB), (2, 2, 1))  # 800 m, views reach 168 m
    tif = tmp_path / "area.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=800, height=800, count=3, dtype="uint8", crs="EPSG:32632",
                       transform=from_origin(500_000.0, 5_200_000.0, 1.0, 1.0), tiled=True, blockxsize=64,
                       blockysize=64, compress="deflate") as ds:  # fmt: skip
        ds.write(rgb.transpose(2, 0, 1))
    (tmp_path / "area.tfw").write_text("1.0\n0\n0\n-1.0\n500000.5\n5199999.5\n")
    cfg = SynthConfig(seed=2, locations=6, views=2, image_size=48, footprint_m=60.0, ground=str(tif),
                      world_file=str(tmp_path / "area.tfw"), crs="UTM:32N", altitudes_m=(40.0, 60.0))
    whole = generate_world(cfg, tmp_path / "whole")
    reads = []
    real_crop = raster.WindowedRaster.crop
    monkeypatch.setattr(raster.WindowedRaster, "crop", lambda self, box: reads.append(box) or real_crop(self, box))
    monkeypatch.setattr(ground, "WINDOWED_PIXELS", 100 * 100)
    windowed = generate_world(cfg, tmp_path / "windowed")
    assert any("window by window" in n for n in windowed.notes) and not any("window" in n for n in whole.notes)
    assert len(reads) == 6 and all((x1 - x0) * (y1 - y0) < 0.4 * 800 * 800 for x0, y0, x1, y1 in reads)
    assert not (tmp_path / "windowed/ortho.jpg").exists()
    assert json.loads((tmp_path / "windowed/world.json").read_text())["orthophoto"] is None
    files = sorted(p.relative_to(tmp_path / "whole") for p in (tmp_path / "whole/University-1652").rglob("*.jp*g"))
    assert len(files) == 6 + 6 * 2 + 1 + 2  # tiles, views, and the test query location's copies
    for rel in files:  # the same pixels up to the rounding of a shifted frame (a wrong window moves everything)
        a, b = (cv2.imread(str(tmp_path / run / rel)).astype(int) for run in ("whole", "windowed"))
        assert np.abs(a - b).max() <= 8 and np.abs(a - b).mean() < 0.2, rel
    for name in ("cameras.csv", "locations.csv"):
        assert (tmp_path / "whole" / name).read_text() == (tmp_path / "windowed" / name).read_text()


# --- two dates: the reference (ortho.jpg, satellite tiles) and the drone photos `epoch_gap` apart -------------


@pytest.fixture(scope="module")
def two_dates(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "two-dates"
    return generate_world(SynthConfig(seed=3, epoch_gap=0.5, **TINY), out)


def _raster_sha256(world) -> str:
    h = hashlib.sha256()
    for layer in (world.ground, world.ortho):
        h.update(layer.tobytes())
    return h.hexdigest()


def test_epoch_gap_zero_paints_the_world_made_before_it():
    for cfg in (SynthConfig(seed=3, **TINY), SynthConfig(seed=3, epoch_gap=0.0, **TINY)):
        resolved = cfg.resolved()
        w, _ = build_world(resolved, view_reach_m(resolved))
        assert _raster_sha256(w) == ONE_DATE_TINY_SHA256
        assert w.reference is None and w.epochs is None and w.reference_view is w.ortho


def test_two_dates_keep_the_photos_and_the_geometry(world, two_dates):
    """Only the reference moves to another date: drone photos, cameras, locations and georeferencing are the
    one-date world's, byte for byte, so registering a photo to the reference still has exact ground truth."""
    one, two = _hashes(world.out_dir), _hashes(two_dates.out_dir)
    assert one.keys() == two.keys()
    differ = {k for k in one if one[k] != two[k]}
    assert differ == {k for k in one if "satellite" in k} | {"ortho.jpg", "world.json"}
    a, b = (cv2.imread(str(w.out_dir / "ortho.jpg")) for w in (world, two_dates))
    assert a.shape == b.shape


def test_world_json_records_the_gap_and_both_dates(world, two_dates):
    assert json.loads((world.out_dir / "world.json").read_text())["epochs"] is None
    rec = json.loads((two_dates.out_dir / "world.json").read_text())
    ep = rec["epochs"]
    assert rec["config"]["epoch_gap"] == ep["gap"] == 0.5 and ep["repainted"] == "reference"
    assert (ep["drone"]["sun_az_deg"], ep["drone"]["sun_el_deg"]) == (rec["sun"]["azimuth_deg"],
                                                                      rec["sun"]["elevation_deg"])
    turn = abs((ep["reference"]["sun_az_deg"] - ep["drone"]["sun_az_deg"] + 180) % 360 - 180)
    assert 35 <= turn <= 75  # half of 70..150 degrees
    assert ep["reference"]["foliage"] < 1 and ep["reference"]["dryness"] > 0
    assert ep["sensor"]["gsd_m"] > rec["ground_resolution_m"] and ep["sensor"]["jpeg_quality"] < 92
    assert set(ep["changes"]) == {"fields", "cars", "traffic", "buildings", "new_buildings", "felled", "mown",
                                  "texture"}
    assert ep["counts"]["cars_in_traffic"] > 0 and "reference sensor" in ep["applied"]


def _shadow_side(image: np.ndarray, world, az_deg: float) -> float:
    """Mean grey just past each building (8 m or taller) away from the sun minus just past it towards the sun:
    negative where shadows fall away from a sun at `az_deg`."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(float)
    b, g = world.buildings, world.gsd_m
    sun = np.array([math.sin(math.radians(az_deg)), math.cos(math.radians(az_deg))])  # east, north
    diffs = []
    for c, r in zip(b.centroid[b.heights_m >= 8], b.radius_m[b.heights_m >= 8], strict=True):
        (c0, r0), (c1, r1) = ((int(p[0] / g), int(-p[1] / g)) for p in (c - sun * (r + 3), c + sun * (r + 3)))
        if 0 <= min(r0, r1, c0, c1) and max(r0, r1) < grey.shape[0] and max(c0, c1) < grey.shape[1]:
            diffs.append(grey[r0, c0] - grey[r1, c1])
    return float(np.mean(diffs))


def _changed_share(a: np.ndarray, b: np.ndarray, sigma_px: float) -> float:
    """Share of pixels whose standardised grey differs by half a standard deviation, both blurred alike: changes
    of structure, not of tone or sharpness."""
    ga, gb = (cv2.GaussianBlur(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), sigma_px)
              for x in (a, b))  # fmt: skip
    ga, gb = ((x - x.mean()) / x.std() for x in (ga, gb))
    return float((np.abs(ga - gb) > 0.5).mean())


def test_the_reference_date_differs_in_structure_and_shadows():
    cfg = SynthConfig(seed=5, epoch_gap=1.0, **TINY).resolved()
    w, _ = build_world(cfg, view_reach_m(cfg))
    ep = w.epochs
    sensor = Sensor(**ep["sensor"])
    same_date = sense(w.ortho, sensor, w.gsd_m, np.random.default_rng(0))  # the drone's date through that sensor
    assert _changed_share(same_date, w.ortho, sensor.gsd_m / w.gsd_m) < 0.01
    assert _changed_share(w.reference, w.ortho, sensor.gsd_m / w.gsd_m) > 0.25
    # each date's shadows fall away from its own sun
    assert _shadow_side(w.ortho, w, w.sun_az_deg) < -8
    assert _shadow_side(w.reference, w, ep["reference"]["sun_az_deg"]) < -8
    assert _shadow_side(w.reference, w, w.sun_az_deg) > _shadow_side(w.reference, w, ep["reference"]["sun_az_deg"]) + 8


def test_two_dates_are_deterministic_per_seed(two_dates, tmp_path):
    again = generate_world(SynthConfig(seed=3, epoch_gap=0.5, **TINY), tmp_path / "again", workers=2)
    assert _hashes(again.out_dir) == _hashes(two_dates.out_dir)
    wider = generate_world(SynthConfig(seed=3, epoch_gap=0.8, **TINY), tmp_path / "wider")
    assert (wider.out_dir / "ortho.jpg").read_bytes() != (two_dates.out_dir / "ortho.jpg").read_bytes()


def test_user_orthophoto_at_two_dates(tmp_path, monkeypatch):
    """A user's orthophoto is the reference's date, coarsened; the drone sees withered vegetation and the
    extruded buildings' shadows under another sun. A raster read by windows cannot be repainted whole."""
    from spikevimformer.data.synth import ground

    img, hp, _ = _orthophoto(tmp_path)
    cfg = SynthConfig(seed=1, locations=5, views=1, image_size=48, footprint_m=60.0, ground=str(img), gsd_m=1.0,
                      heights=str(hp), height_scale=0.1, epoch_gap=0.5)
    s = generate_world(cfg, tmp_path / "mine")
    rec = json.loads((tmp_path / "mine/world.json").read_text())
    ep = rec["epochs"]
    assert ep["repainted"] == "drone" and ep["changes"] is None and ep["reference"]["sun_az_deg"] is None
    assert ep["applied"] == ["withered vegetation", "cast shadows of the extruded buildings under another sun",
                             "reference sensor"]
    assert any("epoch gap 0.5 on a user orthophoto" in n for n in s.notes)
    resolved = cfg.resolved()
    w, _ = build_world(resolved, view_reach_m(resolved))
    given = cv2.cvtColor(cv2.imread(str(img)), cv2.COLOR_BGR2RGB)
    assert _changed_share(w.ground, given, 2.0) > 0.05  # the drone's date
    assert np.abs(w.reference.astype(int) - given).mean() > 3  # the reference sensor
    monkeypatch.setattr(ground, "_window_size", lambda cfg: (9000, 9000))
    with pytest.raises(ValueError, match="read window by window; pass --epoch-gap 0"):
        build_world(SynthConfig(seed=1, ground=str(img), gsd_m=1.0, epoch_gap=0.5).resolved(), 50.0)


@pytest.mark.parametrize("gap", ["-0.1", "1.5", "nan", "half"])
def test_bad_epoch_gap_is_one_line_before_any_work(gap, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["synth", "--out", str(tmp_path / "w"), "--epoch-gap", gap])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and err[-1].startswith("spikevimformer synth: error: argument --epoch-gap: must")
    assert not (tmp_path / "w").exists()
    with pytest.raises(ValueError, match="epoch gap must lie in 0..1"):
        SynthConfig(epoch_gap=1.5).resolved()


def test_cli_makes_new_procedural_worlds_two_dates_apart():
    parser = build_parser()
    cfg = config_from_args(parser.parse_args(["synth", "--out", "x"]))
    assert cfg.epoch_gap == 0.5
    assert config_from_args(parser.parse_args(["synth", "--out", "x", "--ground", "o.png"])).epoch_gap == 0.0
    assert config_from_args(parser.parse_args(["synth", "--out", "x", "--epoch-gap", "0"])).epoch_gap == 0.0


def _report_sigint_blocked(queue) -> None:
    queue.put(signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []))


@pytest.mark.skipif(sys.platform == "win32", reason="no signal masks on Windows")
def test_render_workers_never_see_ctrl_c_and_this_process_gets_it_back() -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with _sigint_blocked():
        child = ctx.Process(target=_report_sigint_blocked, args=(queue,))
        child.start()
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert queue.get(timeout=60) is True  # a Ctrl-C to the process group leaves the worker alone
    child.join(60)
