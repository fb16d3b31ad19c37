"""Progress bars that keep out of logs: off when stderr is no terminal (tqdm's `disable=None`) and under
`--no-progress`, which every long command takes."""

from __future__ import annotations

from tqdm.auto import tqdm

_enabled = True


def set_progress(enabled: bool) -> None:
    """Switch every bar of this process on (where stderr is a terminal) or off; the CLI's --no-progress."""
    global _enabled
    _enabled = enabled


def progress_bar(iterable=None, *, progress: bool = True, **kwargs) -> tqdm:
    """tqdm, shown only when `progress`, the process allows bars and stderr is a terminal."""
    return tqdm(iterable, disable=None if (progress and _enabled) else True, **kwargs)
