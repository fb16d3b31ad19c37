"""Atomic file writes (a crash or Ctrl-C leaves the old file or none, never half of one), and the folder checks
behind one-line messages for paths the user named."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[str], None], suffix: str = "") -> Path:
    """Call `write(temporary_path)` in the target folder, fsync, then rename over `path` (mode 0644).

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
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; written files are meant to be shared
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
