"""Atomic file writes (a crash or Ctrl-C leaves the old file or none, never half of one), and the folder checks
behind one-line messages for paths the user named."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path


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
