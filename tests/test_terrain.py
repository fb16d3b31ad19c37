"""Terrain and real lenses: 6-DoF pose through a DSM, DSM resampling, free focal length, nadir heading, and the
hilly, distorted synthetic world end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import Affine
from rasterio.warp import transform

from spikevimformer.cli import main
from spikevimformer.data.synth import SynthConfig, generate_world
from spikevimformer.data.synth.camera import Camera
from spikevimformer.geo.terrain import resample_dsm
from spikevimformer.geodesy import WorldFile, haversine_m
from spikevimformer.registration.pose import free_focal, radial_distortion, solve_pose

DIST = (-0.26, 0.104, 0.0, 0.0, 0.0)


def _relief(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return 35.0 * np.sin(x / 60.0) + 20.0 * np.cos(y / 45.0) + 0.15 * x


def _view(dist=DIST) -> tuple[Camera, np.ndarray, np.ndarray]:
    """A 30 deg oblique camera over hills: ground points (n, 3) it sees and their distorted pixels (n, 2)."""
    cam = Camera.look_at((0.0, 0.0), 80.0, 60.0, 100.0, 67.0, 1000, float(_relief(0.0, 0.0)), dist)
    rng = np.random.default_rng(0)
    xy = rng.uniform(-60, 60, (300, 2))
    pts = np.c_[xy, _relief(xy[:, 0], xy[:, 1])]
    uv, depth = cam.project(pts)
    keep = (depth > 0) & (uv.min(1) > 5) & (uv.max(1) < 995)
    return cam, pts[keep], uv[keep]


def test_pose_through_terrain_needs_both_the_lens_and_the_dsm() -> None:
    cam, pts, uv = _view()
    straight = cv2.undistortPoints(uv.reshape(-1, 1, 2), cam.k, np.asarray(DIST), P=cam.k).reshape(-1, 2)
    both = solve_pose(pts, straight, cam.k, ransac_px=2.0)
    assert both is not None and np.linalg.norm(both.centre - cam.position) < 0.02  # centimetres
    flat = solve_pose(pts[:, :2], straight, cam.k, ransac_px=2.0)
    no_lens = solve_pose(pts, uv, cam.k, ransac_px=2.0)
    for pose in (flat, no_lens):  # either part missing: no pose, or one metres off
        assert pose is None or np.linalg.norm(pose.centre[:2] - cam.position[:2]) > 1.0


def test_the_matches_call_for_the_right_focal_length_when_the_lens_is_wrong() -> None:
    cam, pts, uv = _view(dist=())
    wrong = cam.k.copy()
    wrong[0, 0] = wrong[1, 1] = 0.75 * cam.focal_px
    pose = solve_pose(pts, uv, wrong, ransac_px=3.0)
    assert pose is not None
    focal, sigma, centre = free_focal(pose, wrong)
    assert focal == pytest.approx(cam.focal_px, rel=0.02) and np.linalg.norm(centre - cam.position) < 0.5
    assert 0 <= sigma < 0.01 * cam.focal_px  # exact correspondences: the estimate is sure of itself


def test_the_matches_show_a_distortion_the_lens_leaves_out() -> None:
    """Pixels of a k1 -0.26 lens taken as a pinhole's: k1 near the lens's, displacing the edge by percents; the
    same pixels undistorted: k1 near 0."""
    cam, pts, uv = _view()
    raw = solve_pose(pts, uv, cam.k, ransac_px=8.0)
    assert raw is not None
    k1, sigma, edge = radial_distortion(raw, cam.k)
    assert -0.35 < k1 < -0.15 and abs(k1) > 4 * sigma and edge < -0.03
    straight = cv2.undistortPoints(uv.reshape(-1, 1, 2), cam.k, np.asarray(DIST), P=cam.k).reshape(-1, 2)
    k1, _, edge = radial_distortion(solve_pose(pts, straight, cam.k, ransac_px=2.0), cam.k)
    assert abs(k1) < 0.01 and abs(edge) < 0.005


def test_a_nadir_photo_reports_its_image_up_azimuth_as_heading() -> None:
    cam = Camera.look_at((5.0, -8.0), 30.0, 90.0, 120.0, 60.0, 512)
    uv = np.random.default_rng(1).uniform(20, 490, (40, 2))
    pose = solve_pose(cam.ground_points(uv), uv, cam.k)
    assert pose.pitch_deg == pytest.approx(90.0, abs=0.01) and pose.heading_deg == pytest.approx(30.0, abs=0.01)


def _ortho_world(tmp_path: Path) -> tuple[Path, WorldFile]:
    """A 200 x 200 px EPSG:4326 orthophoto about (24.68, 120.95), 0.5 m pixels (world file only, no pixels read)."""
    deg_lat = 0.5 / 111_195.0
    deg_lon = deg_lat / np.cos(np.radians(24.68))
    image = tmp_path / "ortho.jpg"
    image.write_bytes(b"")
    return image, WorldFile(a=deg_lon, d=0.0, b=0.0, e=-deg_lat, c=120.95, f=24.68)


def _utm_dsm(path: Path, heights: np.ndarray, crs: str = "EPSG:32651", nodata_rows: int = 0) -> None:
    """A 1 m DSM in `crs` over the orthophoto's north-west corner (plus margin), heights[row, col]."""
    heights = heights.astype(np.float32).copy()
    heights[:nodata_rows] = -9999.0
    (x,), (y,) = transform("EPSG:4326", crs, [120.95], [24.68])
    with rasterio.open(path, "w", driver="GTiff", width=heights.shape[1], height=heights.shape[0], count=1,
                       dtype="float32", crs=crs, transform=Affine(1.0, 0.0, x - 50.0, 0.0, -1.0, y + 50.0),
                       nodata=-9999.0) as dst:  # fmt: skip
        dst.write(heights, 1)


def test_a_dsm_in_another_crs_is_resampled_onto_the_orthophoto_with_its_nodata(tmp_path) -> None:
    image, world = _ortho_world(tmp_path)
    rows, cols = np.mgrid[0:400, 0:400]
    _utm_dsm(tmp_path / "dsm.tif", 100.0 + 0.1 * cols - 0.05 * rows, nodata_rows=100)
    grid = resample_dsm(tmp_path / "dsm.tif", image, world, "EPSG:4326", (200, 200))
    assert grid.factor == 1 and grid.heights.shape == (200, 200)
    known = np.isfinite(grid.heights)
    assert 0.0 < known.mean() < 1.0  # the DSM's nodata rows stay unknown
    assert 90.0 < np.nanmin(grid.heights) < np.nanmax(grid.heights) < 150.0
    east = np.diff(grid.heights, axis=1)  # 0.1 m per 1 m east: 0.05 m per 0.5 m pixel
    assert np.nanmedian(east) == pytest.approx(0.05, abs=0.01)
    assert np.isnan(grid.at_pixels(np.array([-50.0]), np.array([10.0])))[0]


def test_bad_dsms_are_refused_naming_the_file_and_the_fix(tmp_path) -> None:
    image, world = _ortho_world(tmp_path)
    far = tmp_path / "far.tif"
    with rasterio.open(far, "w", driver="GTiff", width=10, height=10, count=1, dtype="float32", crs="EPSG:32651",
                       transform=Affine(1.0, 0.0, 500_000.0, 0.0, -1.0, 1_000_000.0)) as dst:  # fmt: skip
        dst.write(np.ones((10, 10), np.float32), 1)
    with pytest.raises(ValueError, match=r"far\.tif does not overlap the orthophoto"):
        resample_dsm(far, image, world, "EPSG:4326", (200, 200))
    feet = tmp_path / "feet.tif"
    _utm_dsm(feet, np.full((400, 400), 300.0), crs="EPSG:2263")  # New York State Plane, US feet
    with pytest.raises(ValueError, match=r"feet\.tif is in a feet-based coordinate system .* --dsm-units"):
        resample_dsm(feet, image, world, "EPSG:4326", (200, 200))
    with pytest.raises(FileNotFoundError, match="DSM .* does not exist"):
        resample_dsm(tmp_path / "none.tif", image, world, "EPSG:4326", (200, 200))


@pytest.fixture(scope="module")
def hills(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hills")
    cfg = SynthConfig(seed=5, locations=12, views=2, image_size=256, test_fraction=0.4, relief_m=80.0,
                      distortion=-0.25)  # fmt: skip
    generate_world(cfg, root / "world")
    for name, extra in (("idx", ["--dsm", str(root / "world" / "dsm.tif")]), ("flat", [])):
        assert main(["index", "build", "--out", str(root / name), "--world", str(root / "world"), "--image-size", "32",
                     "--random-init", *extra]) == 0  # fmt: skip
    return root


def test_a_hilly_distorted_world_writes_its_dsm_lens_and_xmp(hills) -> None:
    world = hills / "world"
    record = json.loads((world / "world.json").read_text())
    assert record["config"]["relief_m"] == 80.0 and record["orthophoto"]["dsm"]["image"] == "dsm.tif"
    with rasterio.open(world / "dsm.tif") as dsm:
        assert dsm.crs.to_epsg() == 4326 and float(dsm.read(1).max() - dsm.read(1).min()) > 70.0  # hills and roofs
    lens = json.loads((world / "cameras.json").read_text())
    (entry,) = lens.values()
    assert entry["projection_type"] == "brown" and entry["k1"] == -0.25
    with (world / "cameras.csv").open(newline="") as f:
        row = next(csv.DictReader(f))
    assert float(row["k1"]) == -0.25 and float(row["ground_m"]) > 0
    assert b"DewarpData" in (world / row["image"]).read_bytes()
    assert Image.open(world / row["image"]).getexif()[0x0110] == "synthetic Brown-Conrady lens"  # EXIF Model


def _answer(capsys, index: Path, photo: Path, *extra: str) -> dict:
    capsys.readouterr()
    assert main(["localize", str(photo), "--index", str(index), "-k", "9", "--json", "--random-init", *extra]) == 0
    return json.loads(capsys.readouterr().out)["results"][0]


def test_the_dsm_and_the_lens_put_the_camera_within_a_metre_and_without_the_dsm_the_radius_owns_up(hills,
                                                                                                  capsys) -> None:
    world = hills / "world"
    with (world / "cameras.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if "query_drone" in r["image"]]
    errors = []
    for row in rows[:4]:
        truth = float(row["latitude"]), float(row["longitude"])
        res = _answer(capsys, hills / "idx", world / row["image"])
        if res["fix"]:
            cam = res["camera"]
            errors.append(float(haversine_m(*truth, cam["latitude"], cam["longitude"])))
            assert cam["terrain"] == "dsm" and "DewarpData" in res["intrinsics"]
            assert cam["altitude_m"] == pytest.approx(float(row["ground_m"]) + float(row["altitude_m"]), abs=3.0)
        flat = _answer(capsys, hills / "flat", world / row["image"])
        if flat["fix"]:  # no DSM: flat ground assumed, and the radius must hold what that costs
            err = float(haversine_m(*truth, flat["camera"]["latitude"], flat["camera"]["longitude"]))
            assert flat["camera"]["terrain"] == "flat" and err <= flat["radius_m"]
    assert len(errors) >= 3 and np.median(errors) < 1.0 and max(errors) < 3.0


def test_index_build_refuses_a_dsm_without_an_orthophoto_grid(hills, tmp_path, capsys) -> None:
    dsm = str(hills / "world" / "dsm.tif")
    assert main(["index", "build", "--out", str(tmp_path / "x"), "--tiles", str(tmp_path), "--csv", "x.csv",
                 "--dsm", dsm, "--random-init"]) == 2  # fmt: skip
    assert "--dsm needs an orthophoto source" in capsys.readouterr().err
    assert main(["index", "build", "--out", str(tmp_path / "y"), "--world", str(hills / "world"), "--dsm-units", "ft",
                 "--random-init"]) == 2  # fmt: skip
    assert "--dsm-units describes a --dsm" in capsys.readouterr().err


def test_a_wrong_lens_or_a_dsm_without_heights_there_gives_no_fix_and_says_why(hills, tmp_path, capsys) -> None:
    world = hills / "world"
    lens = json.loads((world / "cameras.json").read_text())
    for entry in lens.values():
        entry["focal_x"] *= 0.7
        entry["focal_y"] *= 0.7
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(lens))
    with (world / "cameras.csv").open(newline="") as f:
        photo = world / next(r["image"] for r in csv.DictReader(f) if "query_drone" in r["image"])
    res = _answer(capsys, hills / "idx", photo, "--camera", str(wrong))
    assert not res["fix"] and res["reason"].startswith(("the matches call for a focal length of",
                                                        "the matches show lens distortion"))  # fmt: skip
    assert "(check --camera" in res["reason"]
    holes = tmp_path / "holes.tif"  # the same DSM with no heights anywhere but one corner
    with rasterio.open(world / "dsm.tif") as src:
        heights, profile = src.read(1), src.profile
    heights[4:, :] = np.nan
    with rasterio.open(holes, "w", **profile) as dst:
        dst.write(heights, 1)
    assert main(["index", "build", "--out", str(tmp_path / "holes"), "--world", str(world), "--image-size", "32",
                 "--random-init", "--dsm", str(holes)]) == 0  # fmt: skip
    res = _answer(capsys, tmp_path / "holes", photo)
    assert not res["fix"] and "the DSM has heights under only" in res["reason"]


def test_a_lens_off_by_a_quarter_gives_no_fix_outside_its_radius(hills, tmp_path, capsys) -> None:
    """The pose solved again at focal lengths 0.6-1.6x the lens's: a lens the matches contradict gives no fix, and
    focal lengths they do not tell apart widen the radius (with and without the DSM)."""
    world = hills / "world"
    with (world / "cameras.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if "query_drone" in r["image"]][:4]
    for share in (0.75, 1.25):
        lens = json.loads((world / "cameras.json").read_text())
        for entry in lens.values():
            entry["focal_x"] *= share
            entry["focal_y"] *= share
        wrong = tmp_path / f"lens-{share}.json"
        wrong.write_text(json.dumps(lens))
        for row, index in ((r, i) for r in rows for i in ("idx", "flat")):
            res = _answer(capsys, hills / index, world / row["image"], "--camera", str(wrong))
            if res["fix"]:
                err = float(haversine_m(float(row["latitude"]), float(row["longitude"]), res["camera"]["latitude"],
                                        res["camera"]["longitude"]))  # fmt: skip
                assert err <= res["radius_m"], (share, index, row["image"], err, res["radius_m"])
            else:
                assert res["reason"]


def test_a_pinhole_lens_for_a_distorting_camera_gives_no_fix_and_says_so(hills, tmp_path, capsys) -> None:
    world = hills / "world"
    lens = json.loads((world / "cameras.json").read_text())
    for entry in lens.values():
        entry.update(k1=0.0, k2=0.0)
    pinhole = tmp_path / "pinhole.json"
    pinhole.write_text(json.dumps(lens))
    with (world / "cameras.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if "query_drone" in r["image"]][:3]
    reasons = [_answer(capsys, hills / "idx", world / r["image"], "--camera", str(pinhole)) for r in rows]
    assert not any(r["fix"] for r in reasons)
    assert any("the matches show lens distortion" in r["reason"] and "--camera cameras.json" in r["reason"]
               and "not flat" not in r["reason"] for r in reasons)  # fmt: skip
    flat = [_answer(capsys, hills / "flat", world / r["image"], "--camera", str(pinhole)) for r in rows]
    for row, res in zip(rows, flat, strict=True):  # on flat ground relief bends the matches too: honest or refused
        if res["fix"]:
            assert haversine_m(float(row["latitude"]), float(row["longitude"]), res["camera"]["latitude"],
                               res["camera"]["longitude"]) <= res["radius_m"]  # fmt: skip
        elif "lens distortion" in res["reason"]:
            assert "the ground is not flat" in res["reason"]
