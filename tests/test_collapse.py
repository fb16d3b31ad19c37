"""Collapse checks: the batch spread of a branch's output and the once-only warning."""

import math

import pytest
import torch

from spikevimformer.losses import CollapseWatch, batch_spread, pair_spread
from spikevimformer.losses.collapse import PAPER_SSA_HINT, SPREAD_FLOOR, SPREAD_PATIENCE


def test_spread_is_zero_for_a_constant_output_and_near_one_for_random_rows():
    constant = torch.randn(1, 64).expand(32, 64) * torch.rand(32, 1)  # one direction, any length
    assert batch_spread(constant).item() == pytest.approx(0.0, abs=1e-6)
    random = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    assert 0.9 < batch_spread(random).item() <= 1.0
    unit = torch.nn.functional.normalize(random, dim=1)  # equals 1 - mean pairwise cosine, self-pairs included
    assert batch_spread(random).item() == pytest.approx(1 - (unit @ unit.T).mean().item(), abs=1e-5)
    assert pair_spread(constant, random).item() == pytest.approx(batch_spread(random).item() / 2, abs=1e-5)


def test_two_views_collapsed_onto_two_constants_still_read_zero():
    a, b = torch.randn(1, 16).expand(8, 16), torch.randn(1, 16).expand(8, 16)
    assert pair_spread(a, b).item() == pytest.approx(0.0, abs=1e-6)


def test_one_row_has_no_spread_and_raises_no_alarm():
    assert math.isnan(batch_spread(torch.randn(1, 8)).item())
    watch = CollapseWatch()
    assert not any(watch.observe(step, {"ssa": float("nan")}) for step in range(1, 3 * SPREAD_PATIENCE))
    with pytest.raises(ValueError, match="B x d"):
        batch_spread(torch.randn(8))


def test_a_branch_forced_to_a_constant_is_flagged_once_and_a_working_one_never():
    watch = CollapseWatch(hints={"ssa": PAPER_SSA_HINT})
    g = torch.Generator().manual_seed(1)
    notes = []
    for step in range(1, 3 * SPREAD_PATIENCE):
        working = torch.randn(16, 32, generator=g)
        constant = torch.ones(16, 32) + 1e-6 * torch.randn(16, 32, generator=g)
        spreads = {"descriptor": pair_spread(working, working.flip(0)).item(),
                   "ssa": pair_spread(constant, constant).item()}
        notes += [(step, n) for n in watch.observe(step, spreads)]
    assert len(notes) == 1 and notes[0][0] == SPREAD_PATIENCE
    assert "ssa output has collapsed" in notes[0][1] and "--ssa-objective infonce" in notes[0][1]
    assert watch.flagged == {"ssa": SPREAD_PATIENCE}


def test_a_branch_that_recovers_before_the_patience_runs_out_is_not_flagged():
    watch = CollapseWatch()
    low, high = SPREAD_FLOOR / 10, 0.5
    for step in range(1, 4 * SPREAD_PATIENCE):
        assert not watch.observe(step, {"ssa": high if step % (SPREAD_PATIENCE - 1) == 0 else low})
