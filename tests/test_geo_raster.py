"""Orthophotos read window by window: the same pixels as decoding whole, without decoding whole."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spikevimformer.geo import raster as raster_module
from spikevimformer.geo.raster import DecodedRaster, WindowedRaster, open_raster
from spikevimformer.geo.tiles import OrthoConfig, load_tile, orthophoto_tiles, reference_image

rasterio = pytest.importorskip("rasterio")

LAT0, LON0 = 47.0, 8.0
DLAT = 0.5 / 111_195.0
DLON = DLAT / float(np.cos(np.radians(LAT0)))


def _geotiff(path, pixels: np.ndarray, block: int = 64) -> str:
    """A tiled, DEFLATE-compressed GeoTIFF in WGS84 with 0.5 m pixels (as GIS tools write large orthophotos)."""
    from rasterio.transform import from_origin

    bands = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    with rasterio.open(path, "w", driver="GTiff", width=pixels.shape[1], height=pixels.shape[0], count=len(bands),
                       dtype=pixels.dtype, crs="EPSG:4326", transform=from_origin(LON0, LAT0, DLON, DLAT),
                       tiled=True, blockxsize=block, blockysize=block, compress="deflate") as ds:  # fmt: skip
        ds.write(bands)
    open_raster.cache_clear()
    return str(path)


def _padded_crop(pixels: np.ndarray, box) -> np.ndarray:
    left, top, right, bottom = box
    out = np.zeros((bottom - top, right - left, 3), np.uint8)
    src = pixels[max(top, 0) : bottom, max(left, 0) : right]
    out[max(-top, 0) : max(-top, 0) + src.shape[0], max(-left, 0) : max(-left, 0) + src.shape[1]] = src
    return out


def test_windows_of_a_tiled_geotiff_equal_the_whole_decode(tmp_path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (300, 420, 3), dtype=np.uint8)
    path = _geotiff(tmp_path / "ortho.tif", pixels)
    raster = open_raster(path)
    assert isinstance(raster, WindowedRaster) and raster.size == (420, 300)
    for box in [(0, 0, 64, 64), (100, 37, 229, 181), (380, 260, 460, 330), (-20, -10, 30, 40)]:
        np.testing.assert_array_equal(np.asarray(raster.crop(box)), _padded_crop(pixels, box))
    assert open_raster(path) is raster  # opened once, shared by neighbouring tiles


def test_16_bit_and_grey_rasters_read_as_a_viewer_shows_them(tmp_path) -> None:
    grey = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    got = np.asarray(open_raster(_geotiff(tmp_path / "grey16.tif", grey)).crop((0, 0, 64, 64)))
    expected = (grey.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    assert got.shape == (64, 64, 3) and (got[..., 0] == got[..., 2]).all()
    np.testing.assert_array_equal(got[..., 1], expected)
    floats = _geotiff(tmp_path / "float.tif", np.zeros((64, 64), np.float32))
    with pytest.raises(ValueError, match="float32 pixels"):
        open_raster(floats)


def test_an_orthophoto_index_and_its_registration_windows_never_decode_the_whole_geotiff(tmp_path, monkeypatch):
    pixels = np.random.default_rng(1).integers(0, 256, (240, 400, 3), dtype=np.uint8)
    path = _geotiff(tmp_path / "area.tif", pixels)

    def whole(*args, **kwargs):
        raise AssertionError("the whole raster was decoded")

    monkeypatch.setattr(DecodedRaster, "__init__", whole)
    tiles = orthophoto_tiles(path, OrthoConfig(40.0, 20.0))
    assert len(tiles) == 5 * 9
    tile = tiles[7]
    np.testing.assert_array_equal(np.asarray(load_tile(tile)), _padded_crop(pixels, tile.box))
    image, affine = reference_image(tile)
    assert image.crop((-5, -5, 10, 10)).size == (15, 15)


def test_other_formats_are_decoded_whole_with_a_hint_when_large(tmp_path, monkeypatch, capsys) -> None:
    Image.fromarray(np.full((50, 80, 3), 200, np.uint8)).save(tmp_path / "area.png")
    monkeypatch.setattr(raster_module, "LARGE_PIXELS", 1000)
    open_raster.cache_clear()
    raster = open_raster(str(tmp_path / "area.png"))
    assert isinstance(raster, DecodedRaster) and raster.size == (80, 50)
    assert np.asarray(raster.crop((70, 40, 90, 60)))[-1, -1].tolist() == [0, 0, 0]
    assert "decoded whole" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_raster(str(tmp_path / "gone.tif"))


def test_16_bit_and_float_geotiffs_are_georeferenced_from_their_tags(tmp_path) -> None:
    """Pillow cannot open 16-bit colour or float TIFFs; their tags are read from the file, their pixels by rasterio."""
    rgb16 = (np.random.default_rng(2).integers(0, 65536, (160, 240, 3))).astype(np.uint16)
    tiles = orthophoto_tiles(_geotiff(tmp_path / "rgb16.tif", rgb16), OrthoConfig(40.0, 40.0))
    assert len(tiles) == 2 * 3 and tiles[0].latitude == pytest.approx(LAT0 - 40 * DLAT, abs=1e-7)
    np.testing.assert_array_equal(np.asarray(load_tile(tiles[0])),
                                  (rgb16[:80, :80].astype(np.uint32) * 255 // 65535).astype(np.uint8))  # fmt: skip
    floats = _geotiff(tmp_path / "float.tif", np.ones((160, 240, 3), np.float32))
    with pytest.raises(ValueError, match="float32 pixels"):
        orthophoto_tiles(floats, OrthoConfig(40.0, 40.0))


def test_tiles_over_nodata_are_left_out_of_the_index(tmp_path, capsys) -> None:
    pixels = np.random.default_rng(3).integers(1, 256, (160, 400, 3), dtype=np.uint8)
    pixels[:, :200] = 0  # the west half is padding, as GIS exports leave around a footprint
    tiles = orthophoto_tiles(_geotiff(tmp_path / "half.tif", pixels), OrthoConfig(40.0, 40.0))
    assert len(tiles) == 2 * 5 - 2 * 2  # 2 rows x 5 columns of 80 px; 2 all black, the middle one only half
    assert all(t.box[0] >= 160 for t in tiles) and "skipped 4 tile(s)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="every tile"):
        orthophoto_tiles(_geotiff(tmp_path / "black.tif", np.zeros((160, 240, 3), np.uint8)), OrthoConfig(40.0, 40.0))


def test_damaged_orthophotos_are_one_line_errors(tmp_path) -> None:
    """A truncated GeoTIFF (GDAL's block read fails), a truncated JPEG and a file that is no image at all: each a
    ValueError naming the file, not a traceback from inside the decoder."""
    rng = np.random.default_rng(0)
    whole = _geotiff(tmp_path / "whole.tif", rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    data = open(whole, "rb").read()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    open_raster.cache_clear()
    with pytest.raises(ValueError, match=r"cut.tif cannot be decoded \(.+\): is the file complete"):
        orthophoto_tiles(tmp_path / "cut.tif", OrthoConfig(20, 20))
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(tmp_path / "full.jpg", quality=90)
    jpeg = (tmp_path / "full.jpg").read_bytes()
    world = "0.5\n0\n0\n-0.5\n500000.25\n5200000.25\n"
    for name, payload, words in [("cut.jpg", jpeg[: len(jpeg) // 3], "cannot be decoded (image file is truncated"),
                                 ("text.png", b"not an image\n", "is not an image Pillow can read")]:
        (tmp_path / name).write_bytes(payload)
        (tmp_path / name).with_suffix(".pgw" if name.endswith("png") else ".jgw").write_text(world)
        open_raster.cache_clear()
        with pytest.raises(ValueError) as err:
            orthophoto_tiles(tmp_path / name, OrthoConfig(20, 20, crs="UTM:32N"))
        assert name in str(err.value) and words in str(err.value), str(err.value)
