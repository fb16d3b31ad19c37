"""RandomKeepPatches area fraction and the ten weather conditions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spikevimformer.analysis.robustness import (
    WEATHER_CONDITIONS,
    RandomKeepPatches,
    keep_mask,
    masked_fraction_bound,
    patch_area_fraction,
    random_keep_patches,
    weather_transform,
)


@pytest.mark.parametrize("keep", [0.2, 0.4, 0.6, 0.8])
@pytest.mark.parametrize("patches", [5, 10])
def test_keeps_the_right_area_fraction_on_average(keep, patches):
    mask = keep_mask(48, 64, keep, patches, torch.Generator().manual_seed(3), batch=300)
    assert mask.float().mean().item() == pytest.approx(keep, abs=0.02)
    # Border correction: rectangles must be larger than the edge-free formula says.
    assert patch_area_fraction(keep, patches, 48, 64) >= masked_fraction_bound(keep, patches)


def test_masks_are_rectangles_and_rest_is_black():
    image = torch.rand(2, 3, 32, 32) + 0.5  # strictly positive, so zeros are masked pixels
    out = random_keep_patches(image, 0.3, 1, torch.Generator().manual_seed(0))
    for b in range(2):
        kept = out[b, 0] != 0
        rows, cols = kept.any(1).nonzero().flatten(), kept.any(0).nonzero().flatten()
        box = kept[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all()  # one patch: a single filled rectangle
        h, w = box.shape
        assert 0.5 - 0.1 <= w / h <= 2 + 0.2
        assert torch.equal(out[b][:, kept], image[b][:, kept])
        assert (out[b][:, ~kept] == 0).all()
    assert not torch.equal(out[0] != 0, out[1] != 0)  # each image draws its own rectangles


def test_seeded_fill_and_full_keep():
    image = torch.rand(3, 32, 32)
    a = RandomKeepPatches(0.4, 5, seed=7, fill=(-1.0, -2.0, -3.0))
    b = RandomKeepPatches(0.4, 5, seed=7, fill=(-1.0, -2.0, -3.0))
    out = a(image)
    assert torch.equal(out, b(image)) and a.label == "R=40, P=5"
    masked = out[0] == -1.0
    assert masked.any() and (out[1][masked] == -2.0).all() and (out[2][masked] == -3.0).all()
    assert torch.equal(random_keep_patches(image, 1.0, 5), image)
    with pytest.raises(ValueError, match="fraction"):
        random_keep_patches(image, 0.0, 5)


def test_weather_conditions_are_deterministic_and_change_the_image():
    rng = np.random.default_rng(0)
    image = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    assert len(WEATHER_CONDITIONS) == 10
    outputs = {}
    for name in WEATHER_CONDITIONS:
        out = weather_transform(name, seed=1)(image)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert np.array_equal(out, weather_transform(name, seed=1)(image)), name
        outputs[name] = out
    assert np.array_equal(outputs["normal"], image)
    for name in WEATHER_CONDITIONS[1:]:
        assert np.abs(outputs[name].astype(int) - image).mean() > 2, name
    assert outputs["dark"].mean() < image.mean() / 2
    assert outputs["over-exposure"].mean() > image.mean()
    assert not np.array_equal(weather_transform("rain", seed=2)(image), outputs["rain"])


def test_weather_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown weather"):
        weather_transform("hail")
    with pytest.raises(ValueError, match="uint8 RGB"):
        weather_transform("fog")(np.zeros((8, 8), np.float32))
