"""benchmarks/ablation.py: per-cell resume, the variants' settings and the summary table."""

import json
import sys
from pathlib import Path

import pytest

from spikevimformer.engine import load_config
from spikevimformer.fileio import folder_lock

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ablation  # noqa: E402  (a script folder, not a package)


def _fake(calls: list[str]):
    def runner(cell: ablation.Cell) -> dict:
        calls.append(cell.name)
        return {"cell": {"init": cell.init, "variant": cell.variant, "seed": cell.seed}, "D->S R@1": 10.0 * cell.seed,
                "D->S AP": 5.0, "S->D R@1": 1.0, "S->D AP": 2.0, "spread_ssa": 0.5, "steps": 3, "seconds": 0.1}
    return runner


def test_a_cell_with_a_result_is_not_run_again(tmp_path):
    cells = [ablation.Cell("scratch", "infonce", seed) for seed in (1, 2)]
    calls: list[str] = []
    ablation.run_grid(cells[:1], tmp_path, _fake(calls))
    assert (tmp_path / "cells/scratch_infonce_s1.json").is_file()
    results = ablation.run_grid(cells, tmp_path, _fake(calls))  # the rerun of an interrupted grid
    assert calls == ["scratch_infonce_s1", "scratch_infonce_s2"]
    assert [r["D->S R@1"] for r in results] == [10.0, 20.0]
    assert json.loads((tmp_path / "cells/scratch_infonce_s2.json").read_text())["steps"] == 3
    again = ablation.run_grid(cells[:1], tmp_path, _fake(calls), ablation.Sizes(steps=5))  # other sizes: run again
    assert calls[-1] == "scratch_infonce_s1" and len(calls) == 3 and again[0]["steps"] == 3
    table = ablation.table(results)
    assert "| infonce | scratch | 2 | 15.0 ± 7.1 | 5.0 ± 0.0 |" in table and table.count("\n") == 2


def test_a_cell_another_process_runs_is_skipped(tmp_path):
    calls: list[str] = []
    cells = [ablation.Cell("scratch", "infonce", seed) for seed in (1, 2)]
    with folder_lock(tmp_path / "claims" / cells[0].name, "another ablation"):  # a second open file: as another process
        results = ablation.run_grid(cells, tmp_path, _fake(calls))
    assert calls == ["scratch_infonce_s2"] and len(results) == 1
    assert ablation.run_grid(cells, tmp_path, _fake(calls))[1]["D->S R@1"] == 20.0 and calls[-1] == "scratch_infonce_s1"


def test_a_failed_cell_leaves_no_result_and_runs_again(tmp_path):
    def broken(cell):
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        ablation.run_grid([ablation.Cell("scratch", "infonce", 1)], tmp_path, broken)
    assert not list(tmp_path.glob("cells/*.json"))
    calls: list[str] = []
    ablation.run_grid([ablation.Cell("scratch", "infonce", 1)], tmp_path, _fake(calls))
    assert calls == ["scratch_infonce_s1"]


@pytest.mark.parametrize("variant", list(ablation.VARIANTS))
def test_every_variant_is_a_valid_exact_step_run(tmp_path, variant):
    settings = ablation.train_settings(ablation.Cell("shipped", variant, 1), ablation.Sizes(steps=7), tmp_path,
                                       tmp_path / "run")  # fmt: skip
    cfg = load_config(None, settings)
    assert (cfg.max_steps, cfg.anneal_by, cfg.time_limit_min, cfg.epochs) == (7, "steps", 0.0, 7)
    weights = {"ssa": cfg.w_ssa, "shs": cfg.w_shs, "hral": cfg.w_hral}
    on = {name for name, w in weights.items() if w > 0}
    expected = {"infonce": set(), "+shs": {"shs"}, "+hral": {"hral"}}.get(variant)
    assert on == (expected if expected is not None else {"ssa"} if variant.startswith("+ssa") else set(weights))
    if cfg.w_ssa > 0:
        assert cfg.ssa_objective == ("infonce" if variant in ("+ssa-infonce", "full-infonce") else "paper")


def test_the_worlds_seeds_are_no_other_tools():
    used = {2026, 10000, 10001, 10002, 10003, 3030, 3031, 3032, 4040, 4041, 7}  # demo, pretraining, calibration
    assert not {ablation.TRAIN_SEED, ablation.HELDOUT_SEED} & used and ablation.TRAIN_SEED != ablation.HELDOUT_SEED
