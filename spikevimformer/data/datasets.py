"""torch Datasets over training pairs and query/gallery image lists, with bad-image handling by flag."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .benchmark import TrainPairs
from .images import BadImageError, ImageReport, check_bad_image_mode, load_or_report

PairTransformFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]  # (drone, satellite, seed=None) -> tensors


class PairDataset(Dataset):
    """(drone tensor, satellite tensor, class index) per pair.

    on_bad_image="fail" raises BadImageError naming the file; "skip" warns, records it in `report`
    and serves another pair of the same location, so the sampler's no-repeat batches stay valid.
    (With DataLoader workers each worker keeps its own `report`; the warnings reach stderr.)
    """

    def __init__(self, pairs: TrainPairs | Sequence[tuple[Path, Path, int]], pair_transform: PairTransformFn,
                 on_bad_image: str = "fail"):
        self.pairs = list(pairs.pairs if isinstance(pairs, TrainPairs) else pairs)
        self.transform = pair_transform
        self.on_bad_image = check_bad_image_mode(on_bad_image)
        self.report = ImageReport()
        self._bad: set[Path] = set()
        by_class: dict[int, list[int]] = defaultdict(list)
        for i, (_, _, c) in enumerate(self.pairs):
            by_class[int(c)].append(i)
        self._by_class = dict(by_class)

    def __len__(self) -> int:
        return len(self.pairs)

    def _load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        sat_path, drone_path, _ = self.pairs[index]
        if sat_path in self._bad or drone_path in self._bad:
            return None
        images = []
        for path in (drone_path, sat_path):
            img = load_or_report(Path(path), self.on_bad_image, self.report)
            if img is None:
                self._bad.add(path)
                return None
            images.append(img)
        return images[0], images[1]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """`key` is a pair index, or (pair index, augmentation seed) from a sampler with `seeded=True`."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        cls = int(self.pairs[index][2])
        loaded = self._load_pair(index)
        if loaded is None:  # only reachable in 'skip' mode
            same = self._by_class[cls]
            start = same.index(index)
            for other in same[start + 1:] + same[:start]:
                loaded = self._load_pair(other)
                if loaded is not None:
                    break
            else:
                sat_path, drone_path, _ = self.pairs[index]
                raise BadImageError(Path(sat_path), f"no readable pair left for location class {cls} "
                                    f"(its satellite image or all its drone images are unreadable; e.g. {drone_path})")
        # a plain (drone, satellite) callable works too; only seeded samplers need the seed argument
        drone, satellite = self.transform(*loaded) if seed is None else self.transform(*loaded, seed=seed)
        return drone, satellite, cls


class ImageDataset(Dataset):
    """(tensor, index) per image for descriptor extraction; the index maps back to path and label.

    on_bad_image="skip" serves a black image (and warns, recording it in `report`) so the gallery
    keeps its size and the metrics stay aligned with the label arrays.
    """

    def __init__(self, paths: Sequence[Path], transform: Callable[[np.ndarray], torch.Tensor],
                 on_bad_image: str = "fail"):
        self.paths = [Path(p) for p in paths]
        self.transform = transform
        self.on_bad_image = check_bad_image_mode(on_bad_image)
        self.report = ImageReport()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = load_or_report(self.paths[index], self.on_bad_image, self.report)
        if img is None:
            img = np.zeros((8, 8, 3), dtype=np.uint8)
        return self.transform(img), index
