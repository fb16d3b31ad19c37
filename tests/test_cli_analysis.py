import json

import pytest

from spikevimformer.cli import main
from tests.fake_datasets import make_university


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_university(tmp_path_factory.mktemp("w"), train=2, test=4, distractors=1, drone=2)


def test_robustness_grid_reports_drops(world, tmp_path, capsys):
    out = tmp_path / "rob"
    rc = main(["robustness", "--random-init", "--data-root", str(world), "--image-size", "32", "--keep", "20",
               "60", "100",
               "--patches", "5", "--weather", "fog", "dark", "--workers", "0", "--out", str(out), "--device", "cpu"])
    assert rc == 0
    rows = json.loads((out / "robustness.json").read_text())["rows"]
    assert [r["condition"] for r in rows] == ["clean", "R=20, P=5", "R=60, P=5", "weather fog", "weather dark"]
    assert rows[0]["dR@1"] == 0 and all(r["dR@1"] == r["R@1"] - rows[0]["R@1"] for r in rows)
    assert all(r["gallery"] == 4 and r["queries"] == 8 for r in rows)
    assert "weather fog" in capsys.readouterr().out


def test_unknown_weather_condition_is_refused(world, capsys):
    rc = main(["robustness", "--random-init", "--data-root", str(world), "--image-size", "32", "--keep",
               "--weather", "tornado",
               "--workers", "0"])
    assert rc == 2 and "tornado" in capsys.readouterr().err


def test_visualize_writes_pngs(world, tmp_path):
    strip = tmp_path / "strip.png"
    assert main(["visualize", "strips", "--random-init", "--data-root", str(world), "--image-size", "32",
                 "--queries", "2",
                 "--k", "3", "--out", str(strip), "--device", "cpu"]) == 0
    assert strip.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = next((world / "test" / "query_drone").rglob("*.jpeg"))
    assert main(["visualize", "heatmap", str(image), "--random-init", "--image-size", "32", "--out",
                 str(tmp_path / "hm")]) == 0  # fmt: skip
    assert (tmp_path / "hm" / f"{image.stem}-heatmap.png").stat().st_size > 0
    log = tmp_path / "run" / "log.csv"
    log.parent.mkdir()
    log.write_text("step,loss,lr\n1,3.0,1e-5\n2,2.5,2e-5\n")
    assert main(["visualize", "curves", str(log.parent)]) == 0
    assert (log.parent / "curves.png").exists()
    assert main(["visualize", "curves", str(tmp_path / "missing")]) == 2
