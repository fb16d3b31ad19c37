"""Non-learned drone -> satellite retrieval baselines: how far colour and coarse pixels alone get."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    return img


def colour_histogram(img: np.ndarray) -> np.ndarray:
    """Joint 8x8x8 colour histogram, square-rooted (Hellinger) so cosine compares distributions fairly."""
    q = (img >> 5).astype(np.int32)
    idx = (q[..., 0] << 6) | (q[..., 1] << 3) | q[..., 2]
    return np.sqrt(np.bincount(idx.ravel(), minlength=512) / idx.size)


def small_pixels(img: np.ndarray, side: int = 16) -> np.ndarray:
    """The image shrunk to side x side, mean removed: a layout descriptor with no learning at all."""
    x = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA).astype(np.float64).ravel()
    return x - x.mean()


DESCRIPTORS = {"colour_histogram": colour_histogram, "downsampled_pixels": small_pixels}


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def recall(query: np.ndarray, q_labels: np.ndarray, gallery: np.ndarray, g_labels: np.ndarray,
           ks=(1, 5)) -> dict[str, float]:
    """Recall@K of cosine retrieval with one or more positives per query."""
    sim = _normalise(query) @ _normalise(gallery).T
    order = np.argsort(-sim, axis=1, kind="stable")
    hits = g_labels[order] == q_labels[:, None]
    first = np.where(hits.any(1), hits.argmax(1), np.iinfo(np.int64).max)
    return {f"r{k}": float(np.mean(first < k)) for k in ks}


def retrieval_baseline(queries: list[tuple[Path, str]], gallery: list[tuple[Path, str]]) -> dict:
    """Drone -> satellite R@1/R@5 of each non-learned descriptor on written images, plus the chance level."""
    q_imgs = [_read(p) for p, _ in queries]
    g_imgs = [_read(p) for p, _ in gallery]
    q_lab = np.array([lab for _, lab in queries])
    g_lab = np.array([lab for _, lab in gallery])
    out: dict = {"queries": len(queries), "gallery": len(gallery), "chance_r1": 1.0 / max(1, len(gallery))}
    for name, fn in DESCRIPTORS.items():
        out[name] = recall(np.stack([fn(i) for i in q_imgs]), q_lab, np.stack([fn(i) for i in g_imgs]), g_lab)
    return out
