"""A bad image read by a DataLoader worker ends the command at once, in one line, and leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from spikevimformer.data.images import BadImageError
from spikevimformer.data.loader import batches, worker_error
from spikevimformer.data.synth import SynthConfig, generate_world
from spikevimformer.engine.signals import ignore_stop_signals


class _Fails(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int):
        if index == 5:
            raise BadImageError(Path(f"/data/img-{index}.jpg"), "image file is truncated")
        return torch.zeros(2)


def test_a_workers_error_comes_back_as_itself_and_the_workers_are_gone() -> None:
    loader = DataLoader(_Fails(), batch_size=2, num_workers=2, worker_init_fn=ignore_stop_signals)
    seen = 0
    with pytest.raises(BadImageError) as info:
        for _ in batches(loader):
            seen += 1
    assert str(info.value) == "cannot read image /data/img-5.jpg: image file is truncated"
    assert info.value.path == Path("/data/img-5.jpg") and seen <= 2
    assert info.value.__context__ is None  # nothing pins the loader's iterator (and its workers) alive
    import multiprocessing

    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not multiprocessing.active_children()


def test_worker_error_rebuilds_builtins_and_wraps_the_rest() -> None:
    text = "Caught KeyError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n  ...\n"
    assert type(worker_error(RuntimeError(text + "ValueError: bad value"))) is ValueError
    other = worker_error(RuntimeError(text + "mypkg.Oops: it broke"))
    assert type(other) is RuntimeError and "mypkg.Oops: it broke" in str(other)
    plain = ValueError("not from a worker")
    assert worker_error(plain) is plain


@pytest.fixture(scope="module")
def broken_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("broken") / "world"
    generate_world(SynthConfig(seed=3, locations=8, views=2, image_size=64), root)
    bad = sorted((root / "University-1652/test/query_drone").glob("*/*.jpeg"))[0]
    data = bad.read_bytes()
    bad.write_bytes(data[: int(len(data) * 0.6)])
    return root


def _run(args: list[str], timeout: float = 120) -> tuple[subprocess.CompletedProcess, int]:
    proc = subprocess.Popen([sys.executable, "-m", "spikevimformer", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), proc.pid


def _group_is_empty(pgid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.killpg(pgid, signal.SIGKILL)
    return False


def test_evaluate_with_workers_stops_at_a_truncated_jpeg(broken_world) -> None:
    start = time.monotonic()
    done, pgid = _run(["evaluate", "--random-init", "--data-root", str(broken_world), "--image-size", "32",
                       "--workers", "2", "--batch-size", "4"])  # fmt: skip
    assert done.returncode == 2 and time.monotonic() - start < 90
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "cannot read image" in errors[0] and "truncated" in errors[0]
    assert errors[0].endswith("or pass --skip-bad-images to skip and list such files")
    assert "Traceback" not in done.stderr
    assert _group_is_empty(pgid)  # no worker left behind


def test_skip_bad_images_lists_the_file_and_finishes(broken_world) -> None:
    done, pgid = _run(["evaluate", "--random-init", "--data-root", str(broken_world), "--image-size", "32",
                       "--workers", "2", "--skip-bad-images"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "skipping unreadable image" in done.stderr and "drone2satellite" in done.stdout
    assert _group_is_empty(pgid)
