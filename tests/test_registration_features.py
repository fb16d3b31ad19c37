"""The matcher contract: extract -> Features, match -> index pairs, for OpenCV and learned features."""

from __future__ import annotations

import socket

import cv2
import numpy as np
import pytest

from spikevimformer.registration import Features, create_matcher, features_xfeat
from spikevimformer.registration.features import mutual_nearest
from spikevimformer.registration.register import turned


def _texture(size: int = 256, seed: int = 0) -> np.ndarray:
    """Blocks and discs at several scales: corners for every detector."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 120, np.uint8)
    for _ in range(60):
        x, y = rng.integers(0, size, 2)
        w, h = rng.integers(6, 40, 2)
        cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)), int(rng.integers(0, 256)), -1)
        cv2.circle(img, (int(rng.integers(0, size)), int(rng.integers(0, size))), int(rng.integers(3, 12)),
                   int(rng.integers(0, 256)), -1)  # fmt: skip
    return cv2.GaussianBlur(img, (3, 3), 0)


def test_unknown_features_name_the_choices() -> None:
    with pytest.raises(ValueError, match="xfeat, xfeat-mnn, sift"):
        create_matcher("superpoint")


@pytest.mark.parametrize("name", ["sift", "orb", "xfeat", "xfeat-mnn"])
def test_an_image_matches_itself_shifted(name: str) -> None:
    matcher = create_matcher(name)
    img = _texture()
    shifted = np.roll(img, (9, 14), axis=(0, 1))
    a, b = matcher.extract(img), matcher.extract(shifted)
    assert isinstance(a, Features) and a.keypoints.shape == (len(a), 2) and len(a.descriptors) == len(a)
    assert a.size == (256, 256) and len(a) >= 50
    pairs = matcher.match(a, b)
    assert pairs.ndim == 2 and pairs.shape[1] == 2 and len(pairs) >= 30
    d = b.keypoints[pairs[:, 1]] - a.keypoints[pairs[:, 0]]
    inside = (a.keypoints[pairs[:, 0]] < 256 - 20).all(1)  # away from the wrapped border
    assert np.mean(np.abs(d[inside] - [14, 9]).max(1) < 2.5) > 0.8  # XFeat keypoints sit on whole pixels


def test_learned_features_need_the_orientation_sift_does_not() -> None:
    img = _texture(seed=3)
    upside_down, _ = turned(img, 180.0)
    for name, works in (("sift", True), ("xfeat-mnn", False)):
        m = create_matcher(name)
        a, b = m.extract(img), m.extract(upside_down)
        pairs = m.match(a, b)
        expect = np.c_[255 - a.keypoints[pairs[:, 0], 0], 255 - a.keypoints[pairs[:, 0], 1]]
        good = int(np.sum(np.abs(b.keypoints[pairs[:, 1]] - expect).max(1) < 2.0))
        assert (good >= 30) == works, (name, good)


def test_xfeat_weights_come_from_the_installed_wheel_without_network(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError("network access during matching")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(features_xfeat, "_MODELS", {})
    matcher = features_xfeat.XFeatMatcher()
    f = matcher.extract(_texture())
    assert len(matcher.match(f, f)) >= 0.9 * len(f)  # LighterGlue pairs every keypoint with itself


def test_turned_maps_pixels_with_its_matrix() -> None:
    img = np.zeros((60, 100), np.uint8)
    img[10, 20] = 255
    out, m = turned(img, 90.0)  # image-up pointed east, so north was on the left: turned clockwise by 90
    assert out.shape[0] == 100 and out.shape[1] in (60, 61)
    y, x = np.unravel_index(int(np.argmax(out)), out.shape)
    np.testing.assert_allclose(m @ [20, 10, 1], [x, y, 1], atol=1.0)
    assert x > 40 and y == 20  # the photo's top-left (north-east on the ground) lands top right


def test_refine_recovers_a_subpixel_shift() -> None:
    from spikevimformer.registration.register import refine

    fixed = _texture(seed=5).astype(np.float32)
    m = np.float32([[1, 0, 0.4], [0, 1, -0.3]])  # the moving image is the fixed one shifted by (0.4, -0.3) px
    moving = cv2.warpAffine(fixed, m, (256, 256), flags=cv2.INTER_CUBIC)
    pts = np.array([[x, y] for x in range(40, 220, 30) for y in range(40, 220, 30)], dtype=np.float64)
    out, moved = refine(moving.astype(np.uint8), fixed.astype(np.uint8), np.rint(pts), pts)
    assert moved.mean() > 0.5
    np.testing.assert_allclose(np.median(out[moved] - pts[moved], axis=0), [0.4, -0.3], atol=0.12)


def test_mutual_nearest_keeps_only_pairs_that_choose_each_other() -> None:
    ref = np.eye(4, dtype=np.float16)[:3]  # stored reference descriptors are float16
    query = np.array([[1, 0, 0, 0], [0.6, 0.8, 0, 0], [0.8, 0.6, 0, 0], [0, 0, 0, 1]], dtype=np.float32)
    # row 2 prefers reference 0, which prefers row 0; row 3 matches nothing better than another row does
    pairs = mutual_nearest(query, ref)
    assert pairs.dtype == np.int64
    assert pairs.tolist() == [[0, 0], [1, 1]]
    assert mutual_nearest(query[:0], ref).shape == (0, 2)
