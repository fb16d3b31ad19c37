"""The training thread governor, against simulated step times (seconds per step at 1 and at 2 threads)."""

from spikevimformer.engine.threads import ThreadGovernor


def run(pace, steps: int, threads: int = 2):
    """Feed `steps` simulated steps; pace(step, threads) -> seconds. Returns (governor, counts used, notes)."""
    used, notes, calls = [], [], []
    gov = ThreadGovernor(threads, set_threads=calls.append)
    for step in range(steps):
        used.append(gov.now)
        note = gov.observe(pace(step, gov.now))
        if note:
            notes.append((step, note))
    assert not calls or calls[-1] == gov.now  # torch was told every change
    return gov, used, notes


def test_alone_climbs_to_all_threads_at_once_silently():
    gov, used, notes = run(lambda step, n: 1.5 if n == 2 else 1.6, 400)
    assert used[:2] == [1, 1] and used[2:50] == [2] * 48
    assert notes == [] and gov.now == 2
    assert used.count(1) <= 2 + 3 * 3  # later trials of one thread at steps 52, 155, 358 (the wait doubles)


def test_shared_from_the_start_stays_on_one_thread_after_one_slow_step():
    gov, used, notes = run(lambda step, n: 78.0 if n == 2 else 2.0, 120)
    assert used.count(2) == 2  # the first trial, cut after its first step, and one routine trial 100 steps later
    assert gov.now == 1
    step, note = notes[0]
    assert step == 2 and "another process" in note and "78.0 s on 2 threads" in note
    assert note.endswith("training on 1 thread") and len(notes) == 1


def test_contention_that_starts_mid_run_and_ends():
    def pace(step, n):
        shared = 100 <= step < 200
        return (78.0 if n == 2 else 2.0) if shared else (1.2 if n == 2 else 2.4)

    gov, used, notes = run(pace, 400)
    assert used[100:102] == [2, 2] and used[102] == 1  # two slow steps, then one thread
    assert any("another process" in note for step, note in notes if 100 <= step < 110)
    assert any("free again" in note for step, note in notes if step >= 200)
    assert gov.now == 2 and used[-1] == 2


def test_single_thread_does_nothing():
    gov, used, notes = run(lambda step, n: 5.0, 50, threads=1)
    assert set(used) == {1} and notes == []
