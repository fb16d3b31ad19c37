from __future__ import annotations

import io
import re
import shutil
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from spikevimformer.geo import serve as serve_module
from spikevimformer.geo.encoders import TorchEncoder, encode_tiles
from spikevimformer.geo.imaging import open_photo
from spikevimformer.geo.index import GalleryIndex
from spikevimformer.geo.localize import Localizer
from spikevimformer.geo.raster import open_raster
from spikevimformer.geo.serve import create_app
from spikevimformer.geo.tiles import OrthoConfig, orthophoto_tiles
from tests.geo_world import served_gallery
from tests.live_server import live_server

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    return served_gallery(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(gallery):
    encoder, index, world = gallery
    app = create_app(Localizer(encoder, index, k=3), max_upload_bytes=LIMIT)
    with live_server(app) as url:
        yield url, world


class HeldLocalizer(Localizer):
    """A localizer whose answers wait while `hold` is set, so a test can look at the service with a photo in work."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hold, self.entered, self.release = False, threading.Event(), threading.Event()

    def localize(self, *args, **kwargs):
        if self.hold:
            self.entered.set()
            assert self.release.wait(30)
        return super().localize(*args, **kwargs)


@pytest.fixture(scope="module")
def single_worker(gallery):
    """The service with its default byte limit, one worker, no queue and a 1 s upload timeout."""
    encoder, index, world = gallery
    localizer = HeldLocalizer(encoder, index, k=3)
    with live_server(create_app(localizer, workers=1, queue=0, upload_timeout_s=1.0)) as url:
        yield url, world, localizer


def _query(world, loc: str) -> bytes:
    return (world / f"University-1652/test/query_drone/{loc}/image-01.png").read_bytes()


def test_health_and_page(server) -> None:
    url, _ = server
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["gallery"] == 6 and health["model"]["image_size"] == 32
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "<svg" in page.text and "<form" in page.text and 'type="file"' in page.text
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)  # nothing fetched from outside
    gallery = httpx.get(f"{url}/gallery").json()
    assert gallery["count"] == 6 and len(gallery["points"]) == 6


def test_localize_multipart_and_raw(server) -> None:
    url, world = server
    r = httpx.post(f"{url}/localize", files={"image": ("q.png", _query(world, "0003"), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["matches"][0]["id"] == "0003" and len(body["matches"]) == 3
    assert set(body["estimate"]) == {"latitude", "longitude", "radius_m", "source", "probably_elsewhere"}
    assert body["model_s"] > 0
    assert abs(sum(body["weights"]) - 1) < 1e-4
    raw = httpx.post(f"{url}/localize?k=2", content=_query(world, "0001"), headers={"content-type": "image/png"})
    assert raw.status_code == 200 and [m["rank"] for m in raw.json()["matches"]] == [1, 2]
    assert raw.json()["matches"][0]["id"] == "0001"
    tile = httpx.get(f"{url}/tiles/0001")
    assert tile.status_code == 200 and Image.open(io.BytesIO(tile.content)).format == "JPEG"
    assert httpx.get(f"{url}/tiles/nope").status_code == 404


def test_bad_uploads(server) -> None:
    url, world = server
    big = httpx.post(f"{url}/localize", files={"image": ("big.png", b"\0" * (LIMIT + 10), "image/png")})
    assert big.status_code == 413 and "limit" in big.json()["detail"]
    text = httpx.post(f"{url}/localize", files={"image": ("a.txt", b"hello", "text/plain")})
    assert text.status_code == 415
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    disguised = httpx.post(f"{url}/localize", files={"image": ("a.jpg", gif.getvalue(), "image/jpeg")})
    assert disguised.status_code == 415 and "GIF" in disguised.json()["detail"]
    corrupt = httpx.post(f"{url}/localize", files={"image": ("c.png", _query(world, "0000")[:200], "image/png")})
    assert corrupt.status_code == 400 and "not a readable image" in corrupt.json()["detail"]
    garbage = httpx.post(f"{url}/localize", content=b"\x89PNGgarbage", headers={"content-type": "image/png"})
    assert garbage.status_code == 400
    empty = httpx.post(f"{url}/localize", files={"other": (None, "x")})
    assert empty.status_code == 400 and "file field" in empty.json()["detail"]
    assert httpx.post(f"{url}/localize?k=0", content=_query(world, "0000"),
                      headers={"content-type": "image/png"}).status_code == 400  # fmt: skip
    assert httpx.get(f"{url}/health").status_code == 200  # still alive


def test_concurrent_requests_get_their_own_answers(server) -> None:
    url, world = server
    locs = [f"{i:04d}" for i in range(6)] * 2

    def ask(loc: str) -> str:
        r = httpx.post(f"{url}/localize", files={"image": ("q.png", _query(world, loc), "image/png")}, timeout=60)
        r.raise_for_status()
        return r.json()["matches"][0]["id"]

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(ask, locs))
    assert answers == locs


def test_uploads_are_judged_by_their_bytes_not_their_label(server) -> None:
    url, world = server
    png = _query(world, "0002")
    for label in ("image/jpg", "image/x-png", "application/octet-stream", "text/plain", ""):
        r = httpx.post(f"{url}/localize", content=png, headers={"content-type": label})
        assert r.status_code == 200, (label, r.text)
        assert r.json()["matches"][0]["id"] == "0002"
    form = httpx.post(f"{url}/localize", files={"image": ("q.jpeg", png, "image/pjpeg")})
    assert form.status_code == 200


def test_suspect_photo_shapes_answer_with_a_warning(server) -> None:
    url, world = server
    wide = io.BytesIO()
    Image.open(io.BytesIO(_query(world, "0004"))).convert("RGB").resize((400, 64)).save(wide, "PNG")
    r = httpx.post(f"{url}/localize", content=wide.getvalue(), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.json()["warnings"] == ["400x64 px has aspect ratio 6.2:1, beyond 4:1; is this a whole photo?"]
    plain = httpx.post(f"{url}/localize", content=_query(world, "0004"), headers={"content-type": "image/png"})
    assert plain.json()["warnings"] == []


def test_malformed_query_parameters_get_one_sentence(server) -> None:
    url, world = server
    r = httpx.post(f"{url}/localize?k=abc", content=_query(world, "0001"), headers={"content-type": "image/png"})
    assert r.status_code == 400 and r.json()["detail"].startswith("k: ") and '(got "abc")' in r.json()["detail"]


def test_a_camera_file_per_request(server) -> None:
    """The form's `camera` field is this photo's lens (as serve --camera would be); a bad one is one sentence."""
    url, world = server
    photo = _query(world, "0002")
    w, h = Image.open(io.BytesIO(photo)).size
    lens = f'{{"width": {w}, "height": {h}, "K": [[{w}, 0, {(w - 1) / 2}], [0, {w}, {(h - 1) / 2}], [0, 0, 1]], ' \
           '"dist": [-0.1, 0, 0, 0, 0]}'
    as_file = httpx.post(f"{url}/localize", files={"image": ("q.png", photo, "image/png"),
                                                   "camera": ("lens.json", lens.encode(), "application/json")})
    as_text = httpx.post(f"{url}/localize", files={"image": ("q.png", photo, "image/png")}, data={"camera": lens})
    plain = httpx.post(f"{url}/localize", files={"image": ("q.png", photo, "image/png")})
    for r in (as_file, as_text):
        assert r.status_code == 200, r.text
        assert "form field 'camera'" in r.json()["intrinsics"]
    assert as_file.json()["intrinsics"].startswith("lens.json (form field 'camera')")  # the upload by its name
    by_fov = httpx.post(f"{url}/localize?fov=55", files={"image": ("q.png", photo, "image/png")})
    assert by_fov.status_code == 200 and by_fov.json()["intrinsics"] == "?fov= 55"  # named as it was given
    assert plain.status_code == 200 and "camera" not in (plain.json()["intrinsics"] or "")
    bad = httpx.post(f"{url}/localize", files={"image": ("q.png", photo, "image/png")},
                     data={"camera": '{"projection_type": "spherical"}'})
    assert bad.status_code == 400 and "form field 'camera'" in bad.json()["detail"]
    wrong = httpx.post(f"{url}/localize", files={"image": ("q.png", photo, "image/png")},
                       data={"camera": lens.replace(f'"width": {w}', f'"width": {2 * w + 3}')})
    assert wrong.status_code == 400 and "camera file" in wrong.json()["detail"]
    alone = httpx.post(f"{url}/localize", files={"camera": ("lens.json", lens.encode(), "application/json")})
    assert alone.status_code == 400 and "a camera file but no photo" in alone.json()["detail"]


def _tiled_geotiff(path, pixels) -> str:
    """A tiled, DEFLATE-compressed WGS84 GeoTIFF with 0.5 m pixels, as GIS tools write orthophotos."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    step = 0.5 / 111_195.0
    with rasterio.open(path, "w", driver="GTiff", width=pixels.shape[1], height=pixels.shape[0], count=3,
                       dtype="uint8", crs="EPSG:4326", transform=from_origin(8.0, 47.0, step / np.cos(np.radians(47)),
                       step), tiled=True, blockxsize=128, blockysize=128, compress="deflate") as ds:  # fmt: skip
        ds.write(pixels.transpose(2, 0, 1))
    open_raster.cache_clear()
    return str(path)


def test_threads_sharing_an_open_geotiff_read_their_own_windows(tmp_path) -> None:
    """The raster /tiles and /localize share: one GDAL handle read from 16 threads returned other windows' pixels
    and "ZIPDecode" errors."""
    pixels = np.random.default_rng(0).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
    path = _tiled_geotiff(tmp_path / "ortho.tif", pixels)
    boxes = [(x, y, x + 160, y + 160) for x, y in np.random.default_rng(1).integers(0, 1888, (300, 2)).tolist()]

    def same(raster, box: tuple[int, int, int, int]) -> bool:
        return bool((np.asarray(raster.crop(box)) == pixels[box[1] : box[3], box[0] : box[2]]).all())

    for copy in range(2):  # a fresh file each round: the blocks are decoded while the threads race, not cached
        raster = open_raster(shutil.copy(path, tmp_path / f"copy{copy}.tif"))
        with ThreadPoolExecutor(max_workers=16) as pool:
            assert all(pool.map(same, [raster] * len(boxes), boxes)), f"round {copy}"


def test_tiles_and_localize_answer_the_same_concurrently_as_one_at_a_time(tmp_path) -> None:
    """An index of a windowed GeoTIFF: tile thumbnails and answers from many threads at once, byte for byte."""
    small = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    pixels = np.asarray(Image.fromarray(small).resize((768, 768), Image.Resampling.BICUBIC))  # features to register
    tiles = orthophoto_tiles(_tiled_geotiff(tmp_path / "ortho.tif", pixels), OrthoConfig(128.0, 128.0))
    encoder = TorchEncoder.load(None, "tiny", 32)
    index = GalleryIndex.create(tmp_path / "idx", encoder.identity)
    index.add(tiles, encode_tiles(encoder, tiles, progress=False))
    photos = []
    for x, y in ((100, 100), (500, 300)):
        buf = io.BytesIO()
        Image.fromarray(pixels[y : y + 200, x : x + 200]).save(buf, "PNG")
        photos.append(buf.getvalue())
    with live_server(create_app(Localizer(encoder, index, k=2))) as url, httpx.Client(base_url=url) as client:

        def tile(tile_id: str) -> bytes:
            return client.get(f"/tiles/{tile_id}?size=256", timeout=60).content

        def localize(photo: bytes) -> dict:
            answer = client.post("/localize?fov=60", content=photo, timeout=60).json()
            return {key: answer[key] for key in ("matches", "camera", "fix", "estimate")}

        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = pool.map(localize, photos * 2)
            thumbnails = list(pool.map(tile, [t.id for t in tiles] * 2))
            answers = list(answers)
        assert thumbnails == [tile(t.id) for t in tiles] * 2
        assert answers == [localize(p) for p in photos] * 2


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header says `width` x `height` px, in a few dozen bytes (its pixel data is not there)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_a_huge_picture_in_a_small_file_is_refused_before_decoding(server, monkeypatch) -> None:
    url, _ = server

    def decode(*args, **kwargs):
        raise AssertionError("the upload was decoded")

    monkeypatch.setattr(serve_module, "open_photo", decode)
    r = httpx.post(f"{url}/localize", content=_png_header(12000, 12000), headers={"content-type": "image/png"})
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == ("upload is 12000 x 12000 px (144.0 Mpx), above the limit of 50 Mpx "
                                  "(serve --max-upload-mp); send it downscaled")  # fmt: skip


def test_heic_and_avif_are_named(server) -> None:
    url, _ = server
    for brand, name in ((b"heic", "HEIC"), (b"avif", "AVIF")):
        photo = b"\0\0\0\x18ftyp" + brand + b"\0" * 200
        r = httpx.post(f"{url}/localize", files={"image": ("IMG_0001.HEIC", photo, "image/heic")})
        assert r.status_code == 415 and f"IMG_0001.HEIC is an image in {name} format, which is not supported" in r.text
        with pytest.raises(ValueError, match=f"is an image in {name} format, which is not supported; convert it to"):
            open_photo(photo, "photo")  # the command line's reader says the same


def test_a_form_part_without_a_file_name_is_the_photo(single_worker) -> None:
    """RFC 7578 makes the file name optional (curl -F 'image=<photo.jpg', requests with (None, data)); above 1 MiB
    too."""
    url, world, _ = single_worker
    r = httpx.post(f"{url}/localize", files={"image": (None, _query(world, "0003"))})
    assert r.status_code == 200, r.text
    assert r.json()["matches"][0]["id"] == "0003"
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (700, 700, 3), dtype=np.uint8)).save(noise, "PNG")
    assert noise.tell() > 2**20
    big = httpx.post(f"{url}/localize", files={"image": (None, noise.getvalue())}, timeout=30)
    assert big.status_code == 200, big.text


def test_a_busy_service_answers_health_and_refuses_with_retry_after(single_worker) -> None:
    url, world, localizer = single_worker
    localizer.hold = True
    localizer.entered.clear()
    localizer.release.clear()
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(httpx.post, f"{url}/localize", content=_query(world, "0001"), timeout=30)
        try:
            assert localizer.entered.wait(10), "the first photo never reached the localizer"
            start = time.monotonic()
            assert httpx.get(f"{url}/health", timeout=5).status_code == 200
            assert time.monotonic() - start < 1  # the event loop is free while a photo is in work
            second = httpx.post(f"{url}/localize", content=_query(world, "0002"), timeout=5)
            assert second.status_code == 503 and second.headers["retry-after"] == "5"
            assert "busy" in second.json()["detail"]
        finally:
            localizer.hold = False
            localizer.release.set()
        assert first.result().status_code == 200
    assert httpx.post(f"{url}/localize", content=_query(world, "0002")).status_code == 200  # a free worker again


def test_a_stalled_upload_is_answered_408_and_let_go(single_worker) -> None:
    """A client that sends the headers and 10 bytes of a 100 kB body does not hold its connection for ever, nor
    the only worker's place meanwhile."""
    url, world, _ = single_worker
    host, port = url.removeprefix("http://").split(":")
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"POST /localize HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n"
                     b"\r\n" + _query(world, "0001")[:10])  # fmt: skip
        assert httpx.post(f"{url}/localize", content=_query(world, "0002"), timeout=5).status_code == 200
        answer = b""
        while not answer.endswith(b"}") and (more := conn.recv(4096)):  # the JSON body may come in a second packet
            answer += more
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within 1 s (10 bytes came)" in answer
    assert time.monotonic() - start < 5
    assert httpx.post(f"{url}/localize", content=_query(world, "0001")).status_code == 200  # its slot is free
