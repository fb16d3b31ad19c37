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

from ..data.images import displayed
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
            im = displayed(im)[0]  # as every reader decodes: upright, 16-bit scaled
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


MAX_LINES = 60  # correspondences drawn between the panels of a registration figure
FOOTPRINT, CAMERA, LOOK_AT = "#dd6b20", "#6b21a8", "#2f855a"  # as on the upload page's map


def _display(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The image shrunk to at most `max_side` pixels (for drawing only) and the factor applied to its pixels."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR)), scale


def _points(pts: Any, name: str) -> np.ndarray:
    arr = np.asarray(pts, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must be (N, 2) pixel coordinates (x, y), got shape {arr.shape}")
    return arr


def _border_point(centre: np.ndarray, target: np.ndarray, width: int, height: int, inset: float) -> np.ndarray:
    """Where the ray from `centre` toward `target` leaves the window, pulled `inset` pixels back inside."""
    d = target - centre
    limits = []
    for axis, size in ((0, width), (1, height)):
        if d[axis] > 0:
            limits.append((size - 1 - inset - centre[axis]) / d[axis])
        elif d[axis] < 0:
            limits.append((inset - centre[axis]) / d[axis])
    return centre + d * max(0.0, min(limits, default=0.0))


def registration_figure(
    photo: Image.Image, window_gray: np.ndarray, photo_pts: np.ndarray, window_pts: np.ndarray, out: Path,
    footprint_px: np.ndarray | None = None, camera_px=None, look_at_px=None, title: str = "",
) -> Path:  # fmt: skip
    """The photo (left) and its reference window (right, grey) with inlier correspondences joined across the panels
    (at most MAX_LINES, evenly subsampled); on the window, in its pixel coordinates: the photo's ground footprint,
    the look-at point and the camera (an arrow at the border pointing toward it when it lies outside the window)."""
    from matplotlib.patches import ConnectionPatch, Polygon

    rgb = np.asarray(photo.convert("RGB"))
    window = np.asarray(window_gray)
    if window.ndim == 3 and window.shape[2] == 1:
        window = window[..., 0]
    if window.ndim != 2 or min(window.shape) < 1:
        raise ValueError(f"window_gray must be a 2-D grey image (H, W), got shape {window.shape}")
    src, dst = _points(photo_pts, "photo_pts"), _points(window_pts, "window_pts")
    if len(src) != len(dst):
        raise ValueError(f"photo_pts and window_pts must pair up: {len(src)} photo points, {len(dst)} window points")
    if window.dtype != np.uint8:
        lo, hi = float(np.nanmin(window)), float(np.nanmax(window))
        window = ((window - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(window)).astype(np.uint8)
    win_h, win_w = window.shape
    shown_photo, ps = _display(rgb, 1200)
    shown_window, ws = _display(window, 1200)

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 6))
    left.imshow(shown_photo)
    right.imshow(shown_window, cmap="gray", vmin=0, vmax=255)
    left.set_title(f"photo ({rgb.shape[1]} x {rgb.shape[0]} px)", fontsize=9)
    drawn = f" ({MAX_LINES} drawn)" if len(src) > MAX_LINES else ""
    right.set_title(f"reference window ({win_w} x {win_h} px), {len(src)} inliers{drawn}", fontsize=9)
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_autoscale_on(False)  # markers and arrows must not widen the view beyond the image

    keep = np.unique(np.linspace(0, len(src) - 1, num=min(MAX_LINES, len(src))).round().astype(int)) if len(src) \
        else np.zeros(0, dtype=int)  # fmt: skip
    colours = plt.get_cmap("hsv")(np.linspace(0, 1, max(1, len(keep)), endpoint=False))
    for colour, i in zip(colours, keep, strict=False):
        a, b = src[i] * ps, dst[i] * ws
        fig.add_artist(ConnectionPatch(xyA=tuple(a), coordsA="data", axesA=left, xyB=tuple(b), coordsB="data",
                                       axesB=right, color=colour, lw=0.7, alpha=0.75))  # fmt: skip
        left.plot(*a, "o", ms=2.5, color=colour)
        right.plot(*b, "o", ms=2.5, color=colour)

    handles = []
    if footprint_px is not None:
        corners = _points(footprint_px, "footprint_px") * ws
        right.add_patch(Polygon(corners, closed=True, fill=True, facecolor=FOOTPRINT, alpha=0.18))
        handles.append(right.add_patch(Polygon(corners, closed=True, fill=False, edgecolor=FOOTPRINT, lw=2,
                                               label="photo footprint")))  # fmt: skip
    look = None
    if look_at_px is not None:
        look = np.asarray(look_at_px, dtype=np.float64).reshape(2)
        handles += right.plot(*(look * ws), "o", ms=8, color=LOOK_AT, mec="white", mew=1.5, label="look-at point")
    if camera_px is not None:
        cam = np.asarray(camera_px, dtype=np.float64).reshape(2)
        if 0 <= cam[0] <= win_w - 1 and 0 <= cam[1] <= win_h - 1:
            if look is not None:
                right.plot(*zip(cam * ws, look * ws, strict=True), "--", color=CAMERA, lw=1.2)
            handles += right.plot(*(cam * ws), "D", ms=8, color=CAMERA, mec="white", mew=1.5, label="camera")
        else:  # off the window: an arrow along the border toward it
            centre = look if look is not None and 0 <= look[0] < win_w and 0 <= look[1] < win_h \
                else np.array([(win_w - 1) / 2, (win_h - 1) / 2])  # fmt: skip
            inset = 0.03 * max(win_w, win_h)
            tip = _border_point(centre, cam, win_w, win_h, inset)
            unit = (cam - centre) / max(float(np.linalg.norm(cam - centre)), 1e-9)
            tail = tip - unit * 0.12 * min(win_w, win_h)
            arrow = {"arrowstyle": "-|>", "color": CAMERA, "lw": 2.5, "mutation_scale": 18}
            right.annotate("", xy=tuple(tip * ws), xytext=tuple(tail * ws), arrowprops=arrow)
            distance = float(np.linalg.norm(cam - _border_point(centre, cam, win_w, win_h, 0.0)))
            right.text(*(tail * ws), f"camera\n{distance:.0f} px outside", color=CAMERA, fontsize=8, ha="center",
                       va="center", bbox={"fc": "white", "ec": CAMERA, "alpha": 0.8, "pad": 2})  # fmt: skip
            handles += right.plot([], [], "D", color=CAMERA, label="camera (off the window: arrow)")
    if handles:
        right.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.85)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out)
