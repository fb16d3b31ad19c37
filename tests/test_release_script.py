"""scripts/release_pretrained.py: a run started from an earlier run's checkpoint ships with every stage."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from spikevimformer.engine import Trainer, load_config
from tests.fake_datasets import make_university
from tests.test_trainer import TINY

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "release_pretrained.py"


def _script():
    spec = importlib.util.spec_from_file_location("release_pretrained", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_init_chain_is_followed_and_steps_count_on(tmp_path):
    world = make_university(tmp_path / "world", train=8, test=3, distractors=1, drone=3)
    settings = {**TINY, "data_root": str(world), "log_every_steps": 2}
    Trainer(load_config(None, {**settings, "out_dir": str(tmp_path / "a"), "max_steps": 4}), progress=False).fit()
    Trainer(load_config(None, {**settings, "out_dir": str(tmp_path / "b"), "max_steps": 2,
                               "init": str(tmp_path / "a" / "last.pt")}), progress=False).fit()
    release = _script()
    chain = release.stages(tmp_path / "b" / "last.pt")
    assert [(s.checkpoint.parent.name, s.steps) for s in chain] == [("a", 4), ("b", 2)]
    log, _ = release.joined(chain)
    assert [int(r["step"]) for r in log] == [2, 4, 6]  # stage b's step 2 is step 6; offsets come from checkpoints

    Trainer(load_config(None, {**settings, "out_dir": str(tmp_path / "c"), "max_steps": 2,
                               "init": str(tmp_path / "b" / "last.pt")}), progress=False).fit()
    (tmp_path / "b" / "log.csv").unlink()  # an earlier stage's folder is gone: the record would be incomplete
    with pytest.raises(SystemExit, match="every stage"):
        release.stages(tmp_path / "c" / "last.pt")
