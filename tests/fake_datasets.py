"""Tiny fake benchmark trees (16-24 px images) in the University-1652 and SUES-200 layouts, for the data tests."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size: int = 32) -> Path:
    """A distinct noise image per path (so hash-based duplicate checks see no false matches)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(str(path).encode()))
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def corrupt_jpeg(path: Path) -> Path:
    """Cut a valid JPEG in half, like an interrupted download."""
    write_image(path, size=24)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_university(root: Path, train: int = 6, test: int = 5, distractors: int = 2, drone: int = 3) -> Path:
    """University-1652 layout; ids 0001.. for train, then test, then gallery-only distractors."""
    ds = root / "University-1652"
    ids = [f"{i:04d}" for i in range(1, train + test + distractors + 1)]
    train_ids, test_ids, extra = ids[:train], ids[train:train + test], ids[train + test:]
    for bid in train_ids:
        write_image(ds / "train/satellite" / bid / f"{bid}.jpg")
        for n in range(1, drone + 1):
            write_image(ds / "train/drone" / bid / f"image-{n:02d}.jpeg")
        (ds / "train/google" / bid).mkdir(parents=True, exist_ok=True)  # unused, empty on purpose
    for bid in test_ids + extra:
        write_image(ds / "test/gallery_satellite" / bid / f"{bid}.jpg")
        for n in range(1, drone + 1):
            write_image(ds / "test/gallery_drone" / bid / f"image-{n:02d}.jpeg")
    for bid in test_ids:
        write_image(ds / "test/query_satellite" / bid / f"{bid}.jpg")
        for n in range(1, drone + 1):
            write_image(ds / "test/query_drone" / bid / f"image-{n:02d}.jpeg")
    return ds


def make_sues_split(root: Path, alts=(150, 200), train: int = 4, test: int = 3, drone: int = 2,
                    bug: bool = False) -> Path:
    """SUES-200 split layout; with bug=True every altitude's drone images land in each altitude folder."""
    ds = root / "SUES-200"
    ids = [f"{i:04d}" for i in range(1, train + test + 1)]
    train_ids, test_ids = ids[:train], ids[train:]
    for alt in alts:
        src = alts if bug else (alt,)
        for loc in ids:
            drone_names = [(a, n) for a in src for n in range(drone)]
            folders = ["gallery_drone"] + (["query_drone"] if loc in test_ids else [])
            sats = ["gallery_satellite"] + (["query_satellite"] if loc in test_ids else [])
            if loc in train_ids:
                folders.append("drone")
                sats.append("satellite")
            for kind in folders:
                split = "Training" if kind == "drone" else "Testing"
                for a, n in drone_names:
                    name = f"{a}-{n}.jpg" if bug else f"{n}.jpg"
                    _copy_or_write(root / f"raw-drone/{loc}/{a}/{n}.jpg", ds / split / str(alt) / kind / loc / name)
            for kind in sats:
                split = "Training" if kind == "satellite" else "Testing"
                _copy_or_write(root / f"raw-sat/{loc}.png", ds / split / str(alt) / kind / loc / "0.png")
    return ds


def _copy_or_write(source: Path, target: Path) -> None:
    """Same source -> byte-identical copies, as the real split script makes."""
    if not source.exists():
        write_image(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())


def make_sues_raw(root: Path, ids: list[str], alts=(150, 200), drone: int = 2) -> Path:
    """The raw SUES-200 release: satellite-view/<id>/0.png and drone_view_512/<id>/<alt>/<n>.jpg."""
    ds = root / "SUES-200-512x512"
    for loc in ids:
        write_image(ds / "satellite-view" / loc / "0.png")
        for alt in alts:
            for n in range(drone):
                write_image(ds / "drone_view_512" / loc / str(alt) / f"{n}.jpg")
    return ds
