"""The shipped model as the easy path: `--checkpoint pretrained` everywhere, its input size used unless told
otherwise, no silent random weights, indexes that remember their model, files that follow the umask."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from spikevimformer import build_model, save_checkpoint
from spikevimformer.cli import main
from spikevimformer.pretrained import get_release
from tests.geo_world import make_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("pretrained") / "world", n_test=3, n_distractor=0, n_train=0)


def test_every_model_command_takes_the_name(world, tmp_path, capsys, monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)  # serve builds its app, then would listen
    idx = tmp_path / "idx"
    runs = [
        ["evaluate", "--data-root", str(world), "--workers", "0", "--direction", "drone2satellite"],
        ["energy", "--num-images", "1", "--out", str(tmp_path / "energy")],
        ["export", "--check-images", "1", "--out", str(tmp_path / "m.onnx")],
        ["index", "build", "--out", str(idx), "--world", str(world)],
    ]
    for argv in runs:
        assert main([*argv, "--checkpoint", "pretrained", "--no-progress"] if argv[0] != "export"
                    else [*argv, "--checkpoint", "pretrained"]) == 0, argv  # fmt: skip
        out = capsys.readouterr().out
        assert "64 px" in out, (argv, out)  # the size it was trained at, not 384
    manifest = json.loads((idx / "manifest.json").read_text())["model"]
    assert (manifest["weights"], manifest["image_size"]) == ("synth-pretrain-tiny", 64)
    assert manifest["checkpoint_sha256"] == get_release("pretrained").sha256
    photo = next((world / "University-1652/test/query_drone").rglob("image-01.*"))
    assert main(["localize", str(photo), "--index", str(idx), "--json"]) == 0  # no model flag: the index's
    assert json.loads(capsys.readouterr().out)["results"][0]["matches"]
    assert main(["serve", "--index", str(idx)]) == 0
    assert "serving 3 tiles" in capsys.readouterr().out


def test_an_explicit_other_size_is_honoured_with_a_warning(world, capsys):
    argv = ["evaluate", "--data-root", str(world), "--workers", "0", "--checkpoint", "pretrained", "--no-progress",
            "--image-size", "32", "--direction", "drone2satellite"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "| 32px |" in out.out
    assert out.err.count("warning: --image-size 32 differs from the 64 px these weights were trained at") == 1


def test_our_checkpoints_record_their_size(world, tmp_path, capsys):
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, build_model("tiny", num_classes=3), config={"image_size": 48})
    assert main(["evaluate", "--data-root", str(world), "--workers", "0", "--checkpoint", str(ckpt),
                 "--no-progress", "--direction", "drone2satellite"]) == 0  # fmt: skip
    assert "48 px, the size it was trained at" in capsys.readouterr().out


def test_random_weights_only_when_asked(world, tmp_path, capsys):
    idx = tmp_path / "idx"
    photo = next((world / "University-1652/test/query_drone").rglob("image-01.*"))
    refused = [
        ["evaluate", "--data-root", str(world)],
        ["energy", "--out", str(tmp_path / "e")],
        ["export", "--out", str(tmp_path / "m.onnx")],
        ["index", "build", "--out", str(idx), "--world", str(world)],
        ["visualize", "heatmap", str(photo), "--out", str(tmp_path / "hm")],
    ]
    for argv in refused:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "pass --checkpoint pretrained" in err and "--random-init" in err, err
    assert not idx.exists() and not (tmp_path / "e").exists()  # refused before any work
    assert main(["index", "build", "--out", str(idx), "--world", str(world), "--random-init", "--image-size", "32",
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["localize", str(photo), "--index", str(idx)]) == 2
    assert "built from random weights" in capsys.readouterr().err
    assert main(["localize", str(photo), "--index", str(idx), "--random-init"]) == 0
    assert main(["evaluate", "--data-root", str(world), "--checkpoint", "pretrained", "--random-init"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_an_index_refuses_weights_that_moved_or_changed(world, tmp_path, capsys):
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, build_model("tiny", num_classes=3), config={"image_size": 32})
    idx = tmp_path / "idx"
    assert main(["index", "build", "--out", str(idx), "--world", str(world), "--checkpoint", str(ckpt),
                 "--no-progress"]) == 0  # fmt: skip
    photo = next((world / "University-1652/test/query_drone").rglob("image-01.*"))
    assert main(["localize", str(photo), "--index", str(idx)]) == 0
    save_checkpoint(ckpt, build_model("tiny", num_classes=4), config={"image_size": 32})  # retrained in place
    capsys.readouterr()
    assert main(["localize", str(photo), "--index", str(idx)]) == 2
    assert "which has changed since" in capsys.readouterr().err
    shutil.move(ckpt, tmp_path / "elsewhere.pt")
    assert main(["localize", str(photo), "--index", str(idx)]) == 2
    err = capsys.readouterr().err
    assert f"was built from {ckpt}, which is gone" in err and "--checkpoint" in err


def test_unknown_names_list_the_known_ones(capsys, tmp_path):
    assert main(["export", "--checkpoint", "pretrianed", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "unknown pretrained model 'pretrianed'; known: pretrained, synth-pretrain-tiny" in capsys.readouterr().err
    assert main(["info", "--image-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "synth-pretrain-tiny (also: pretrained): tiny, 64 px input, 240-d" in out


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_written_files_and_folders_follow_the_umask(tmp_path, mask):
    from spikevimformer.data.synth.writer import Staging
    from spikevimformer.fileio import atomic_write_text

    old = os.umask(mask)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
        staging = Staging(tmp_path / "world", "university1652", overwrite=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE(staging.path.stat().st_mode) == 0o777 & ~mask
    staging.discard()


def test_help_shows_defaults():
    from spikevimformer.cli import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    squashed = " ".join(text.split())
    for shown in ("TCP port (default: 8000)", "(default: 127.0.0.1)", "(default: 5)", "(default: 20.0)"):
        assert shown in squashed, shown
    synth = " ".join(build_parser()._subparsers._group_actions[0].choices["synth"].format_help().split())
    assert "--seed SEED default: 0" in synth  # a default of 0 is a default too
    train = " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    assert "(default: 384, or the config's)" in train
    assert "(default: None)" not in squashed and "(default: False)" not in squashed


def test_train_init_takes_the_size_of_its_weights(tmp_path, capsys):
    from tests.fake_datasets import make_university

    world = make_university(tmp_path / "w", train=4, test=2, distractors=0, drone=2)
    base = ["train", "--data-root", str(world), "--init", "pretrained", "--batch-size", "2", "--max-steps", "1",
            "--no-progress", "--set", "workers=0", "final_eval=false", "eval_every_epochs=0"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert "image size 64 px, the size the --init weights were trained at" in capsys.readouterr().err
    assert "image_size: 64" in (tmp_path / "a/config.yaml").read_text()
    assert main([*base, "--out", str(tmp_path / "b"), "--image-size", "32"]) == 0  # chosen: honoured, warned
    assert "warning: image size 32 differs from the 64 px" in capsys.readouterr().err


def test_preprocess_reads_like_the_cli_and_refuses_float_arrays(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    import spikevimformer as svf

    pixels = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "p.png")
    from_path = svf.preprocess(tmp_path / "p.png", 64)
    assert from_path.shape == (3, 64, 64)
    assert torch.equal(from_path, svf.preprocess(Image.open(tmp_path / "p.png"), 64))
    assert torch.equal(from_path, svf.preprocess(pixels, 64))
    with pytest.raises(ValueError, match="8-bit arrays"):
        svf.preprocess(pixels / 255.0, 64)
