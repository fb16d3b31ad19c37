"""Layout discovery, splits, labels and bad-image handling on tiny fake University-1652 / SUES-200 trees."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch

from spikevimformer.data import (
    BadImageError,
    ImageDataset,
    PairDataset,
    eval_transform,
    find_dataset_root,
    load_benchmark,
    load_rgb,
    load_sues200,
    load_university1652,
    sues200,
)
from tests.fake_datasets import corrupt_jpeg, make_sues_raw, make_sues_split, make_university, write_image


def _pair_fn(drone, sat):
    return torch.from_numpy(drone.copy()), torch.from_numpy(sat.copy())


def test_university_counts_labels_and_pairs(tmp_path):
    ds = make_university(tmp_path, train=6, test=5, distractors=2, drone=3)
    bench = load_university1652(ds)
    assert bench.name == "university1652" and bench.root == ds
    assert bench.train.classes == [f"{i:04d}" for i in range(1, 7)]
    assert len(bench.train.pairs) == 6 * 3
    for sat, drone, cls in bench.train.pairs:  # each pair joins the two views of one location
        assert sat.parent.name == drone.parent.name == bench.train.classes[cls]
        assert sat.parent.parent.name == "satellite" and drone.parent.parent.name == "drone"
    q, g = bench.test["drone2satellite"]
    assert (q.name, g.name) == ("query_drone", "gallery_satellite")
    assert len(q) == 5 * 3 and len(g) == 7
    assert q.labels.dtype == np.int64 and sorted(set(q.labels.tolist())) == list(range(7, 12))
    assert all(int(p.parent.name) == lab for p, lab in zip(q.paths, q.labels, strict=True))
    q2, g2 = bench.test["satellite2drone"]
    assert len(q2) == 5 and len(g2) == 7 * 3 and g2.num_locations == 7
    assert not bench.notes


def test_upper_case_image_suffixes_are_read_like_lower_case_ones(tmp_path):
    """Cameras and Windows tools write .JPG/.JPEG/.PNG/.TIF: the shared folder listing finds them all."""
    ds = make_university(tmp_path, train=2, test=2, distractors=0, drone=2)
    for path in sorted(ds.rglob("*.jp*g")):
        path.rename(path.with_suffix(path.suffix.upper()))
    (ds / "train/drone/0001/image-01.JPEG").rename(ds / "train/drone/0001/image-01.PNG")
    bench = load_university1652(ds)
    assert len(bench.train.pairs) == 2 * 2 and len(bench.test["drone2satellite"][0]) == 2 * 2
    assert {p.suffix for p, _, _ in bench.train.pairs} == {".JPG"}
    assert ImageDataset(bench.test["drone2satellite"][0].paths, eval_transform(32))[0][0].shape == (3, 32, 32)


@pytest.mark.parametrize("given", ["dataset", "parent", "release-name"])
def test_find_root_accepts_folder_parent_and_archive_name(tmp_path, given):
    ds = make_university(tmp_path / "data", train=2, test=2, distractors=0, drone=1)
    if given == "release-name":
        ds = ds.rename(ds.parent / "University-Release")
    path = ds.parent if given == "parent" else ds
    assert find_dataset_root(path, "university1652") == ds
    assert load_benchmark(path).name == "university1652"


def test_missing_path_and_wrong_layout_raise_readable_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_dataset_root(tmp_path / "nope", "university1652")
    (tmp_path / "random").mkdir()
    with pytest.raises(FileNotFoundError, match="University-1652"):
        load_university1652(tmp_path / "random")
    with pytest.raises(FileNotFoundError, match="neither"):
        load_benchmark(tmp_path / "random")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_benchmark(tmp_path, name="cvusa")


def test_empty_folders_and_one_view_ids_are_noted_not_fatal(tmp_path):
    ds = make_university(tmp_path, train=4, test=3, distractors=1, drone=2)
    shutil.rmtree(ds / "train/satellite/0002")              # id with drone images only
    (ds / "train/drone/0099").mkdir()                       # empty folder
    for p in (ds / "test/query_drone/0006").iterdir():      # query location emptied
        p.unlink()
    bench = load_university1652(ds)
    assert bench.train.classes == ["0001", "0003", "0004"]
    assert len(bench.train.pairs) == 3 * 2
    notes = " | ".join(bench.notes)
    assert "0002" in notes and "no satellite" in notes
    assert "train/drone: 1 empty" in notes and "test/query_drone: 1 empty" in notes
    q, _ = bench.test["drone2satellite"]
    assert 6 not in q.labels.tolist() and len(q) == 2 * 2


def test_train_only_and_test_only_trees(tmp_path):
    ds = make_university(tmp_path, train=3, test=2, distractors=0, drone=1)
    shutil.rmtree(ds / "test")
    bench = load_university1652(ds)
    assert bench.train is not None and bench.test == {}
    ds2 = make_university(tmp_path / "b", train=3, test=2, distractors=0, drone=1)
    shutil.rmtree(ds2 / "train")
    bench2 = load_university1652(ds2)
    assert bench2.train is None and set(bench2.test) == {"drone2satellite", "satellite2drone"}


def test_sues_split_layout_per_altitude(tmp_path):
    ds = make_sues_split(tmp_path, alts=(150, 250), train=4, test=3, drone=2)
    bench = load_sues200(tmp_path, 250)
    assert bench.name == "sues200-250" and bench.root == ds
    assert len(bench.train.classes) == 4 and len(bench.train.pairs) == 4 * 2
    assert all("/250/" in p.as_posix() for pair in bench.train.pairs for p in pair[:2])
    q, g = bench.test["drone2satellite"]
    assert len(q) == 3 * 2 and len(g) == 7
    q2, g2 = bench.test["satellite2drone"]
    assert len(q2) == 3 and len(g2) == 7 * 2
    with pytest.raises(ValueError, match="altitude 300"):
        load_sues200(ds, 300)
    with pytest.raises(ValueError, match="--altitude"):
        load_benchmark(ds)  # two altitudes present: must choose
    assert load_benchmark(ds, "sues200-150").name == "sues200-150"
    assert load_benchmark(ds, altitude=150).name == "sues200-150"


def test_sues_altitude_copy_bug_is_flagged_on_load(tmp_path):
    make_sues_split(tmp_path / "ok", alts=(150, 200), train=2, test=1, drone=2)
    assert not any("split-script" in n for n in load_sues200(tmp_path / "ok", 150).notes)
    make_sues_split(tmp_path / "bug", alts=(150, 200), train=2, test=1, drone=2, bug=True)
    bench = load_sues200(tmp_path / "bug", 150)
    assert any(n.startswith("WARNING") and "split-script" in n for n in bench.notes)


def test_sues_raw_release_applies_fixed_split(tmp_path):
    fixed = sorted(sues200.train_ids())
    assert len(fixed) == 120
    others = sorted({f"{i:04d}" for i in range(1, 201)} - set(fixed))
    ids = fixed[:4] + others[:3]
    ds = make_sues_raw(tmp_path, ids, alts=(150, 200), drone=2)
    bench = load_sues200(tmp_path, 200)
    assert bench.root == ds
    assert bench.train.classes == fixed[:4]
    assert all(p.parent.name == "200" for _, p, _ in bench.train.pairs)
    q, g = bench.test["drone2satellite"]
    assert sorted(set(q.labels.tolist())) == [int(i) for i in others[:3]]
    assert len(q) == 3 * 2 and len(g) == 7       # gallery: every location, train ids as distractors
    q2, g2 = bench.test["satellite2drone"]
    assert len(q2) == 3 and len(g2) == 7 * 2
    assert any("lacks 116" in n for n in bench.notes)


def test_load_rgb_names_the_corrupt_file(tmp_path):
    good = write_image(tmp_path / "ok.png")
    assert load_rgb(good).shape == (32, 32, 3)
    bad = corrupt_jpeg(tmp_path / "broken.jpg")
    with pytest.raises(BadImageError, match="broken.jpg"):
        load_rgb(bad)
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(BadImageError, match="text.jpg"):
        load_rgb(tmp_path / "text.jpg")


def test_pair_dataset_fail_or_skip_on_bad_image(tmp_path):
    ds = make_university(tmp_path, train=3, test=1, distractors=0, drone=3)
    bench = load_university1652(ds)
    bad_index = 4
    _, bad_drone, bad_cls = bench.train.pairs[bad_index]
    corrupt_jpeg(bad_drone)

    failing = PairDataset(bench.train, _pair_fn, on_bad_image="fail")
    with pytest.raises(BadImageError, match=bad_drone.name):
        failing[bad_index]

    skipping = PairDataset(bench.train, _pair_fn, on_bad_image="skip")
    with pytest.warns(RuntimeWarning, match="image-"):
        drone, sat, cls = skipping[bad_index]
    assert cls == bad_cls and drone.shape == (32, 32, 3)   # a sibling pair of the same location
    assert [p for p, _ in skipping.report.bad] == [bad_drone]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(skipping[i][2] == bench.train.pairs[i][2] for i in range(len(skipping)))

    sat_path = bench.train.pairs[0][0]
    corrupt_jpeg(sat_path)  # satellite gone: no pair of that location can be served
    with pytest.raises(BadImageError, match="no readable pair"), pytest.warns(RuntimeWarning):
        PairDataset(bench.train, _pair_fn, on_bad_image="skip")[0]
    with pytest.raises(ValueError, match="on_bad_image"):
        PairDataset(bench.train, _pair_fn, on_bad_image="ignore")


def test_image_dataset_returns_tensor_and_index(tmp_path):
    ds = make_university(tmp_path, train=1, test=2, distractors=0, drone=2)
    q, _ = load_university1652(ds).test["drone2satellite"]
    data = ImageDataset(q.paths, eval_transform(32))
    x, i = data[3]
    assert i == 3 and x.shape == (3, 32, 32) and x.dtype == torch.float32
    corrupt_jpeg(q.paths[1])
    with pytest.raises(BadImageError):
        data[1]
    skipping = ImageDataset(q.paths, eval_transform(32), on_bad_image="skip")
    with pytest.warns(RuntimeWarning):
        x, i = skipping[1]
    assert i == 1 and x.shape == (3, 32, 32) and len(skipping.report) == 1
