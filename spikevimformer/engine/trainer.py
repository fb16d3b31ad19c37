"""The training loop: pairs of views, the four objectives, DDP, AMP, checkpoints and exact resume."""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from collections import deque
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..checkpoint import (
    CheckpointError,
    detect_variant,
    load_checkpoint,
    load_official_backbone,
    read_init,
    save_checkpoint,
)
from ..data import (
    Benchmark,
    ImageSet,
    PairDataset,
    TrainPairs,
    UniqueLocationBatchSampler,
    eval_transform,
    load_benchmark,
    merge_train_pairs,
    train_pair_transform,
)
from ..data.loader import batches
from ..device import resolve_device
from ..fileio import folder_lock
from ..losses import CollapseWatch, Objective, pair_spread
from ..losses.collapse import PAPER_SSA_HINT
from ..models import SpikeViMFormer, build_model
from ..models.spikevimformer import ModelOutput
from ..progress import progress_bar
from .config import TrainConfig, save_config
from .distributed import DistInfo, all_reduce_mean, cleanup, init_distributed
from .evaluate import evaluate_sets, extract
from .runlog import RunLog
from .schedule import warmup_cosine, warmup_steps
from .signals import Interrupted, StopSignals, ignore_stop_signals
from .threads import ThreadGovernor

EVAL_MARGIN = 1.25  # an evaluation's expected time, stretched: a busy CPU made one a fifth slower than its probe


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class _GatherRows(torch.autograd.Function):
    """All-gather rows in rank order; backward sums every rank's gradient back to each owner."""

    @staticmethod
    def forward(ctx, x: Tensor, rank: int, world: int) -> Tensor:  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rows, ctx.rank = x.shape[0], rank
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None, None


def gather_rows(x: Tensor, info: DistInfo) -> Tensor:
    return _GatherRows.apply(x, info.rank, info.world_size) if info.enabled else x


class PairForward(nn.Module):
    """Both views through the shared model in one call, so DDP sees one forward per backward."""

    def __init__(self, model: SpikeViMFormer) -> None:
        super().__init__()
        self.model = model

    def forward(self, drone: Tensor, satellite: Tensor):
        return self.model(drone), self.model(satellite)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "gauss": [int(np_state[3]), float(np_state[4])]},
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["gauss"][0], n["gauss"][1]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def split_validation(
    pairs: TrainPairs, count: int, seed: int
) -> tuple[TrainPairs, dict[str, tuple[ImageSet, ImageSet]]]:
    """Hold out `count` training locations: their drone views query their satellite tiles."""
    if count <= 0:
        return pairs, {}
    if count >= len(pairs.classes):
        raise ValueError(f"val_locations={count} leaves no training location out of {len(pairs.classes)}")
    held = set(np.random.default_rng(seed).permutation(len(pairs.classes))[:count].tolist())
    keep = [c for c in range(len(pairs.classes)) if c not in held]
    remap = {old: new for new, old in enumerate(keep)}
    train = TrainPairs([(s, d, remap[c]) for s, d, c in pairs.pairs if c in remap], [pairs.classes[c] for c in keep])
    held_pairs = [(s, d, c) for s, d, c in pairs.pairs if c in held]
    sats = sorted({(s, c) for s, _, c in held_pairs})
    query = ImageSet("val_drone", [d for _, d, _ in held_pairs], np.array([c for *_, c in held_pairs], dtype=np.int64))
    gallery = ImageSet("val_satellite", [s for s, _ in sats], np.array([c for _, c in sats], dtype=np.int64))
    return train, {"val_drone2satellite": (query, gallery)}


def _freeze_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


class Trainer:
    """Builds everything a run needs from a `TrainConfig`; `fit()` trains and returns the final metrics."""

    clock = staticmethod(time.monotonic)  # the time limit's clock; tests replace it

    def __init__(self, cfg: TrainConfig, resume: str | Path | None = None, progress: bool = True,
                 resume_hint: str | None = None) -> None:  # fmt: skip
        self.created = self.clock()  # a time limit counts from here: loading data and model is part of the run
        self.cfg = cfg
        self.progress = progress
        self.resume_hint = resume_hint or f"--resume {cfg.out_dir}"  # what to type after Ctrl-C
        device_type = resolve_device(cfg.device).type
        self.dist = init_distributed(device_type)
        self.device = torch.device("cuda", self.dist.local_rank) if device_type == "cuda" else torch.device("cpu")
        if device_type == "cuda":
            torch.cuda.set_device(self.device)
        if cfg.anneal_by not in ("steps", "time"):
            raise ValueError(f"anneal_by must be steps or time, got {cfg.anneal_by!r}")
        if cfg.anneal_by == "time" and not cfg.time_limit_min:
            raise ValueError("anneal_by=time needs a time budget: set time_limit_min")
        if cfg.batch_size % self.dist.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {self.dist.world_size} ranks")
        self.out_dir = Path(cfg.out_dir)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)

        self.bench: Benchmark = load_benchmark(cfg.data_root, cfg.dataset, cfg.altitude)
        parts = [self.bench.train] + [load_benchmark(r, self.bench.name, cfg.altitude).train
                                      for r in cfg.extra_train_roots]
        for root, part in zip([cfg.data_root, *cfg.extra_train_roots], parts, strict=True):
            if part is None or not len(part):
                raise ValueError(f"{root} has no training pairs (train split missing or empty)")
        self.train_pairs, self.val_sets = split_validation(merge_train_pairs(parts), cfg.val_locations, cfg.seed)
        num_classes = len(self.train_pairs.classes)
        if cfg.batch_size > num_classes:
            raise ValueError(f"batch_size {cfg.batch_size} exceeds the {num_classes} training locations "
                             "(a batch holds each location at most once)")

        self.model = build_model(cfg.variant, num_classes, time_steps=cfg.time_steps, levels=cfg.levels)
        self.model.classifier.embed[2].p = cfg.shs_dropout
        if resume is None and cfg.init != "scratch":
            self._initialise(cfg.init)
        # oneDNN's convolutions run faster on channels-last tensors (1.09x per CPU step, benchmarks/train_step.py
        # --layout); CUDA keeps the default layout (not measured there)
        self.layout = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.model.to(self.device, memory_format=self.layout)
        self.net: nn.Module = PairForward(self.model)
        if self.dist.enabled:
            if self.device.type == "cuda" and cfg.sync_bn and cfg.bn == "batch":
                self.net = nn.SyncBatchNorm.convert_sync_batchnorm(self.net)
            # A zero-weight term leaves its branch's parameters without gradient; DDP must be told.
            unused = min(cfg.w_infonce, cfg.w_ssa, cfg.w_shs) == 0
            self.net = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=unused,
            )

        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]  # norms, biases, logit scale, SHS A/delta
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
        )
        self.sampler = UniqueLocationBatchSampler(
            self.train_pairs.labels, cfg.batch_size, seed=cfg.seed, rank=self.dist.rank,
            world_size=self.dist.world_size, seeded=cfg.augment,
        )
        self.steps_per_epoch = len(self.sampler)
        self.total_steps = _planned_steps(self.train_pairs.labels, cfg.batch_size, cfg.seed, cfg.epochs)
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.warmup = warmup_steps(self.total_steps, cfg.warmup, cfg.warmup_min_steps)
        self.seconds = 0.0  # wall time of fit() over all sessions (steps, saves, evaluations), equal on all ranks
        self.warm_seconds: float | None = None  # `seconds` when warm-up ended
        self.eval_seconds_per_image: float | None = None  # measured by a probe or the last evaluation
        self.reserve = 0.0  # seconds of a time limit kept for the final evaluation
        self.scheduler = warmup_cosine(self.optimizer, self.total_steps, self.warmup,
                                       time_share=self._time_share if cfg.anneal_by == "time" else None)
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.objective = Objective(cfg.objective())
        self.memory = self.objective.make_memory().to(self.device)
        # warns once per branch and session when an output stops varying
        self.collapse = CollapseWatch(hints={"ssa": PAPER_SSA_HINT} if cfg.ssa_objective == "paper" else {})
        transform = train_pair_transform(cfg.image_size, seed=cfg.seed) if cfg.augment else _PlainPair(cfg.image_size)
        self.dataset = PairDataset(self.train_pairs, transform, on_bad_image=cfg.on_bad_image)
        self.step = 0
        self.epoch = 0
        self.batches_done = 0  # within the current epoch
        self.best: float | None = None
        self.history: list[dict[str, Any]] = []
        if resume is not None:
            self._resume(Path(resume))

    # -- set-up ---------------------------------------------------------------------------------------
    def _initialise(self, path: str) -> None:
        """Backbone from an E-SpikeFormer ImageNet checkpoint, or the whole model from one of ours (.pt, a release
        file, or a shipped release's name such as `pretrained`)."""
        kind, state, trained_ssa = read_init(path)
        if kind == "official":
            found = detect_variant(state)
            if found is not None and found != self.cfg.variant:
                raise CheckpointError(f"--init {path} holds the E-SpikeFormer {found} backbone, not "
                                      f"{self.cfg.variant}; pass --variant {found}")  # fmt: skip
            load_official_backbone(self.model, state, path)
            return
        own = self.model.state_dict()
        backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        found = detect_variant(backbone)
        if found is not None and found != self.cfg.variant:
            raise CheckpointError(f"--init {path} holds a {found} model, not {self.cfg.variant}; pass --variant "
                                  f"{found} (or --init a {self.cfg.variant} checkpoint)")  # fmt: skip
        # Our checkpoint may come from a world with another number of classes: keep all but the classifier's head.
        state = {k: v for k, v in state.items() if not (k.startswith("classifier.fc.") and v.shape != own[k].shape)}
        fresh = self.cfg.fresh_ssa == "always" or (self.cfg.fresh_ssa == "auto"
                                                   and trained_ssa not in (None, self.cfg.ssa_objective))
        if fresh:
            state = {k: v for k, v in state.items() if not k.startswith("ssa.")}
            if self.cfg.fresh_ssa == "auto" and self.dist.is_main:
                print(f"note: the SSA branch of {path} was trained with the {trained_ssa} L_SSA, this run uses "
                      f"{self.cfg.ssa_objective}: it starts afresh (--set fresh_ssa=never keeps it)", file=sys.stderr)
        wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
        if wrong:
            raise CheckpointError(f"--init {path} does not fit the {self.cfg.variant} model: {len(wrong)} tensors "
                                  f"differ in shape (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} vs "
                                  f"{tuple(own[wrong[0]].shape)})")  # fmt: skip
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        left = ("classifier.fc.", "ssa.") if fresh else ("classifier.fc.",)
        if unexpected or any(not k.startswith(left) for k in missing):
            raise CheckpointError(f"{path} does not fit the {self.cfg.variant} model: missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]}")

    def _amp_dtype(self) -> torch.dtype | None:
        amp = self.cfg.amp
        if amp == "auto":
            return torch.bfloat16 if self.device.type == "cuda" else None
        if amp == "off":
            return None
        if amp not in ("bf16", "fp16"):
            raise ValueError(f"amp must be auto, bf16, fp16 or off, got {amp!r}")
        return torch.bfloat16 if amp == "bf16" else torch.float16

    # -- checkpoints ----------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(batches_done=self.batches_done),
            "memory": self.memory.state_dict(),
            "rng": _rng_state(),
            "progress": {"step": self.step, "epoch": self.epoch, "batches_done": self.batches_done,
                         "best": self.best, "seconds": self.seconds, "warm_seconds": self.warm_seconds},
            "history": self.history,
        }

    def save(self, name: str = "last.pt", metrics: dict[str, Any] | None = None) -> Path | None:
        """last.pt holds everything an exact resume needs; best.pt only what inference and fine-tuning need (the
        weights, training-only heads in fp16, config and metrics; no optimizer moments or HRAL memory: a third of
        the size)."""
        if not self.dist.is_main:
            return None
        resumable = name == "last.pt"
        return save_checkpoint(self.out_dir / name, self.model, optimizer=self.optimizer if resumable else None,
                               config=self.cfg.to_dict(), metrics=metrics or {},
                               extra={"train_state": self._state()} if resumable else None,
                               half_heads=not resumable)  # fmt: skip

    def _resume(self, run_dir: Path) -> None:
        """Restores weights, optimiser, schedule, sampler position, HRAL memory and the global RNGs; each
        sample's augmentation comes from its own seed, so the continued run is the uninterrupted one."""
        path = run_dir / "last.pt" if run_dir.is_dir() else run_dir
        payload = load_checkpoint(path)
        if "train_state" not in payload or "optimizer" not in payload:
            raise CheckpointError(f"{path} holds weights only (like best.pt), not a resumable run: resume from "
                                  "last.pt, or start a new run from these weights with --init")  # fmt: skip
        try:
            self.model.load_state_dict(payload["model"], strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path} does not match this run's model: {exc}") from exc
        self.optimizer.load_state_dict(payload["optimizer"])
        st = payload["train_state"]
        self.scheduler.load_state_dict(st["scheduler"])
        self.scaler.load_state_dict(st["scaler"])
        self.sampler.load_state_dict(st["sampler"])
        self.memory.load_state_dict(st["memory"])
        _set_rng_state(st["rng"])
        p = st["progress"]
        self.step, self.epoch, self.batches_done, self.best = p["step"], p["epoch"], p["batches_done"], p["best"]
        self.seconds, self.warm_seconds = p.get("seconds", 0.0), p.get("warm_seconds")
        self.history = list(st.get("history", []))

    def _time_share(self) -> float:
        """Share of the time budget used since warm-up ended (anneal_by=time)."""
        if self.warm_seconds is None:
            return 0.0
        budget = 60 * self.cfg.time_limit_min - self.reserve
        return (self.seconds - self.warm_seconds) / max(budget - self.warm_seconds, 1e-9)

    def _eval_image_sets(self) -> list[ImageSet]:
        """The image sets an evaluation encodes, each once (as `evaluate_sets` does)."""
        return list({id(s): s for pair in {**self.val_sets, **self.bench.test}.values() for s in pair}.values())

    def _eval_seconds(self) -> float:
        """Expected seconds of one evaluation: images x seconds per image, from the last evaluation or, before one,
        from a probe of two batches of test images (decoded in this process: slower than the evaluation's
        workers, so the estimate errs long)."""
        sets = self._eval_image_sets()
        if self.eval_seconds_per_image is None:
            largest = max(sets, key=len)
            n = min(len(largest), 2 * self.cfg.eval_batch_size)
            probe = ImageSet(largest.name, largest.paths[:n], largest.labels[:n])
            tick = self.clock()
            extract(self.model, probe, self.cfg.image_size, self.device, self.cfg.eval_batch_size, 0,
                    progress=False, on_bad_image=self.cfg.on_bad_image)  # fmt: skip
            self.eval_seconds_per_image = self._agreed((self.clock() - tick) / max(n, 1))[0]
        return EVAL_MARGIN * self.eval_seconds_per_image * sum(map(len, sets))

    # -- one step -------------------------------------------------------------------------------------
    def train_step(self, drone: Tensor, satellite: Tensor, labels: Tensor) -> dict[str, float]:
        self.net.train()
        if self.cfg.bn == "frozen":
            _freeze_bn(self.net)
        drone, satellite = (t.to(self.device, non_blocking=True, memory_format=self.layout) for t in (drone, satellite))
        labels = labels.to(self.device, non_blocking=True)
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            out_q, out_g = self.net(drone, satellite)
        extra: dict[str, Any] = {}
        if self.dist.enabled:
            b = drone.shape[0]
            extra = {"global_q": gather_rows(out_q.descriptor.float(), self.dist),
                     "global_g": gather_rows(out_g.descriptor.float(), self.dist),
                     "global_ssa_q": gather_rows(out_q.ssa_descriptor.float(), self.dist),
                     "global_ssa_g": gather_rows(out_g.ssa_descriptor.float(), self.dist),
                     "local_slice": slice(self.dist.rank * b, (self.dist.rank + 1) * b)}
        total, terms = self.objective(out_q, out_g, labels, self.model.logit_scale, self.memory, **extra)
        if not torch.isfinite(total):
            raise NonFiniteLoss(f"loss became {total.item()} at step {self.step + 1}; "
                                f"terms {({k: float(v) for k, v in terms.items()})}; last good checkpoint kept")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1  # fit() moves the schedule on, once the ranks agree on the clock
        values = {"loss": total.detach(), **terms, **_spreads(out_q, out_g)}
        means = all_reduce_mean(torch.stack([v.detach().float() for v in values.values()]), self.dist).tolist()
        return dict(zip(values, means, strict=True)) | {"grad_norm": float(grad_norm)}

    # -- evaluation -----------------------------------------------------------------------------------
    def evaluate(self) -> list[dict[str, Any]]:
        sets = {**self.val_sets, **self.bench.test}
        rows = evaluate_sets(self.model, sets, self.cfg.image_size, self.device, protocols=("paper",),
                             batch_size=self.cfg.eval_batch_size, workers=min(self.cfg.workers, 2),
                             progress=self.progress, on_bad_image=self.cfg.on_bad_image)
        return rows

    def _selection_score(self, rows: list[dict[str, Any]]) -> tuple[float, str]:
        """Validation R@1 when a validation split exists, else the test D->S R@1 (flagged as such)."""
        for key in ("val_drone2satellite", "drone2satellite"):
            row = next((r for r in rows if r["direction"] == key), None)
            if row is not None:
                return float(row["R@1"]), key
        return float("nan"), "none"

    # -- the loop -------------------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        # Its own generator: creating the iterator then draws the workers' base seed from (seed, epoch, rank),
        # not from the global RNG, so a resumed run's random stream (dropout, ...) continues unchanged.
        mix = np.random.SeedSequence([self.cfg.seed, self.epoch, self.dist.rank]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(mix))
        return DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=self.cfg.workers,
                          pin_memory=self.device.type == "cuda", persistent_workers=False, generator=generator,
                          worker_init_fn=ignore_stop_signals if self.cfg.workers else None)

    def _announce(self) -> None:
        c, d = self.cfg, self.dist
        bound = f" (at most {self.total_steps} steps)" if c.max_steps else ""  # the epochs' bound says nothing
        look = (f" (look-alike groups: {c.similar_locations} of each location's {c.similar_pool} nearest)"
                if c.similar_locations else "")
        length = (f"cosine over {c.time_limit_min:g} min{bound}" if c.anneal_by == "time"
                  else f"{self.total_steps} steps in total")  # fmt: skip
        print(f"training {c.variant} on {c.data_root} ({self.bench.name} layout, {len(self.train_pairs.classes)} "
              f"locations, {len(self.train_pairs)} pairs) at {c.image_size}px on {self.device} x {d.world_size} "
              f"rank(s)\nglobal batch {c.batch_size} pairs ({c.batch_size // d.world_size} per rank), "
              f"{self.steps_per_epoch} steps/epoch, {length}, warm-up {self.warmup}; "
              f"negatives per query {c.batch_size - 1} in-batch{look} + HRAL history {c.hral_history}/view; "
              f"amp {self.amp_dtype or 'off'}; run folder {self.out_dir}", flush=True)

    def fit(self) -> dict[str, Any]:
        """Train to the configured end (epochs, max_steps or time limit); returns the final evaluation."""
        cfg = self.cfg
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out_dir / "config.yaml")
            self._announce()
        log = None
        if self.dist.is_main:
            log = RunLog(self.out_dir / "log.csv", resume_step=self.step if self.step else None)
        start, seconds_before = self.created, self.seconds
        budget = 60 * cfg.time_limit_min
        if budget and cfg.final_eval:
            self.reserve = self._eval_seconds()
            if self.reserve > budget / 2 and self.dist.is_main:
                print(f"note: the final evaluation is expected to take {self.reserve / 60:.1f} of the "
                      f"{cfg.time_limit_min:g} min time limit, which counts it; training gets the rest (raise "
                      "--time-limit, or --set final_eval=false)", file=sys.stderr)  # fmt: skip
        spent = cfg.anneal_by == "time" and self.seconds >= budget - self.reserve
        if spent and self.dist.is_main:
            print(f"the run's time budget of {cfg.time_limit_min:g} min is spent; a larger one (train --time-limit, "
                  "adapt --minutes) trains on (the rate rises again to the cosine at the new share of the budget)",
                  file=sys.stderr)  # fmt: skip
        stop_reason = "time limit" if spent else "finished"
        stop = StopSignals(escalate=not self.dist.enabled)
        steps_s: deque[float] = deque(maxlen=5)  # the last steps' durations predict the next one
        threads = torch.get_num_threads()
        on_cpu = cfg.yield_cpu and self.device.type == "cpu"
        governor = ThreadGovernor(threads, torch.set_num_threads) if on_cpu else None
        try:
            while not spent and self.epoch < cfg.epochs and self.step < self.total_steps:
                self.sampler.set_epoch(self.epoch)  # the same epoch again keeps a resumed position
                if cfg.similar_locations and self.batches_done == 0:
                    self.sampler.set_neighbours(self._look_alikes(), cfg.similar_locations)
                per_epoch = len(self.sampler)
                bar = progress_bar(total=per_epoch, initial=self.batches_done, desc=f"epoch {self.epoch + 1}",
                                   progress=self.progress and self.dist.is_main, dynamic_ncols=True)
                tick = self.clock()
                for drone, satellite, labels in batches(self._loader()):
                    lr = self.optimizer.param_groups[0]["lr"]
                    values = self.train_step(drone, satellite, labels)
                    self.batches_done += 1
                    now = self.clock()
                    # every rank must leave at the same step and set the same rate, whatever its own clock says
                    halt, session = self._agreed(float(stop.requested), now - start)
                    steps_s.append(seconds_before + session - self.seconds)
                    self.seconds = seconds_before + session
                    if self.warm_seconds is None and self.step >= self.warmup:
                        self.warm_seconds = self.seconds
                    self.scheduler.step()
                    used = self.seconds if cfg.anneal_by == "time" else session
                    # stop before a step that would end past the budget less the final evaluation's share
                    out_of_time = bool(budget) and used + median(steps_s) + self.reserve > budget
                    row = {"step": self.step, "epoch": self.epoch + 1, "lr": lr,
                           **values, "pairs_per_s": cfg.batch_size / max(now - tick, 1e-9),
                           "logit_scale": float(self.model.logit_scale.detach().exp())}
                    spreads = {k.removeprefix("spread_"): v for k, v in values.items() if k.startswith("spread_")}
                    for warning in self.collapse.observe(self.step, spreads):
                        if self.dist.is_main:
                            bar.write(f"warning: {warning}", file=sys.stderr)
                    note = governor.observe(now - tick) if governor else None
                    if note and self.dist.is_main:
                        bar.write(f"note: {note}", file=sys.stderr)
                    tick = now
                    if log is not None and self.step % cfg.log_every_steps == 0:
                        log.log(row)
                    bar.update(1)
                    bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{lr:.2e}")
                    if cfg.save_every_steps and self.step % cfg.save_every_steps == 0:
                        self.save()
                    if halt:
                        stop_reason = "interrupted"
                        break
                    if self.step >= self.total_steps or out_of_time:
                        stop_reason = "time limit" if out_of_time and self.step < self.total_steps else "finished"
                        break
                bar.close()
                if self.batches_done >= per_epoch:  # also when stopped on an epoch's last step
                    self.epoch += 1
                    self.batches_done = 0
                    if (stop_reason != "interrupted" and cfg.eval_every_epochs
                            and self.epoch % cfg.eval_every_epochs == 0 and self.epoch < cfg.epochs):
                        self._epoch_eval_in_budget(budget, start, seconds_before)
                if stop_reason == "interrupted":
                    raise KeyboardInterrupt  # saved below at this step boundary
                if stop_reason != "finished":
                    break
        except KeyboardInterrupt:
            self.save()
            print(f"\ninterrupted at step {self.step}: saved {self.out_dir / 'last.pt'}; "
                  f"continue with {self.resume_hint}", file=sys.stderr)
            raise Interrupted from None
        finally:
            stop.restore()
            torch.set_num_threads(threads)
            if log is not None:
                log.close()
        final_rows: list[dict[str, Any]] = []
        if cfg.final_eval:
            self.save()  # the steps are safe before a long evaluation starts
            final_rows = self._epoch_eval(save_last=False)
        self.save(metrics={"final": final_rows})
        cleanup(self.dist)
        return {"steps": self.step, "epochs": self.epoch, "stop_reason": stop_reason, "metrics": final_rows,
                "seconds": self.clock() - start, "collapsed": dict(self.collapse.flagged)}

    def _look_alikes(self) -> np.ndarray:
        """(locations x similar_pool) each training location's nearest others by the current model's satellite
        descriptors; computed on the main rank and sent to the others, so every rank plans the same batches."""
        cfg = self.cfg
        count = len(self.train_pairs.classes)  # every class index has pairs, so row c is location c
        table = torch.zeros(count, min(cfg.similar_pool, count - 1), dtype=torch.int64)
        if self.dist.is_main:
            tile = {}
            for satellite, _, location in self.train_pairs.pairs:
                tile.setdefault(int(location), satellite)
            tiles = ImageSet("train_satellite", [tile[c] for c in range(count)], np.arange(count))
            d = torch.from_numpy(extract(self.model, tiles, cfg.image_size, self.device, cfg.eval_batch_size,
                                         min(cfg.workers, 2), progress=False, on_bad_image=cfg.on_bad_image))
            similarity = d @ d.T
            similarity.fill_diagonal_(-math.inf)
            table = similarity.topk(table.shape[1], dim=1).indices
        if self.dist.enabled:
            table = table.to(self.device)
            dist.broadcast(table, src=0)
        return table.cpu().numpy()

    def _agreed(self, *values: float) -> tuple[float, ...]:
        """The largest value over the ranks: ranks that disagree on a stop would wait on each other forever."""
        if not self.dist.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return tuple(t.tolist())

    def _epoch_eval_in_budget(self, budget: float, start: float, seconds_before: float) -> None:
        """An epoch's evaluation, unless it would leave the time limit no room for the final one."""
        if budget:
            session = self.clock() - start
            used = seconds_before + session if self.cfg.anneal_by == "time" else session
            if used + self._eval_seconds() + self.reserve > budget:
                if self.dist.is_main:
                    print(f"epoch {self.epoch}: evaluation skipped, the time limit keeps its last "
                          f"{self.reserve / 60:.1f} min for the final one", file=sys.stderr)  # fmt: skip
                return
        self._epoch_eval()

    def _epoch_eval(self, save_last: bool = True) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        if self.dist.is_main:
            tick = self.clock()
            rows = self.evaluate()
            self.eval_seconds_per_image = (self.clock() - tick) / max(sum(map(len, self._eval_image_sets())), 1)
            score, selected_on = self._selection_score(rows)
            self.history.append({"step": self.step, "epoch": self.epoch, "metrics": rows})
            if not math.isnan(score) and (self.best is None or score > self.best):
                self.best = score
                self.save("best.pt", metrics={"selection": selected_on, "R@1": score, "rows": rows})
            if save_last:
                self.save(metrics={"rows": rows})
        if self.dist.enabled:
            dist.barrier()
        return rows


def _spreads(out_q: ModelOutput, out_g: ModelOutput) -> dict[str, Tensor]:
    """Batch spread of each descriptor (losses/collapse.py), logged beside the loss terms: 0 means collapsed.

    The SHS logits are left out: a freshly initialised classifier's logits are its bias (fc weights of std 1e-3),
    so their spread starts near 0 without any collapse, and its input is batch-normalised, which keeps it varying.
    """
    return {"spread_descriptor": pair_spread(out_q.descriptor, out_g.descriptor),
            "spread_ssa": pair_spread(out_q.ssa_descriptor, out_g.ssa_descriptor)}


class _PlainPair:
    """No augmentation: the evaluation transform on both views."""

    def __init__(self, image_size: int) -> None:
        self.transform = eval_transform(image_size)

    def __call__(self, drone: np.ndarray, satellite: np.ndarray) -> tuple[Tensor, Tensor]:
        return self.transform(drone), self.transform(satellite)


def _planned_steps(labels: np.ndarray, batch_size: int, seed: int, epochs: int) -> int:
    """Exact number of batches over all epochs (it can vary by one or so between epochs)."""
    probe = UniqueLocationBatchSampler(labels, batch_size, seed=seed)
    total = 0
    for epoch in range(epochs):
        probe.set_epoch(epoch)
        total += len(probe)
    return total


RUN_FILES = ("last.pt", "best.pt")  # a folder holding one holds a run; config.yaml and log.csv alone do not


def check_run_folder(out_dir: Path, resume: str | Path | None, overwrite: bool) -> None:
    """Refuse, before any work, to write a new run over another one (or into a file). A folder whose run failed
    before saving anything (config.yaml, log.csv only) is reused."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file, not a folder; choose a folder for the run")
    if blocker := next((p for p in out_dir.parents if p.exists() and not p.is_dir()), None):
        raise ValueError(f"--out {out_dir}: {blocker} is a file, not a folder; choose a folder for the run")
    if resume is not None or overwrite:
        return
    held = [name for name in RUN_FILES if (out_dir / name).exists()]
    if held:
        raise ValueError(f"{out_dir} already holds a run ({', '.join(held)}); continue it with --resume {out_dir}, "
                         "replace it with --overwrite, or choose another --out")  # fmt: skip


def train(cfg: TrainConfig, resume: str | Path | None = None, progress: bool = True,
          overwrite: bool = False, resume_hint: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Python API behind `spikevimformer train`; refuses an `out_dir` holding a run unless resuming or `overwrite`,
    and one another process is writing (`fileio.folder_lock`). Every finished run leaves `best.pt`: the best
    validated weights, or the last ones when no validation ran (eval_every_epochs=0 and no final_eval, as the demo
    and adapt train). `resume_hint` is what an interrupted run tells the user to type (default: `--resume OUT_DIR`).
    """
    main_rank = int(os.environ.get("RANK", "0")) == 0  # torchrun's ranks share the folder; rank 0 writes it
    with folder_lock(cfg.out_dir, "train") if main_rank else contextlib.nullcontext():
        check_run_folder(Path(cfg.out_dir), resume, overwrite)
        trainer = Trainer(cfg, resume=resume, progress=progress, resume_hint=resume_hint)
        result = trainer.fit()
        if trainer.best is None:
            trainer.save("best.pt", metrics={"selection": "the last weights: no validation ran",
                                             "final": result["metrics"]})  # fmt: skip
    return result


