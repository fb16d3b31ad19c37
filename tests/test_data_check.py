"""`spikevimformer data check`: tables, findings and exit codes on tiny fake trees."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from spikevimformer.cli import main
from spikevimformer.data import sues200
from spikevimformer.data.check import check_dataset
from spikevimformer.data.images import quick_check
from tests.fake_datasets import corrupt_jpeg, make_sues_raw, make_sues_split, make_university, write_image


def _check(capsys, *args):
    code = main(["data", "check", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_small_university_tree_passes_with_counts_note(tmp_path, capsys):
    make_university(tmp_path, train=4, test=3, distractors=2, drone=2)
    code, out, _ = _check(capsys, tmp_path)  # the parent folder works too
    assert code == 0
    assert "University-1652 at" in out and "verdict: usable" in out
    assert "test/gallery_drone" in out and "951 / 51,355" in out and "differs" in out
    assert "counts differ from the published" in out


def test_damaged_university_tree_is_usable_with_warnings(tmp_path, capsys):
    ds = make_university(tmp_path, train=4, test=3, distractors=1, drone=2)
    (ds / "train/drone/0077").mkdir()                                   # empty folder
    bad = corrupt_jpeg(ds / "test/query_drone/0005/image-01.jpeg")      # truncated download
    shutil.rmtree(ds / "train/satellite/0003")                           # id with drone images only
    code, out, _ = _check(capsys, ds)
    assert code == 0 and "verdict: usable" in out
    assert str(bad) in out and "truncated" in out
    assert str(ds / "train/drone/0077") in out
    assert "only in train/drone: 0003" in out


def test_missing_folder_or_no_images_is_unusable(tmp_path, capsys):
    ds = make_university(tmp_path, train=2, test=2, distractors=0, drone=1)
    shutil.rmtree(ds / "test/gallery_drone")
    code, out, _ = _check(capsys, ds)
    assert code == 1 and "MISSING" in out and "missing folder" in out and "NOT usable" in out

    ds2 = make_university(tmp_path / "b", train=2, test=2, distractors=0, drone=1)
    for p in (ds2 / "train/drone").rglob("*.jpeg"):
        p.unlink()
    code, out, _ = _check(capsys, ds2, "--no-images")
    assert code == 1 and "train/drone: no images" in out


def test_nonexistent_path_is_a_clean_error(tmp_path, capsys):
    code, out, err = _check(capsys, tmp_path / "absent")
    assert code == 2 and "does not exist" in err and "Traceback" not in err


def test_sues_split_layout_and_altitude_copy_bug(tmp_path, capsys):
    make_sues_split(tmp_path / "ok", alts=(150, 200), train=3, test=2, drone=2)
    code, out, _ = _check(capsys, tmp_path / "ok")
    assert code == 0 and "Testing/200/gallery_drone" in out and "200 / 10,000" in out
    code, out, _ = _check(capsys, tmp_path / "ok", "--altitude", "150")
    assert code == 0 and "Testing/200" not in out

    make_sues_split(tmp_path / "bug", alts=(150, 200), train=3, test=2, drone=2, bug=True)
    code, out, _ = _check(capsys, tmp_path / "bug")
    assert code == 1 and "split-script bug" in out and "150 m/200 m" in out
    code, out, _ = _check(capsys, tmp_path / "bug", "--altitude", "200")  # other altitudes still compared
    assert code == 1 and "split-script bug" in out

    code, out, _ = _check(capsys, tmp_path / "ok", "--altitude", "300")
    assert code == 1 and "no data at altitude 300" in out


def test_sues_raw_release_reports_fixed_split(tmp_path, capsys):
    fixed = sorted(sues200.train_ids())
    make_sues_raw(tmp_path, fixed[:3] + ["0008", "0012"], alts=(150,), drone=2)
    code, out, _ = _check(capsys, tmp_path, "--json")
    report = json.loads(out)
    assert code == 0 and report["usable"] and report["dataset"] == "SUES-200 (raw release)"
    assert any("3 training and 2 test" in n for n in report["notes"])
    assert {r["folder"] for r in report["rows"]} == {"satellite-view", "drone_view_512/*/150"}


def test_quick_check_and_every_image_bad(tmp_path):
    good = write_image(tmp_path / "a.jpg")
    assert quick_check(good) is None and quick_check(write_image(tmp_path / "b.png")) is None
    assert "truncated" in quick_check(corrupt_jpeg(tmp_path / "c.jpg")).lower()
    cut = write_image(tmp_path / "e.jpg", size=64)  # header intact, scan data cut: only the end marker tells
    cut.write_bytes(cut.read_bytes()[:-200])
    assert quick_check(cut) == "truncated JPEG (no end-of-image marker)"
    (tmp_path / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert quick_check(tmp_path / "d.png") is not None

    ds = make_university(tmp_path / "u", train=2, test=2, distractors=0, drone=1)
    for p in (ds / "test/query_satellite").rglob("*.jpg"):
        corrupt_jpeg(p)
    report = check_dataset(ds)
    assert not report.usable and any("every image is unreadable" in e for e in report.errors)


@pytest.mark.parametrize("name", ["university1652", "sues200"])
def test_wrong_dataset_name_is_an_error(tmp_path, name):
    (tmp_path / "x").mkdir()
    with pytest.raises(FileNotFoundError):
        check_dataset(tmp_path / "x", name)


def test_suspect_shapes_are_warned_about_and_listed(tmp_path, capsys):
    ds = make_university(tmp_path, train=3, test=3, distractors=0, drone=1)
    tiny = ds / "test/gallery_satellite/0004/0004.jpg"
    strip = ds / "train/drone/0002/image-01.jpeg"
    Image.new("RGB", (20, 20), (90, 120, 60)).save(tiny)
    Image.new("RGB", (600, 100), (90, 120, 60)).save(strip)
    code, out, _ = _check(capsys, ds)
    assert code == 0 and "verdict: usable" in out  # used, but flagged
    assert "2 image(s) with a suspect shape" in out and "suspect shapes:" in out
    assert f"{tiny}: 20x20 px is below 32 px on a side" in out
    assert f"{strip}: 600x100 px has aspect ratio 6.0:1" in out
    code, out, _ = _check(capsys, ds, "--json", "--full")
    assert {item["path"] for item in json.loads(out)["odd_shapes"]} == {str(tiny), str(strip)}
