"""Atomic file writes (a crash or Ctrl-C leaves the old file or none, never half of one), values made plain
before they are written, one writer per output folder, and the folder checks behind one-line messages for paths
the user named."""

from __future__ import annotations

import enum
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, folders go unguarded
    fcntl = None

LOCK_FILE = ".writer.lock"  # in every output folder a command writes; it names the process holding it
LOCK_TRIES = 3
_HELD: set[Path] = set()  # folders this process holds: its own nested writers (adapt -> train) may go on


def umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | Path, folder: bool = False) -> None:
    """Give a file or folder made by mkstemp/mkdtemp (0600/0700) the mode open() or mkdir() would have given."""
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())


def atomic_write(path: str | Path, write: Callable[[str], None], suffix: str = "") -> Path:
    """Call `write(temporary_path)` in the target folder, fsync, then rename over `path` (mode by the umask).

    `suffix` keeps writers that look at the extension (matplotlib, onnx) happy.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        follow_umask(tmp)  # mkstemp makes 0600; written files follow the umask like any other
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def require_dir(path: str | Path, what: str) -> Path:
    """A folder the user named: a missing one and a file given in its place get different one-line errors."""
    path = Path(path)
    if path.is_file():
        raise ValueError(f"{what} {path} is a file, not a folder")
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path} does not exist")
    return path


def next_free_folder(base: str | Path, names: Iterable[str]) -> Path:
    """`base`, or base-2, base-3, ...: the first holding none of `names`, for outputs made without --out."""
    base, names = Path(base), tuple(names)
    candidate, n = base, 1
    while any((candidate / name).exists() for name in names) or (candidate.exists() and not candidate.is_dir()):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def refuse_overwrite(outputs: Iterable[str | Path], overwrite: bool) -> None:
    """The rule every command that writes follows: files it would write that already exist are replaced only with
    --overwrite; a folder given where a file belongs (or the reverse) is refused either way.

    Raises FileExistsError naming what is there, or ValueError for a file/folder mix-up.
    """
    held = []
    for out in map(Path, outputs):
        if out.is_dir():
            raise ValueError(f"{out} is a folder; --out names a file here")
        for parent in out.parents:
            if parent.is_file():
                raise ValueError(f"{parent} is a file; --out names a folder here")
        if out.exists():
            held.append(out)
    if held and not overwrite:
        shown = ", ".join(map(str, held[:3])) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        raise FileExistsError(f"{shown} already exist{'s' if len(held) == 1 else ''}; pass --overwrite to replace, "
                              "or choose another --out")  # fmt: skip


def plain(value: Any, where: str = "value", keep: tuple[type, ...] = ()) -> Any:
    """`value` as the plain Python types every reader of ours takes back (safe `torch.load`, JSON, YAML): numpy
    scalars become int/float/bool, arrays and sets lists, paths strings, enums their value; `keep` types (tensors
    in a checkpoint) pass as they are, tuples stay tuples.

    Raises TypeError naming the key (`where`) of anything else, at write time rather than when the file is read.
    """
    if value is None or isinstance(value, keep):
        return value
    if isinstance(value, enum.Enum):
        return plain(value.value, where, keep)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, np.ndarray):
        return plain(value.tolist(), where, keep)
    if isinstance(value, Mapping):
        return {plain(k, f"{where} key", keep): plain(v, f"{where}[{k!r}]", keep) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(plain(v, f"{where}[{i}]", keep) for i, v in enumerate(value))
    if isinstance(value, (list, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [plain(v, f"{where}[{i}]", keep) for i, v in enumerate(items)]
    raise TypeError(f"{where} holds a {type(value).__module__}.{type(value).__qualname__}, which our files cannot "
                    "hold: store it as a number, string, list or dict")


def atomic_write_json(path: str | Path, value: Any, where: str | None = None) -> Path:
    """`value` made plain (see `plain`; TypeError names the key that is not) and written as indented JSON."""
    text = json.dumps(plain(value, where or Path(path).name), indent=2) + "\n"
    return atomic_write_text(path, text)


def _lock_holder(handle) -> str:
    """Who holds a lock file, in words, from what the holder wrote into it."""
    handle.seek(0)
    try:
        record = json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        record = {}
    if not record.get("pid"):
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("started", 0)))
    return f"`spikevimformer {record.get('command', '?')}` (pid {record['pid']}, since {since})"


def _busy_ancestor(folder: Path) -> tuple[Path, str] | None:
    """(folder, holder) of a folder above `folder` another process writes (`index build` into a running
    `adapt`'s index), else None; folders this process holds are its own."""
    for parent in folder.parents:
        lock = parent / LOCK_FILE
        if parent in _HELD or not lock.is_file():
            continue
        with open(lock) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return parent, _lock_holder(handle)
            fcntl.flock(handle, fcntl.LOCK_UN)
    return None


@contextmanager
def folder_lock(folder: str | Path, command: str, flag: str = "--out") -> Iterator[Path]:
    """Hold FOLDER/.writer.lock while `command` writes the folder (made if missing): a second writer of the same
    folder, or of one inside it, stops at once with ValueError naming the first (pid and command, written into
    the lock file) and `flag`, instead of interleaving its files with the first's.

    The lock is an advisory flock(2), which the kernel releases when its process ends, however it ends: a lock
    file left behind by a crash or kill -9 is not held, so the next writer takes it over without a word; no stale
    lock needs deleting by hand. The file stays in the folder, unless the folder was made here and the command
    wrote nothing into it (it failed first). Without fcntl (Windows) folders go unguarded.
    """
    shown, folder = Path(folder), Path(folder).resolve()
    if fcntl is None:  # pragma: no cover - Windows
        yield folder
        return
    if blocker := next((p for p in (shown, *shown.parents) if p.exists() and not p.is_dir()), None):
        raise ValueError(f"{flag} {shown}: {blocker} is a file, not a folder; choose a folder")
    if busy := _busy_ancestor(folder):
        raise ValueError(f"{flag} {shown} is inside {busy[0]}, which {busy[1]} is writing: wait for it to end, "
                         f"or choose another {flag}")
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a+") as handle:
        for attempt in range(LOCK_TRIES):  # another writer's _busy_ancestor probe holds it for microseconds
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == LOCK_TRIES - 1:
                    raise ValueError(f"{flag} {shown} is being written by {_lock_holder(handle)}: wait for it to "
                                     f"end, or choose another {flag}") from None
                time.sleep(0.05)
        handle.truncate(0)
        handle.write(json.dumps({"pid": os.getpid(), "command": command, "started": time.time(),
                                 "argv": sys.argv}) + "\n")  # fmt: skip
        handle.flush()
        _HELD.add(folder)
        try:
            yield folder
        finally:
            _HELD.discard(folder)
            if made and [p.name for p in folder.iterdir()] == [LOCK_FILE]:  # refused before writing: leave no trace
                (folder / LOCK_FILE).unlink()
                folder.rmdir()
