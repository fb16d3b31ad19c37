"""Corrupted views of an image set (RandomKeepPatches, weather) for the robustness evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..data import load_rgb
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from .robustness import random_keep_patches, weather_transform

BLACK = tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))  # RGB 0 after normalisation


class CorruptedImages(Dataset):
    """(tensor, index) of each image with one corruption; image i's randomness depends on (seed, i) only.

    `corruption` is "clean", "keep:R:P" (keep R percent of the area in P rectangles, after resizing)
    or "weather:<condition>" (applied to the full-size image before resizing).
    """

    def __init__(self, paths: Sequence[Path], image_size: int, corruption: str, seed: int = 0) -> None:
        self.paths = list(paths)
        self.transform = eval_transform(image_size)
        self.corruption = corruption
        self.seed = seed
        kind = corruption.split(":")[0]
        if kind not in ("clean", "keep", "weather"):
            raise ValueError(f"unknown corruption {corruption!r}; use clean, keep:R:P or weather:<condition>")
        if kind == "keep":
            _, keep, patches = corruption.split(":")
            self.keep, self.patches = float(keep) / 100, int(patches)
        if kind == "weather":
            weather_transform(corruption.split(":", 1)[1])  # fail early on an unknown condition

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = load_rgb(self.paths[index])
        if self.corruption.startswith("weather:"):
            image = weather_transform(self.corruption.split(":", 1)[1], seed=self.seed * 1_000_003 + index)(image)
        tensor = self.transform(image)
        if self.corruption.startswith("keep:") and self.keep < 1.0:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
            tensor = random_keep_patches(tensor, self.keep, self.patches, generator=g, fill=BLACK)
        return tensor, index
