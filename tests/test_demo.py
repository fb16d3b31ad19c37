import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from spikevimformer.checkpoint import CheckpointError, load_release, save_release
from spikevimformer.cli import main
from spikevimformer.demo import DemoConfig
from spikevimformer.engine import load_config, train
from spikevimformer.geo.encoders import index_encoder
from spikevimformer.geo.index import GalleryIndex
from spikevimformer.models import build_model
from spikevimformer.pretrained import get_release, load_pretrained, release_names
from spikevimformer.report import SECTIONS
from tests.fake_datasets import make_university


def test_toy_demo_runs_every_stage_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--toy", "--out", str(out)]) == 0
    report = (out / "report.html").read_text()
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in report, section
    payload = json.loads((out / "report.json").read_text())
    models = {r["model"] for r in payload["metrics"]}
    assert models == {"colour histogram (no learning)", "pretrained (no fine-tuning)", "fine-tuned from pretrained",
                      "fine-tuned from pretrained, test-time flip (2x inference)", "trained from scratch"}
    assert {(r["direction"], r["protocol"]) for r in payload["metrics"]} == {
        (d, p) for d in ("drone2satellite", "satellite2drone") for p in ("paper", "official")}
    assert [s["name"] for s in payload["stages"]][0] == "generate the synthetic world"
    loc = payload["localization"]
    assert loc["queries"] > 0 and "Dis@1_m" in loc
    rows = loc["registration_rows"]  # the world's own photos, the same world photographed at 128 px, and those
    # photos against a reference of another date
    assert [r["queries_from"] for r in rows] == ["demo world, 64 px photos", "same world, new 128 px photos",
                                                 "same photos, reference of another date (epoch gap 0.5)"]
    other = json.loads((out / "index-other-date" / "manifest.json").read_text())
    assert other["reference_features"]["matcher"] == "xfeat"  # indexed as `index build` does, learned features
    assert "another date" in report
    assert all({"fix_rate", "camera_median_error_m", "R@1_verified"} <= set(r) for r in rows)
    assert "Camera position by registration" in report
    assert "The same spikes under four conventions" in report and "binary-spikes: the SNN costs" in report
    assert list(payload["energy"]["conventions"]) == ["paper-45nm-fp32", "int8", "memory-aware", "binary-spikes"]
    flight = payload["flight"]  # a short flight through the index, its track shown
    assert flight["frames"] == 6 and {"fixes", "online_rmse_m", "smoothed_rmse_m"} <= set(flight)
    assert "a short flight" in [s["name"] for s in payload["stages"]]
    assert (out / "flight/track.geojson").is_file() and "flight track" in report
    assert report.count("data:image/png;base64,") >= 5  # curves, strips, energy, map, flight
    assert "report:" in capsys.readouterr().out
    assert (out / "finetune/best.pt").is_file() and (out / "scratch/best.pt").is_file()  # as the README says
    index = GalleryIndex.load(out / "index")  # usable as the README shows: its own weights, or best.pt given
    assert index.identity.mismatch(index_encoder(index).identity) is None
    GalleryIndex.load(out / "index", expect=index_encoder(index, checkpoint=out / "finetune/best.pt").identity)


def test_shipped_checkpoint_matches_its_hash_and_a_tampered_copy_is_refused(tmp_path):
    model = load_pretrained()
    release = get_release("pretrained")
    assert (model.variant, model.descriptor_dim, model.image_size) == (release.variant, release.descriptor_dim, 64)
    assert not model.training and release_names()[0] == "pretrained"
    info = release.info()
    assert {"sha256", "command", "evaluation"} <= set(info) and info["image_size"] == release.image_size
    with pytest.raises(ValueError, match="unknown pretrained model 'pretrianed'; known: pretrained, synth-pretrain"):
        load_pretrained("pretrianed")
    tampered = tmp_path / "tampered.safetensors"
    shutil.copy(release.path, tampered)
    data = bytearray(tampered.read_bytes())
    data[-100] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_release(tampered, sha256=info["sha256"])


def test_release_round_trip_in_fp16(tmp_path):
    model = build_model("tiny", num_classes=3)
    digest = save_release(model, tmp_path / "m.safetensors", {"note": "test"})
    loaded = load_release(tmp_path / "m.safetensors", sha256=digest)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert a.dtype == b.dtype, k
        assert (a.float() - b.float()).abs().max() <= 1e-3 * max(1.0, float(a.float().abs().max())), k
    with pytest.raises(CheckpointError, match="not a spikevimformer release"):
        from safetensors.torch import save_file

        save_file({"x": model.logit_scale.detach().clone()}, str(tmp_path / "other.safetensors"))
        load_release(tmp_path / "other.safetensors")


def test_demo_config_file_matches_what_the_demo_runs():
    """configs/synth-demo.yaml reruns the demo's fine-tune by hand, so its budget and schedule must not drift."""
    file = yaml.safe_load((Path(__file__).parents[1] / "configs" / "synth-demo.yaml").read_text())
    demo = DemoConfig()
    assert (file["time_limit_min"], file["lr"], file["image_size"]) == (demo.minutes, demo.lr, demo.image_size)
    assert (file["batch_size"], file["epochs"], file["workers"]) == (demo.batch_size, demo.epochs, demo.workers)
    assert (file["anneal_by"], file["warmup"], file["warmup_min_steps"]) == ("time", 0.0, 20)


def test_a_step_budget_runs_exactly_that_many_steps_and_anneals_over_them(tmp_path):
    world = make_university(tmp_path / "world", train=8, test=2, distractors=0, drone=2)
    cfg = DemoConfig(out_dir=str(tmp_path), steps=25, minutes=0.001, image_size=32, batch_size=4, workers=0,
                     extra={"augment": False, "hral_k": 3, "hral_k2": 2, "hral_history": 8})  # fmt: skip
    assert cfg.budget() == "25 steps"
    result = train(load_config(None, cfg.train_settings(world, tmp_path / "run", "scratch", 1e-3)), progress=False)
    assert result["steps"] == 25 and result["stop_reason"] == "finished"  # the tiny minutes never stop it
    rates = [float(r["lr"]) for r in csv.DictReader((tmp_path / "run/log.csv").open())]
    assert len(rates) == 25 and rates[0] == pytest.approx(1e-3 / 12) and rates[-1] < 0.1 * 1e-3  # warm-up: half the run


def test_demo_takes_minutes_or_steps_not_both(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--toy", "--out", str(tmp_path), "--minutes", "1", "--steps", "3"])
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--toy", "--out", str(tmp_path), "--steps", "0"])
    assert "must be at least 1" in capsys.readouterr().err
