"""Ordinary mistakes end in one line and exit 2, before any work is done."""

from __future__ import annotations

import pytest

from spikevimformer import build_model, save_checkpoint
from spikevimformer.cli import main
from tests.fake_datasets import make_university


@pytest.mark.parametrize("argv", [["info", "--image-size", "-16"], ["info", "--image-size", "0"],
                                  ["synth", "--out", "x", "--image-size", "50"],
                                  ["train", "--data-root", "x", "--image-size", "50"]])  # fmt: skip
def test_image_sizes_are_checked_at_parse_time(argv, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and "multiple of 16 of at least 32" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing created


def test_yaml_syntax_error_names_file_line_and_column(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\nx: 3\n")
    assert main(["train", "--config", str(bad), "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"config file {bad}: YAML syntax error at line 2, column 2" in err and "Traceback" not in err


def test_evaluate_refuses_a_file_as_out_before_reading_anything(tmp_path, capsys) -> None:
    (tmp_path / "metrics").write_text("x")
    assert main(["evaluate", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "metrics")]) == 2
    assert "metrics is a file; --out names a folder here" in capsys.readouterr().err


# command line (after `--out OUT`), and the files it would write under OUT ("" = OUT itself)
WRITERS = [
    (["evaluate", "--data-root", "nowhere"], ["metrics.json", "metrics.txt"]),
    (["robustness", "--data-root", "nowhere"], ["robustness.json"]),
    (["energy", "--image-size", "32", "--num-images", "1"], ["energy.png"]),
    (["export", "--image-size", "32", "--check-images", "0"], [""]),
    (["localize", "photo.jpg", "--index", "nowhere"], [""]),
    (["visualize", "strips", "--data-root", "nowhere"], [""]),
    (["visualize", "heatmap", "photo.jpg"], ["photo-heatmap.png"]),
    (["demo", "--toy"], ["report.html"]),
]


@pytest.mark.parametrize(("argv", "outputs"), WRITERS, ids=[" ".join(a[:2]) for a, _ in WRITERS])
def test_existing_outputs_are_refused_before_any_work(argv, outputs, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    files = [out / name if name else out for name in outputs]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("earlier work")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exist" in err and "pass --overwrite" in err, err
    assert all(f.read_text() == "earlier work" for f in files)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing else created
    # with --overwrite the same command gets past the check (and then fails on its missing inputs, not on OUT)
    if argv[0] != "demo":
        main([*argv, "--out", str(out), "--overwrite"])
        assert "already exist" not in capsys.readouterr().err


def test_a_second_demo_without_out_goes_to_a_fresh_folder(tmp_path, monkeypatch) -> None:
    from spikevimformer.demo import DEMO_FILES
    from spikevimformer.fileio import next_free_folder

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs/demo").mkdir(parents=True)
    assert next_free_folder("runs/demo", DEMO_FILES) == tmp_path.joinpath("runs/demo").relative_to(tmp_path)
    (tmp_path / "runs/demo/report.html").write_text("first")
    assert str(next_free_folder("runs/demo", DEMO_FILES)) == "runs/demo-2"


def test_init_with_the_other_variant_says_so_in_one_line(tmp_path, capsys) -> None:
    world = make_university(tmp_path / "world", train=4, test=2, distractors=0, drone=2)
    small = tmp_path / "small.pt"
    save_checkpoint(small, build_model("small", num_classes=4))
    argv = ["train", "--data-root", str(world), "--init", str(small), "--out", str(tmp_path / "run"),
            "--image-size", "32", "--batch-size", "2", "--max-steps", "1", "--no-progress", "--set", "workers=0"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a small model, not tiny; pass --variant small" in err[0]


def test_a_file_where_a_folder_belongs_and_a_missing_run_are_named(tmp_path, capsys) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8 not really")
    cases = [
        (["energy", "--random-init", "--images", str(photo), "--out", str(tmp_path / "e")], "--images",
         "is a file, not a folder"),
        (["index", "build", "--random-init", "--tiles", str(photo), "--csv", "x.csv", "--out", str(tmp_path / "i")],
         "--tiles",
         "is a file, not a folder"),
        (["train", "--resume", str(tmp_path / "nope"), "--data-root", str(tmp_path)], "--resume", "does not exist"),
        (["train", "--resume", str(tmp_path), "--data-root", str(tmp_path)], "--resume", "holds no last.pt"),
    ]  # fmt: skip
    for argv, flag, words in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and flag in err and words in err, err


def test_checkpoints_as_people_save_them(tmp_path, capsys) -> None:
    import torch

    from spikevimformer.checkpoint import CheckpointError, load_model
    from tests.test_checkpoint import official_state

    model = build_model("small", num_classes=7).eval()
    torch.save(model.state_dict(), tmp_path / "bare.pt")  # the common PyTorch habit
    loaded, _ = load_model(tmp_path / "bare.pt")
    assert loaded.variant == "small" and loaded.classifier.fc.out_features == 7
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    torch.save({"model": official_state("tiny")}, tmp_path / "V3_10.0M_1x4.pth")
    with pytest.raises(CheckpointError, match=r"official E-SpikeFormer ImageNet weights \(tiny\).*--init"):
        load_model(tmp_path / "V3_10.0M_1x4.pth")
    torch.save({"x": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="nor a state_dict of a tiny or small model"):
        load_model(tmp_path / "other.pt")


def test_training_settings_are_checked_before_the_run_folder_exists(tmp_path, capsys) -> None:
    world = make_world_quick(tmp_path)
    (tmp_path / "afile.txt").write_text("x")
    run = tmp_path / "run"
    base = ["train", "--data-root", str(world), "--image-size", "32", "--no-progress"]
    cases = [
        (["--out", str(tmp_path / "afile.txt/sub")], "afile.txt is a file, not a folder"),
        (["--out", str(run), "--device", "gpu"], "device 'gpu' is not a device name"),
        (["--out", str(run), "--set", "workers=-1"], "setting workers must be at least 0"),
        (["--out", str(run), "--epochs", "0"], "setting epochs must be at least 1"),
        (["--out", str(run), "--batch-size", "1"], "setting batch_size must be at least 2"),
        (["--out", str(run), "--time-limit", "-5"], "setting time_limit_min must be at least 0"),
        (["--out", str(run), "--set", "image_size=50"], "image_size must be a multiple of 16"),
        (["--out", str(run), "--set", "imagesize=64"], "unknown setting 'imagesize' (did you mean 'image_size'?)"),
        (["--resume", str(tmp_path / "afile.txt")], "--resume names a run folder"),
    ]
    for extra, words in cases:
        capsys.readouterr()
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
        assert not run.exists()
    typo = tmp_path / "typo.yaml"
    typo.write_text("imagesize: 64\n")
    assert main([*base, "--config", str(typo), "--out", str(run)]) == 2
    assert f"config file {typo}: unknown setting 'imagesize' (did you mean 'image_size'?)" in capsys.readouterr().err
    typo.write_bytes(b"\xff\xfe binary")
    assert main([*base, "--config", str(typo), "--out", str(run)]) == 2
    assert f"config file {typo} is not UTF-8 text" in capsys.readouterr().err


def test_a_run_that_saved_nothing_does_not_block_the_next(tmp_path) -> None:
    from spikevimformer.engine.trainer import check_run_folder

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("x")
    (run / "log.csv").write_text("x")
    check_run_folder(run, resume=None, overwrite=False)  # a failed start: reused
    (run / "last.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="already holds a run"):
        check_run_folder(run, resume=None, overwrite=False)


def test_folders_given_for_files_say_so(tmp_path, capsys) -> None:
    (tmp_path / "afile.txt").write_text("x")
    cases = [
        (["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "m.onnx")],
         "is a folder; give a checkpoint"),
        (["train", "--config", str(tmp_path), "--data-root", "x"], "is a folder; give a YAML file"),
        (["localize", "x.jpg", "--index", str(tmp_path / "afile.txt")], "is a file; a gallery index is a folder"),
        (["localize", "x.jpg", "--index", str(tmp_path / "nope")], "gallery index"),
        (["index", "build", "--random-init", "--ortho", str(tmp_path), "--tile-m", "50", "--out", str(tmp_path / "i")],
         "is a folder; give the image file"),
    ]  # fmt: skip
    for argv, words in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err


def test_official_weights_of_the_other_variant_name_the_flag(tmp_path, capsys) -> None:
    import torch

    from tests.test_checkpoint import official_state

    world = make_world_quick(tmp_path)
    init = tmp_path / "V3_10.0M_1x4.pth"
    torch.save({"model": official_state("tiny")}, init)
    assert main(["train", "--data-root", str(world), "--variant", "small", "--init", str(init), "--image-size", "32",
                 "--batch-size", "2", "--out", str(tmp_path / "run"), "--no-progress", "--set", "workers=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds the E-SpikeFormer tiny backbone, not small; pass --variant tiny" in err


def make_world_quick(tmp_path):
    return make_university(tmp_path / "world", train=4, test=2, distractors=0, drone=2)
