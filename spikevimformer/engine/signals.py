"""Stopping a run cleanly: signals become a request the training loop honours at a step boundary."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C (or SIGTERM) whose consequences the user was already told (what was saved, how to go on): the
    command line says nothing more."""


class StopSignals:
    """Ctrl-C or SIGTERM (a scheduler's kill, `kill PID`) asks the loop to save and stop after the current step.

    A second Ctrl-C at least a second later stops at once, except under torchrun, which forwards the
    terminal's SIGINT a second time, so two arrive for one key press. Handlers exist only in the main
    thread (Python allows no others); elsewhere the defaults stay.
    """

    def __init__(self, escalate: bool = True) -> None:
        self.requested = False
        self.escalate = escalate
        self._first = 0.0
        self.previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            if self.escalate and signum == signal.SIGINT and time.monotonic() - self._first > 1.0:
                raise KeyboardInterrupt
            return
        self.requested, self._first = True, time.monotonic()
        # os.write, not print: a handler may interrupt a print (tqdm's), and print is not reentrant
        os.write(2, f"\n{signal.Signals(signum).name}: saving and stopping after this step\n".encode())

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: a signal sent to the whole process group (Ctrl-C, `kill -- -PGID`, a job
    scheduler) must not kill the data workers mid-step, or the main process could not finish and save.
    Workers still end with their parent (PyTorch's watchdog) or when the loader shuts them down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
