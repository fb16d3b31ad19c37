"""UniqueLocationBatchSampler: no repeated location per global batch, rank slices, carry-over, resume, seeds."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from spikevimformer.data import UniqueLocationBatchSampler
from spikevimformer.data.sampler import pack_unique, similar_order


def _labels(locations: int, per_location: int | list[int]) -> np.ndarray:
    counts = per_location if isinstance(per_location, list) else [per_location] * locations
    return np.repeat(np.arange(locations), counts)


@pytest.mark.parametrize("locations,per,batch,world", [
    (10, 4, 8, 1), (10, 4, 8, 2), (13, 5, 12, 4), (9, 7, 9, 3), (30, 2, 16, 8), (8, [1, 2, 3, 4, 5, 6, 7, 8], 4, 2),
])
def test_global_batches_unique_and_ranks_partition_them(locations, per, batch, world):
    labels = _labels(locations, per)
    samplers = [UniqueLocationBatchSampler(labels, batch, seed=3, rank=r, world_size=world) for r in range(world)]
    for epoch in range(4):
        for s in samplers:
            s.set_epoch(epoch)
        per_rank = [list(s) for s in samplers]
        assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == len(samplers[0])
        for step, global_batch in enumerate(samplers[0].global_batches()):
            union = [i for r in range(world) for i in per_rank[r][step]]
            assert union == global_batch                       # rank slices tile the global batch in order
            assert all(len(per_rank[r][step]) == batch // world for r in range(world))
            assert len(set(labels[union].tolist())) == batch   # no location twice in the global batch


def test_nothing_dropped_over_epochs_balanced():
    labels = _labels(11, 5)  # 55 pairs, batch 8: 6 full batches + 7 left each epoch, carried on
    sampler = UniqueLocationBatchSampler(labels, 8, seed=1)
    seen = Counter()
    epochs = 12
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for b in sampler:
            seen.update(b)
        stats = sampler.epoch_stats()
        assert stats["dropped"] == 0 and stats["carried_out"] < 2 * 8  # carry stays bounded
    carried = sampler.epoch_stats()["carried_out"]
    assert sum(seen.values()) + carried == epochs * len(labels)  # every pair used or still waiting
    assert min(seen[i] for i in range(len(labels))) >= epochs - 1


def test_carried_pairs_open_the_next_epoch():
    labels = _labels(6, 3)  # 18 pairs, batch 4
    sampler = UniqueLocationBatchSampler(labels, 4, seed=0)
    first = list(sampler)
    carry = sampler.epoch_stats()["carried_out"]
    assert sum(map(len, first)) + carry == 18 and carry > 0
    plan_carry = sampler._current().carry_out
    sampler.set_epoch(1)
    opening = [i for b in sampler.global_batches()[:2] for i in b]
    assert set(plan_carry) <= set(opening)
    assert sampler.epoch_stats()["carried_in"] == carry


def test_dominant_location_is_counted_not_silently_lost():
    labels = np.array([0] * 20 + [1, 2, 3])
    sampler = UniqueLocationBatchSampler(labels, 2, seed=0)
    used = dropped = 0
    with pytest.warns(RuntimeWarning, match="skipped"):
        for epoch in range(5):
            sampler.set_epoch(epoch)
            used += sum(map(len, sampler))
            stats = sampler.epoch_stats()
            dropped += stats["dropped"]
            assert stats["carried_in"] <= len(labels)  # carry stays bounded
    assert dropped > 0
    assert used + dropped + stats["carried_out"] == 5 * len(labels)  # every pair accounted for


def test_resume_mid_epoch_reproduces_remaining_batches():
    labels = _labels(12, 6)
    ref = UniqueLocationBatchSampler(labels, 6, seed=7, rank=1, world_size=2)
    ref.set_epoch(0)
    list(ref)
    ref.set_epoch(1)
    batches = list(ref)
    ref.set_epoch(2)
    next_epoch = list(ref)

    run = UniqueLocationBatchSampler(labels, 6, seed=7, rank=1, world_size=2)
    run.set_epoch(0)
    list(run)
    run.set_epoch(1)
    it = iter(run)
    done = [next(it) for _ in range(5)]
    state = run.state_dict()
    assert state["position"] == 5 and state["epoch"] == 1

    resumed = UniqueLocationBatchSampler(labels, 6, seed=7, rank=1, world_size=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # the training loop calls this again; it must keep the position
    assert done + list(resumed) == batches
    resumed.set_epoch(2)
    assert list(resumed) == next_epoch

    explicit = UniqueLocationBatchSampler(labels, 6, seed=7, rank=1, world_size=2)
    explicit.load_state_dict(run.state_dict(batches_done=3))  # prefetching loader: trainer's own count
    assert list(explicit) == batches[3:]
    with pytest.raises(ValueError, match="num_pairs"):
        UniqueLocationBatchSampler(labels[:-1], 6, seed=7).load_state_dict(state)


def test_deterministic_per_seed_and_reshuffled_per_epoch():
    labels = _labels(20, 4)

    def plan(seed, epoch):
        s = UniqueLocationBatchSampler(labels, 8, seed=seed)
        s.set_epoch(epoch)
        return s.global_batches()

    assert plan(5, 0) == plan(5, 0)
    assert plan(5, 0) != plan(6, 0)
    assert plan(5, 0) != plan(5, 1)
    jumped = UniqueLocationBatchSampler(labels, 8, seed=5)
    jumped.set_epoch(3)
    stepped = UniqueLocationBatchSampler(labels, 8, seed=5)
    for e in range(4):
        stepped.set_epoch(e)
    assert jumped.global_batches() == stepped.global_batches()


def test_invalid_settings_raise():
    labels = _labels(4, 3)
    with pytest.raises(ValueError, match="exceeds the 4"):
        UniqueLocationBatchSampler(labels, 8, seed=0)
    with pytest.raises(ValueError, match="divisible"):
        UniqueLocationBatchSampler(labels, 3, seed=0, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        UniqueLocationBatchSampler(labels, 4, seed=0, rank=2, world_size=2)


def test_pack_unique_keeps_every_position():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 9, 100)
    order = rng.permutation(100).tolist() + [3, 5]  # two pairs appear twice, as carried ones do
    batches, leftover = pack_unique(order, labels, 6)
    used = [p for b in batches for p in b]
    assert sorted(used + leftover) == list(range(len(order)))
    assert all(len({labels[order[p]] for p in b}) == 6 for b in batches)


def test_seeded_draws_follow_the_global_slot_and_resume():
    labels = _labels(12, 6)

    def epoch_items(world: int, epoch: int) -> list[list[tuple[int, int]]]:
        """Global batches of (index, seed) as the ranks together yield them."""
        samplers = [UniqueLocationBatchSampler(labels, 6, seed=7, rank=r, world_size=world, seeded=True)
                    for r in range(world)]
        for s in samplers:
            s.set_epoch(epoch)
        per_rank = [list(s) for s in samplers]
        return [[item for r in range(world) for item in per_rank[r][step]] for step in range(len(per_rank[0]))]

    one, three = epoch_items(1, 1), epoch_items(3, 1)
    assert one == three  # the same sample gets the same draw however many ranks share the batch
    plain = UniqueLocationBatchSampler(labels, 6, seed=7)
    plain.set_epoch(1)
    assert [[i for i, _ in b] for b in one] == plain.global_batches()  # seeding does not change the order
    seeds = [s for b in one for _, s in b]
    assert len(set(seeds)) == len(seeds)
    assert {s for b in epoch_items(1, 2) for _, s in b}.isdisjoint(seeds)  # a pair seen again is drawn anew

    run = UniqueLocationBatchSampler(labels, 6, seed=7, seeded=True)
    run.set_epoch(1)
    it = iter(run)
    done = [next(it) for _ in range(4)]
    resumed = UniqueLocationBatchSampler(labels, 6, seed=7, seeded=True)
    resumed.load_state_dict(run.state_dict())
    resumed.set_epoch(1)
    assert done + list(resumed) == one


def _ring(locations: int, pool: int) -> np.ndarray:
    """Each location's look-alikes: the next `pool` locations round a ring."""
    return np.array([[(c + j) % locations for j in range(1, pool + 1)] for c in range(locations)])


def test_similar_order_places_every_pair_once_behind_look_alikes():
    labels = _labels(40, 4)
    order = similar_order(labels, _ring(40, 8), group=3, rng=np.random.default_rng(0))
    assert sorted(order) == list(range(len(labels)))
    # while look-alikes still have pairs waiting, a drawn pair is followed by 3 of them
    first = labels[order[:4]]
    assert all(((other - first[0]) % 40) in range(1, 9) for other in first[1:])


def test_look_alike_batches_stay_unique_resume_and_hold_similar_places():
    labels = _labels(60, 3)
    ring = _ring(60, 6)
    sampler = UniqueLocationBatchSampler(labels, 12, seed=3)
    random_batches = sampler.global_batches()
    sampler.set_neighbours(ring, group=3)
    batches = sampler.global_batches()
    placed = [i for b in batches for i in b] + sampler._current().carry_out
    assert sorted(placed) == list(range(len(labels)))  # nothing lost, nothing twice

    def similar_share(bs: list[list[int]]) -> float:
        """The share of location pairs in a batch that are look-alikes (0.2 by chance here)."""
        hits = total = 0
        for b in bs:
            locs = labels[b].tolist()
            assert len(set(locs)) == len(b)
            for i, a in enumerate(locs):
                for c in locs[i + 1:]:
                    hits += int(c in ring[a] or a in ring[c])
                    total += 1
        return hits / total

    assert similar_share(batches) > 1.5 * similar_share(random_batches)
    state = sampler.state_dict(batches_done=2)
    resumed = UniqueLocationBatchSampler(labels, 12, seed=3)
    resumed.load_state_dict(state)
    assert list(resumed) == batches[2:]
    sampler.set_neighbours(None, 0)
    assert sampler.global_batches() == random_batches
    with pytest.raises(ValueError, match="neighbours must be"):
        sampler.set_neighbours(ring[:10], group=3)
