"""Camera pose from ground correspondences, intrinsics from EXIF, and photo decoding for registration."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from spikevimformer.data.synth.camera import Camera
from spikevimformer.geo.imaging import open_photo
from spikevimformer.geo.intrinsics import EXIF_IFD, from_exif, from_fov
from spikevimformer.registration.pose import ground_at_pixels, solve_pose


def _camera(heading: float = 37.0, pitch: float = 52.0, altitude: float = 95.0) -> Camera:
    return Camera.look_at((12.0, -30.0), heading, pitch, altitude, 50.0, 256)


def _correspondences(cam: Camera, n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    uv = rng.uniform(10, cam.size - 10, (n, 2))
    return cam.ground_points(uv), uv


def test_pose_recovers_known_camera_exactly() -> None:
    cam = _camera()
    ground, uv = _correspondences(cam)
    pose = solve_pose(ground, uv, cam.k)
    assert pose is not None
    np.testing.assert_allclose(pose.centre, cam.position, atol=1e-6)
    assert pose.heading_deg == pytest.approx(37.0, abs=1e-6) and pose.pitch_deg == pytest.approx(52.0, abs=1e-6)
    assert pose.rms_px < 1e-6 and pose.radius95_m() < 1e-5 and pose.inliers.all()


def test_pose_ransac_drops_outliers_and_radius_grows_with_noise() -> None:
    cam = _camera(heading=300.0, pitch=60.0, altitude=120.0)
    ground, uv = _correspondences(cam, n=60, seed=1)
    rng = np.random.default_rng(2)
    noisy = uv + rng.normal(0, 0.5, uv.shape)
    noisy[:8] += rng.uniform(30, 60, (8, 2))  # gross mismatches
    assert solve_pose(ground, noisy, cam.k) is not None  # without RANSAC the outliers pull the fit
    pose = solve_pose(ground, noisy, cam.k, ransac_px=3.0)
    assert pose is not None and not pose.inliers[:8].any() and pose.inliers[8:].mean() > 0.9
    err = float(np.linalg.norm(pose.centre[:2] - cam.position[:2]))
    assert err < 2.0 and 0.05 < pose.radius95_m() < 5.0
    assert pose.heading_deg == pytest.approx(300.0, abs=1.0)


def test_pose_refuses_too_few_points_and_too_few_inliers() -> None:
    cam = _camera()
    ground, uv = _correspondences(cam, n=10)
    with pytest.raises(ValueError, match="n >= 4"):
        solve_pose(ground[:3], uv[:3], cam.k)
    scrambled = uv[np.random.default_rng(3).permutation(len(uv))]
    assert solve_pose(ground, scrambled, cam.k, ransac_px=1.0, min_inliers=8) is None


def test_ground_at_pixels_through_the_homography() -> None:
    cam = _camera()
    h = np.linalg.inv(cam.k @ cam.rot @ np.array([[1, 0, -cam.position[0]], [0, 1, -cam.position[1]],
                                                   [0, 0, -cam.position[2]]], dtype=np.float64))  # fmt: skip
    uv = np.array([[127.5, 127.5], [0.0, 255.0]])
    np.testing.assert_allclose(ground_at_pixels(h, uv, uv[0]), cam.ground_points(uv), atol=1e-6)
    sky = Camera.look_at((0.0, 0.0), 0.0, 20.0, 50.0, 60.0, 256)  # the top rows see above the horizon
    h_sky = np.linalg.inv(sky.k @ sky.rot @ np.array([[1, 0, 0], [0, 1, 0], [0, 0, -sky.position[2]]]) @
                          np.array([[1, 0, -sky.position[0]], [0, 1, -sky.position[1]], [0, 0, 1.0]]))  # fmt: skip
    assert ground_at_pixels(h_sky, [[0.0, 0.0]], [127.5, 255.0]) is None


def _jpeg(size=(400, 300), orientation: int | None = None, **exif_ifd) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if exif_ifd:
        sub = exif.get_ifd(EXIF_IFD)
        sub.update({int(k[1:], 16): v for k, v in exif_ifd.items()})
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 120, 60)).save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def test_focal_length_from_exif() -> None:
    # FocalLength 4.5 mm on a sensor of 400 px / 6.4 mm: 62.5 px per mm -> 281.25 px
    img, exif = open_photo(_jpeg(x920A=4.5, xA20E=625.0 / 1.0, xA210=3))
    got = from_exif(exif, *img.size)
    assert got is not None and got.focal_px == pytest.approx(4.5 * 62.5) and "FocalLength" in got.source
    # 35 mm equivalent, diagonal convention: 24 mm on a 500 px diagonal
    img, exif = open_photo(_jpeg(xA405=24))
    got = from_exif(exif, *img.size)
    assert got.focal_px == pytest.approx(24 * 500 / 43.2666) and got.hfov_deg == pytest.approx(
        math.degrees(2 * math.atan(200 / got.focal_px)))  # fmt: skip
    assert from_exif(open_photo(_jpeg())[1], 400, 300) is None  # no EXIF: nothing to say
    assert from_exif(open_photo(_jpeg(xA405=0))[1], 400, 300) is None  # 0 means unknown
    with pytest.raises(ValueError, match="FocalLengthIn35mmFilm 1 mm"):
        from_exif(open_photo(_jpeg(xA405=1))[1], 400, 300)  # a 174 deg lens


def test_a_photo_resized_after_capture_scales_its_focal_length() -> None:
    # the camera wrote 400 x 300 (PixelX/YDimension); the file was then resized to 800 x 600
    img, exif = open_photo(_jpeg(size=(800, 600), x920A=4.5, xA20E=625.0, xA210=3, xA002=400, xA003=300))
    got = from_exif(exif, *img.size)
    assert got.focal_px == pytest.approx(2 * 4.5 * 62.5) and "resized from 400x300" in got.source
    img, exif = open_photo(_jpeg(size=(800, 600), xA405=24, xA002=400, xA003=300))
    assert from_exif(exif, *img.size).focal_px == pytest.approx(24 * 1000 / 43.2666)  # diagonal: already scaled


def test_exif_orientation_is_honoured_and_intrinsics_follow() -> None:
    img, exif = open_photo(_jpeg(size=(400, 300), orientation=6, xA405=24))
    assert img.size == (300, 400)  # rotated upright, as a viewer shows it
    got = from_exif(exif, *img.size)
    assert got.width == 300 and got.focal_px == pytest.approx(24 * 500 / 43.2666)
    np.testing.assert_allclose(got.matrix[:2, 2], [149.5, 199.5])


def test_fov_validation() -> None:
    assert from_fov(90.0, 200, 100).focal_px == pytest.approx(100.0)
    with pytest.raises(ValueError, match="field of view"):
        from_fov(0.5, 200, 100)
