"""Benchmark: HRAL alone at the default sizes, and seconds per full training step of SpikeViMFormer-T.

    .venv/bin/python benchmarks/train_step.py                 # CPU, all figures
    .venv/bin/python benchmarks/train_step.py --device cuda   # on a GPU
    .venv/bin/python benchmarks/train_step.py --skip-steps    # HRAL only (fast)
    .venv/bin/python benchmarks/train_step.py --layout        # NI-LIF estimator and tensor layout (CPU)

(1) HRAL at B = 64 pairs with 512 history items per view (N = 1152), 360-d (the small
    model's width): `hral_refine` of all N rows, of the 128 batch rows the loss needs, and
    the whole `HRALLoss` forward (refine + loss); median of repeated runs.
(2) One training step of the tiny model in train mode: both views forward, the full
    objective (InfoNCE + SSA + SHS + HRAL with 512 history items per view), backward,
    gradient clipping at 100, AdamW step; batch 8 pairs at 128x128 and 384x384.
(3) `--layout`: adapt's fine-tuning step (16 pairs at 64x64, 479 locations) three ways, interleaved round by
    round: NI-LIF's straight-through estimator as autograd's clamp/round composition (the previous code) in the
    default layout, the fused estimator the trainer uses, and the fused one on channels-last tensors (the
    trainer's CPU layout); medians and ratios to the first.

On a shared 2-core machine, 2 torch threads slow down many times over when other
processes compete for the cores (OpenMP oversubscription); compare with `--threads 1`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from spikevimformer import build_model
from spikevimformer.losses import HRALLoss, HRALMemory, Objective, hral_refine
from spikevimformer.models.neuron import NILIF


def timed(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> list[float]:
    """Wall seconds of `repeats` calls after `warmup` untimed ones (synchronising on CUDA)."""
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def hral_rows(device: torch.device, batch: int, history: int, dim: int, repeats: int) -> list[tuple]:
    gen = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(batch, dim, generator=gen), dim=1).to(device)
    g = torch.nn.functional.normalize(q.cpu() + 0.5 * torch.randn(batch, dim, generator=gen), dim=1).to(device)
    memory = HRALMemory()
    memory.push(*(torch.randn(history, dim, generator=gen).to(device) for _ in range(2)))
    stack = torch.cat([q, g, *memory.history(history)])
    loss_fn = HRALLoss(history=history)
    q_grad, g_grad = q.clone().requires_grad_(), g.clone().requires_grad_()
    n = stack.shape[0]
    cases = [
        (f"hral_refine, all {n} rows", lambda: hral_refine(stack)),
        (f"hral_refine, {2 * batch} batch rows", lambda: hral_refine(stack, rows=2 * batch)),
        ("HRALLoss forward (refine + loss)", lambda: loss_fn(q_grad, g_grad, memory, update_memory=False)),
        ("HRALLoss forward + backward", lambda: loss_fn(q_grad, g_grad, memory, update_memory=False).backward()),
    ]
    rows = []
    for name, fn in cases:
        times = timed(fn, repeats, warmup=3, device=device)
        rows.append((name, f"N={n}, d={dim}", len(times), statistics.median(times) * 1e3, min(times) * 1e3, "ms"))
    return rows


def step_row(device: torch.device, size: int, batch: int, repeats: int, history: int) -> tuple:
    torch.manual_seed(0)
    num_classes = 701  # University-1652 training locations
    model = build_model("tiny", num_classes=num_classes).to(device).train()
    objective = Objective(hral_history=history)
    memory = objective.make_memory()
    dim = model.descriptor_dim
    memory.push(
        torch.nn.functional.normalize(torch.randn(history, dim, device=device), dim=1),
        torch.nn.functional.normalize(torch.randn(history, dim, device=device), dim=1),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    images_q = torch.randn(batch, 3, size, size, device=device)
    images_g = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randperm(num_classes, device=device)[:batch]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        out_q, out_g = model(images_q), model(images_g)
        total, _ = objective(out_q, out_g, labels, model.logit_scale, memory)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        optimizer.step()

    times = timed(step, repeats, warmup=1, device=device)
    median = statistics.median(times)
    label = f"train step tiny {size}x{size}"
    return (label, f"{batch} pairs, {batch / median:.2f} pairs/s", len(times), median, min(times), "s")


def unfused_fire(self: NILIF, u: torch.Tensor) -> torch.Tensor:
    """NI-LIF's count before the fused estimator: the same values and gradient, built from clamp and round."""
    if not (self.training and torch.is_grad_enabled() and u.requires_grad):
        return u.round().clamp(0, self.levels)
    uc = u.clamp(0, self.levels)
    return uc + (uc.round() - uc).detach()


def layout_rows(device: torch.device, rounds: int) -> list[tuple]:
    torch.manual_seed(0)
    batch, size, num_classes = 16, 64, 479
    model = build_model("tiny", num_classes=num_classes).to(device).train()
    objective = Objective()
    memory = objective.make_memory()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    images = torch.randn(2, batch, 3, size, size, device=device)
    labels = torch.randperm(num_classes, device=device)[:batch]
    fused = NILIF._fire
    ways = {"unfused NI-LIF, default layout": (unfused_fire, torch.contiguous_format),
            "fused NI-LIF, default layout": (fused, torch.contiguous_format),
            "fused NI-LIF, channels-last": (fused, torch.channels_last)}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, (fire, layout) in ways.items():
            NILIF._fire = fire
            model.to(memory_format=layout)
            q, g = (x.contiguous(memory_format=layout) for x in images)

            def step(q: torch.Tensor = q, g: torch.Tensor = g) -> None:
                optimizer.zero_grad(set_to_none=True)
                total, _ = objective(model(q), model(g), labels, model.logit_scale, memory)
                total.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
                optimizer.step()

            times[name].append(statistics.median(timed(step, 3, warmup=1, device=device)))
    NILIF._fire = fused
    first = statistics.median(times[next(iter(ways))])
    return [(name, f"{batch} pairs {size}px, x{first / statistics.median(t):.2f}", len(t), statistics.median(t),
             min(t), "s") for name, t in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--hral-repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8, help="pairs per training step")
    parser.add_argument("--repeats-128", type=int, default=5)
    parser.add_argument("--repeats-384", type=int, default=2)
    parser.add_argument("--skip-steps", action="store_true", help="only time HRAL")
    parser.add_argument("--layout", action="store_true", help="only the NI-LIF estimator and layout comparison")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds of --layout")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    if args.layout:
        rows = layout_rows(device, args.rounds)
    else:
        rows = hral_rows(device, batch=64, history=512, dim=360, repeats=args.hral_repeats)
    if not args.skip_steps and not args.layout:
        rows.append(step_row(device, 128, args.batch, args.repeats_128, history=512))
        rows.append(step_row(device, 384, args.batch, args.repeats_384, history=512))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, device {name}, torch threads {torch.get_num_threads()}")
    print(f"{'what':38} {'size':30} {'runs':>4} {'median':>10} {'min':>10}")
    for what, size, runs, median, best, unit in rows:
        print(f"{what:38} {size:30} {runs:>4} {median:>8.3f} {unit:<1} {best:>8.3f} {unit:<1}")


if __name__ == "__main__":
    main()
