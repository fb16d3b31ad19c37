"""Relative motion between frames: ground mappings carried by frame-to-frame homographies, camera centres by PnP."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from spikevimformer.flight.motion import FrameMatcher, GroundMapping, camera_centre

K = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])
SIZE = (320, 240)


def _camera(east: float, north: float, height: float, heading_deg: float, pitch_deg: float):
    """R, t of a camera at (east, north, height) looking `pitch_deg` below the horizon towards `heading_deg`."""
    h, p = np.radians(heading_deg), np.radians(pitch_deg)
    forward = np.array([np.sin(h) * np.cos(p), np.cos(h) * np.cos(p), -np.sin(p)])
    right = np.array([np.cos(h), -np.sin(h), 0.0])
    down = np.cross(forward, right)
    r = np.stack([right, down, forward])  # rows: camera x (right), y (down), z (forward) in the world
    centre = np.array([east, north, height])
    return r, -r @ centre


def _ground_homography(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Pixels -> east/north on the ground plane z = 0 of the camera (r, t)."""
    to_pixels = K @ np.c_[r[:, 0], r[:, 1], t]
    return np.linalg.inv(to_pixels) / np.linalg.inv(to_pixels)[2, 2]


def test_the_camera_centre_of_a_footprint_is_the_camera() -> None:
    r, t = _camera(12.0, -30.0, 100.0, 40.0, 60.0)
    h = _ground_homography(r, t)
    w, hgt = SIZE
    corners = cv2.perspectiveTransform(np.float64([[[0, 0], [w - 1, 0], [w - 1, hgt - 1], [0, hgt - 1]]]), h)[0]
    centre = camera_centre(GroundMapping.from_footprint(corners, SIZE), K)
    assert centre == pytest.approx([12.0, -30.0, 100.0], abs=1e-3)


def test_a_mapping_gives_its_corners_on_the_ground_and_none_past_the_horizon() -> None:
    r, t = _camera(12.0, -30.0, 100.0, 40.0, 60.0)
    h = _ground_homography(r, t)
    w, hgt = SIZE
    corners = cv2.perspectiveTransform(np.float64([[[0, 0], [w - 1, 0], [w - 1, hgt - 1], [0, hgt - 1]]]), h)[0]
    np.testing.assert_allclose(GroundMapping.from_footprint(corners, SIZE).corners(), corners, atol=1e-3)
    r, t = _camera(0.0, 0.0, 100.0, 40.0, 10.0)  # 10 deg below the horizon, 19 deg half-angle: the sky at the top
    assert GroundMapping(_ground_homography(r, t), SIZE).corners() is None


def test_a_mapping_carried_by_the_frame_to_frame_homography_gives_the_next_camera() -> None:
    before, after = _camera(0.0, 0.0, 100.0, 80.0, 60.0), _camera(3.9, 0.9, 101.0, 86.0, 59.0)
    h_before, h_after = _ground_homography(*before), _ground_homography(*after)
    new_to_old = np.linalg.inv(h_before) @ h_after  # pixels of the new frame -> ground -> pixels of the old
    carried = GroundMapping(h_before, SIZE).carried(new_to_old, SIZE)
    moved = camera_centre(carried, K) - camera_centre(GroundMapping(h_before, SIZE), K)
    assert moved == pytest.approx([3.9, 0.9, 1.0], abs=1e-3)


def test_frames_of_the_same_ground_give_their_shift_and_featureless_ones_none() -> None:
    rng = np.random.default_rng(0)
    ground = cv2.GaussianBlur(rng.integers(0, 255, (400, 500), dtype=np.uint8), (0, 0), 2.0)
    ground = np.dstack([ground] * 3)
    old = Image.fromarray(ground[50:290, 60:380])
    new = Image.fromarray(ground[62:302, 80:400])  # 20 px right and 12 px down of the old frame
    matcher = FrameMatcher()
    found = matcher.homography(matcher.features(new), matcher.features(old))
    assert found is not None and found[1] >= 40
    assert cv2.perspectiveTransform(np.float64([[[100, 100]]]), found[0])[0, 0] == pytest.approx([120, 112], abs=0.5)
    flat = Image.new("RGB", (320, 240), (40, 90, 140))
    assert matcher.homography(matcher.features(flat), matcher.features(old)) is None
