from __future__ import annotations

import io
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from spikevimformer.geo.encoders import TorchEncoder, encode_tiles
from spikevimformer.geo.index import GalleryIndex
from spikevimformer.geo.localize import Localizer
from spikevimformer.geo.serve import create_app
from spikevimformer.geo.tiles import world_tiles
from tests.geo_world import make_world
from tests.live_server import live_server

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    world = make_world(root / "world", n_test=6, n_distractor=0, n_train=0)
    encoder = TorchEncoder.load(None, "tiny", 32)
    tiles = world_tiles(world)
    index = GalleryIndex.create(root / "idx", encoder.identity)
    index.add(tiles, encode_tiles(encoder, tiles, progress=False))
    app = create_app(Localizer(encoder, index, k=3), max_upload_bytes=LIMIT)
    with live_server(app) as url:
        yield url, world


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
    assert r.status_code == 400 and r.json()["detail"].startswith("k: ") and "'abc'" in r.json()["detail"]


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
