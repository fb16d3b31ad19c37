from __future__ import annotations

import json

import numpy as np
import pytest

from spikevimformer.geo import fallback
from spikevimformer.geo.fallback import NEVER, TileFallback
from spikevimformer.pretrained import get_release


def _photos(rng: np.random.Generator, n: int):
    """Top-1 similarities, whether the top-1 tile is right (likelier for higher scores), stand-offs (footprints)."""
    scores = rng.uniform(0.3, 0.9, n)
    right = rng.random(n) < (scores - 0.2)
    return scores, right, np.abs(rng.normal(0.0, 0.6, n))


def test_fit_mixture_radius_holds_on_fresh_photos_of_a_grid_index() -> None:
    rng = np.random.default_rng(0)
    scores, right, stand_off = _photos(rng, 3000)
    cal = fallback.fit(scores, right, stand_off[right], rng.uniform(0.0, 0.35, 500), "sha", 64, bins=6)
    assert list(cal.p_right) == sorted(cal.p_right) and cal.p_right[-1] > 0.6 > cal.p_right[0]
    grid = np.array([(x, y) for x in range(30) for y in range(30)], dtype=float) * 100.0  # metres, 100 m tiles
    fresh_s, fresh_right, fresh_off = _photos(rng, 3000)
    held = []
    for s, ok, off in zip(fresh_s, fresh_right, fresh_off, strict=True):
        best = grid[rng.integers(len(grid))]
        truth = best if ok else grid[rng.integers(len(grid))]
        error = np.hypot(*(truth - best)) + off * 100.0  # the camera stands off from its own tile's centre
        held.append(error <= cal.radius_m(s, 100.0, np.hypot(*(grid - best).T)))
    assert 0.93 <= np.mean(held) <= 0.99
    d = np.hypot(*(grid - grid[0]).T)
    assert cal.radius_m(0.89, 100.0, d) < cal.radius_m(0.31, 100.0, d)


def test_elsewhere_flag_only_where_the_similarities_tell_places_apart() -> None:
    rng = np.random.default_rng(1)
    scores, right, off = _photos(rng, 400)
    apart = fallback.fit(scores, right, off[right], rng.uniform(0.0, 0.33, 400), "sha", 64)
    assert 0.3 < apart.elsewhere_below < 0.4 and apart.elsewhere(0.1) and not apart.elsewhere(0.8)
    assert apart.measured["inside_flagged"] <= 0.05 and apart.measured["outside_flagged"] > 0.9
    alike = fallback.fit(scores, right, off[right], rng.uniform(0.3, 0.9, 400), "sha", 64)  # outside scores like inside
    assert alike.elsewhere_below == NEVER and not alike.elsewhere(-0.5)


def test_fit_refuses_too_few_photos() -> None:
    with pytest.raises(ValueError, match="at least 40 photos"):
        fallback.fit(np.ones(10), np.ones(10, bool), np.ones(10), [], "sha", 64, bins=4)


def test_save_load_round_trip_and_bad_file(tmp_path) -> None:
    cal = TileFallback("sha", 64, (0.5, 0.7), (0.2, 0.5, 0.9), 1.5, 0.3, command="x", measured={"photos": 3})
    cal.save(tmp_path / "c.json")
    assert TileFallback.load(tmp_path / "c.json") == cal
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="bad.json: not a tile-fallback calibration"):
        TileFallback.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="need 3 shares"):
        TileFallback("sha", 64, (0.5, 0.7), (1.0,), 1.5, 0.3)


def test_shipped_calibration_belongs_to_the_shipped_model() -> None:
    release = get_release("pretrained")
    cal = fallback.shipped(release.sha256, release.image_size)
    assert cal is not None and cal.coverage == 0.95 and cal.measured["held_out"]["photos"] > 0
    assert fallback.shipped("random-init:seed=0", 64) is None
    assert fallback.shipped(release.sha256, 384) is None  # the same weights at another size: other similarities
