"""The upload page in a real browser: headless Chromium loads it from the running service and its script runs."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
from importlib.resources import files
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.responses import HTMLResponse, Response
from PIL import Image

from spikevimformer.geo.encoders import TorchEncoder, encode_tiles
from spikevimformer.geo.index import GalleryIndex
from spikevimformer.geo.localize import Localization, Localizer, Match
from spikevimformer.geo.serve import create_app
from spikevimformer.geo.tiles import world_tiles
from spikevimformer.geodesy import LocalFrame
from tests.geo_world import make_world
from tests.live_server import live_server

CHROMIUM = Path("/usr/bin/chromium")
ENSURE = Path(__file__).resolve().parents[1] / "scripts" / "ensure-chromium.sh"
TILES = 6
WINDOW = (900, 700)
GALLERY_GREY = (0xBB, 0xBB, 0xBB)  # fill of a gallery tile marker on the page's map
MAP_BACKGROUND = (0xF6, 0xF8, 0xF4)
PHOTO = "University-1652/test/query_drone/0001/image-01.png"  # a drone photo of the test world, 64 x 64 px

# Driven from page JS on extra routes of the same origin, so the page's relative URLs (localize, gallery) resolve.
UPLOAD_JS = """
fetch("test-photo.png").then(r => r.blob()).then(blob => {
  const files = new DataTransfer();
  files.items.add(new File([blob], "photo.png", {type: "image/png"}));
  document.getElementById("file").files = files.files;
  document.getElementById("form").requestSubmit();
});
"""

UPLOAD_FOV_JS = 'document.getElementById("fov").value = "55";' + UPLOAD_JS  # the same, with a field of view typed in


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's chromium; installed when missing, and a failure to install fails the test instead of skipping it."""
    if not os.access(CHROMIUM, os.X_OK):
        done = subprocess.run(["sh", str(ENSURE)], capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not os.access(CHROMIUM, os.X_OK):
            pytest.fail(f"{CHROMIUM} is missing and {ENSURE} could not install it: {done.stderr.strip()[-500:]}")
    return CHROMIUM


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    world = make_world(root / "world", n_test=TILES, n_distractor=0, n_train=0)
    encoder = TorchEncoder.load(None, "tiny", 32)
    tiles = world_tiles(world)
    index = GalleryIndex.create(root / "idx", encoder.identity)
    index.add(tiles, encode_tiles(encoder, tiles, progress=False))
    app = create_app(Localizer(encoder, index, k=3))
    html = files("spikevimformer").joinpath("resources/localize.html").read_text(encoding="utf-8")
    photo = (world / PHOTO).read_bytes()

    @app.get("/test-photo.png")
    def test_photo() -> Response:
        return Response(photo, media_type="image/png")

    @app.get("/test-upload", response_class=HTMLResponse)
    def test_upload() -> str:  # the page, uploading PHOTO through its own form once loaded
        return html.replace("</body>", f"<script>{UPLOAD_JS}</script></body>")

    @app.get("/test-upload-fov", response_class=HTMLResponse)
    def test_upload_fov() -> str:
        return html.replace("</body>", f"<script>{UPLOAD_FOV_JS}</script></body>")

    @app.get("/test-canned", response_class=HTMLResponse)
    def test_canned() -> str:  # the page, showing a canned answer with a camera fix
        return html.replace("</body>", f"<script>show({json.dumps(canned_fix())});</script></body>")

    with live_server(app) as url:
        yield url + "/"


def _headless(chromium: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """One headless run with a throw-away profile, no network beyond the local server, virtual time for fetches."""
    profile.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-proxy-server",
        f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args,
    ]  # fmt: skip
    env = {**os.environ, "HOME": str(profile), "XDG_CONFIG_HOME": str(profile), "XDG_CACHE_HOME": str(profile)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-1500:]}"
    return done


def test_page_script_draws_the_gallery_map(chromium, page_url, tmp_path) -> None:
    assert "<circle" not in httpx.get(page_url).text  # as served, the map is empty
    dom = _headless(chromium, tmp_path / "profile", "--dump-dom", page_url).stdout
    svg = re.search(r'<svg id="map".*?</svg>', dom, re.S)
    assert svg, "no map element in the rendered page"
    # Markers exist only if the script ran, fetched /gallery and drew it.
    markers = re.findall(r'<circle [^>]*fill="#bbb"', svg.group(0))
    assert len(markers) == TILES
    assert 'type="file"' in dom and 'class="error"' not in dom


def test_page_screenshot_shows_the_map(chromium, page_url, tmp_path) -> None:
    shot = tmp_path / "page.png"
    _headless(chromium, tmp_path / "profile", f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
              "--hide-scrollbars", page_url)  # fmt: skip
    assert shot.is_file() and shot.stat().st_size > 5_000
    image = Image.open(io.BytesIO(shot.read_bytes()))
    assert image.format == "PNG" and image.size == WINDOW
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 20  # text, borders and markers, not a blank page

    def count(rgb: tuple[int, int, int]) -> int:
        return int((np.abs(pixels.astype(int) - rgb).max(axis=1) <= 2).sum())

    assert count(MAP_BACKGROUND) > 100_000  # the 520 x 520 map box, styled by the page's CSS
    assert count(GALLERY_GREY) >= TILES  # the gallery markers the script drew


def canned_fix() -> dict:
    """What POST /localize answers for a photo with a camera fix, built from the real result type."""
    lat, lon = 47.37, 8.542655755964459  # tile 0001 of the test world
    frame = LocalFrame(lat, lon)

    def geo(east: float, north: float) -> list[float]:
        g = frame.to_geo(east, north)
        return [round(float(g[0]), 7), round(float(g[1]), 7)]

    cam, look = geo(-20.0, -70.0), geo(0.0, 0.0)
    matches = [Match(1, "0001", 0.98, lat, lon, 150.0, inliers=87, verified_rank=1),
               Match(2, "0000", 0.41, 47.37, 8.54, 150.0, inliers=3, verified_rank=2)]  # fmt: skip
    result = Localization(
        "photo.jpg", matches, lat, lon, 75.0, model_s=0.012, search_s=0.0001, fix=True, reason="",
        camera={"latitude": cam[0], "longitude": cam[1], "height_m": 95.26, "heading_deg": 15.74, "pitch_deg": 55.5},
        look_at={"latitude": look[0], "longitude": look[1]},
        footprint=[geo(-45, 40), geo(45, 40), geo(30, -35), geo(-30, -35)], radius_m=4.26, inliers=87,
        intrinsics="EXIF FocalLengthIn35mmFilm", register_s=0.31,
    )  # fmt: skip
    return {**result.to_dict(), "backend": "torch", "weights": [0.9, 0.1]}


def _text(dom: str, element_id: str) -> str:
    """The text inside the rendered <div id=...> (no nested divs), '' when empty."""
    found = re.search(rf'<div id="{element_id}"[^>]*>(.*?)</div>', dom, re.S)
    assert found, f"no #{element_id} in the rendered page"
    return found.group(1)


def _map(dom: str) -> str:
    svg = re.search(r'<svg id="map".*?</svg>', dom, re.S)
    assert svg, "no map element in the rendered page"
    return svg.group(0)


def test_page_uploads_a_photo_and_says_why_there_is_no_camera_fix(chromium, page_url, tmp_path) -> None:
    """The tiny world has no orthophoto: the real answer is tiles only, and the page says why."""
    dom = _headless(chromium, tmp_path / "profile", "--dump-dom", page_url + "test-upload").stdout
    status = re.search(r'<div id="status"[^>]*>(.*?)</div>', dom, re.S)
    assert status and status.group(1) == "done", f"upload did not finish: {status and status.group(1)}"
    camera = _text(dom, "camera")
    assert camera.startswith("no camera fix: tile-level answer only") and "no reference imagery" in camera
    assert "(tile level;" in _text(dom, "estimate")
    head = re.search(r"<tr><th>rank</th>.*?</tr>", dom, re.S)
    assert head and "<th>inliers</th>" in head.group(0) and "<th>verified</th>" in head.group(0)
    svg = _map(dom)
    assert len(re.findall(r'class="match"', svg)) == 5  # the form's top-k
    assert 'id="estimate-mark"' in svg and 'id="radius"' in svg
    for absent in ("camera-mark", "footprint", "look-at"):
        assert f'id="{absent}"' not in svg


def test_page_draws_a_camera_fix(chromium, page_url, tmp_path) -> None:
    """A canned answer with a fix: the camera line, and camera, radius, heading, look-at and footprint on the map."""
    canned = canned_fix()
    dom = _headless(chromium, tmp_path / "profile", "--dump-dom", page_url + "test-canned").stdout
    c = canned["camera"]
    line = (f"camera: {c['latitude']:.7f}, {c['longitude']:.7f}, 95.3 m, heading 15.7 deg, pitch 55.5 deg, "
            "\u00b1 4.3 m (95 %), 87 inliers")  # fmt: skip
    assert _text(dom, "camera") == line
    assert "(camera;" in _text(dom, "estimate") and "focal length from EXIF FocalLengthIn35mmFilm" in dom
    svg = _map(dom)
    polygon = re.search(r'<polygon points="([^"]+)"[^>]*id="footprint"', svg)
    assert polygon and len(polygon.group(1).split()) == 4
    for element in ("camera-mark", "camera-radius", "heading", "look-at", "sight-line"):
        assert f'id="{element}"' in svg, element
    assert 'id="estimate-mark"' not in svg  # the estimate is the camera: one marker, not two
    radius = float(re.search(r'<circle [^>]*r="([^"]+)"[^>]*id="camera-radius"', svg).group(1))
    assert radius > 2  # 4.26 m at map scale, larger than the floor
    rows = re.findall(r"<tr><td>(\d)</td>.*?</tr>", dom, re.S)
    assert rows == ["1", "2"]
    assert re.search(r"<td>87</td><td>1</td></tr>", dom) and re.search(r"<td>3</td><td>2</td></tr>", dom)
    assert len(re.findall(r'fill="#bbb"', svg)) >= 1  # the gallery, fetched after show(), is drawn too
    end, metres = _scale_bar(svg)
    assert (end - 12) / metres == pytest.approx(radius / canned["radius_m"], rel=1e-3)  # the map's own scale


def _scale_bar(svg: str) -> tuple[float, float]:
    """(right end in map px, length in metres) of the map's scale bar, which starts at x = 12."""
    bar = re.search(r'<g id="scale-bar"><path d="M12 501V506H([\d.]+)V501"[^>]*></path><text [^>]*>([\d.]+) (m|km)'
                    r"</text></g>", svg)  # fmt: skip
    assert bar, "no scale bar on the map"
    metres = float(bar.group(2)) * (1000 if bar.group(3) == "km" else 1)
    assert str(bar.group(2))[0] in "125" and 20 < float(bar.group(1)) - 12 <= 104  # a round length, not too wide
    return float(bar.group(1)), metres


def test_page_sends_the_field_of_view_and_draws_a_scale_bar(chromium, page_url, tmp_path) -> None:
    """The no-fix answer asks for a field of view; the page has a box for it, sent as ?fov=."""
    dom = _headless(chromium, tmp_path / "profile", "--dump-dom", page_url + "test-upload-fov").stdout
    assert _text(dom, "status") == "done"
    assert "focal length from ?fov= 55" in dom  # the service used the lens the page sent
    _scale_bar(_map(dom))
