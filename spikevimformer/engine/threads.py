"""Training threads on a shared CPU: one intra-op thread while another process competes for the cores.

Two processes whose OpenMP threads spin-wait (libgomp's default) on the same cores slow each other down 5-70x: on
2 cores one fine-tune step took 1.5 s alone and 9-150 s beside a second training, while with one of them on a single
thread both ran at 2-4 s (`benchmarks/cpu_sharing.py`). Alone, a single thread costs 7-50 % per step, so the trainer
measures instead of guessing: its first steps run on one thread and a trial of all threads follows at once (cut
after one step when that step is `slow` times slower); a run on all threads tries one thread again whenever two
steps in a row are `slow` times the recent pace, and either state tries the other after a back-off that doubles
while trying does not pay.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ThreadGovernor:
    """Feed it each step's wall seconds (`observe`); it sets torch's intra-op thread count and returns a note to
    print when it changes it. `threads` is the full count (torch.get_num_threads()); below 2 it does nothing."""

    threads: int
    set_threads: Callable[[int], None]
    first_try: int = 2  # one-thread steps before the first trial of all threads (step 1 also starts the workers)
    trial_steps: int = 3  # steps run at the other count before deciding
    slow: float = 4.0  # a step this many times the recent pace: another process moved in
    gain: float = 0.8  # one thread is kept only when its steps take at most this share of the all-thread ones
    wait: int = 50  # steps between routine trials; doubles after each trial that does not pay
    now: int = field(init=False)
    _recent: deque = field(init=False)
    _trial: list[float] | None = field(init=False, default=None)
    _reference: float = field(init=False, default=0.0)
    _until_trial: int = field(init=False)
    _climbed: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._recent = deque(maxlen=12)
        self._until_trial = self.first_try
        self.now = self.threads
        if self.threads >= 2:
            self._switch(1)

    def observe(self, seconds: float) -> str | None:
        """Record one step; returns a one-line note when the thread count changes, else None."""
        if self.threads < 2:
            return None
        if self._trial is not None:
            self._trial.append(seconds)
            if len(self._trial) >= self.trial_steps or seconds > self.slow * self._reference:
                return self._decide()
            return None
        pace = statistics.median(self._recent) if len(self._recent) >= 4 else None
        self._recent.append(seconds)
        self._until_trial -= 1
        sudden = self.now > 1 and pace is not None and min(list(self._recent)[-2:]) > self.slow * pace
        if self._until_trial <= 0 or sudden:
            self._reference = statistics.median(list(self._recent)[-3:])
            self._trial = []
            self._switch(self._other())
        return None

    def _other(self) -> int:
        return 1 if self.now == self.threads else self.threads

    def _switch(self, threads: int) -> None:
        self.now = threads
        self.set_threads(threads)

    def _decide(self) -> str | None:
        trial = statistics.median(self._trial or [0.0])
        before, tried = self._other(), self.now
        one, full = (trial, self._reference) if tried == 1 else (self._reference, trial)
        self._trial = None
        self._until_trial = self.wait
        first, self._climbed = not self._climbed, True
        note = (f"steps took {full:.1f} s on {_threads(self.threads)}, {one:.1f} s on 1 thread "
                "(another process is using the CPU cores): training on 1 thread")  # fmt: skip
        if (one <= self.gain * full) == (tried == 1):  # the trial paid: keep its count
            self._recent.clear()
            if tried == 1:
                return note
            if first:
                return None
            return (f"the CPU cores are free again ({one:.1f} s per step on 1 thread, {full:.1f} s on "
                    f"{_threads(tried)}): training on {_threads(tried)}")  # fmt: skip
        self._switch(before)
        self.wait *= 2
        return note if first else None


def _threads(n: int) -> str:
    return f"{n} thread" + ("s" if n > 1 else "")
