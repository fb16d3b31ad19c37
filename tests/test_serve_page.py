"""The upload page in a real browser: headless Chromium loads it from the running service and its script runs."""

from __future__ import annotations

import io
import os
import re
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from spikevimformer.geo.encoders import TorchEncoder, encode_tiles
from spikevimformer.geo.index import GalleryIndex
from spikevimformer.geo.localize import Localizer
from spikevimformer.geo.serve import create_app
from spikevimformer.geo.tiles import world_tiles
from tests.geo_world import make_world
from tests.live_server import live_server

CHROMIUM = Path("/usr/bin/chromium")
ENSURE = Path(__file__).resolve().parents[1] / "scripts" / "ensure-chromium.sh"
TILES = 6
WINDOW = (900, 700)
GALLERY_GREY = (0xBB, 0xBB, 0xBB)  # fill of a gallery tile marker on the page's map
MAP_BACKGROUND = (0xF6, 0xF8, 0xF4)


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
    with live_server(create_app(Localizer(encoder, index, k=3))) as url:
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
