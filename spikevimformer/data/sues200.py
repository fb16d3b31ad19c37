"""SUES-200 at one altitude: the split layout (Training/Testing) or the raw release with the fixed 120-id split."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from itertools import combinations
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
from .images import list_images, list_subfolders

ROOT_NAMES = ("SUES-200", "SUES-200-512x512", "SUES200", "sues-200")
ALTITUDES = (150, 200, 250, 300)
RAW_SATELLITE = "satellite-view"
RAW_DRONE = "drone_view_512"
TEST_SETS = {  # direction -> (query, gallery) folder names under Testing/<alt>/
    "drone2satellite": ("query_drone", "gallery_satellite"),
    "satellite2drone": ("query_satellite", "gallery_drone"),
}
DRONE_PER_LOCATION = 50
# Published counts per altitude: folder (with {alt}) -> (location folders, images).
PUBLISHED = {
    "Training/{alt}/drone": (120, 120 * DRONE_PER_LOCATION),
    "Training/{alt}/satellite": (120, 120),
    "Testing/{alt}/query_drone": (80, 80 * DRONE_PER_LOCATION),
    "Testing/{alt}/query_satellite": (80, 80),
    "Testing/{alt}/gallery_drone": (200, 200 * DRONE_PER_LOCATION),
    "Testing/{alt}/gallery_satellite": (200, 200),
}
PUBLISHED_RAW = {RAW_SATELLITE: (200, 200), RAW_DRONE + "/*/{alt}": (200, 200 * DRONE_PER_LOCATION)}


@lru_cache(maxsize=1)
def train_ids() -> frozenset[str]:
    """The fixed 120 training location ids of the SUES-200 split."""
    text = resources.files("spikevimformer.resources").joinpath("sues200-train-ids.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def is_raw(root: Path) -> bool:
    return (root / RAW_SATELLITE).is_dir() and (root / RAW_DRONE).is_dir()


def looks_like(folder: Path) -> bool:
    return (folder / "Training").is_dir() or (folder / "Testing").is_dir() or is_raw(folder)


def find_dataset_root(path: Path | str) -> Path:
    return find_root(path, ROOT_NAMES, looks_like, "SUES-200",
                     "Training/<alt>/ and Testing/<alt>/ folders, or satellite-view/ and drone_view_512/")


def available_altitudes(root: Path) -> list[int]:
    """Altitudes with data, read from the folder names."""
    if is_raw(root):
        found = {sub.name for loc in list_subfolders(root / RAW_DRONE) for sub in list_subfolders(loc)}
    else:
        found = {sub.name for split in ("Training", "Testing") for sub in list_subfolders(root / split)}
    return sorted(int(a) for a in found if a.isdigit())


def _check_altitude(root: Path, altitude: int) -> int:
    alts = available_altitudes(root)
    if int(altitude) not in alts:
        shown = ", ".join(map(str, alts)) or "none"
        raise ValueError(f"{root}: no SUES-200 data at altitude {altitude} (available: {shown})")
    return int(altitude)


def load_sues200(root: Path | str, altitude: int) -> Benchmark:
    """One altitude of SUES-200 (one model per altitude, as in the benchmark)."""
    root = find_dataset_root(root)
    altitude = _check_altitude(root, altitude)
    if is_raw(root):
        folders, notes = _raw_folders(root, altitude)
    else:
        folders = {}
        for pattern in PUBLISHED:
            sub = pattern.format(alt=altitude)
            if (root / sub).is_dir():
                folders[Path(sub).name] = images_by_location(root / sub)
        notes = []
    for name, by_id in folders.items():
        empty = empty_locations(by_id)
        if empty:
            notes.append(f"{name}: {len(empty)} empty location folder(s) ignored")

    if not is_raw(root):
        others = {a: images_by_location(root / f"Training/{a}/drone") for a in available_altitudes(root)}
        copies = shared_across_altitudes(others)
        if copies:
            shown = ", ".join(f"{a} m/{b} m" for a, b in copies)
            notes.append(f"WARNING: identical drone images in different altitude folders ({shown}): the SUES-200 "
                         "split-script bug; altitudes are mixed. Re-split from the raw release")
    train = None
    if "drone" in folders and "satellite" in folders:
        train, pair_notes = make_pairs(folders["satellite"], folders["drone"])
        notes.extend(pair_notes)
        if not train.pairs:
            train = None
    test: dict[str, tuple[ImageSet, ImageSet]] = {}
    for direction, (q, g) in TEST_SETS.items():
        if q in folders and g in folders:
            query = image_set(q, folders[q], root)
            gallery = image_set(g, folders[g], root)
            if len(query) and len(gallery):
                test[direction] = (query, gallery)
                notes.extend(test_notes(query, gallery, direction))
    if train is None and not test:
        raise ValueError(f"{root}: no usable SUES-200 data at altitude {altitude} "
                         "(no training pairs and no query/gallery images)")
    return Benchmark(name=f"sues200-{altitude}", root=root, train=train, test=test, notes=tuple(notes))


def _raw_folders(root: Path, altitude: int) -> tuple[dict[str, dict[str, list[Path]]], list[str]]:
    """Apply the fixed split to the raw release; galleries hold all locations, queries the 80 test ones."""
    satellite = {loc.name: list_images(loc) for loc in list_subfolders(root / RAW_SATELLITE)}
    drone = {loc.name: list_images(loc / str(altitude)) for loc in list_subfolders(root / RAW_DRONE)}
    fixed = train_ids()
    present = set(satellite) | set(drone)
    notes = []
    missing = sorted(fixed - present)
    if missing:
        notes.append(f"raw release lacks {len(missing)} of the 120 fixed training ids")
    train_set = present & fixed
    test_set = present - fixed
    folders = {
        "drone": _only(drone, train_set),
        "satellite": _only(satellite, train_set),
        "query_drone": _only(drone, test_set),
        "query_satellite": _only(satellite, test_set),
        "gallery_drone": drone,
        "gallery_satellite": satellite,
    }
    return folders, notes


def _only(by_id: dict[str, list[Path]], ids: set[str]) -> dict[str, list[Path]]:
    return {k: v for k, v in by_id.items() if k in ids}


def _digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def shared_across_altitudes(by_alt: dict[int, dict[str, list[Path]]], sample: int = 3) -> list[tuple[int, int]]:
    """Altitude pairs whose folders hold byte-identical images of the same location (the split-script bug).

    Only `sample` locations present at every altitude are hashed, which is enough: the bug copies all.
    """
    present = {a: {k for k, v in d.items() if v} for a, d in by_alt.items()}
    present = {a: ids for a, ids in present.items() if ids}
    if len(present) < 2:
        return []
    common = sorted(set.intersection(*present.values()))[:sample]
    digests = {a: {_digest(p) for loc in common for p in by_alt[a][loc]} for a in present}
    return [(a, b) for a, b in combinations(sorted(digests), 2) if digests[a] & digests[b]]
