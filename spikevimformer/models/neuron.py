"""NI-LIF: the normalized integer leaky integrate-and-fire neuron, and spike statistics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


class _CountSTE(torch.autograd.Function):
    """round(clip(u, 0, D)) forward, gradient 1 inside [0, D] and 0 outside: one saved mask instead of autograd's
    record of clamp, round, subtract and add (fewer element-wise passes per training step)."""

    @staticmethod
    def forward(ctx, u: Tensor, levels: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward((u >= 0) & (u <= levels))
        return u.round().clamp_(0, levels)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside, None


class NILIF(nn.Module):
    r"""Normalized integer LIF neuron (NI-LIF).

    Per element and time step t, with the same static input X fed at every step:

        U[t] = H[t-1] + X                     (charge)
        S[t] = clip(round(U[t]), 0, D) / D    (fire an integer count 0..D, normalised)
        H[t] = beta * (U[t] - D * S[t])       (reset by subtraction, then leak)

    and the output is the mean of S[t] over the T steps. With the default T = 1, D = 4
    ("1x4", the E-SpikeFormer checkpoints) this is exactly ``round(clip(x, 0, 4)) / 4``
    and runs as one element-wise expression.

    Backward is a straight-through estimator: d round(clip(u, 0, D)) / du = 1 for
    0 <= u <= D and 0 outside, so dS/dU = 1/D in the window. The reset is detached.
    At inference an integer count s is read as s binary spikes over D virtual steps, so
    the layer that consumes it only accumulates.
    """

    def __init__(self, levels: int = 4, time_steps: int = 1, leak: float = 0.5) -> None:
        super().__init__()
        if levels < 1 or time_steps < 1:
            raise ValueError(f"NI-LIF needs levels >= 1 and time_steps >= 1, got D={levels}, T={time_steps}")
        self.levels = int(levels)
        self.time_steps = int(time_steps)
        self.leak = float(leak)

    def extra_repr(self) -> str:
        return f"T={self.time_steps}, D={self.levels}, leak={self.leak}"

    def _fire(self, u: Tensor) -> Tensor:
        """Integer spike count of membrane u, with the straight-through gradient when needed."""
        if not (self.training and torch.is_grad_enabled() and u.requires_grad):
            return u.round().clamp(0, self.levels)
        return _CountSTE.apply(u, self.levels)

    def forward(self, x: Tensor) -> Tensor:
        if self.time_steps == 1:
            return self._fire(x) / self.levels
        membrane = torch.zeros_like(x)
        total = torch.zeros_like(x)
        for _ in range(self.time_steps):
            u = membrane + x
            s = self._fire(u)
            total = total + s
            membrane = self.leak * (u - s.detach())
        return total / (self.levels * self.time_steps)


@dataclass
class SpikeStats:
    """Running sums for one NI-LIF layer; kept on the device, read once at the end."""

    elements: int = 0
    spikes: Tensor | None = None
    histogram: Tensor | None = None
    levels: int = 4
    time_steps: int = 1

    @property
    def rate(self) -> float:
        """Mean integer spike count per element and time step, times T (the energy model's r)."""
        return 0.0 if not self.elements else float(self.spikes) / self.elements


@dataclass
class SpikeRecorder:
    """Per-layer spike statistics gathered by forward hooks while the context is open."""

    stats: dict[str, SpikeStats] = field(default_factory=dict)

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            name: {
                "elements": s.elements,
                "spikes": float(s.spikes) if s.spikes is not None else 0.0,
                "rate": s.rate,
                "histogram": [] if s.histogram is None else [int(v) for v in s.histogram.tolist()],
            }
            for name, s in self.stats.items()
        }


@contextmanager
def record_spikes(model: nn.Module, histogram: bool = False) -> Iterator[SpikeRecorder]:
    """Collect elements seen and integer spike counts of every NI-LIF in ``model``.

    Statistics live outside the neurons: hooks are attached on entry and removed on exit,
    so the neuron itself pays nothing when no recorder is open. With ``histogram`` the
    counts of each total spike count 0..D*T per element are kept too.
    """
    recorder = SpikeRecorder()
    handles = []
    for name, module in model.named_modules():
        if not isinstance(module, NILIF):
            continue
        stats = recorder.stats.setdefault(
            name, SpikeStats(levels=module.levels, time_steps=module.time_steps)
        )

        def hook(mod: NILIF, inputs: tuple[Tensor, ...], out: Tensor, stats: SpikeStats = stats) -> None:
            with torch.no_grad():
                counts = out.detach().float() * (mod.levels * mod.time_steps)
                total = counts.sum()
                stats.spikes = total if stats.spikes is None else stats.spikes + total
                stats.elements += out.numel()
                if histogram:
                    top = mod.levels * mod.time_steps
                    levels = torch.bincount(counts.round().clamp(0, top).long().flatten(), minlength=top + 1)
                    stats.histogram = levels if stats.histogram is None else stats.histogram + levels

        handles.append(module.register_forward_hook(hook))
    try:
        yield recorder
    finally:
        for h in handles:
            h.remove()
