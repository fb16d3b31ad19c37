"""InfoNCE, L_SSA, L_SHS and the combined objective: values, gradients and the data-parallel split."""

import math

import pytest
import torch
import torch.nn.functional as F

from spikevimformer import ModelOutput, build_model
from spikevimformer.engine import load_config
from spikevimformer.losses import HRALMemory, Objective, ObjectiveConfig, batch_spread, info_nce, shs_loss, ssa_loss

Q2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
G2 = torch.tensor([[0.6, 0.8], [0.0, 1.0]])


def test_info_nce_hand_computed_2x2_with_label_smoothing():
    # s = exp(ln 2) = 2; logits q->g = 2 q g^T = [[1.2, 0], [1.6, 2.0]], g->q is its transpose.
    # With smoothing 0.1 over 2 classes a row costs 0.95 (-log p_target) + 0.05 (-log p_other):
    #   q->g row 0: a + 0.05 * 1.2,  row 1: b + 0.05 * 0.4
    #   g->q row 0: b + 0.95 * 0.4,  row 1: c + 0.05 * 2.0
    # with a = log(1 + e^-1.2) = 0.263282, b = log(1 + e^-0.4) = 0.513015, c = log(1 + e^-2) = 0.126928.
    a, b, c = (math.log(1 + math.exp(-z)) for z in (1.2, 0.4, 2.0))
    expected = ((a + 0.06) + (b + 0.02) + (b + 0.38) + (c + 0.1)) / 4
    assert expected == pytest.approx(0.494060, abs=1e-6)
    assert info_nce(Q2, G2, math.log(2)).item() == pytest.approx(expected, abs=1e-6)
    # Without smoothing: plain cross-entropies a, b, b + 0.4, c.
    plain = (a + b + (b + 0.4) + c) / 4
    assert info_nce(Q2, G2, torch.tensor(math.log(2)), label_smoothing=0.0).item() == pytest.approx(plain, abs=1e-6)


def test_info_nce_is_symmetric_normalises_and_clamps_the_scale():
    q, g = torch.randn(5, 8), torch.randn(5, 8)
    ls = torch.tensor(1.3)
    torch.testing.assert_close(info_nce(q, g, ls), info_nce(g, q, ls))
    torch.testing.assert_close(info_nce(3 * q, 0.5 * g, ls), info_nce(q, g, ls))
    torch.testing.assert_close(info_nce(q, g, math.log(1000.0)), info_nce(q, g, math.log(100.0)))
    assert not torch.allclose(info_nce(q, g, math.log(50.0)), info_nce(q, g, math.log(100.0)))
    with pytest.raises(ValueError, match="one shape"):
        info_nce(q, g[:4], ls)
    with pytest.raises(ValueError, match="local_slice"):
        info_nce(q, g, ls, local_slice=slice(3, 9))


def _rank_copies(weight: torch.Tensor, scale: torch.Tensor, ranks: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(weight.clone().requires_grad_(), scale.clone().requires_grad_()) for _ in range(ranks)]


def test_info_nce_rank_split_reproduces_one_process():
    """2 simulated ranks x 3 pairs == 1 process x 6 pairs, for both documented gather styles."""
    ranks, b = 2, 3
    x_q, x_g = torch.randn(ranks * b, 6), torch.randn(ranks * b, 6)
    weight, scale = torch.randn(6, 4), torch.tensor(2.0)

    w, s = weight.clone().requires_grad_(), scale.clone().requires_grad_()
    single = info_nce(x_q @ w, x_g @ w, s)
    single.backward()

    # (a) gather with gradient + local_slice: each rank backprops its own rows' loss, the
    # gather sends gradients back to every owner; DDP then averages over ranks.
    copies = _rank_copies(weight, scale, ranks)
    q_all = torch.cat([x_q[r * b : (r + 1) * b] @ copies[r][0] for r in range(ranks)])
    g_all = torch.cat([x_g[r * b : (r + 1) * b] @ copies[r][0] for r in range(ranks)])
    losses = [info_nce(q_all, g_all, copies[r][1], local_slice=slice(r * b, (r + 1) * b)) for r in range(ranks)]
    sum(losses).backward()
    torch.testing.assert_close(sum(loss.detach() for loss in losses) / ranks, single.detach())
    torch.testing.assert_close(sum(c[0].grad for c in copies) / ranks, w.grad)
    torch.testing.assert_close(sum(c[1].grad for c in copies) / ranks, s.grad)
    # The split is real: one rank's rows alone are not the global loss.
    assert not torch.allclose(losses[0], single)

    # (b) gather without gradient, own rows put back with gradient: full loss times N.
    copies = _rank_copies(weight, scale, ranks)
    for r in range(ranks):
        own = slice(r * b, (r + 1) * b)
        q_all = (x_q @ weight).index_put((torch.arange(ranks * b)[own],), x_q[own] @ copies[r][0])
        g_all = (x_g @ weight).index_put((torch.arange(ranks * b)[own],), x_g[own] @ copies[r][0])
        (ranks * info_nce(q_all, g_all, copies[r][1])).backward()
    torch.testing.assert_close(sum(c[0].grad for c in copies) / ranks, w.grad)


def test_ssa_and_shs_values():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    # cosines 1/sqrt(2) and -1
    assert ssa_loss(a, b).item() == pytest.approx(1 - (1 / math.sqrt(2) - 1) / 2, abs=1e-6)
    assert ssa_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    logits_q = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    logits_g = torch.zeros(2, 3)
    labels = torch.tensor([0, 1])
    ce_q = (-(2 - math.log(math.exp(2) + 2)) - (0 - math.log(2 + math.e))) / 2
    expected = (ce_q + math.log(3)) / 2
    assert shs_loss(logits_q, logits_g, labels).item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="labels must lie"):
        shs_loss(logits_q, logits_g, torch.tensor([0, 3]))


def test_every_term_sends_gradient_to_its_inputs():
    q, g = torch.randn(6, 8, requires_grad=True), torch.randn(6, 8, requires_grad=True)
    logits_q, logits_g = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    scale = torch.tensor(2.0, requires_grad=True)
    terms = {
        "infonce": (info_nce(q, g, scale), (q, g, scale)),
        "ssa": (ssa_loss(q, g), (q, g)),
        "shs": (shs_loss(logits_q, logits_g, labels), (logits_q, logits_g)),
        "hral": (Objective().hral_loss(q, g), (q, g)),
    }
    for name, (loss, inputs) in terms.items():
        grads = torch.autograd.grad(loss, inputs)
        assert all(gr.abs().sum() > 0 for gr in grads), name


def _outputs(model: torch.nn.Module, images_q: torch.Tensor, images_g: torch.Tensor) -> tuple:
    return model(images_q), model(images_g)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model("tiny", num_classes=4).train()


@pytest.mark.parametrize("term", ["infonce", "ssa", "shs", "hral"])
def test_each_term_trains_the_backbone_and_its_branch(tiny_model, term):
    torch.manual_seed(1)
    model = tiny_model
    model.zero_grad(set_to_none=True)
    weights = {name: (1.0 if name == term else 0.0) for name in ("infonce", "ssa", "shs", "hral")}
    objective = Objective(**weights)
    out_q, out_g = _outputs(model, torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))
    total, terms = objective(out_q, out_g, torch.tensor([0, 1, 2, 3]), model.logit_scale, HRALMemory())
    assert list(terms) == [term] and torch.isfinite(total)
    total.backward()

    def reached(module: torch.nn.Module) -> bool:
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    stages = [m for name, m in model.backbone.named_children() if any(True for _ in m.parameters())]
    assert stages and all(reached(m) for m in stages), "every backbone stage gets gradient"
    assert reached(model.ssa) == (term == "ssa")
    assert reached(model.shs) == (term == "shs")
    assert reached(model.classifier) == (term == "shs")
    assert (model.logit_scale.grad is not None and model.logit_scale.grad != 0) == (term == "infonce")


def _fake_output(x: torch.Tensor, w: torch.Tensor, classes: bool = True) -> ModelOutput:
    descriptor = F.normalize(x @ w, dim=1)
    logits = (x @ w)[:, :3] if classes else None
    return ModelOutput(descriptor, F.normalize((x @ w).tanh(), dim=1), logits, None)


def test_objective_combines_weighted_terms_and_skips():
    x_q, x_g, w = torch.randn(5, 6), torch.randn(5, 6), torch.randn(6, 8)
    labels = torch.tensor([0, 1, 2, 0, 1])
    out_q, out_g = _fake_output(x_q, w), _fake_output(x_g, w)
    objective = Objective(ObjectiveConfig(), hral_k=3, hral_k2=2)
    memory = objective.make_memory()
    assert memory.capacity == 4096
    total, terms = objective(out_q, out_g, labels, torch.tensor(2.0), memory)
    assert set(terms) == {"infonce", "ssa", "shs", "hral"}
    assert all(not t.requires_grad for t in terms.values())
    expected = terms["infonce"] + 0.6 * terms["ssa"] + 0.54 * terms["shs"] + terms["hral"]
    torch.testing.assert_close(total.detach(), expected)
    assert len(memory) == 5
    torch.testing.assert_close(memory.history(5)[0], out_q.descriptor)

    no_classes = Objective(ssa=0.0, hral=0.0)
    _, terms = no_classes(_fake_output(x_q, w, False), _fake_output(x_g, w, False), None, 2.0)
    assert set(terms) == {"infonce"}
    with pytest.raises(ValueError, match="labels"):
        Objective()(out_q, out_g, None, 2.0)
    with pytest.raises(ValueError, match="unknown objective settings"):
        Objective(hral_kk=3)


def test_objective_rank_split_reproduces_one_process():
    """The objective's DDP contract, HRAL with history included: mean of 2 ranks' grads == 1 process."""
    ranks, b = 2, 4
    x_q, x_g = torch.randn(ranks * b, 6), torch.randn(ranks * b, 6)
    weight = torch.randn(6, 8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    objective = Objective(hral_k=4, hral_k2=3, hral_history=6)
    history = HRALMemory()
    history.push(torch.randn(10, 8), torch.randn(10, 8))

    w = weight.clone().requires_grad_()
    single_memory = HRALMemory()
    single_memory.load_state_dict(history.state_dict())
    single, _ = objective(_fake_output(x_q, w), _fake_output(x_g, w), labels, 1.5, single_memory)
    single.backward()

    copies = [weight.clone().requires_grad_() for _ in range(ranks)]
    outs = [
        (_fake_output(x_q[r * b : (r + 1) * b], copies[r]), _fake_output(x_g[r * b : (r + 1) * b], copies[r]))
        for r in range(ranks)
    ]
    q_all = torch.cat([o[0].descriptor for o in outs])
    g_all = torch.cat([o[1].descriptor for o in outs])
    ssa = {"global_ssa_q": torch.cat([o[0].ssa_descriptor for o in outs]),
           "global_ssa_g": torch.cat([o[1].ssa_descriptor for o in outs])}  # fmt: skip
    memories, totals = [], []
    for r in range(ranks):
        own = slice(r * b, (r + 1) * b)
        memory = HRALMemory()
        memory.load_state_dict(history.state_dict())
        total, _ = objective(
            *outs[r], labels[own], 1.5, memory, global_q=q_all, global_g=g_all, local_slice=own, **ssa
        )
        memories.append(memory)
        totals.append(total)
    sum(totals).backward()
    torch.testing.assert_close(sum(t.detach() for t in totals) / ranks, single.detach())
    torch.testing.assert_close(sum(c.grad for c in copies) / ranks, w.grad)
    for memory in memories:  # every rank keeps the same global history as the single process
        torch.testing.assert_close(memory.history(20)[0], single_memory.history(20)[0])


def _near_identical(rows: int = 16, dim: int = 32, noise: float = 1e-3) -> torch.Tensor:
    """Rows that have all but collapsed onto one direction; each drone view equals its satellite view."""
    g = torch.Generator().manual_seed(3)
    return (torch.randn(1, dim, generator=g) + noise * torch.randn(rows, dim, generator=g)).requires_grad_()


def test_the_infonce_ssa_objective_pushes_a_collapsing_batch_apart_where_the_papers_is_satisfied():
    for objective, pushes in (("paper", False), ("infonce", True)):
        x = _near_identical()
        ssa_loss(x, x, objective).backward()
        grad = x.grad.norm().item()
        assert (grad > 1e-5) == pushes, (objective, grad)  # the paper's loss is at its minimum: views agree
        before = batch_spread(x).item()
        after = batch_spread(x.detach() - 1e-2 * x.grad / max(grad, 1e-12)).item()  # one small descent step
        assert (after > 1.5 * before) == pushes, (objective, before, after)


def test_an_unknown_ssa_objective_is_refused():
    with pytest.raises(ValueError, match="ssa_objective must be one of paper, infonce"):
        Objective(ssa_objective="cosine")
    with pytest.raises(ValueError, match="ssa_objective must be one of paper, infonce"):
        ssa_loss(Q2, G2, "cosine")
    with pytest.raises(ValueError, match="setting ssa_objective must be one of paper, infonce"):
        load_config(None, ["ssa_objective=vicreg"])
    assert load_config(None, ["ssa_objective=infonce"]).objective().ssa_objective == "infonce"
    assert ObjectiveConfig().ssa_objective == "infonce"  # the default the ablation chose (README)
