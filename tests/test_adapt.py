"""`spikevimformer adapt` end to end on a small procedural orthophoto, its resume, and its bad inputs."""

from __future__ import annotations

import csv
import json
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from spikevimformer.adapt import AdaptConfig, adapt, summary
from spikevimformer.cli import main
from spikevimformer.data.synth import SynthConfig, generate_world
from spikevimformer.engine import load_config, train
from spikevimformer.fileio import LOCK_FILE, folder_lock
from tests.fake_datasets import make_university


@pytest.fixture(scope="module")
def area(tmp_path_factory):
    """A 320 m x 320 m corner of a procedural world's orthophoto, geo-referenced by its world file."""
    root = tmp_path_factory.mktemp("adapt")
    generate_world(SynthConfig(seed=5, locations=4, views=1, image_size=64), root / "w")
    Image.open(root / "w/ortho.jpg").crop((0, 0, 640, 640)).save(root / "area.jpg", quality=92)
    shutil.copy(root / "w/ortho.jgw", root / "area.jgw")  # the same upper-left corner and pixel size
    return root / "area.jpg"


def _cfg(area, out, **changes) -> AdaptConfig:
    settings = {"ortho": str(area), "out_dir": str(out), "minutes": 1.0, "locations": 8, "views": 2,
                "heldout_locations": 5, "batch_size": 4, "workers": 0, "localize_queries": 4,
                "extra": {"max_steps": 2}}  # fmt: skip
    return AdaptConfig(**{**settings, **changes})


def test_adapt_renders_tunes_indexes_and_reports(area, tmp_path, capsys):
    out = tmp_path / "run"
    report = adapt(_cfg(area, out, minutes=30.0), progress=False)  # max_steps ends it; a busy CPU never the clock
    saved = json.loads((out / "report.json").read_text())
    for key in ("before", "after"):
        assert {"R@1", "R@5", "AP"} <= set(saved[key]) and 0 <= saved[key]["R@1"] <= 100
    assert saved["steps"] == report["steps"] == 2
    assert 0 < saved["training_locations"] <= 8  # as many of the 8 asked for as fit
    assert "Held-out views, before and after" in (out / "report.html").read_text()
    manifest = json.loads((out / "index/manifest.json").read_text())
    assert manifest["count"] == report["tiles"] == 36  # 100 m tiles every 50 m over 320 m: 6 x 6
    assert manifest["model"]["weights"] == "../finetune/last.pt"  # beside the index, wherever OUT goes
    assert {"fix_rate", "camera_median_error_m"} <= set(saved["localization"])
    photo = next((out / "world-heldout/University-1652/test/query_drone").rglob("*.jpeg"))
    capsys.readouterr()
    assert main(["localize", str(photo), "--index", str(out / "index"), "--json"]) == 0  # the printed command works
    assert json.loads(capsys.readouterr().out)["results"][0]["matches"]

    again = adapt(_cfg(area, out, minutes=30.0, extra={"max_steps": 4}), resume=True, progress=False)  # continues
    assert again["steps"] == 4
    assert f"resuming in {out}: fine-tune from step 2" in capsys.readouterr().out
    moved = out.rename(tmp_path / "moved")  # the run folder copied or moved elsewhere still localizes
    assert main(["localize", str(moved / photo.relative_to(out)), "--index", str(moved / "index"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["matches"]


def test_a_batch_larger_than_the_rendered_locations_is_cut_to_them(area, tmp_path, capsys):
    """30 locations asked for 50 m apart, fewer fit the 320 m area: a batch of 16 cannot be filled, so it is cut."""
    import re

    report = adapt(_cfg(area, tmp_path / "run", locations=30, spacing_m=50.0, batch_size=16, extra={"max_steps": 1}),
                   progress=False)  # fmt: skip
    assert report["steps"] == 1
    cut = re.search(r"batch size 16 cut to the (\d+) training locations rendered", capsys.readouterr().out)
    assert cut and int(cut.group(1)) < 16


def test_bad_areas_are_refused_in_one_line(area, tmp_path, capsys):
    bare = tmp_path / "bare.png"
    Image.open(area).save(bare)  # no world file beside it
    small = tmp_path / "small.jpg"
    Image.open(area).crop((0, 0, 180, 180)).save(small)  # 90 m: not one 100 m tile
    shutil.copy(area.with_suffix(".jgw"), small.with_suffix(".jgw"))
    edge = tmp_path / "edge.jpg"
    Image.open(area).crop((0, 0, 300, 300)).save(edge)  # 150 m: 4 overlapping 100 m tiles, but not 2 x 2 apart
    shutil.copy(area.with_suffix(".jgw"), edge.with_suffix(".jgw"))
    empty = tmp_path / "empty.png"
    pixels = np.zeros((640, 640, 3), dtype=np.uint8)
    pixels[:200, :200] = np.asarray(Image.open(area))[:200, :200]
    Image.fromarray(pixels).save(empty)
    shutil.copy(area.with_suffix(".jgw"), empty.with_suffix(".pgw"))
    text = tmp_path / "notes.tif"
    text.write_text("not an image")
    cases = [(bare, "has no georeference"), (text, "is not an image Pillow can read"),
             (small, "(smaller than one tile) holds fewer than 2 x 2 tiles"),
             (edge, "(about 150 x 150 m) holds fewer than 2 x 2 tiles"), (empty, "% nodata"),
             (tmp_path / "nope.tif", "does not exist")]  # fmt: skip
    for ortho, words in cases:
        capsys.readouterr()
        assert main(["adapt", "--ortho", str(ortho), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "out/world-train").exists()


def test_the_lens_comes_from_a_sample_photo(tmp_path):
    import csv

    from spikevimformer.adapt import lens_of

    world = tmp_path / "w"
    generate_world(SynthConfig(seed=2, locations=4, views=1, image_size=96, fov_deg=50.0), world)
    row = next(csv.DictReader((world / "cameras.csv").open()))
    assert lens_of(world / row["image"]) == pytest.approx(50.0, abs=0.5)
    bare = tmp_path / "bare.png"
    Image.new("RGB", (96, 96)).save(bare)
    with pytest.raises(ValueError, match="no focal length .*give the lens with --fov"):
        lens_of(bare)


def test_an_area_without_a_world_file_is_indexed_from_its_rendering(area, tmp_path):
    bare = tmp_path / "bare.png"
    Image.open(area).save(bare)
    report = adapt(_cfg(bare, tmp_path / "run", gsd_m=0.5, origin=(45.0, 8.0), extra={"max_steps": 1},
                        localize_queries=2), progress=False)  # fmt: skip
    assert report["tiles"] > 4 and "fix_rate" in report["localization"]


def test_settings_are_checked_before_anything_is_written(area, tmp_path, capsys):
    out = tmp_path / "out"
    for extra, words in [(["--minutes", "0"], "--minutes must be positive"),
                         (["--footprint-m", "-1"], "--footprint-m must be positive"),
                         (["--spacing-m", "0"], "--spacing-m must be at least 6.25 m"),
                         (["--spacing-m", "nan"], "--spacing-m must be at least 6.25 m"),
                         (["--gsd", "0"], "--gsd must be positive metres per pixel"),
                         (["--gsd", "0.5", "--origin", "95", "0"], "latitude must lie in [-90, 90]"),
                         (["--world-file", "missing.jgw"], "--world-file missing.jgw does not exist"),
                         (["--views", "0"], "views must be at least 1"),
                         (["--pitch", "5", "5"], "pitch must be a range")]:  # fmt: skip
        capsys.readouterr()
        assert main(["adapt", "--ortho", str(area), "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
        assert not out.exists()
    (out / "finetune").mkdir(parents=True)
    (out / "finetune/last.pt").write_bytes(b"interrupted run")
    assert main(["adapt", "--ortho", str(area), "--out", str(out)]) == 2  # not redone silently
    assert "holds an interrupted adapt run: continue it with the same command and --resume" in capsys.readouterr().err
    (out / "report.json").write_text("{}")  # a finished run
    assert main(["adapt", "--ortho", str(area), "--out", str(out)]) == 2
    assert "already exist; pass --overwrite" in capsys.readouterr().err


def test_a_second_adapt_on_the_same_folder_stops_at_once(area, tmp_path):
    """Two runs into one --out would interleave renders, checkpoints and logs; the second one is refused."""
    out = tmp_path / "busy"
    out.mkdir()
    with folder_lock(out, "adapt"):  # what a running adapt holds
        with pytest.raises(ValueError, match=r"being written by `spikevimformer adapt` \(pid \d+"):
            adapt(_cfg(area, out))
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]


def test_ctrl_c_in_any_stage_says_how_to_continue(area, tmp_path, capsys, monkeypatch):
    import spikevimformer.adapt as adapt_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # as in the index or localization stage, which print nothing of their own

    monkeypatch.setattr(adapt_module, "adapt", interrupted)
    assert main(["adapt", "--ortho", str(area), "--out", str(tmp_path / "out")]) == 130
    assert "run the same command with --resume to continue in" in capsys.readouterr().err


def test_ctrl_c_in_the_fine_tune_is_told_once(area, tmp_path, capsys, monkeypatch):
    import spikevimformer.adapt as adapt_module
    from spikevimformer.engine.signals import Interrupted

    def fine_tune_interrupted(*args, **kwargs):
        print("interrupted at step 3: saved ...; continue with ...", file=sys.stderr)  # as the trainer says it
        raise Interrupted

    monkeypatch.setattr(adapt_module, "adapt", fine_tune_interrupted)
    assert main(["adapt", "--ortho", str(area), "--out", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.count("interrupted") == 1


def test_an_area_over_a_dsm_renders_its_hills_and_indexes_its_heights(tmp_path, capsys):
    """--dsm: the views stand on the DSM's terrain, and the index lifts matches through it (index info says so)."""
    generate_world(SynthConfig(seed=6, locations=4, views=1, image_size=64, relief_m=40.0), tmp_path / "w")
    area = tmp_path / "area.jpg"
    Image.open(tmp_path / "w/ortho.jpg").crop((0, 0, 640, 640)).save(area, quality=92)
    shutil.copy(tmp_path / "w/ortho.jgw", tmp_path / "area.jgw")
    out = tmp_path / "run"
    report = adapt(_cfg(area, out, dsm=str(tmp_path / "w/dsm.tif"), extra={"max_steps": 1},
                        localize_queries=2), progress=False)  # fmt: skip
    assert "fix_rate" in report["localization"] and (out / "index/terrain.json").is_file()
    grounds = [float(line.split(",")[11]) for line in (out / "world-train/cameras.csv").read_text().splitlines()[1:]]
    assert max(grounds) - min(grounds) > 2  # the views stand on hills
    capsys.readouterr()
    assert main(["index", "info", str(out / "index")]) == 0
    info = capsys.readouterr().out
    assert "dsm.tif under area.jpg" in info and "tiles with stored xfeat features" in info  # as index build stores
    for extra, words in [(["--gsd", "0.5"], "--dsm lies on the area's georeference"),
                         (["--heights", str(area)], "pass one")]:  # fmt: skip
        assert main(["adapt", "--ortho", str(area), "--out", str(tmp_path / "bad"), "--dsm",
                     str(tmp_path / "w/dsm.tif"), *extra]) == 2  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
        assert not (tmp_path / "bad").exists()


def test_a_step_budget_fine_tunes_exactly_that_many_steps(tmp_path, capsys):
    world = make_university(tmp_path / "world", train=8, test=2, distractors=0, drone=2)
    cfg = _cfg("area.jpg", tmp_path, steps=25, minutes=0.001, extra={"augment": False, "hral_k": 3, "hral_k2": 2,
                                                                    "hral_history": 8})  # fmt: skip
    assert cfg.budget() == "25 steps"
    settings = cfg.fine_tune_settings(world, tmp_path / "run", 32) | {"init": "scratch", "save_every_steps": 0}
    result = train(load_config(None, settings), progress=False)
    assert result["steps"] == 25 and result["stop_reason"] == "finished"  # the tiny minutes never stop it
    rates = [float(r["lr"]) for r in csv.DictReader((tmp_path / "run/log.csv").open())]
    assert len(rates) == 25 and rates[-1] < 0.1 * cfg.lr  # the cosine ends at step 25
    report = {"before": {"R@1": 1.0, "R@5": 2.0, "AP": 3.0, "queries": 4, "gallery": 5}, "commands": [],
              "after": {"R@1": 1.0, "R@5": 2.0, "AP": 3.0}, "steps": 25, "budget": cfg.budget()}  # fmt: skip
    assert "fine-tuned for 25 steps (budget 25 steps)" in summary(report)


def test_adapt_takes_minutes_or_steps_not_both(area, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["adapt", "--ortho", str(area), "--out", str(tmp_path / "o"), "--minutes", "1", "--steps", "3"])
    assert "not allowed with argument" in capsys.readouterr().err
