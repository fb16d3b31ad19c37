"""Lens models: camera files (OpenSfM/ODM, plain OpenCV), DJI DewarpData, and undistorting a photo."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from spikevimformer.data.synth.writer import dji_xmp
from spikevimformer.geo.intrinsics import EXIF_IFD, Intrinsics, from_exif, lens_gap, undistort
from spikevimformer.geo.lens import dji_dewarp, read_camera_file

# A DJI Phantom 4 RTK lens as OpenSfM writes it (normalised by the longer side, 5472 px)
BROWN = {"projection_type": "brown", "width": 5472, "height": 3648, "focal_x": 0.6666, "focal_y": 0.6670,
         "c_x": 0.0047, "c_y": -0.0021, "k1": -0.264, "k2": 0.102, "p1": 0.0007, "p2": 0.0003, "k3": -0.026}


def _write(tmp_path, data, name: str = "cameras.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_opensfm_brown_and_perspective_are_read_and_scaled_to_the_photo(tmp_path) -> None:
    cams = read_camera_file(_write(tmp_path, {"v2 dji fc6310r 5472 3648 brown 0.6666": BROWN}))
    full = cams.for_photo(5472, 3648)
    assert full.focal_px == pytest.approx(0.6666 * 5472) and full.focal_y_px == pytest.approx(0.6670 * 5472)
    assert full.principal == pytest.approx((5472 / 2 - 0.5 + 0.0047 * 5472, 3648 / 2 - 0.5 - 0.0021 * 5472))
    assert full.dist == pytest.approx((-0.264, 0.102, 0.0007, 0.0003, -0.026)) and full.distorted
    small = cams.for_photo(1368, 912, "photo.jpg")  # the same camera's photo, downsampled 4x
    assert small.focal_px == pytest.approx(full.focal_px / 4)
    assert small.principal[0] == pytest.approx((full.principal[0] + 0.5) / 4 - 0.5)
    with pytest.raises(ValueError, match="1000x1000 px but the camera file .* describes 5472x3648"):
        cams.for_photo(1000, 1000, "square.jpg")
    persp = read_camera_file(_write(tmp_path, {"c": {"projection_type": "perspective", "width": 400, "height": 300,
                                                     "focal": 0.9, "k1": -0.1, "k2": 0.01}}, "p.json"))  # fmt: skip
    lens = persp.for_photo(400, 300)
    assert lens.focal_px == pytest.approx(360.0) and lens.dist == (-0.1, 0.01, 0.0, 0.0, 0.0)
    assert lens.matrix[0, 2] == pytest.approx(199.5) and "perspective" in lens.source


def test_plain_opencv_lens_and_bad_camera_files(tmp_path) -> None:
    plain = {"width": 640, "height": 480, "K": [[500, 0, 320], [0, 500, 240], [0, 0, 1]], "dist": [-0.2, 0.05, 0, 0, 0]}
    lens = read_camera_file(_write(tmp_path, plain)).for_photo(1280, 960)
    assert lens.focal_px == pytest.approx(1000.0) and lens.principal == pytest.approx((640.5, 480.5))
    spherical = _write(tmp_path, {"c": {**BROWN, "projection_type": "spherical"}}, "s.json")
    with pytest.raises(ValueError, match=r"s\.json camera 'c'.*projection type 'spherical' is not one of"):
        read_camera_file(spherical)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="is not JSON"):
        read_camera_file(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="'focal_x' must be a number"):
        read_camera_file(_write(tmp_path, {"c": {**BROWN, "focal_x": "wide"}}, "n.json"))
    with pytest.raises(FileNotFoundError, match="camera file .* does not exist"):
        read_camera_file(tmp_path / "missing.json")
    two = _write(tmp_path, {"a": BROWN, "b": {**BROWN, "focal_x": 0.7}}, "two.json")
    with pytest.raises(ValueError, match="holds 2 cameras of its size"):
        read_camera_file(two).for_photo(5472, 3648)


def test_dji_dewarp_data_is_read_and_a_dewarped_photo_is_left_alone() -> None:
    packet = dji_xmp(3000.0, (-0.26, 0.1, 0.0, 0.0, -0.03), 45.0, 60.0)
    lens = dji_dewarp(packet, 1368, 912, (5472, 3648), "p.jpg")
    assert lens.focal_px == pytest.approx(750.0) and lens.dist == pytest.approx((-0.26, 0.1, 0.0, 0.0, -0.03))
    assert lens.principal == pytest.approx((683.5, 455.5)) and lens.source == "XMP DewarpData"
    assert dji_dewarp(packet.replace(b'DewarpFlag="0"', b'DewarpFlag="1"'), 1368, 912, None, "p.jpg") is None
    centred = packet.replace(b"drone-dji:DewarpFlag", b'drone-dji:CalibratedOpticalCenterX="2736.0" '
                             b'drone-dji:CalibratedOpticalCenterY="1824.0" drone-dji:DewarpFlag')  # fmt: skip
    resized = dji_dewarp(centred, 1368, 912, None, "p.jpg")  # a copy without EXIF: XMP tells the full size
    assert resized.focal_px == pytest.approx(750.0)
    assert dji_dewarp(dji_xmp(3000.0, (), 45.0, 60.0), 1368, 912, None, "p.jpg") is None  # no lens recorded
    broken = packet.replace(b"2026-01-01;3000.000000", b"2026-01-01;abc")
    with pytest.raises(ValueError, match="p.jpg: XMP DewarpData .* is not 'date;fx,fy,cx,cy,k1,k2,p1,p2,k3'"):
        dji_dewarp(broken, 1368, 912, None, "p.jpg")


def test_undistort_puts_a_point_where_the_pinhole_would() -> None:
    k1 = -0.25
    lens = Intrinsics(200.0, 320, 240, "test", dist=(k1, 0.1, 0.0, 0.0, 0.0))
    ideal = np.array([[300.0, 40.0, 1.0]])  # near a corner, where barrel distortion moves points most
    ray = np.linalg.inv(lens.matrix) @ ideal[0]
    seen, _ = cv2.projectPoints(ray[None], np.zeros(3), np.zeros(3), lens.matrix, np.asarray(lens.dist))
    seen = seen.reshape(2)
    assert np.linalg.norm(seen - ideal[0, :2]) > 10  # the lens moves it far
    img = np.zeros((240, 320, 3), np.uint8)
    cv2.circle(img, (int(round(seen[0])), int(round(seen[1]))), 2, (255, 255, 255), -1)
    out, pinhole = undistort(Image.fromarray(img), lens)
    assert pinhole.dist == () and pinhole.focal_px == pytest.approx(200.0) and "undistorted" in pinhole.source
    ys, xs = np.nonzero(np.asarray(out)[:, :, 0] > 100)
    assert abs(xs.mean() - 300) < 1.5 and abs(ys.mean() - 40) < 1.5
    same, unchanged = undistort(Image.fromarray(img), Intrinsics(200.0, 320, 240, "pinhole"))
    assert unchanged.source == "pinhole" and np.array_equal(np.asarray(same), img)


def _exif(**tags) -> Image.Exif:
    """EXIF with these Exif-IFD tags (x920A=4.5: FocalLength), round-tripped through a JPEG as a camera writes it."""
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD).update({int(k[1:], 16): v for k, v in tags.items()})
    buf = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buf, "JPEG", exif=exif.tobytes())
    return Image.open(io.BytesIO(buf.getvalue())).getexif()


def test_a_focal_length_without_the_sensor_size_is_named_as_such() -> None:
    """FocalLength in mm alone gives no focal length in pixels: the message says which tag is missing, not that
    the photo has no focal length."""
    bare = _exif(x920A=4.5)
    assert from_exif(bare, 40, 30) is None
    assert lens_gap(bare) == ("its EXIF records FocalLength 4.5 mm, but it has neither the sensor size "
                              "(FocalPlaneXResolution) nor FocalLengthIn35mmFilm to turn it into pixels")  # fmt: skip
    odd_unit = _exif(x920A=4.5, xA20E=625.0, xA210=7)
    assert from_exif(odd_unit, 40, 30) is None and "FocalPlaneResolutionUnit 7 is no length unit" in lens_gap(odd_unit)
    assert lens_gap(_exif()) == "its EXIF has no focal length (neither FocalLength nor FocalLengthIn35mmFilm)"
    assert lens_gap(None).startswith("its EXIF has no focal length")
    assert lens_gap(_exif(x920A=0.0)) == "its EXIF records FocalLength 0 mm, which is no focal length"
