"""HRAL against a direct loop-by-loop reading of the spec, plus the FIFO memories."""

import math

import pytest
import torch

from spikevimformer.losses import HRALLoss, HRALMemory, hral_refine


def clustered(n: int, dim: int = 16, clusters: int = 5, noise: float = 0.6, seed: int = 0) -> torch.Tensor:
    """Random descriptors around a few centres, so neighbourhoods (and expansions) are non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=gen, dtype=torch.float64)
    labels = torch.randint(clusters, (n,), generator=gen)
    return centres[labels] + noise * torch.randn(n, dim, generator=gen, dtype=torch.float64)


def reference_refine(features: torch.Tensor, k: int, k2: int, alpha: float, stats: dict | None = None) -> list:
    """Spec steps 1-6 with Python lists, sets and loops (float64)."""
    n = features.shape[0]
    x = [[v / math.sqrt(sum(c * c for c in row)) for v in row] for row in features.tolist()]
    d = [[2 - 2 * sum(a * b for a, b in zip(x[i], x[j], strict=True)) for j in range(n)] for i in range(n)]
    order = [sorted(range(n), key=lambda j, i=i: (j != i, d[i][j])) for i in range(n)]

    def nearest(i: int, count: int) -> set:
        return set(order[i][:count])

    def reciprocal(i: int, kk: int) -> set:
        return {j for j in nearest(i, kk + 1) if i in nearest(j, kk + 1)}

    expanded = []
    for i in range(n):
        r_i = reciprocal(i, k)
        r_star = set(r_i)
        for c in r_i:
            r_c = reciprocal(c, k // 2)
            if len(r_c & r_i) > 2 / 3 * len(r_c):
                r_star |= r_c
                if stats is not None and not r_c <= r_i:
                    stats["grew"] += 1
            elif stats is not None:
                stats["refused"] += 1
        expanded.append(r_star)
    v = []
    for i in range(n):
        total = sum(math.exp(-d[i][j]) for j in expanded[i])
        v.append([math.exp(-d[i][j]) / total if j in expanded[i] else 0.0 for j in range(n)])
    refined = []
    for i in range(n):
        neighbours = order[i][:k2]
        v_tilde = [sum(v[j][col] for j in neighbours) / len(neighbours) for col in range(n)]
        row = [
            alpha * x[i][c] + (1 - alpha) * sum(v_tilde[j] * x[j][c] for j in range(n)) for c in range(len(x[i]))
        ]
        norm = math.sqrt(sum(c * c for c in row))
        refined.append([c / norm for c in row])
    return refined


def reference_alignment(f: list, target: list, tau: float) -> float:
    """A(f, f^) of step 7 with loops: 1 - mean cosine + row-mean KL(P_target || P_f)."""
    def unit(row: list) -> list:
        norm = math.sqrt(sum(c * c for c in row))
        return [c / norm for c in row]

    def dot(a: list, b: list) -> float:
        return sum(p * q for p, q in zip(a, b, strict=True))

    f = [unit(r) for r in f]
    b = len(f)
    cosine = sum(dot(f[i], target[i]) for i in range(b)) / b
    kl = 0.0
    for i in range(b):
        p_logits = [dot(target[i], target[j]) / tau for j in range(b)]
        q_logits = [dot(f[i], target[j]) / tau for j in range(b)]
        p_norm = math.log(sum(math.exp(z) for z in p_logits))
        q_norm = math.log(sum(math.exp(z) for z in q_logits))
        for j in range(b):
            log_p, log_q = p_logits[j] - p_norm, q_logits[j] - q_norm
            kl += math.exp(log_p) * (log_p - log_q)
    return 1 - cosine + kl / b


@pytest.mark.parametrize(("n", "k", "k2", "alpha"), [(24, 6, 3, 0.7), (40, 7, 4, 0.5), (60, 15, 6, 0.7)])
def test_refine_matches_loop_reference(n, k, k2, alpha):
    features = clustered(n, seed=n)
    stats = {"grew": 0, "refused": 0}
    expected = torch.tensor(reference_refine(features, k, k2, alpha, stats), dtype=torch.float64)
    assert stats["grew"] > 0 and stats["refused"] > 0  # both branches of the 2/3 rule are exercised
    got = hral_refine(features.float(), k, k2, alpha)
    assert got.dtype == torch.float32 and got.shape == features.shape
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(hral_refine(features, k, k2, alpha), expected, atol=1e-10, rtol=0)
    # The batch-rows shortcut gives the same first rows.
    torch.testing.assert_close(hral_refine(features.float(), k, k2, alpha, rows=7), got[:7])


def test_refine_differs_from_input_and_from_plain_neighbour_mean():
    features = clustered(40, seed=3)
    x = torch.nn.functional.normalize(features, dim=1)
    refined = hral_refine(features, 7, 4, 0.7)
    assert (refined - x).norm(dim=1).min() > 1e-4
    torch.testing.assert_close(refined.norm(dim=1), torch.ones(40, dtype=torch.float64))
    # alpha = 1 keeps the input exactly: the refinement adds nothing of its own.
    torch.testing.assert_close(hral_refine(features, 7, 4, 1.0), x)


def test_refine_has_no_gradient_and_handles_tiny_stacks():
    features = torch.randn(3, 8, requires_grad=True)
    out = hral_refine(features)  # k = 15 > N - 1 is capped
    assert not out.requires_grad and out.shape == (3, 8)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="N x d"):
        hral_refine(torch.randn(5))


@pytest.mark.parametrize("with_history", [False, True])
def test_loss_matches_loop_reference(with_history):
    b, dim, k, k2, alpha, tau = 10, 16, 5, 3, 0.7, 0.1
    data = clustered(2 * b + 2 * 14, dim, seed=11).float()
    q, g = data[:b].clone().requires_grad_(), data[b : 2 * b].clone().requires_grad_()
    memory = HRALMemory(capacity=20)
    stack = [q.detach(), g.detach()]
    if with_history:
        q_old, g_old = data[2 * b : 2 * b + 14], data[2 * b + 14 :]
        memory.push(q_old[:8], g_old[:8])
        memory.push(q_old[8:], g_old[8:])
        stack += [q_old[-12:], g_old[-12:]]  # history = 12 most recent of each view
    loss_fn = HRALLoss(k=k, k2=k2, alpha=alpha, tau=tau, history=12)
    loss = loss_fn(q, g, memory)

    refined = reference_refine(torch.cat(stack).double(), k, k2, alpha)
    expected = (
        reference_alignment(q.detach().tolist(), refined[:b], tau)
        + reference_alignment(g.detach().tolist(), refined[b : 2 * b], tau)
    ) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert len(memory) == (20 if with_history else b)  # the batch was pushed after the targets

    loss.backward()
    assert q.grad.abs().sum() > 0 and g.grad.abs().sum() > 0


def test_history_changes_the_targets():
    data = clustered(60, seed=5).float()
    q, g = data[:8], data[8:16]
    memory = HRALMemory()
    loss_fn = HRALLoss(k=6, k2=3)
    without = loss_fn.targets(q, g, memory)
    memory.push(data[16:38], data[38:60])
    with_hist = loss_fn.targets(q, g, memory)
    assert not torch.allclose(without[0], with_hist[0])
    loss_fn.history = 0
    torch.testing.assert_close(loss_fn.targets(q, g, memory)[0], without[0])


def test_local_slices_split_the_loss_exactly():
    data = clustered(16, seed=2).float()
    loss_fn = HRALLoss(k=4, k2=3)
    q, g = data[:8].clone().requires_grad_(), data[8:].clone().requires_grad_()
    full = loss_fn(q, g)
    (grad_full,) = torch.autograd.grad(full, q)
    parts = [loss_fn(q, g, local_slice=s) for s in (slice(0, 4), slice(4, 8))]
    torch.testing.assert_close((parts[0] + parts[1]) / 2, full)
    grad_parts = torch.autograd.grad((parts[0] + parts[1]) / 2, q)[0]
    torch.testing.assert_close(grad_parts, grad_full)
    # Row i's term moves only row i: rank 0's loss leaves rank 1's rows alone.
    (grad_rank0,) = torch.autograd.grad(loss_fn(q, g, local_slice=slice(0, 4)), q)
    assert grad_rank0[4:].abs().max() == 0 and grad_rank0[:4].abs().max() > 0


def test_memory_fifo_order_and_capacity():
    memory = HRALMemory(capacity=5)
    assert memory.history(3) == (None, None)
    for step in range(4):  # items 0..7, two per step
        q = torch.tensor([[2.0 * step], [2.0 * step + 1]])
        memory.push(q, -q)
    q_hist, g_hist = memory.history(3)
    assert q_hist.flatten().tolist() == [5.0, 6.0, 7.0]
    assert g_hist.flatten().tolist() == [-5.0, -6.0, -7.0]
    assert len(memory) == 5
    assert memory.history(100)[0].flatten().tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]
    memory.push(torch.arange(8.0, 15.0)[:, None], torch.zeros(7, 1))  # more than the capacity at once
    assert memory.history(5)[0].flatten().tolist() == [10.0, 11.0, 12.0, 13.0, 14.0]
    with pytest.raises(ValueError, match="descriptor size"):
        memory.push(torch.zeros(1, 2), torch.zeros(1, 2))


def test_memory_state_dict_round_trip_resumes_exactly():
    memory = HRALMemory(capacity=6)
    for _ in range(3):
        memory.push(torch.randn(4, 3), torch.randn(4, 3))
    state = memory.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    restored = HRALMemory(capacity=99)
    restored.load_state_dict(state)
    assert restored.capacity == 6 and len(restored) == 6
    for a, b in zip(memory.history(6), restored.history(6), strict=True):
        torch.testing.assert_close(a, b)
    q, g = torch.randn(3, 3), torch.randn(3, 3)
    memory.push(q, g)
    restored.push(q, g)
    for a, b in zip(memory.history(6), restored.history(6), strict=True):
        torch.testing.assert_close(a, b)
    empty = HRALMemory(capacity=4)
    empty.load_state_dict(HRALMemory(capacity=7).state_dict())
    assert empty.capacity == 7 and len(empty) == 0


def test_low_precision_descriptors_are_refined_in_fp32():
    data = clustered(24, seed=9).float()
    q, g = data[:6], data[6:12]
    memory = HRALMemory()
    memory.push(data[12:18].bfloat16(), data[18:].bfloat16())
    assert memory.history(6)[0].dtype == torch.float32
    loss_fn = HRALLoss(k=5, k2=3)
    low = loss_fn(q.bfloat16(), g.bfloat16(), memory, update_memory=False)
    full = loss_fn(q, g, memory, update_memory=False)
    assert low.dtype == torch.float32 and abs(low.item() - full.item()) < 0.05
