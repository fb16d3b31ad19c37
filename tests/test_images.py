"""One decoder for every reader: what a photo viewer shows, whatever the bit depth, mode or orientation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spikevimformer.data.images import BadImageError, load_rgb
from spikevimformer.geo.imaging import open_photo


def _twin(tmp_path):
    rng = np.random.default_rng(0)
    grey8 = rng.integers(0, 256, (40, 56), dtype=np.uint8)
    Image.fromarray(grey8).save(tmp_path / "grey8.png")
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "grey16.png")  # Pillow mode I;16
    return grey8


@pytest.mark.parametrize("reader", ["dataset", "photo"])
def test_16_bit_greyscale_decodes_like_its_8_bit_twin(tmp_path, reader) -> None:
    grey8 = _twin(tmp_path)
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I;16")
    read = load_rgb if reader == "dataset" else (lambda p: np.asarray(open_photo(p)[0]))
    a, b = read(tmp_path / "grey8.png"), read(tmp_path / "grey16.png")
    assert a.shape == b.shape == (40, 56, 3)
    assert np.abs(a.astype(int) - b.astype(int)).max() == 0 and abs(float(b.mean()) - float(grey8.mean())) < 0.5


def test_orientation_alpha_and_float_images(tmp_path) -> None:
    rgba = np.zeros((30, 50, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert load_rgb(tmp_path / "rgba.png")[0, 0].tolist() == [200, 0, 0]
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways
    Image.fromarray(rgba[..., :3]).save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert load_rgb(tmp_path / "rot.jpg").shape == (50, 30, 3)  # upright, as a viewer shows it
    Image.fromarray(np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)).save(tmp_path / "f.tif")
    f = load_rgb(tmp_path / "f.tif")
    assert f.min() == 0 and f.max() == 255


def test_unreadable_images_are_named(tmp_path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(BadImageError, match="bad.jpg"):
        load_rgb(tmp_path / "bad.jpg")
