"""The picture functions write PNG files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from spikevimformer.analysis.visualize import activation_heatmap, activation_map, retrieval_strip, training_curves
from spikevimformer.models import build_model

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
