"""Benchmarks (University-1652, SUES-200), training-pair sampling, augmentation and the dataset doctor."""

from __future__ import annotations

from pathlib import Path

from . import sues200, university1652
from .benchmark import DIRECTIONS, Benchmark, ImageSet, TrainPairs, merge_train_pairs
from .datasets import ImageDataset, PairDataset
from .images import BadImageError, ImageReport, load_rgb, scan_images
from .sampler import UniqueLocationBatchSampler
from .sues200 import load_sues200
from .transforms import PairAugmentConfig, eval_transform, train_pair_transform
from .university1652 import load_university1652

DATASETS = ("university1652", "sues200")
_FINDERS = {"university1652": university1652.find_dataset_root, "sues200": sues200.find_dataset_root}

__all__ = [
    "DATASETS", "DIRECTIONS", "BadImageError", "Benchmark", "ImageDataset", "ImageReport", "ImageSet",
    "PairAugmentConfig", "PairDataset", "TrainPairs", "UniqueLocationBatchSampler", "detect_dataset",
    "eval_transform", "find_dataset_root", "load_benchmark", "load_rgb", "load_sues200", "load_university1652",
    "merge_train_pairs", "scan_images", "train_pair_transform",
]


def _split_name(name: str, altitude: int | None) -> tuple[str, int | None]:
    """Accept 'sues200-150' as shorthand for name='sues200', altitude=150."""
    key = name.lower().replace("-", "").replace("_", "")
    if key.startswith("sues200") and key[7:].isdigit():
        return "sues200", int(key[7:]) if altitude is None else altitude
    aliases = {"university1652": "university1652", "sues200": "sues200", "auto": "auto"}
    if key not in aliases:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)} or 'auto'")
    return aliases[key], altitude


def detect_dataset(path: Path | str) -> tuple[str, Path]:
    """(dataset name, dataset root) for a folder holding University-1652 or SUES-200 (or its parent)."""
    for name, finder in _FINDERS.items():
        try:
            return name, finder(path)
        except FileNotFoundError:
            if not Path(path).expanduser().exists():
                raise
    raise FileNotFoundError(f"{path} holds neither a University-1652 nor a SUES-200 layout "
                            "(see the layouts in the data documentation)")


def find_dataset_root(path: Path | str, name: str) -> Path:
    """The dataset folder for `path`, which may be the folder itself, its parent or the archive's folder."""
    key, _ = _split_name(name, None)
    if key == "auto":
        return detect_dataset(path)[1]
    return _FINDERS[key](path)


def load_benchmark(root: Path | str, name: str = "auto", altitude: int | None = None) -> Benchmark:
    """Load a benchmark by name, or detect it; SUES-200 needs an altitude unless only one is present."""
    key, altitude = _split_name(name, altitude)
    if key == "auto":
        key, root = detect_dataset(root)
    if key == "university1652":
        return load_university1652(root)
    found = sues200.find_dataset_root(root)
    if altitude is None:
        alts = sues200.available_altitudes(found)
        if len(alts) != 1:
            shown = ", ".join(map(str, alts)) or "none found"
            raise ValueError(f"{found}: SUES-200 is one model per altitude; choose one with --altitude ({shown})")
        altitude = alts[0]
    return load_sues200(found, altitude)
