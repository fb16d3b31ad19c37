import json

from spikevimformer.cli import main
from tests.fake_datasets import make_university


def test_evaluate_both_protocols_writes_report(tmp_path, capsys):
    world = make_university(tmp_path, train=2, test=4, distractors=2, drone=2)
    out = tmp_path / "eval"
    rc = main(["evaluate", "--random-init", "--data-root", str(world), "--image-size", "32", "--protocol",
               "both", "--workers", "0",
               "--out", str(out), "--cache", str(tmp_path / "cache"), "--device", "cpu"])
    assert rc == 0
    report = json.loads((out / "metrics.json").read_text())
    sizes = {(r["direction"], r["protocol"]): (r["queries"], r["gallery"]) for r in report["rows"]}
    # 4 test locations x 2 drone views; 2 distractors only in the official galleries.
    assert sizes == {
        ("drone2satellite", "paper"): (8, 4), ("drone2satellite", "official"): (8, 6),
        ("satellite2drone", "paper"): (4, 8), ("satellite2drone", "official"): (4, 12),
    }
    assert report["image_size"] == 32 and "random initialisation" in report["model"]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 4
    assert "drone2satellite" in capsys.readouterr().out


def test_evaluate_missing_folder_is_a_clean_error(tmp_path, capsys):
    assert main(["evaluate", "--random-init", "--data-root", str(tmp_path / "nope"), "--image-size", "32"]) != 0
    assert "nope" in capsys.readouterr().err
