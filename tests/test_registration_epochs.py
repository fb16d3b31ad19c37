"""Registration across dates: a world whose reference was painted at another epoch defeats SIFT, not XFeat."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from spikevimformer.cli import main
from spikevimformer.data.synth import SynthConfig, generate_world
from spikevimformer.geo.index import GalleryIndex
from spikevimformer.geo.localize import open_localizer
from spikevimformer.geodesy import haversine_m
from spikevimformer.registration import RegisterConfig


@pytest.fixture(scope="module")
def two_dates(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("epochs")
    generate_world(SynthConfig(seed=5, locations=14, views=2, image_size=256, test_fraction=0.3, epoch_gap=0.6),
                   root / "world")  # fmt: skip
    assert main(["index", "build", "--out", str(root / "idx"), "--world", str(root / "world"), "--image-size", "32",
                 "--random-init", "--no-progress"]) == 0  # fmt: skip
    return root / "world", root / "idx"


def _errors(world: Path, idx: Path, features: str) -> list[float | None]:
    """Camera error in metres per query photo, None where there is no fix."""
    k = len(GalleryIndex.load(str(idx)))  # every tile verified: registration alone decides
    loc = open_localizer(str(idx), k=k, register=RegisterConfig(features=features), random_init=True)
    with (world / "cameras.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if "query_drone" in r["image"]]
    out = []
    for row, res in zip(rows, loc.localize_files([str(world / r["image"]) for r in rows]), strict=True):
        out.append(float(haversine_m(float(row["latitude"]), float(row["longitude"]), res.camera["latitude"],
                                     res.camera["longitude"])) if res.fix else None)  # fmt: skip
    return out


def test_the_default_registers_across_dates_where_sift_does_not(two_dates) -> None:
    world, idx = two_dates
    sift = _errors(world, idx, "sift")
    default = _errors(world, idx, RegisterConfig().features)
    good = lambda errs: sum(e is not None and e <= 5.0 for e in errs)  # noqa: E731
    assert good(sift) <= 1 and good(default) >= good(sift) + 2, (sift, default)
    assert all(e is None or e <= 25.0 for e in default)  # no false fix
