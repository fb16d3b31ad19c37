"""Batches in which no location repeats (contrastive negatives must be other places), identical on every rank."""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Sampler


@dataclass(frozen=True)
class EpochPlan:
    """The global batches of one epoch and what is left for the next."""

    batches: list[list[int]]
    carry_out: list[int]   # pair indices that could not be placed; they open the next epoch
    dropped: int           # pairs already carried once that still found no place (reported, not silent)


def pack_unique(order: Sequence[int], labels: np.ndarray, batch_size: int) -> tuple[list[list[int]], list[int]]:
    """Greedy packing of `order` into full batches of distinct labels; returns batches and leftover positions.

    Works on positions into `order` so the same pair may occur twice (once carried, once fresh).
    A pair whose location is already in the open batch waits in a per-location queue and goes
    first into the next batch, so the epoch order is kept as far as uniqueness allows.
    """
    lab = labels[np.asarray(order, dtype=np.int64)] if len(order) else np.empty(0, dtype=np.int64)
    waiting: dict[int, deque[int]] = {}
    batches: list[list[int]] = []
    stream = iter(range(len(order)))
    exhausted = False
    while True:
        batch: list[int] = []
        seen: set[int] = set()
        for c in list(waiting):
            if len(batch) == batch_size:
                break
            queue = waiting[c]
            batch.append(queue.popleft())
            seen.add(c)
            if not queue:
                del waiting[c]
        while len(batch) < batch_size and not exhausted:
            pos = next(stream, None)
            if pos is None:
                exhausted = True
                break
            c = int(lab[pos])
            if c in seen:
                waiting.setdefault(c, deque()).append(pos)
            else:
                batch.append(pos)
                seen.add(c)
        if len(batch) < batch_size:
            leftover = batch + [p for q in waiting.values() for p in q]
            return batches, sorted(leftover)
        batches.append(batch)


def similar_order(labels: np.ndarray, neighbours: np.ndarray, group: int, rng: np.random.Generator) -> list[int]:
    """Every pair once, each followed by pairs of `group` locations drawn from its look-alikes.

    `neighbours` (num_locations x pool) lists each location's most similar other locations. Packed in this order,
    a batch holds groups of look-alikes, so its in-batch negatives are the confusable places (Sample4Geo's dynamic
    similarity sampling, Deuser et al., ICCV 2023), drawn among the look-alikes that still have pairs to place.
    """
    waiting: dict[int, list[int]] = {}
    for index in rng.permutation(len(labels)).tolist():
        waiting.setdefault(int(labels[index]), []).append(index)
    placed = np.zeros(len(labels), dtype=bool)
    order: list[int] = []
    for index in rng.permutation(len(labels)).tolist():
        if placed[index]:
            continue
        location = int(labels[index])
        waiting[location].remove(index)
        placed[index] = True
        order.append(index)
        pool = [other for other in neighbours[location].tolist() if waiting.get(other)]
        for other in rng.choice(pool, size=min(group, len(pool)), replace=False).tolist() if pool else ():
            pick = waiting[other].pop()
            placed[pick] = True
            order.append(pick)
    return order


class UniqueLocationBatchSampler(Sampler[list[int]]):
    """Yields this rank's slice of each global batch; no location twice per global batch; nothing silently lost.

    Each epoch shuffles all pairs with (seed, epoch), puts the pairs carried over from the previous
    epoch in front, and packs global batches of `batch_size` distinct locations. Every rank computes
    the same plan and takes its contiguous slice of batch_size / world_size indices. Pairs that fit
    in no batch are carried to the next epoch; a carried pair that again fits nowhere (only possible
    when one location dominates the data) is dropped and counted in `epoch_stats()` with a warning.
    The number of batches can therefore differ by one or so between epochs; len() is exact for the
    current epoch. After `set_neighbours` the epoch's order groups look-alike locations (`similar_order`).

    With `seeded=True` each index comes as (index, augmentation seed), the seed drawn from (seed, epoch,
    batch, global slot): augmentation then follows the sample, not the worker or rank that loads it.
    """

    def __init__(self, labels: Sequence[int] | np.ndarray, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, seeded: bool = False):
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not valid for world_size {world_size}")
        if batch_size % world_size:
            raise ValueError(f"global batch size {batch_size} is not divisible by world size {world_size}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        num_locations = int(np.unique(labels).size)
        if num_locations < batch_size:
            raise ValueError(f"batch size {batch_size} exceeds the {num_locations} training locations; "
                             "a batch without a repeated location is impossible")
        self.labels = labels
        self.batch_size = batch_size
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.seeded = seeded
        self._epoch = 0
        self._carry_in: list[int] = []
        self._position = 0
        self._plan: EpochPlan | None = None
        self._neighbours: np.ndarray | None = None
        self._group = 0

    def set_neighbours(self, neighbours: np.ndarray | None, group: int) -> None:
        """From the current epoch on, each drawn pair brings pairs of `group` of its location's look-alikes.

        `neighbours`: (num_locations x pool) location indices, each row its location's most similar others, the
        same on every rank; None returns to random order. Part of the resume state.
        """
        if neighbours is not None:
            neighbours = np.asarray(neighbours, dtype=np.int64)
            locations = int(self.labels.max()) + 1
            if neighbours.ndim != 2 or neighbours.shape[0] != locations or group < 1:
                raise ValueError(f"neighbours must be ({locations} x pool) with group >= 1, got "
                                 f"{neighbours.shape} and group {group}")
        self._neighbours, self._group, self._plan = neighbours, group, None

    # -- planning -----------------------------------------------------------------------------------
    def _build(self, epoch: int, carry_in: list[int]) -> EpochPlan:
        rng = np.random.default_rng([self.seed, epoch])
        fresh = (rng.permutation(len(self.labels)).tolist() if self._neighbours is None
                 else similar_order(self.labels, self._neighbours, self._group, rng))
        order = list(carry_in) + fresh
        batches, leftover = pack_unique(order, self.labels, self.batch_size)
        n_carried = len(carry_in)
        carry_out = [order[p] for p in leftover if p >= n_carried]
        dropped = sum(1 for p in leftover if p < n_carried)
        if dropped:
            warnings.warn(f"epoch {epoch}: {dropped} training pair(s) found no batch in two epochs and were "
                          "skipped; one location dominates the data", RuntimeWarning, stacklevel=3)
        return EpochPlan(batches=[[order[p] for p in b] for b in batches], carry_out=carry_out, dropped=dropped)

    def _current(self) -> EpochPlan:
        if self._plan is None:
            self._plan = self._build(self._epoch, self._carry_in)
        return self._plan

    def set_epoch(self, epoch: int) -> None:
        """Move to `epoch` (carry-overs follow the chain); the same epoch again keeps a resumed position."""
        if epoch == self._epoch:
            return
        if epoch < self._epoch:
            self._epoch, self._carry_in, self._plan = 0, [], None
        while self._epoch < epoch:
            self._carry_in = self._current().carry_out
            self._epoch += 1
            self._plan = None
        self._position = 0

    @property
    def epoch(self) -> int:
        return self._epoch

    def epoch_stats(self) -> dict[str, int]:
        plan = self._current()
        return {"epoch": self._epoch, "batches": len(plan.batches), "carried_in": len(self._carry_in),
                "carried_out": len(plan.carry_out), "dropped": plan.dropped}

    # -- iteration ----------------------------------------------------------------------------------
    def global_batches(self) -> list[list[int]]:
        """All global batches of the current epoch (every rank's indices), for inspection and tests."""
        return [list(b) for b in self._current().batches]

    def __iter__(self) -> Iterator[list[int] | list[tuple[int, int]]]:
        batches = self._current().batches
        if self._position >= len(batches):
            self._position = 0
        per_rank = self.batch_size // self.world_size
        lo = self.rank * per_rank
        while self._position < len(batches):
            position = self._position
            mine = batches[position][lo:lo + per_rank]
            self._position += 1
            if self.seeded:
                yield [(index, self._draw(position, lo + slot)) for slot, index in enumerate(mine)]
            else:
                yield mine

    def _draw(self, position: int, slot: int) -> int:
        return int(np.random.SeedSequence([self.seed, self._epoch, position, slot]).generate_state(1)[0])

    def __len__(self) -> int:
        return len(self._current().batches)

    # -- resume -------------------------------------------------------------------------------------
    def state_dict(self, batches_done: int | None = None) -> dict:
        """Resume point; pass `batches_done` when a DataLoader prefetches ahead of the optimiser steps."""
        position = self._position if batches_done is None else int(batches_done)
        return {"epoch": self._epoch, "position": position, "carry_in": list(self._carry_in),
                "seed": self.seed, "batch_size": self.batch_size, "num_pairs": len(self.labels),
                "neighbours": None if self._neighbours is None else self._neighbours.tolist(), "group": self._group}

    def load_state_dict(self, state: dict) -> None:
        for key, mine in (("seed", self.seed), ("batch_size", self.batch_size), ("num_pairs", len(self.labels))):
            if state[key] != mine:
                raise ValueError(f"sampler state has {key}={state[key]} but this sampler has {key}={mine}; "
                                 "resume with the same data and settings")
        self._epoch = int(state["epoch"])
        self._carry_in = [int(i) for i in state["carry_in"]]
        self._position = int(state["position"])
        self.set_neighbours(state.get("neighbours"), int(state.get("group", 0)))
