"""HRAL: hierarchical re-ranking alignment learning.

k-reciprocal re-ranking (steps 1-6 of the spec) turns the current batch plus a history of
past descriptors into refined, neighbourhood-aware targets; the loss (step 7) pulls the
backbone descriptors of the current batch toward them. Everything is a tensor operation
on the input's device: index lists of the k+1 nearest neighbours, boolean membership
matrices and gathers, no per-item Python loop. The cost is one N x N x d product and a
top-k, plus O(N^2) element-wise work only for the rows that query expansion needs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_pair, check_slice


def _nearest(x: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Similarities x_i.x_j and each row's `count` nearest indices (d = 2 - 2 x_i.x_j), itself first."""
    sim = x @ x.T
    self_sim = sim.diagonal().clone()
    sim.fill_diagonal_(float("inf"))  # i is always its own nearest, even with exact ties
    order = torch.topk(sim, count, dim=1, largest=True, sorted=True).indices
    sim.diagonal().copy_(self_sim)
    return sim, order


def _nearest_matrix(order: Tensor, count: int) -> Tensor:
    """Boolean N x N: [a, b] is whether b is among the `count` nearest of a."""
    n = order.shape[0]
    return torch.zeros(n, n, dtype=torch.bool, device=order.device).scatter_(1, order[:, :count], True)


def _expanded_sets(order: Tensor, k: int, items: Tensor) -> Tensor:
    """Boolean (len(items), N) membership of R*(i) for i in `items`: R(i, k) plus every R(c, k//2)
    of a c in R(i, k) that lies more than 2/3 inside R(i, k).

    R(c, k//2) is handled as index lists (c's k//2+1 nearest, masked), so the largest
    temporary is (items, k+1, k//2+1), never N x N x k.
    """
    half = k // 2
    near, near_half = _nearest_matrix(order, k + 1), _nearest_matrix(order, half + 1)
    cand = order[items, : k + 1]  # (I, k+1), a superset of R(i, k)
    in_r = near[cand, items.unsqueeze(-1)]  # c in R(i, k): i is among c's k+1 nearest too
    recip = torch.zeros(len(items), order.shape[0], dtype=torch.bool, device=order.device)
    recip.scatter_(1, torch.where(in_r, cand, items.unsqueeze(-1)), True)  # R(i, k) as (I, N); i is in it
    half_cand = order[cand, : half + 1]  # (I, k+1, h+1), a superset of R(c, k//2)
    in_half = near_half[half_cand, cand.unsqueeze(-1)]  # c among its member's h+1 nearest
    inside = recip.gather(1, half_cand.flatten(1)).view_as(half_cand) & in_half
    keep = in_r & (3 * inside.sum(-1) > 2 * in_half.sum(-1))  # |R(c) & R(i)| > 2/3 |R(c)|, in integers
    # Add the kept R(c, k//2); everything else is pointed at i itself, which is already in R(i, k).
    added = torch.where(in_half & keep.unsqueeze(-1), half_cand, items[:, None, None])
    return recip.scatter_(1, added.flatten(1), True)


def hral_refine(
    features: Tensor, k: int = 15, k2: int = 6, alpha: float = 0.7, *, rows: int | None = None
) -> Tensor:
    """Re-ranked, L2-normalised descriptors X^ of the spec's HRAL steps 1-6 (no gradient).

    `features` is the N x d stack [q; g; q_hist; g_hist] (any order; it is normalised here).
    With `rows`, only the first `rows` refined rows are computed and returned (the HRAL loss
    needs the current batch only); neighbourhoods still use all N items. k and k2 are
    capped at N - 1 and N so that tiny stacks work.
    """
    if features.dim() != 2 or features.shape[0] == 0:
        raise ValueError(f"hral_refine needs an N x d tensor with N >= 1, got shape {tuple(features.shape)}")
    if k < 1 or k2 < 1 or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"hral_refine needs k >= 1, k2 >= 1 and 0 <= alpha <= 1, got {k}, {k2}, {alpha}")
    n = features.shape[0]
    rows = n if rows is None else rows
    if not 0 < rows <= n:
        raise ValueError(f"rows must be in 1..{n}, got {rows}")
    k = min(k, n - 1)
    k2 = min(k2, n)
    dtype = torch.promote_types(features.dtype, torch.float32)
    with torch.no_grad(), torch.autocast(features.device.type, enabled=False):
        x = F.normalize(features.detach().to(dtype), dim=1)
        sim, order = _nearest(x, max(k + 1, k2))
        # Affinity rows are only needed for the k2 nearest of the refined rows (query expansion).
        needed, position = torch.unique(order[:rows, :k2], return_inverse=True)
        expanded = _expanded_sets(order, k, needed)
        weight = torch.exp(2 * sim[needed] - 2) * expanded  # exp(-d_ij) on R*(i), else 0
        affinity = weight / weight.sum(dim=1, keepdim=True)  # i is in R*(i), so the sum is > 0
        expanded_affinity = affinity[position].mean(dim=1)  # V~ of the refined rows: (rows, N)
        refined = alpha * x[:rows] + (1 - alpha) * (expanded_affinity @ x)
        return F.normalize(refined, dim=1).to(features.dtype)


def alignment(f: Tensor, target: Tensor, tau: float, local_slice: slice | None = None) -> Tensor:
    """A(f, f^) = (1 - mean cos(f, f^)) + KL(softmax(f^ f^^T / tau) || softmax(f f^^T / tau)), row mean.

    Rows are the whole batch, or only `local_slice` of it (columns always span the batch);
    each row's term depends on its own f row only, so slicing rows splits the gradient exactly.
    """
    rows = slice(None) if local_slice is None else local_slice
    with torch.autocast(f.device.type, enabled=False):
        f = F.normalize(f.float(), dim=1)
        target = F.normalize(target.detach().float(), dim=1)
        cosine = (f[rows] * target[rows]).sum(dim=1).mean()
        log_p = torch.log_softmax(target[rows] @ target.T / tau, dim=1)
        log_q = torch.log_softmax(f[rows] @ target.T / tau, dim=1)
        kl = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
        return (1 - cosine) + kl


class HRALMemory:
    """Two FIFO memories (query view, gallery view) of past detached descriptors.

    Ring buffers on the device of the first push; `state_dict` holds tensors only, in
    chronological order, so a resumed run sees exactly the same history.
    """

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError(f"HRAL memory capacity must be >= 1, got {capacity}")
        self._device: torch.device | None = None  # where `to` asked the buffers to live
        self._reset(int(capacity))

    def _reset(self, capacity: int) -> None:
        self.capacity = capacity
        self._q: Tensor | None = None
        self._g: Tensor | None = None
        self._next = 0  # slot the next item goes to
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, q: Tensor, g: Tensor) -> None:
        """Append one step's descriptors of both views (same shape), dropping the oldest beyond capacity."""
        check_pair(q, g, "HRALMemory.push")
        if self._q is not None and q.shape[1] != self._q.shape[1]:
            raise ValueError(f"descriptor size {q.shape[1]} does not match the memory's {self._q.shape[1]}")
        q, g = q.detach()[-self.capacity :], g.detach()[-self.capacity :]
        if self._q is None:  # stored in at least fp32, whatever precision the step ran in
            dtype = torch.promote_types(q.dtype, torch.float32)
            self._q = q.new_zeros(self.capacity, q.shape[1], dtype=dtype)
            self._g = g.new_zeros(self.capacity, g.shape[1], dtype=dtype)
        if self._q.device != q.device:  # follow the descriptors, e.g. after a CPU-side restore
            self.to(q.device)
        slots = (self._next + torch.arange(q.shape[0], device=self._q.device)) % self.capacity
        self._q[slots] = q.to(self._q)
        self._g[slots] = g.to(self._g)
        self._next = (self._next + q.shape[0]) % self.capacity
        self._size = min(self._size + q.shape[0], self.capacity)

    def history(self, m: int) -> tuple[Tensor | None, Tensor | None]:
        """The most recent min(m, stored) items of each view, oldest first; (None, None) when empty."""
        m = min(int(m), self._size)
        if m <= 0 or self._q is None:
            return None, None
        slots = (self._next - m + torch.arange(m, device=self._q.device)) % self.capacity
        return self._q[slots], self._g[slots]

    def to(self, device: torch.device | str) -> HRALMemory:
        """Keep the descriptors on `device` (also those of a later `load_state_dict`)."""
        self._device = torch.device(device)
        if self._q is not None:
            self._q, self._g = self._q.to(device), self._g.to(device)
        return self

    def state_dict(self) -> dict[str, Tensor]:
        q, g = self.history(self._size)
        if q is None:
            return {"capacity": torch.tensor(self.capacity)}
        return {"capacity": torch.tensor(self.capacity), "q": q.clone(), "g": g.clone()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        if "capacity" not in state:
            raise ValueError("HRAL memory state has no 'capacity' entry")
        capacity = int(state["capacity"])
        if capacity < 1:
            raise ValueError(f"HRAL memory state has capacity {capacity}; it must be >= 1")
        self._reset(capacity)
        if "q" in state:
            device = self._device or state["q"].device
            self.push(state["q"].to(device), state["g"].to(device))


class HRALLoss(nn.Module):
    """L_HRAL = (A(q, q^) + A(g, g^)) / 2 over the current batch; targets re-ranked with history."""

    def __init__(
        self, k: int = 15, k2: int = 6, alpha: float = 0.7, tau: float = 0.1, history: int = 512
    ) -> None:
        super().__init__()
        if tau <= 0 or history < 0:
            raise ValueError(f"HRAL needs tau > 0 and history >= 0, got tau={tau}, history={history}")
        self.k, self.k2, self.alpha, self.tau, self.history = k, k2, alpha, tau, history

    def extra_repr(self) -> str:
        return f"k={self.k}, k2={self.k2}, alpha={self.alpha}, tau={self.tau}, history={self.history}"

    def targets(self, q: Tensor, g: Tensor, memory: HRALMemory | None = None) -> tuple[Tensor, Tensor]:
        """Refined q^, g^ of the current batch; the memory's recent history shapes the neighbourhoods."""
        dtype = torch.promote_types(q.dtype, torch.float32)
        parts = [q.detach(), g.detach()]
        if memory is not None and self.history > 0:
            q_hist, g_hist = memory.history(self.history)
            if q_hist is not None:
                parts += [q_hist, g_hist]
        parts = [p.to(device=q.device, dtype=dtype) for p in parts]
        b = q.shape[0]
        refined = hral_refine(torch.cat(parts), self.k, self.k2, self.alpha, rows=2 * b)
        return refined[:b], refined[b:]

    def forward(
        self,
        q: Tensor,
        g: Tensor,
        memory: HRALMemory | None = None,
        local_slice: slice | None = None,
        update_memory: bool = True,
    ) -> Tensor:
        """Loss of the (global) batch q, g; with `local_slice`, the mean over those rows only.

        After the targets are computed the batch is pushed to `memory` (unless
        `update_memory` is False), so the next step sees it as history.
        """
        check_pair(q, g, "HRAL")
        if local_slice is not None:
            check_slice(local_slice, q.shape[0])
        q_hat, g_hat = self.targets(q, g, memory)
        loss = (alignment(q, q_hat, self.tau, local_slice) + alignment(g, g_hat, self.tau, local_slice)) / 2
        if memory is not None and update_memory:
            memory.push(q.detach(), g.detach())
        return loss
