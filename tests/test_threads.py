"""The training thread governor, against simulated step times (seconds per step at 1 and at 2 threads)."""

from spikevimformer.engine.threads import ThreadGovernor


def run(pace, steps: int, threads: int = 2):
    """Feed `steps` simulated steps; pace(step, threads) -> seconds. Returns (governor, counts used, notes)."""
    used, notes = [], []
    gov = ThreadGovernor(threads, set_threads=lambda n: None)
    for step in range(steps):
        used.append(gov.now)
        note = gov.observe(pace(step, gov.now))
        if note:
            notes.append((step, note))
    return gov, used, notes


def test_alone_keeps_all_threads_and_backs_off():
    gov, used, notes = run(lambda step, n: 1.5 if n == 2 else 1.6, 400)
    assert notes == [] and gov.now == 2
    assert used.count(1) <= 3 * 4  # trials at steps 4, 54, 154, 354: wait doubles after each
    assert gov.wait == 50 * 2**4


def test_shared_from_the_start_drops_to_one_thread_early():
    gov, used, notes = run(lambda step, n: 78.0 if n == 2 else 2.0, 60)
    assert gov.now == 1
    step, note = notes[0]
    assert step < 8 and "another process" in note and "78.0 s on 2 threads" in note
    assert note.endswith("training on 1 thread")
    # a routine trial of 2 threads, still shared, is cut after its first slow step
    assert used[8:].count(2) == 1


def test_contention_that_starts_mid_run_and_ends():
    def pace(step, n):
        shared = 100 <= step < 200
        return (78.0 if n == 2 else 2.0) if shared else (1.2 if n == 2 else 2.4)

    gov, used, notes = run(pace, 400)
    assert used[100 + 2 + 1] == 1  # two slow steps, then one thread
    assert any("another process" in note for _, note in notes)
    assert any("free again" in note for step, note in notes if step >= 200)
    assert gov.now == 2 and used[-1] == 2


def test_single_thread_does_nothing():
    gov, used, notes = run(lambda step, n: 5.0, 50, threads=1)
    assert set(used) == {1} and notes == []
