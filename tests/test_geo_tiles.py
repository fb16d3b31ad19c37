from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spikevimformer.geo.tiles import OrthoConfig, WorldFile, folder_tiles, load_tile, orthophoto_tiles, world_tiles
from spikevimformer.geodesy import LocalFrame, haversine_m
from tests.geo_world import make_world, tile_image

# 0.5 m pixels in degrees at 47 N
LAT0, LON0 = 47.0, 8.0
DLAT = 0.5 / 111_195.0
DLON = DLAT / float(np.cos(np.radians(LAT0)))


def _ortho(tmp_path, width=200, height=120, suffix=".jgw"):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    img.save(tmp_path / "ortho.png")
    (tmp_path / f"ortho{suffix}").write_text(f"{DLON!r}\n0\n0\n{-DLAT!r}\n{LON0!r}\n{LAT0!r}\n")
    return tmp_path / "ortho.png"


def test_folder_tiles_with_and_without_image_column(tmp_path) -> None:
    (tmp_path / "t" / "b").mkdir(parents=True)
    tile_image(0, 32).save(tmp_path / "t" / "a.png")
    tile_image(1, 32).save(tmp_path / "t" / "b" / "b.jpg")
    tile_image(2, 32).save(tmp_path / "t" / "other.png")
    (tmp_path / "tiles.csv").write_text(
        "ID,Lat,Lon,footprint_m,image\na,47.0,8.0,100,\nb,47.001,8.0,120,\nc,47.002,8.0,80,other.png\n"
    )
    tiles = folder_tiles(tmp_path / "t", tmp_path / "tiles.csv")
    assert [t.id for t in tiles] == ["a", "b", "c"]
    assert tiles[1].image.endswith("b/b.jpg") and tiles[2].image.endswith("other.png")
    assert tiles[1].footprint_m == 120 and tiles[0].source == "folder"
    assert load_tile(tiles[0]).size == (32, 32)


def test_folder_tiles_find_upper_case_suffixes_as_cameras_write_them(tmp_path) -> None:
    """T000.JPG, .PNG, .TIF, .JPEG (flat or in a folder of their own) are found and read like lower-case ones."""
    (tmp_path / "t" / "T004").mkdir(parents=True)
    names = ["T000.JPG", "T001.PNG", "T002.TIF", "T003.JPEG", "T004/T004.JPG"]
    for i, name in enumerate(names):
        tile_image(i, 32).save(tmp_path / "t" / name, format="TIFF" if name.endswith(".TIF") else None)
    (tmp_path / "t" / "T000.txt").write_text("not an image")
    rows = "".join(f"T00{i},47.00{i},8.0,100\n" for i in range(len(names)))
    (tmp_path / "tiles.csv").write_text("id,latitude,longitude,footprint_m\n" + rows)
    tiles = folder_tiles(tmp_path / "t", tmp_path / "tiles.csv")
    assert [Path(t.image).relative_to(tmp_path / "t").as_posix() for t in tiles] == names
    for i, tile in enumerate(tiles):
        assert np.array_equal(np.asarray(load_tile(tile)), np.asarray(Image.open(tmp_path / "t" / names[i])))


def test_folder_tiles_errors(tmp_path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "bad.csv").write_text("id,latitude,longitude\nx,47,8\n")
    with pytest.raises(ValueError, match="footprint"):
        folder_tiles(tmp_path / "t", tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError, match="no image for tile 'x'"):
        folder_tiles(tmp_path / "t", tmp_path / "bad.csv", default_footprint_m=50)
    (tmp_path / "swapped.csv").write_text("id,latitude,longitude,footprint_m\nx,147,8,50\n")
    with pytest.raises(ValueError, match="latitude must lie"):
        folder_tiles(tmp_path / "t", tmp_path / "swapped.csv")
    with pytest.raises(FileNotFoundError):
        folder_tiles(tmp_path / "missing", tmp_path / "bad.csv")


def test_world_file_parsing(tmp_path) -> None:
    (tmp_path / "w.wld").write_text("0.5\n0\n0\n-0.5\n100.25\n200.75\n")
    wf = WorldFile.read(tmp_path / "w.wld")
    x, y = wf.apply(2, 4)
    assert (float(x), float(y)) == (101.25, 198.75)
    (tmp_path / "short.wld").write_text("1\n2\n")
    with pytest.raises(ValueError, match="six numbers"):
        WorldFile.read(tmp_path / "short.wld")


def test_orthophoto_tiles_geometry(tmp_path) -> None:
    image = _ortho(tmp_path)  # 200 x 120 px = 100 m x 60 m
    tiles = orthophoto_tiles(image, OrthoConfig(tile_m=20, stride_m=10))
    # 40 px tiles, 20 px stride: x starts 0..160 (9), y starts 0..80 (5)
    assert len(tiles) == 45
    first = tiles[0]
    assert first.box == (0, 0, 40, 40) and first.footprint_m == 20 and first.source == "orthophoto"
    # centre of the first tile: pixel (19.5, 19.5) from the centre of the upper-left pixel
    assert first.latitude == pytest.approx(LAT0 - 19.5 * DLAT, abs=1e-12)
    assert first.longitude == pytest.approx(LON0 + 19.5 * DLON, abs=1e-12)
    # neighbours along a row are one stride (10 m) apart on the ground
    assert float(haversine_m(first.latitude, first.longitude, tiles[1].latitude, tiles[1].longitude)) == pytest.approx(
        10.0, rel=1e-3
    )
    crop = load_tile(first)
    np.testing.assert_array_equal(np.asarray(crop), np.asarray(Image.open(image).convert("RGB"))[:40, :40])


def test_orthophoto_scales_rotations_and_edge_cover(tmp_path) -> None:
    image = _ortho(tmp_path, width=210, suffix=".pgw")  # 105 m: the last column of tiles is flush with the edge
    tiles = orthophoto_tiles(image, OrthoConfig(tile_m=20, stride_m=20, scales=(1, 2), rotations=(0, 90)))
    small = [t for t in tiles if t.scale == 1]
    big = [t for t in tiles if t.scale == 2]
    assert {t.rotation for t in tiles} == {0, 90} and len({t.id for t in tiles}) == len(tiles)
    assert max(t.box[2] for t in small) == 210  # right edge covered
    assert len(small) == 2 * 6 * 3 and len(big) == 2 * 3 * 2
    assert all(t.footprint_m == 40 for t in big)
    rotated = next(t for t in big if t.rotation == 90)
    upright = next(t for t in big if t.rotation == 0 and t.box == rotated.box)
    np.testing.assert_array_equal(np.asarray(load_tile(rotated)), np.rot90(np.asarray(load_tile(upright))))


def test_orthophoto_projected_crs(tmp_path) -> None:
    Image.new("RGB", (100, 100), (90, 120, 80)).save(tmp_path / "utm.jpg")
    (tmp_path / "utm.jgw").write_text("1.0\n0\n0\n-1.0\n499950.5\n5206000.0\n")
    tiles = orthophoto_tiles(tmp_path / "utm.jpg", OrthoConfig(tile_m=50, stride_m=50, crs="UTM:32N"))
    assert len(tiles) == 4 and tiles[0].box == (0, 0, 50, 50)
    frame = LocalFrame(tiles[0].latitude, tiles[0].longitude)
    e, n = frame.to_local(tiles[3].latitude, tiles[3].longitude)
    assert float(e) == pytest.approx(50 / 0.9996, rel=5e-3) and float(n) == pytest.approx(-50 / 0.9996, rel=5e-3)


def test_orthophoto_errors(tmp_path) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "plain.png")
    with pytest.raises(FileNotFoundError, match="no world file"):
        orthophoto_tiles(tmp_path / "plain.png", OrthoConfig(10, 5))
    image = _ortho(tmp_path)
    with pytest.raises(ValueError, match="do not fit"):
        orthophoto_tiles(image, OrthoConfig(tile_m=500, stride_m=100))
    with pytest.raises(ValueError, match="multiples of 90"):
        OrthoConfig(10, 5, rotations=(45,))


def test_world_tiles(tmp_path) -> None:
    world = make_world(tmp_path / "w", n_test=3, n_distractor=2, n_train=1)
    tiles = world_tiles(world)
    assert len(tiles) == 5 and {t.source for t in tiles} == {"world"}
    train = world_tiles(world, "train")
    assert [t.id for t in train] == ["0005"]
    (world / "University-1652/test/gallery_satellite/0001/0001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 gallery tiles"):
        world_tiles(world)


def test_rotated_orthophoto_gives_north_up_tiles_and_south_up_is_read_upside_down(tmp_path) -> None:
    # A north-up raster in UTM 32N (on the central meridian: no grid convergence), and the same ground drawn into
    # a raster whose columns run 30 degrees north of east, geo-referenced by a world file with rotation terms.
    import cv2

    g, e0, n0 = 0.5, 499_900.0, 5_206_000.0
    rng = np.random.default_rng(3)
    base = cv2.GaussianBlur(rng.integers(0, 256, (400, 400, 3), dtype=np.uint8), (0, 0), 3)
    alpha = np.radians(30)
    a, d, b, e = g * np.cos(alpha), g * np.sin(alpha), g * np.sin(alpha), -g * np.cos(alpha)
    ec, nc = e0 + g * 199.5, n0 - g * 199.5  # both rasters centred on the same ground point
    c, f = ec - (a + b) * 149.5, nc - (d + e) * 149.5
    to_base = np.array([[a / g, b / g, (c - e0) / g], [-d / g, -e / g, (n0 - f) / g]])
    turned = cv2.warpAffine(base, to_base, (300, 300), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
    Image.fromarray(turned).save(tmp_path / "turned.png")
    (tmp_path / "turned.pgw").write_text("\n".join(repr(float(v)) for v in (a, d, b, e, c, f)) + "\n")

    tiles = orthophoto_tiles(tmp_path / "turned.png", OrthoConfig(tile_m=40, stride_m=10, crs="UTM:32N"))
    assert all(t.rotation == pytest.approx(30, abs=0.1) for t in tiles)
    middle = min(tiles, key=lambda t: abs((t.box[0] + t.box[2]) / 2 - 150) + abs((t.box[1] + t.box[3]) / 2 - 150))
    cx, cy = (middle.box[0] + middle.box[2] - 1) / 2, (middle.box[1] + middle.box[3] - 1) / 2
    bx, by = to_base @ np.array([cx, cy, 1.0])  # the same ground point in the north-up raster
    want = base[round(by) - 40 : round(by) + 40, round(bx) - 40 : round(bx) + 40].astype(float)
    got = np.asarray(load_tile(middle), dtype=float)
    assert got.shape == want.shape == (80, 80, 3)
    inner = (slice(4, -4), slice(4, -4))  # half-pixel rounding of the centre aside
    assert np.corrcoef(got[inner].ravel(), want[inner].ravel())[0, 1] > 0.95
    unturned = np.asarray(_whole_image_crop(tmp_path / "turned.png", middle.box), dtype=float)
    assert np.corrcoef(unturned[inner].ravel(), want[inner].ravel())[0, 1] < 0.5  # what the tile was before

    (tmp_path / "turned.pgw").write_text("\n".join(repr(float(v)) for v in (g, 0, 0, g, e0, n0)) + "\n")
    south = orthophoto_tiles(tmp_path / "turned.png", OrthoConfig(tile_m=40, stride_m=10, crs="UTM:32N"))
    first = south[0]  # the north-west tile of the view: the last rows of the file, upside down
    assert first.flipped and first.rotation == 0 and first.box == (0, 0, 80, 80)
    assert first.latitude > south[-1].latitude and first.longitude < south[-1].longitude
    assert np.array_equal(np.asarray(load_tile(first)), turned[-80:][::-1, :80])
    (tmp_path / "turned.pgw").write_text("\n".join(repr(float(v)) for v in (-g, 0, 0, -g, e0, n0)) + "\n")
    west = orthophoto_tiles(tmp_path / "turned.png", OrthoConfig(tile_m=40, stride_m=10, crs="UTM:32N"))
    assert all(t.flipped and t.rotation == pytest.approx(180, abs=0.01) for t in west)  # columns west: flip, turn


def _whole_image_crop(path, box):
    return Image.open(path).convert("RGB").crop(box)


def test_a_sliver_at_the_edge_adds_no_near_duplicate_row(tmp_path) -> None:
    image = _ortho(tmp_path, width=203, height=120)  # 40 px tiles every 40 px: 3 px left over at the east edge
    tiles = orthophoto_tiles(image, OrthoConfig(tile_m=20, stride_m=20))
    assert sorted({t.box[0] for t in tiles}) == [0, 40, 80, 120, 160]
