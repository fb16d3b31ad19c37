"""Run one model over a grid of corruptions and report each metric's drop against the clean run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import ImageSet
from ..engine.evaluate import extract
from ..metrics import retrieval_metrics
from ..models import SpikeViMFormer
from .corrupted import CorruptedImages


@dataclass(frozen=True)
class RobustnessSettings:
    """The grid: RandomKeepPatches R (percent) x P, plus weather conditions (drone views only)."""

    keep: tuple[float, ...] = (20, 40, 60, 80, 100)
    patches: tuple[int, ...] = (5, 10)
    weather: tuple[str, ...] = ()
    protocol: str = "paper"
    seed: int = 0

    def conditions(self) -> list[tuple[str, str]]:
        """(label, corruption) pairs; masking hits query and gallery alike, weather only drone images."""
        out = [("clean", "clean")]
        out += [(f"R={r:g}, P={p}", f"keep:{r:g}:{p}") for r in self.keep for p in self.patches if r < 100]
        out += [(f"weather {w}", f"weather:{w}") for w in self.weather if w != "normal"]
        return out


def run_robustness(
    model: SpikeViMFormer,
    sets: tuple[ImageSet, ImageSet],
    image_size: int,
    device: torch.device,
    settings: RobustnessSettings,
    batch_size: int = 32,
    workers: int = 0,
) -> list[dict[str, Any]]:
    """One metrics row per condition, with dR@1 / dAP against the clean row (percentage points)."""
    query, gallery = sets
    encoded: dict[tuple[str, str], np.ndarray] = {}

    def encode(image_set: ImageSet, corruption: str) -> np.ndarray:
        if corruption.startswith("weather:") and "drone" not in image_set.name:
            corruption = "clean"  # weather changes what the drone sees, not the satellite archive
        if (image_set.name, corruption) not in encoded:
            data = CorruptedImages(image_set.paths, image_size, corruption, settings.seed)
            encoded[image_set.name, corruption] = extract(
                model, image_set, image_size, device, batch_size, workers, dataset=data, dataset_tag=corruption
            )
        return encoded[image_set.name, corruption]

    rows: list[dict[str, Any]] = []
    for label, corruption in settings.conditions():
        m = retrieval_metrics(encode(query, corruption), query.labels, encode(gallery, corruption), gallery.labels,
                              protocol=settings.protocol)
        rows.append({"condition": label, **m})
    clean = rows[0]
    for row in rows:
        row["dR@1"] = row["R@1"] - clean["R@1"]
        row["dAP"] = row["AP"] - clean["AP"]
    return rows
