"""The README's Python API snippets run as written, its lines for the shipped model work, and its HTTP example
has the fields a real answer has."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from spikevimformer import build_model, save_checkpoint
from spikevimformer.cli import main
from tests.geo_world import make_world
from tests.test_checkpoint import official_state

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{title}\n")
    end = text.find("\n## ", start + len(title) + 2)
    return text[start : end if end >= 0 else None]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """What the snippets name: a world at data/synth, photo.jpg, a run's best.pt and official ImageNet weights."""
    root = tmp_path_factory.mktemp("readme")
    world = make_world(root / "data/synth", n_test=4, n_distractor=0, n_train=0)
    photo = next((world / "University-1652/test/query_drone").rglob("image-01.*"))
    shutil.copy(photo, root / "photo.jpg")
    tuned = build_model("tiny", num_classes=4)
    save_checkpoint(root / "runs/demo/finetune/best.pt", tuned, config={"image_size": 64})
    torch.save({"model": official_state("tiny")}, root / "V3_10.0M_1x4.pth")
    return root


def test_python_api_snippets_run_as_written(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    snippets = _blocks(_section("## Python API"), "python")
    assert len(snippets) == 3
    namespace: dict = {}
    for code in snippets:
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "['pretrained', 'synth-pretrain-tiny']" and out[1] == "tiny 64 240" and out[2] == "64"
    assert tuple(namespace["desc"].shape) == (1, 240)
    result = namespace["result"]
    assert result.name == "photo.jpg" and len(result.matches) >= 1
    assert json.loads((workdir / "runs/index/manifest.json").read_text())["model"]["weights"] == "synth-pretrain-tiny"


def test_readme_command_lines_for_the_shipped_model(workdir, monkeypatch, capsys):
    """`index build ... --checkpoint pretrained`, then `localize` and `serve`'s model with no model flag."""
    monkeypatch.chdir(workdir)
    assert main(["index", "build", "--out", "runs/cli-index", "--world", "data/synth", "--checkpoint", "pretrained",
                 "--no-progress"]) == 0  # fmt: skip
    assert "at 64 px" in capsys.readouterr().out  # the size it was trained at, not 384
    assert main(["localize", "photo.jpg", "--index", "runs/cli-index", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["name"] == "photo.jpg"


def test_http_example_has_the_fields_of_a_real_answer(workdir, monkeypatch):
    from fastapi.testclient import TestClient

    from spikevimformer.geo.localize import open_localizer
    from spikevimformer.geo.serve import create_app

    monkeypatch.chdir(workdir)
    if not (workdir / "runs/cli-index/manifest.json").exists():
        assert main(["index", "build", "--out", "runs/cli-index", "--world", "data/synth", "--checkpoint",
                     "pretrained", "--no-progress"]) == 0  # fmt: skip
    client = TestClient(create_app(open_localizer("runs/cli-index", k=2)))
    answer = client.post("/localize", files={"image": ("photo.jpg", Path("photo.jpg").read_bytes(), "image/jpeg")})
    assert answer.status_code == 200
    example, frame_example = _blocks(_section("### HTTP API (`spikevimformer serve`)"), "json")
    documented = json.loads(example)
    assert set(documented) == set(answer.json())
    assert set(documented["matches"][0]) == set(answer.json()["matches"][0])
    flight = client.post("/flights").json()["id"]
    frame = client.post(f"/flights/{flight}/frames", files={"image": ("f.jpg", Path("photo.jpg").read_bytes())},
                        data={"time_s": "0"})  # fmt: skip
    assert frame.status_code == 200 and set(json.loads(frame_example)) == set(frame.json())
    spec = client.get("/openapi.json").json()["paths"]["/localize"]["post"]
    assert {"multipart/form-data", "image/jpeg"} <= set(spec["requestBody"]["content"])
    assert {"400", "413", "415"} <= set(spec["responses"]) and {p["name"] for p in spec["parameters"]} == {
        "k", "fov", "heading", "pitch", "altitude"}
