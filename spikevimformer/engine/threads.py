"""Training threads on a shared CPU: drop to one intra-op thread while another process competes for the cores.

Two processes whose OpenMP threads spin-wait (libgomp's default) on the same cores slow each other down 40-70x:
on 2 cores one fine-tune step took 1.2-1.5 s alone and 78 s beside a second training. With one of them on a single
thread both run at about 2-4 s (`benchmarks/cpu_sharing.py`). Alone, a single thread costs 7-50 % per step, so the
trainer measures instead of guessing: it tries the other thread count for a few steps early in the run, whenever a
step becomes `slow` times slower than the recent pace, and after a back-off that doubles while trying does not pay.
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
    first_try: int = 4  # steps at the full count before the first trial of one thread (step 1 starts the workers)
    trial_steps: int = 3  # steps run at the other count before deciding
    slow: float = 4.0  # a step this many times the recent pace: another process moved in
    gain: float = 0.8  # the other count is kept when its steps take at most this share of the current ones
    wait: int = 50  # steps between routine trials; doubles after each trial that does not pay
    now: int = field(init=False)
    _recent: deque = field(init=False)
    _trial: list[float] | None = field(init=False, default=None)
    _reference: float = field(init=False, default=0.0)
    _until_trial: int = field(init=False)

    def __post_init__(self) -> None:
        self.now = self.threads
        self._recent = deque(maxlen=12)
        self._until_trial = self.first_try

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
        sudden = pace is not None and min(list(self._recent)[-2:]) > self.slow * pace
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
        self._trial = None
        if trial <= self.gain * self._reference:
            self._recent.clear()
            self._until_trial = self.wait
            why = "another process is using the CPU cores" if tried == 1 else "the CPU cores are free again"
            return (f"steps took {self._reference:.1f} s on {_threads(before)}, {trial:.1f} s on {_threads(tried)} "
                    f"({why}): training on {_threads(tried)}")  # fmt: skip
        self._switch(before)
        self._until_trial = self.wait
        self.wait *= 2
        return None


def _threads(n: int) -> str:
    return f"{n} thread" + ("s" if n > 1 else "")
