"""Split containers shared by both benchmarks: query/gallery sets with location labels and training pairs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .images import list_images, list_subfolders

DIRECTIONS = ("drone2satellite", "satellite2drone")


@dataclass(frozen=True)
class ImageSet:
    """One query or gallery set; labels are integer location ids so query and gallery can be matched."""

    name: str
    paths: list[Path]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_locations(self) -> int:
        return int(np.unique(self.labels).size)


@dataclass(frozen=True)
class TrainPairs:
    """Every (satellite, drone) pair of each training location; class index = position in `classes`."""

    pairs: list[tuple[Path, Path, int]]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def labels(self) -> np.ndarray:
        """Class index of every pair, the input the unique-location sampler needs."""
        return np.fromiter((c for _, _, c in self.pairs), dtype=np.int64, count=len(self.pairs))


@dataclass(frozen=True)
class Benchmark:
    """A loaded benchmark: training pairs (if present) and (query, gallery) per retrieval direction."""

    name: str
    root: Path
    train: TrainPairs | None
    test: dict[str, tuple[ImageSet, ImageSet]]
    notes: tuple[str, ...] = ()


def parse_location_id(name: str, where: Path) -> int:
    """Location id from a folder name ('0839' -> 839); labels must be numeric to match across views."""
    if not name.isdigit():
        raise ValueError(f"folder {where / name} is not a numeric location id; expected names like '0839'")
    return int(name)


def images_by_location(folder: Path) -> dict[str, list[Path]]:
    """Location id -> its images, empty folders included (as [])."""
    return {sub.name: list_images(sub) for sub in list_subfolders(folder)}


def empty_locations(by_id: dict[str, list[Path]]) -> list[str]:
    return [k for k, v in by_id.items() if not v]


def image_set(name: str, by_id: dict[str, list[Path]], root: Path) -> ImageSet:
    """Flatten location folders into one labelled set; empty folders simply contribute nothing."""
    paths: list[Path] = []
    labels: list[int] = []
    for loc in sorted(by_id):
        lid = parse_location_id(loc, root)
        paths.extend(by_id[loc])
        labels.extend([lid] * len(by_id[loc]))
    return ImageSet(name=name, paths=paths, labels=np.asarray(labels, dtype=np.int64))


def make_pairs(satellite: dict[str, list[Path]], drone: dict[str, list[Path]]) -> tuple[TrainPairs, list[str]]:
    """Pair each drone image with its location's satellite image(s); returns the pairs and one-view notes."""
    sat_ids = {k for k, v in satellite.items() if v}
    drone_ids = {k for k, v in drone.items() if v}
    classes = sorted(sat_ids & drone_ids)
    for c in classes:
        parse_location_id(c, Path("train"))
    pairs: list[tuple[Path, Path, int]] = []
    for idx, loc in enumerate(classes):
        sats = satellite[loc]
        pairs.extend((sats[i % len(sats)], d, idx) for i, d in enumerate(drone[loc]))
    notes = []
    if sat_ids - drone_ids:
        only = short_ids(sat_ids - drone_ids)
        notes.append(f"training ids with satellite images but no drone images (left out): {only}")
    if drone_ids - sat_ids:
        only = short_ids(drone_ids - sat_ids)
        notes.append(f"training ids with drone images but no satellite image (left out): {only}")
    return TrainPairs(pairs=pairs, classes=classes), notes


def merge_train_pairs(parts: list[TrainPairs]) -> TrainPairs:
    """One training set from several (e.g. worlds): part i's location '0042' becomes class 'i/0042'."""
    if len(parts) == 1:
        return parts[0]
    pairs: list[tuple[Path, Path, int]] = []
    classes: list[str] = []
    for i, part in enumerate(parts):
        pairs.extend((s, d, c + len(classes)) for s, d, c in part.pairs)
        classes.extend(f"{i}/{name}" for name in part.classes)
    return TrainPairs(pairs=pairs, classes=classes)


def test_notes(query: ImageSet, gallery: ImageSet, direction: str) -> list[str]:
    """Queries whose location has no gallery image can never be matched; say so."""
    missing = set(query.labels.tolist()) - set(gallery.labels.tolist())
    if not missing:
        return []
    return [f"{direction}: {len(missing)} query location(s) have no image in {gallery.name}: "
            f"{short_ids(f'{m:04d}' for m in missing)}"]


def short_ids(ids, limit: int = 10) -> str:
    ids = sorted(ids)
    head = ", ".join(ids[:limit])
    return head + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def find_root(path: Path | str, names: tuple[str, ...], looks_like: Callable[[Path], bool], label: str,
              expected: str) -> Path:
    """Accept the dataset folder itself, its parent, or an archive-named folder in between."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset path {path} does not exist")
    if not path.is_dir():
        raise ValueError(f"dataset path {path} is a file; give the {label} folder (or its parent)")
    inner = names + ("Dataset",)  # "Dataset" is where the SUES-200 instructions move Training/ and Testing/
    candidates = [path] + [path / n for n in inner] + [path / a / b for a in names for b in inner]
    for cand in candidates:
        if cand.is_dir() and looks_like(cand):
            return cand
    matches = [c for c in list_subfolders(path) if looks_like(c)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(f"{path} holds several {label} folders ({', '.join(m.name for m in matches)}); pick one")
    raise FileNotFoundError(f"{path} does not look like a {label} dataset (expected {expected}) nor its parent")
