"""A tiny synthetic world in the layout the world generator writes, for the geo tests."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from PIL import Image

from spikevimformer.geo.encoders import TorchEncoder, encode_tiles
from spikevimformer.geo.index import GalleryIndex
from spikevimformer.geo.tiles import world_tiles

LAT0, LON0 = 47.3700, 8.5400
SPACING_M = 200.0
FOOTPRINT_M = 150.0


def tile_image(seed: int, size: int = 64) -> Image.Image:
    """A distinct blocky pattern per seed, so near-copies retrieve their own tile."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    img = np.kron(coarse, np.ones((size // 4, size // 4, 1), dtype=np.uint8))
    return Image.fromarray(img)


def make_world(root: Path, n_test: int = 5, n_distractor: int = 2, n_train: int = 2, size: int = 64,
               noise: int = 0) -> Path:
    """locations.csv, cameras.csv, gallery and train satellite tiles, one drone image per test location."""
    rows, cams = [], []
    splits = ["test"] * n_test + ["distractor"] * n_distractor + ["train"] * n_train
    k = math.degrees(1 / 6_371_008.8)
    for i, split in enumerate(splits):
        loc_id = f"{i:04d}"
        lat = LAT0 + (i // 3) * SPACING_M * k
        lon = LON0 + (i % 3) * SPACING_M * k / math.cos(math.radians(LAT0))
        rows.append({"id": loc_id, "split": split, "latitude": lat, "longitude": lon, "footprint_m": FOOTPRINT_M})
        folder = "University-1652/train/satellite" if split == "train" else "University-1652/test/gallery_satellite"
        (root / folder / loc_id).mkdir(parents=True, exist_ok=True)
        tile_path = root / folder / loc_id / f"{loc_id}.jpg"
        tile_image(i, size).save(tile_path, quality=95)
        if split == "test":  # the drone view: the decoded tile, optionally jittered, stored losslessly
            jitter = np.random.default_rng(100 + i).integers(-noise, noise + 1, (size, size, 3))
            drone = np.asarray(Image.open(tile_path).convert("RGB"), dtype=np.int16) + jitter
            rel = f"University-1652/test/query_drone/{loc_id}/image-01.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(drone, 0, 255).astype(np.uint8)).save(root / rel)
            cams.append({"image": rel, "id": loc_id, "latitude": lat + 10 * k, "longitude": lon,
                         "altitude_m": 150.0, "heading_deg": 0.0})  # fmt: skip
    for name, table in (("locations.csv", rows), ("cameras.csv", cams)):
        with (root / name).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    return root


def served_gallery(root: Path):
    """(encoder, index, world): six test tiles of a small world indexed by a random-init tiny model at 32 px, as
    the HTTP tests serve them."""
    world = make_world(root / "world", n_test=6, n_distractor=0, n_train=0)
    encoder = TorchEncoder.load(None, "tiny", 32)
    tiles = world_tiles(world)
    index = GalleryIndex.create(root / "idx", encoder.identity)
    index.add(tiles, encode_tiles(encoder, tiles, progress=False))
    return encoder, index, world
