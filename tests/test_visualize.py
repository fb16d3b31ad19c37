"""The picture functions write PNG files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from spikevimformer.analysis.visualize import (
    activation_heatmap,
    activation_map,
    registration_figure,
    retrieval_strip,
    training_curves,
)
from spikevimformer.models import build_model
from spikevimformer.report import write_report

PNG = b"\x89PNG\r\n\x1a\n"


def _images(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"{i}.jpg"
        Image.new("RGB", (48, 40), (20 * i, 100, 180)).save(p)
        paths.append(p)
    return paths


def test_retrieval_strip(tmp_path):
    queries = _images(tmp_path / "q", 2)
    gallery = _images(tmp_path / "g", 6)
    mask = np.array([[True, False, False, True, False, False], [False] * 6])
    out = retrieval_strip(queries, [gallery, gallery[::-1]], mask, tmp_path / "strip.png", k=4)
    assert out.read_bytes()[:8] == PNG
    with Image.open(out) as im:
        assert im.width > im.height  # 2 rows of 5 tiles
    with pytest.raises(ValueError, match="one ranked list"):
        retrieval_strip(queries, [gallery], mask, tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError):
        retrieval_strip([tmp_path / "missing.jpg"], [gallery], mask[:1], tmp_path / "bad.png")


def test_activation_heatmap(tmp_path):
    model = build_model("tiny").train()
    image = torch.rand(3, 32, 32)
    heat = activation_map(model, image)
    assert heat.shape == (2, 2) and 0.0 <= float(heat.min()) and float(heat.max()) <= 1.0
    rgb = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    out = activation_heatmap(model, image, rgb, tmp_path / "heat.png")
    assert out.read_bytes()[:8] == PNG and model.training


def test_training_curves(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,epoch,loss,lr,phase,R@1\n0,0,4.2,0.001,train,\n10,0,3.1,0.001,train,\n20,1,2.5,0.0005,val,41.5\n")
    out = training_curves(log, tmp_path / "curves.png")
    assert out.read_bytes()[:8] == PNG
    empty = tmp_path / "empty.csv"
    empty.write_text("step,phase\n0,train\n")
    with pytest.raises(ValueError, match="no numeric columns"):
        training_curves(empty, tmp_path / "x.png")
    with pytest.raises(FileNotFoundError):
        training_curves(tmp_path / "nope.csv", tmp_path / "x.png")


def test_registration_figure(tmp_path):
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    window = rng.random((160, 200)).astype(np.float32)  # floats are scaled to grey levels
    photo_pts = rng.uniform([0, 0], [119, 89], (150, 2))
    window_pts = photo_pts * 0.8 + [40, 50]  # a similarity: the photo sits inside the window
    footprint = np.array([[0, 0], [119, 0], [119, 89], [0, 89]]) * 0.8 + [40, 50]
    out = registration_figure(photo, window, photo_pts, window_pts, tmp_path / "reg.png", footprint_px=footprint,
                              camera_px=(90, 260), look_at_px=(88, 86), title="photo 0001 on its window")  # fmt: skip
    assert out == tmp_path / "reg.png" and out.read_bytes()[:8] == PNG
    with Image.open(out) as im:
        assert 600 <= im.width <= 2500 and 300 <= im.height <= 1500 and im.width > im.height
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 50
    # the camera inside the window, a uint8 window, nothing optional, no inliers at all
    grey = (window * 255).astype(np.uint8)
    assert registration_figure(photo, grey, photo_pts, window_pts, tmp_path / "in.png", camera_px=(100, 80)).is_file()
    assert registration_figure(photo, grey, np.zeros((0, 2)), np.zeros((0, 2)), tmp_path / "none.png").is_file()
    assert not list(tmp_path.glob(".*"))  # written atomically: no temporary files left behind
    with pytest.raises(ValueError, match="pair up"):
        registration_figure(photo, grey, photo_pts, window_pts[:10], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="2-D grey image"):
        registration_figure(photo, np.zeros((4, 4, 3)), photo_pts, window_pts, tmp_path / "bad.png")


CAMERA_METRICS = {"fix_rate": 0.8333333, "false_fix_rate": 0.0, "camera_median_error_m": 2.41, "camera_within_5m": 0.75,
                  "camera_within_10m": 0.8125, "camera_within_25m": 0.875, "radius95_coverage": 0.95,
                  "heading_median_error_deg": 1.7, "look_at_median_error_m": 3.2, "look_at_within_5m": 0.625,
                  "R@1": 0.5, "R@1_verified": 0.6875, "register_s_per_image": 0.314}  # fmt: skip


def test_report_shows_the_registration_table_and_picture(tmp_path):
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 60, (20, 2))
    picture = registration_figure(Image.new("RGB", (64, 64), (90, 140, 60)), rng.random((96, 96)), pts, pts + 16,
                                  tmp_path / "registration.png", camera_px=(40, 40), look_at_px=(48, 48))  # fmt: skip
    second = {**CAMERA_METRICS, "fix_rate": 0.5, "queries_from": "same world, 256 px photos"}
    del second["heading_median_error_deg"]  # no fix with a known heading: left blank
    payload = {
        "config": {"seed": 7, "image_size": 64},
        "localization": {"queries": 16, "gallery": 40, "Dis@1_m": 12.5, "backend": "pytorch", **CAMERA_METRICS,
                         "registration_rows": [{**CAMERA_METRICS, "queries_from": "demo world, 128 px photos"},
                                               second]},
        "pictures": {"registration": str(picture)},
        "stages": [{"name": "localize", "seconds": 1.0}],
    }  # fmt: skip
    html = write_report(tmp_path / "report.html", payload).read_text()
    loc = html[html.index("<h2>Localization</h2>") : html.index("<h2>Commands and versions</h2>")]
    assert "<th>Dis@1_m</th>" in loc and "<td>12.50</td>" in loc  # the tile-level table is still there
    table = loc[loc.index("Camera position by registration") :]
    assert "<td>83.3\u00a0%</td>" in table  # no line break between a number and its unit
    table = table.replace("\u00a0", " ")
    assert "<th>queries from</th><th>fix rate</th>" in table and "<th>register s per image</th>" in table
    assert "<td>demo world, 128 px photos</td><td>83.3 %</td><td>0.0 %</td><td>2.41</td><td>75.0 %</td>" in table
    assert "<td>1.70</td><td>3.20</td><td>62.5 %</td><td>50.0 %</td><td>68.8 %</td><td>0.31</td>" in table
    assert "<th>tile radius95 coverage</th><th>tile median radius m</th></tr>" in table
    assert "<td>same world, 256 px photos</td><td>50.0 %</td>" in table
    assert "<td>95.0 %</td><td></td><td>3.20</td>" in table  # its heading error is missing
    assert loc.count("data:image/png;base64,") == 1 and 'alt="registration of a drone photo' in loc
    # the metrics of the demo world alone (no rows given) make a one-row table; no picture, no image
    payload["localization"] = {k: v for k, v in payload["localization"].items() if k != "registration_rows"}
    payload["pictures"] = {}
    html = write_report(tmp_path / "plain.html", payload).read_text().replace("\u00a0", " ")
    assert "<td>demo world</td><td>83.3 %</td>" in html and "data:image/png" not in html
