"""University-1652: training pairs from train/{drone,satellite}, test sets for both retrieval directions."""

from __future__ import annotations

from pathlib import Path

from .benchmark import (
    Benchmark,
    ImageSet,
    empty_locations,
    find_root,
    image_set,
    images_by_location,
    make_pairs,
    test_notes,
)

NAME = "university1652"
ROOT_NAMES = ("University-1652", "University-Release", "university-1652", "University1652")
TRAIN_VIEWS = ("train/drone", "train/satellite")
TEST_SETS = {  # direction -> (query folder, gallery folder)
    "drone2satellite": ("test/query_drone", "test/gallery_satellite"),
    "satellite2drone": ("test/query_satellite", "test/gallery_drone"),
}
# Published counts: folder -> (location folders, images).
PUBLISHED = {
    "train/drone": (701, 37_854),
    "train/satellite": (701, 701),
    "test/query_drone": (701, 37_855),
    "test/gallery_satellite": (951, 951),
    "test/query_satellite": (701, 701),
    "test/gallery_drone": (951, 51_355),
}


def looks_like(folder: Path) -> bool:
    return any((folder / sub).is_dir() for sub in PUBLISHED)


def find_dataset_root(path: Path | str) -> Path:
    return find_root(path, ROOT_NAMES, looks_like, "University-1652",
                     "train/drone, train/satellite and test/query_drone ... folders")


def load_university1652(root: Path | str) -> Benchmark:
    """Load both splits; absent splits become None / missing directions, empty folders are noted, not fatal."""
    root = find_dataset_root(root)
    notes: list[str] = []
    by_folder = {sub: images_by_location(root / sub) for sub in PUBLISHED if (root / sub).is_dir()}
    for sub, by_id in by_folder.items():
        empty = empty_locations(by_id)
        if empty:
            notes.append(f"{sub}: {len(empty)} empty location folder(s) ignored")

    train = None
    if all(v in by_folder for v in TRAIN_VIEWS):
        train, pair_notes = make_pairs(by_folder["train/satellite"], by_folder["train/drone"])
        notes.extend(pair_notes)
        if not train.pairs:
            notes.append("train split has no location with both drone and satellite images")
            train = None
    elif any(v in by_folder for v in TRAIN_VIEWS):
        notes.append("train split incomplete: needs both train/drone and train/satellite")

    test: dict[str, tuple[ImageSet, ImageSet]] = {}
    for direction, (q, g) in TEST_SETS.items():
        if q in by_folder and g in by_folder:
            query = image_set(Path(q).name, by_folder[q], root / q)
            gallery = image_set(Path(g).name, by_folder[g], root / g)
            if len(query) and len(gallery):
                test[direction] = (query, gallery)
                notes.extend(test_notes(query, gallery, direction))
    if train is None and not test:
        raise ValueError(f"{root}: no usable University-1652 split (no training pairs and no query/gallery images)")
    return Benchmark(name=NAME, root=root, train=train, test=test, notes=tuple(notes))
