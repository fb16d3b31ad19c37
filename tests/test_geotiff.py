from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin, TiffTags

from spikevimformer.cli import main
from spikevimformer.geo.geotiff import geotiff_crs, read_geotiff
from spikevimformer.geo.index import GalleryIndex
from spikevimformer.geo.tiles import OrthoConfig, load_tile, orthophoto_tiles, reference_image, view_georeference
from spikevimformer.geodesy import WorldFile, canonical_crs

WIDTH, HEIGHT = 64, 48
LAT0, LON0 = 47.0, 8.0
DLAT = 0.5 / 111_195.0  # about 0.5 m pixels
DLON = DLAT / float(np.cos(np.radians(LAT0)))
AREA, POINT = 1, 2


def _pixels() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))


def _write_geotiff(path, keys: dict[int, int] | None, scale=None, ties=None, matrix=None):
    """A GeoTIFF written by Pillow, with the GeoTIFF tags given (None leaves a tag out)."""
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    for tag, value in ((33550, scale), (33922, ties), (34264, matrix)):
        if value is not None:
            ifd.tagtype[tag] = TiffTags.DOUBLE
            ifd[tag] = tuple(float(v) for v in value)
    if keys is not None:
        ifd.tagtype[34735] = TiffTags.SHORT
        ifd[34735] = (1, 1, 0, len(keys), *(v for k, val in sorted(keys.items()) for v in (k, 0, 1, val)))
    _pixels().save(path, tiffinfo=ifd)
    return path


def _geographic(raster_type: int) -> dict[int, int]:
    return {1024: 2, 1025: raster_type, 2048: 4326}


def _projected(epsg: int, raster_type: int) -> dict[int, int]:
    return {1024: 1, 1025: raster_type, 3072: epsg}


# name -> (GeoTIFF tags, its CRS, the hand-computed pixel-centre affine)
CASES = {
    "wgs84-area": (
        dict(keys=_geographic(AREA), scale=(DLON, DLAT, 0), ties=(0, 0, 0, LON0, LAT0, 0)), "EPSG:4326",
        WorldFile(a=DLON, d=0.0, b=0.0, e=-DLAT, c=LON0 + DLON / 2, f=LAT0 - DLAT / 2),
    ),
    "wgs84-point": (
        dict(keys=_geographic(POINT), scale=(DLON, DLAT, 0), ties=(0, 0, 0, LON0, LAT0, 0)), "EPSG:4326",
        WorldFile(a=DLON, d=0.0, b=0.0, e=-DLAT, c=LON0, f=LAT0),
    ),
    # the tiepoint sits at raster (2, 3), not the origin
    "utm32n-area": (
        dict(keys=_projected(32632, AREA), scale=(0.5, 0.5, 0), ties=(2, 3, 0, 499_950.0, 5_206_000.0, 0)),
        "EPSG:32632", WorldFile(a=0.5, d=0.0, b=0.0, e=-0.5, c=499_949.25, f=5_206_001.25),
    ),
    "utm32n-point": (
        dict(keys=_projected(32632, POINT), scale=(0.5, 0.5, 0), ties=(2, 3, 0, 499_950.0, 5_206_000.0, 0)),
        "EPSG:32632", WorldFile(a=0.5, d=0.0, b=0.0, e=-0.5, c=499_949.0, f=5_206_001.5),
    ),
    # a rotated image as a full ModelTransformation: x = 0.4 i + 0.3 j + 500000, y = 0.3 i - 0.4 j + 7000000
    "utm33s-matrix-area": (
        dict(keys=_projected(32733, AREA),
             matrix=(0.4, 0.3, 0, 500_000.0, 0.3, -0.4, 0, 7_000_000.0, 0, 0, 0, 0, 0, 0, 0, 1)),
        "EPSG:32733", WorldFile(a=0.4, d=0.3, b=0.3, e=-0.4, c=500_000.35, f=6_999_999.95),
    ),
    "webmercator-point": (
        dict(keys=_projected(3857, POINT), scale=(0.5, 0.5, 0), ties=(0, 0, 0, 890_555.9, 5_942_074.0, 0)),
        "EPSG:3857", WorldFile(a=0.5, d=0.0, b=0.0, e=-0.5, c=890_555.9, f=5_942_074.0),
    ),
}  # fmt: skip


def _write_world(path, wf: WorldFile) -> None:
    path.write_text("\n".join(repr(v) for v in (wf.a, wf.d, wf.b, wf.e, wf.c, wf.f)) + "\n")


@pytest.mark.parametrize("name", sorted(CASES))
def test_read_geotiff_matches_hand_computed_affine(tmp_path, name) -> None:
    tags, crs, expected = CASES[name]
    world, found = read_geotiff(_write_geotiff(tmp_path / "o.tif", **tags))
    assert found == crs
    for field in "adbecf":
        assert getattr(world, field) == pytest.approx(getattr(expected, field), rel=1e-12, abs=1e-12), field


@pytest.mark.parametrize("name", ["wgs84-area", "wgs84-point", "utm32n-area", "utm33s-matrix-area"])
def test_geotiff_tiles_equal_png_with_world_file(tmp_path, name) -> None:
    tags, crs, expected = CASES[name]
    tif = _write_geotiff(tmp_path / "o.tif", **tags)
    (tmp_path / "png").mkdir()
    png = tmp_path / "png" / "o.png"
    _pixels().save(png)
    _write_world(tmp_path / "png" / "o.pgw", expected)
    geo = orthophoto_tiles(tif, OrthoConfig(tile_m=10, stride_m=5))  # CRS from the GeoTIFF
    ref = orthophoto_tiles(png, OrthoConfig(tile_m=10, stride_m=5, crs=crs))
    assert len(geo) == len(ref) > 4
    for g, r in zip(geo, ref, strict=True):
        assert g.box == r.box and g.footprint_m == r.footprint_m
        assert g.latitude == pytest.approx(r.latitude, abs=1e-9)
        assert g.longitude == pytest.approx(r.longitude, abs=1e-9)
    np.testing.assert_array_equal(np.asarray(load_tile(geo[-1])), np.asarray(load_tile(ref[-1])))


def test_pixel_is_area_and_point_differ_by_half_a_pixel(tmp_path) -> None:
    area = orthophoto_tiles(_write_geotiff(tmp_path / "a.tif", **CASES["wgs84-area"][0]), OrthoConfig(10, 10))
    point = orthophoto_tiles(_write_geotiff(tmp_path / "p.tif", **CASES["wgs84-point"][0]), OrthoConfig(10, 10))
    assert area[0].longitude - point[0].longitude == pytest.approx(DLON / 2, rel=1e-6)
    assert area[0].latitude - point[0].latitude == pytest.approx(-DLAT / 2, rel=1e-6)


def test_world_file_beside_a_geotiff_must_agree_and_keys_give_the_crs(tmp_path) -> None:
    tags, _, expected = CASES["utm32n-area"]
    tif = _write_geotiff(tmp_path / "o.tif", **tags)
    _write_world(tmp_path / "o.tfw", expected)  # the same transform, restated
    tiles = orthophoto_tiles(tif, OrthoConfig(10, 10))  # no --crs: the GeoKeys say UTM 32N, not degrees
    _pixels().save(tmp_path / "r.png")
    _write_world(tmp_path / "r.pgw", expected)
    ref = orthophoto_tiles(tmp_path / "r.png", OrthoConfig(10, 10, crs="UTM:32N"))
    flat = [v for t in tiles for v in (t.latitude, t.longitude)]
    assert flat == pytest.approx([v for t in ref for v in (t.latitude, t.longitude)], abs=1e-9)
    shifted = WorldFile(expected.a, expected.d, expected.b, expected.e, expected.c + 100.0, expected.f)
    _write_world(tmp_path / "o.tfw", shifted)  # 100 m east of where the tags put it: which is right?
    with pytest.raises(ValueError, match=r"o.tfw and the GeoTIFF tags of .*o.tif put the image in different places"):
        orthophoto_tiles(tif, OrthoConfig(10, 10))


def test_explicit_crs_may_restate_silently_and_overrides_with_a_warning(tmp_path, capsys) -> None:
    utm = _write_geotiff(tmp_path / "u.tif", **CASES["utm32n-area"][0])
    wgs = _write_geotiff(tmp_path / "w.tif", **CASES["wgs84-area"][0])
    same = orthophoto_tiles(utm, OrthoConfig(10, 10, crs="utm:32n"))
    assert [t.latitude for t in same] == [t.latitude for t in orthophoto_tiles(utm, OrthoConfig(10, 10))]
    assert orthophoto_tiles(wgs, OrthoConfig(10, 10, crs="WGS84"))
    assert capsys.readouterr().err == ""
    for _ in range(2):  # the index command georeferences twice (tiles, DSM): one warning
        east = orthophoto_tiles(utm, OrthoConfig(10, 10, crs="UTM:33N"))
    assert east[0].longitude - same[0].longitude == pytest.approx(6.0, abs=1e-6)  # the same numbers, a zone east
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: --crs UTM:33N overrides the coordinate system EPSG:32632 in the GeoTIFF tags of {utm}"]
    assert canonical_crs("UTM:7S") == "EPSG:32707" and canonical_crs("epsg:32632") == "EPSG:32632"
    assert canonical_crs(" +proj=tmerc +lon_0=10 ") == "+proj=tmerc +lon_0=10"  # PROJ strings keep their case


SCALE, TIES = (0.5, 0.5, 0), (0, 0, 0, 499_950.0, 5_206_000.0, 0)


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        (dict(keys=None), "no GeoTIFF geo-referencing tags"),
        (dict(keys=_projected(32767, AREA), scale=SCALE, ties=TIES), "user-defined"),
        (dict(keys=_projected(32600, AREA), scale=SCALE, ties=TIES), "unknown coordinate system 'EPSG:32600'"),
        (dict(keys={1024: 2, 2048: 3999}, scale=SCALE, ties=TIES), "unknown coordinate system 'EPSG:3999'"),
        (dict(keys={1024: 1, 3072: 32632, 3076: 9002}, scale=SCALE, ties=TIES), "only metres"),
        (dict(keys=None, scale=SCALE, ties=TIES), "no GeoKeyDirectoryTag"),
        (dict(keys=_projected(32632, AREA), ties=TIES + (40, 30, 0, 499_970.0, 5_205_985.0, 0)), "2 tiepoints"),
        (dict(keys=_projected(32632, AREA), ties=TIES), "without ModelPixelScaleTag"),
        (dict(keys=_projected(32632, AREA)), "no ModelPixelScaleTag"),
    ],
)
def test_refusals_name_the_file_and_suggest_a_world_file(tmp_path, tags, message) -> None:
    tif = _write_geotiff(tmp_path / "bad.tif", **tags)
    with pytest.raises(ValueError, match=message) as err:
        orthophoto_tiles(tif, OrthoConfig(10, 10))
    assert "bad.tif" in str(err.value) and "world file" in str(err.value) and "--crs" in str(err.value)


def test_orthophoto_beyond_the_decompression_bomb_limit(tmp_path, monkeypatch) -> None:
    tif = _write_geotiff(tmp_path / "big.tif", **CASES["wgs84-area"][0])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 48 px now count as a bomb, 20 x 20 not
    tiles = orthophoto_tiles(tif, OrthoConfig(10, 10))
    assert len(tiles) == 12 and load_tile(tiles[0]).size == (20, 20)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_geotiff_crs_alone_and_png_still_needs_world_file(tmp_path) -> None:
    assert geotiff_crs(_write_geotiff(tmp_path / "m.tif", **CASES["webmercator-point"][0])) == "EPSG:3857"
    _pixels().save(tmp_path / "plain.png")
    with pytest.raises(FileNotFoundError, match="no world file"):
        orthophoto_tiles(tmp_path / "plain.png", OrthoConfig(10, 10))


def test_cli_index_build_from_geotiff_without_world_file(tmp_path, capsys) -> None:
    tif = _write_geotiff(tmp_path / "ortho.tif", **CASES["utm32n-area"][0])
    expected = orthophoto_tiles(tif, OrthoConfig(10, 10))
    idx = tmp_path / "idx"
    argv = ["index", "build", "--random-init", "--out", str(idx), "--ortho", str(tif), "--tile-m", "10",
            "--stride-m", "10"]  # fmt: skip
    assert main([*argv, "--image-size", "32"]) == 0
    info = GalleryIndex.load(idx).info()
    assert info["count"] == len(expected) == 12 and info["sources"] == ["orthophoto"]
    assert info["extent"]["lat_max"] == pytest.approx(max(t.latitude for t in expected), abs=1e-12)
    assert 47.0 < info["extent"]["lat_min"] < 47.1 and 8.9 < info["extent"]["lon_min"] < 9.0
    capsys.readouterr()
    assert main([*argv, "--overwrite", "--crs", "EPSG:4326", "--image-size", "32"]) == 2
    err = capsys.readouterr().err
    assert "overrides the coordinate system EPSG:32632" in err and "look projected (metres, not degrees)" in err


def test_national_grid_geotiff_through_proj(tmp_path) -> None:
    """Swiss LV95 (EPSG:2056) is not one of our formulas: PROJ (rasterio) converts it; the grid's origin point,
    E 2 600 000 / N 1 200 000, is the old Bern observatory at 46.95108 N, 7.43864 E (swisstopo)."""
    tags = dict(keys=_projected(2056, AREA), scale=(0.5, 0.5, 0), ties=(0, 0, 0, 2_600_000.0, 1_200_000.0, 0))
    tif = _write_geotiff(tmp_path / "bern.tif", **tags)
    assert geotiff_crs(tif) == "EPSG:2056"
    tiles = orthophoto_tiles(tif, OrthoConfig(10, 10))
    first = tiles[0]  # 20 px of 0.5 m: centred 5 m east and 5 m south of the grid origin
    assert first.latitude == pytest.approx(46.95108 - 5 / 111_195, abs=3e-5)  # the published point is to 0.1"
    assert first.longitude == pytest.approx(7.43864 + 5 / (111_195 * np.cos(np.radians(46.951))), abs=3e-5)
    assert len(tiles) == 12 and load_tile(first).size == (20, 20)


def test_crs_without_an_epsg_code_is_identified_by_proj(tmp_path) -> None:
    """GeoKeys that spell WGS84 out (user-defined geographic CRS, datum 6326) instead of naming EPSG:4326, as some
    exporters write: PROJ (rasterio) identifies the code."""
    pytest.importorskip("rasterio")
    keys = {1024: 2, 1025: 1, 2048: 32767, 2050: 6326, 2054: 9102}
    tif = _write_geotiff(tmp_path / "spelled.tif", keys=keys, scale=(DLON, DLAT, 0), ties=(0, 0, 0, LON0, LAT0, 0))
    assert geotiff_crs(tif) == "EPSG:4326"
    tiles = orthophoto_tiles(tif, OrthoConfig(10, 10))
    assert tiles[0].latitude == pytest.approx(LAT0 - 10 * DLAT, abs=1e-9)


def _rasterio_geotiff(path, crs, transform, pixels: np.ndarray):
    """A GeoTIFF written by rasterio (GDAL), as a GIS exports one: `pixels` (H, W, 3) under `transform`."""
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(path, "w", driver="GTiff", width=pixels.shape[1], height=pixels.shape[0], count=3,
                       dtype="uint8", crs=crs, transform=transform) as dst:  # fmt: skip
        dst.write(pixels.transpose(2, 0, 1))
    return path


LOCAL_TM = "+proj=tmerc +lat_0=47 +lon_0=8 +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"


def test_a_metre_grid_tagged_as_degrees_is_named_and_overridden_by_any_proj_crs(tmp_path, capsys) -> None:
    """A local metre grid tagged EPSG:4326: the tile-size error names the CRS; --crs with a PROJ string fixes it."""
    affine = pytest.importorskip("rasterio.transform").Affine
    tif = _rasterio_geotiff(tmp_path / "local.tif", "EPSG:4326", affine(0.5, 0, 0.0, 0, -0.5, 24.0),
                            np.asarray(_pixels()))  # fmt: skip
    with pytest.raises(ValueError, match=r"only 0x0 px at .* m/px; the file says EPSG:4326 \(degrees\): if its "
                                         r"coordinates are metres, pass their coordinate system with --crs"):
        orthophoto_tiles(tif, OrthoConfig(10, 10))
    tiles = orthophoto_tiles(tif, OrthoConfig(10, 10, crs=LOCAL_TM))
    assert len(tiles) == 12 and load_tile(tiles[0]).size == (20, 20)
    assert tiles[0].latitude == pytest.approx(LAT0 + 19 / 111_195, abs=2e-6)  # 24 m - 5 m north of the origin
    assert tiles[0].longitude == pytest.approx(LON0 + 5 / (111_195 * np.cos(np.radians(LAT0))), abs=2e-6)
    assert "overrides the coordinate system EPSG:4326" in capsys.readouterr().err


def test_custom_transverse_mercator_geotiff_is_read_through_proj(tmp_path) -> None:
    """A CRS without an EPSG code (a custom transverse Mercator) is kept as PROJ's WKT, and tiles land where PROJ
    puts their centres."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.crs import CRS
    from rasterio.warp import transform

    crs = CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=10.3 +k=0.9999 +x_0=40000 +y_0=-5000000 +ellps=GRS80 +units=m")
    tif = _rasterio_geotiff(tmp_path / "tm.tif", crs, rasterio.Affine(0.5, 0, 20_000.0, 0, -0.5, 210_000.0),
                            np.asarray(_pixels()))  # fmt: skip
    found = geotiff_crs(tif)
    assert found.startswith(("PROJCS", "PROJCRS")) and CRS.from_wkt(found) == crs
    tiles = orthophoto_tiles(tif, OrthoConfig(10, 10))
    lon, lat = transform(crs, "EPSG:4326", [20_000.0 + 5.0], [210_000.0 - 5.0])  # the first tile's centre
    assert (tiles[0].latitude, tiles[0].longitude) == pytest.approx((lat[0], lon[0]), abs=1e-9)


def test_a_south_up_geotiff_reads_as_its_north_up_twin(tmp_path) -> None:
    """Rows running north (a positive row step, as GDAL and QGIS read it): the same tiles, places and pixels as the
    north-up file holding the rows the other way round."""
    affine = pytest.importorskip("rasterio.transform").Affine
    px = np.asarray(_pixels())
    north = _rasterio_geotiff(tmp_path / "n.tif", "EPSG:32632", affine(0.5, 0, 500_000.0, 0, -0.5, 5_206_024.0), px)
    south = _rasterio_geotiff(tmp_path / "s.tif", "EPSG:32632", affine(0.5, 0, 500_000.0, 0, 0.5, 5_206_000.0),
                              px[::-1].copy())  # fmt: skip
    cfg = OrthoConfig(10, 10)
    want, got = orthophoto_tiles(north, cfg), orthophoto_tiles(south, cfg)
    assert [(t.box, t.rotation) for t in got] == [(t.box, t.rotation) for t in want]
    assert [v for t in got for v in (t.latitude, t.longitude)] == pytest.approx(
        [v for t in want for v in (t.latitude, t.longitude)], abs=1e-9)  # fmt: skip
    assert all(t.flipped for t in got) and not any(t.flipped for t in want)
    (w_n, _, f_n), (w_s, _, f_s) = view_georeference(north), view_georeference(south)  # the DSM grid's affine too
    assert (f_n, f_s) == (False, True) and dataclasses.astuple(w_s) == pytest.approx(dataclasses.astuple(w_n))
    assert all(np.array_equal(np.asarray(load_tile(a)), np.asarray(load_tile(b)))
               for a, b in zip(want, got, strict=True))  # fmt: skip
    (ref_n, aff_n), (ref_s, aff_s) = reference_image(want[5]), reference_image(got[5])
    assert aff_s == pytest.approx(aff_n) and np.array_equal(np.asarray(ref_s.crop((-4, 30, 40, 60))),
                                                             np.asarray(ref_n.crop((-4, 30, 40, 60))))  # fmt: skip


def test_world_file_flag_overrides_the_tags_with_a_warning(tmp_path, capsys) -> None:
    tags, _, expected = CASES["utm32n-area"]
    tif = _write_geotiff(tmp_path / "o.tif", **tags)
    shifted = WorldFile(expected.a, expected.d, expected.b, expected.e, expected.c + 100.0, expected.f)
    _write_world(tmp_path / "fix.tfw", shifted)
    moved = orthophoto_tiles(tif, OrthoConfig(10, 10), world_file=tmp_path / "fix.tfw")
    plain = orthophoto_tiles(tif, OrthoConfig(10, 10))
    assert (moved[0].longitude - plain[0].longitude) * 111_195 * np.cos(np.radians(47.0)) == pytest.approx(100, 0.01)
    assert capsys.readouterr().err.strip() == (f"warning: --world-file {tmp_path / 'fix.tfw'} overrides the "
                                               f"transform in the GeoTIFF tags of {tif}")  # fmt: skip
