"""Iterating a DataLoader so that an error in a worker ends the run at once, in one line, with no worker left.

PyTorch re-raises a worker's exception in the main process as a RuntimeError holding the worker's whole
traceback, and the exception's traceback keeps the loader's iterator alive. Our workers ignore SIGTERM (a
signal to the process group must not kill them mid-step, see engine.signals), so at interpreter exit
multiprocessing's terminate-and-join of those still-living workers waits forever. `batches` drops the iterator
(its workers shut down, and any that do not are killed) before raising the worker's own exception, rebuilt from
its last line.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator

from .images import BadImageError

WORKER_MARK = "Original Traceback"


def worker_error(exc: BaseException) -> BaseException:
    """The exception a DataLoader worker raised, rebuilt without traceback: BadImageError and built-in types keep
    their type, others become RuntimeError; all carry the worker's one-line message."""
    text = str(exc)
    if WORKER_MARK not in text:
        return exc
    last = next((line for line in reversed(text.strip().splitlines()) if line.strip()), text)
    name, _, message = last.partition(": ")
    kind = name.rsplit(".", 1)[-1]
    if kind == BadImageError.__name__:
        return BadImageError.from_message(message)
    builtin = getattr(builtins, kind, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        try:
            return builtin(message)
        except Exception:  # noqa: BLE001 - a built-in that takes other arguments
            pass
    return RuntimeError(f"a data loading worker failed: {last}")


def _shut_down(iterator) -> None:
    """Stop the iterator's workers now; any still alive afterwards (they ignore SIGTERM) are killed."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
    for worker in getattr(iterator, "_workers", ()):
        if worker.is_alive():
            worker.kill()
            worker.join(timeout=5)


def batches(loader: Iterable) -> Iterator:
    """Yield the loader's batches; a worker's error ends the iteration with that error and no worker left."""
    iterator = iter(loader)
    while True:
        failure = None
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - re-raised below, outside this block, so no traceback pins it
            failure = worker_error(exc)
        if failure is not None:
            _shut_down(iterator)
            iterator = None
            raise failure
        yield batch
