"""One writer per output folder (`folder_lock`) and plain values in our files (`plain`, `atomic_write_json`)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from spikevimformer.cli import main
from spikevimformer.fileio import LOCK_FILE, atomic_write_json, folder_lock


def _hold(folder: str, command: str, conn) -> None:
    """A writer in another process: takes the folder, says so, and waits to be killed."""
    with folder_lock(folder, command):
        conn.send(os.getpid())
        conn.recv()


@pytest.fixture
def other_writer():
    """Start a forked process holding a folder; yields (start, kill), kill being SIGKILL: a crash, not an exit."""
    ctx = multiprocessing.get_context("fork")
    procs = []

    def start(folder: Path, command: str) -> int:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_hold, args=(str(folder), command, child), daemon=True)
        proc.start()
        procs.append(proc)
        assert parent.poll(10), "the other writer did not start"
        return parent.recv()

    def kill(pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        next(p for p in procs if p.pid == pid).join(5)

    yield start, kill
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def test_a_second_writer_is_refused_while_the_first_runs_and_allowed_after_it_crashes(tmp_path, other_writer):
    start, kill = other_writer
    out = tmp_path / "run"
    pid = start(out, "train")
    with pytest.raises(ValueError, match=rf"--out {out} is being written by `spikevimformer train` \(pid {pid},"):
        with folder_lock(out, "train"):
            pass
    with pytest.raises(ValueError, match=rf"is inside {out}, which `spikevimformer train` \(pid {pid},"):
        with folder_lock(out / "index", "index build"):  # a folder inside one being written
            pass
    assert not (out / "index").exists()
    kill(pid)  # the kernel releases the flock; the lock file stays behind, naming a process that is gone
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == pid
    with folder_lock(out, "index build"):  # a stale lock file is taken over without a word
        assert json.loads((out / LOCK_FILE).read_text())["command"] == "index build"
        with folder_lock(out / "index", "index build"):  # this process's own nested writers go on (adapt -> train)
            pass


def test_train_into_a_running_adapts_folder_is_refused(tmp_path, other_writer, capsys):
    start, _ = other_writer
    pid = start(tmp_path / "area", "adapt")
    argv = ["train", "--data-root", str(tmp_path), "--out", str(tmp_path / "area" / "finetune"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"which `spikevimformer adapt` (pid {pid}," in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "area" / "finetune").exists()


def test_a_refused_command_leaves_no_folder(tmp_path):
    with pytest.raises(RuntimeError):
        with folder_lock(tmp_path / "new", "synth"):
            raise RuntimeError("bad settings")
    assert not (tmp_path / "new").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="afile is a file, not a folder"):
        with folder_lock(tmp_path / "afile" / "sub", "train"):
            pass


def test_json_writer_writes_plain_values_or_names_the_key(tmp_path):
    path = atomic_write_json(tmp_path / "report.json", {"R@1": np.float32(0.25), "n": np.int64(4),
                                                         "where": Path("a/b"), "shape": (2, 3)})  # fmt: skip
    assert json.loads(path.read_text()) == {"R@1": 0.25, "n": 4, "where": "a/b", "shape": [2, 3]}
    with pytest.raises(TypeError, match=r"report.json\['rows'\]\[1\] holds a builtins.object"):
        atomic_write_json(tmp_path / "report.json", {"rows": [1, object()]})
    assert json.loads(path.read_text())["n"] == 4  # the earlier file is kept
