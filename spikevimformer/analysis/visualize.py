"""Pictures people look at: retrieval strips, activation heatmaps, training curves (matplotlib, Agg)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from ..fileio import atomic_write

RIGHT, WRONG, QUERY = "#1a9e3a", "#d62728", "#1f5fbf"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically (temp file, then rename) and close it."""
    plt = _pyplot()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi), suffix=".png")
    finally:
        plt.close(fig)
    return path


def _thumbnail(path: str | Path, side: int = 192) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((side, side))
            return np.asarray(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path} is not a readable image ({exc})") from exc


def _framed(ax: Any, image: np.ndarray, color: str, title: str) -> None:
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(5)
    ax.set_title(title, fontsize=8, color=color)


def retrieval_strip(
    query_paths: Sequence[str | Path],
    ranked_gallery_paths: Sequence[Sequence[str | Path]],
    correct_mask: Sequence[Sequence[bool]] | np.ndarray | Tensor,
    out_png: str | Path,
    k: int = 5,
) -> Path:
    """One row per query: the query (blue) then its top-k gallery images framed green (right) or red (wrong)."""
    if not query_paths:
        raise ValueError("no queries to draw")
    if len(ranked_gallery_paths) != len(query_paths) or len(correct_mask) != len(query_paths):
        raise ValueError(
            f"need one ranked list and one mask row per query: {len(query_paths)} queries, "
            f"{len(ranked_gallery_paths)} ranked lists, {len(correct_mask)} mask rows"
        )
    mask = np.asarray(correct_mask.cpu() if isinstance(correct_mask, Tensor) else correct_mask, dtype=bool)
    k = min(k, min(len(r) for r in ranked_gallery_paths))
    plt = _pyplot()
    fig, axes = plt.subplots(len(query_paths), k + 1, figsize=(1.9 * (k + 1), 2.0 * len(query_paths)), squeeze=False)
    for row, (query, ranked) in enumerate(zip(query_paths, ranked_gallery_paths, strict=True)):
        _framed(axes[row, 0], _thumbnail(query), QUERY, "query")
        for col in range(k):
            ok = bool(mask[row, col])
            _framed(axes[row, col + 1], _thumbnail(ranked[col]), RIGHT if ok else WRONG, f"#{col + 1}")
    fig.tight_layout()
    return save_figure(fig, out_png)


def _rgb_array(image_rgb: np.ndarray | Image.Image | Tensor) -> np.ndarray:
    if isinstance(image_rgb, Image.Image):
        return np.asarray(image_rgb.convert("RGB"))
    if isinstance(image_rgb, Tensor):  # (3, H, W) in [0, 1]
        return (image_rgb.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"image_rgb must be an RGB image (H, W, 3), got shape {image_rgb.shape}")
    return image_rgb if image_rgb.dtype == np.uint8 else (np.clip(image_rgb, 0, 1) * 255).astype(np.uint8)


def activation_map(model: nn.Module, image_tensor: Tensor) -> Tensor:
    """Channel mean of the last backbone map for one image, min-max scaled to [0, 1]: (h, w)."""
    backbone = model.backbone if hasattr(model, "backbone") else model
    x = image_tensor.unsqueeze(0) if image_tensor.ndim == 3 else image_tensor
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image (3, H, W) or (1, 3, H, W), got {tuple(image_tensor.shape)}")
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.inference_mode():
            fmap = backbone(x.to(next(backbone.parameters()).device))
    finally:
        backbone.train(was_training)
    heat = fmap[0].float().mean(dim=0)
    lo, hi = heat.min(), heat.max()
    return ((heat - lo) / (hi - lo)).cpu() if hi > lo else torch.zeros_like(heat).cpu()


def activation_heatmap(
    model: nn.Module, image_tensor: Tensor, image_rgb: np.ndarray | Image.Image | Tensor, out_png: str | Path,
    alpha: float = 0.5,
) -> Path:
    """The input next to the last backbone map's channel mean (jet), blended over the input."""
    rgb = _rgb_array(image_rgb)
    heat = activation_map(model, image_tensor)
    up = F.interpolate(heat[None, None], size=rgb.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()
    plt = _pyplot()
    colored = plt.get_cmap("jet")(up)[..., :3]
    blend = (1 - alpha) * rgb / 255.0 + alpha * colored
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
    for ax, img, title in ((axes[0], rgb, "input"), (axes[1], blend, "last backbone map, channel mean")):
        ax.imshow(img)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, out_png)


def _read_log(log_csv: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    path = Path(log_csv)
    if not path.is_file():
        raise FileNotFoundError(f"training log {path} does not exist")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def training_curves(log_csv: str | Path, out_png: str | Path, x: str = "step") -> Path:
    """Every numeric column of a run's CSV log against `x` (step; else epoch; else row number), one panel each."""
    fields, rows = _read_log(log_csv)
    if not rows:
        raise ValueError(f"training log {log_csv} has no rows")
    x_name = next((c for c in (x, "step", "epoch") if c in fields), None)
    xs = [_number(r[x_name]) for r in rows] if x_name else list(range(len(rows)))
    columns = {}
    for name in fields:
        if name == x_name:
            continue
        values = [_number(r.get(name)) for r in rows]
        if any(not math.isnan(v) for v in values):
            columns[name] = values
    if not columns:
        raise ValueError(f"training log {log_csv} has no numeric columns besides {x_name or 'the row number'}")
    plt = _pyplot()
    cols = min(3, len(columns))
    nrows = math.ceil(len(columns) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 2.8 * nrows), squeeze=False)
    for ax, (name, values) in zip(axes.flat, columns.items(), strict=False):
        pts = [(a, b) for a, b in zip(xs, values, strict=True) if not math.isnan(b) and not math.isnan(a)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 40 else None, lw=1.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(x_name or "row", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, out_png)
