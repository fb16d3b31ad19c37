"""Run log: one CSV row per logged step (and TensorBoard scalars when it is installed)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


class RunLog:
    """Append-only CSV whose columns are fixed by the first row; a resumed run drops rows past its step."""

    def __init__(self, path: str | Path, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.path = Path(path)
        self.columns: list[str] | None = None
        if self.path.exists() and resume_step is not None:
            with self.path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(float(r["step"])) <= resume_step]
            if rows:
                self.columns = list(rows[0])
                self._rewrite(rows)
            else:
                self.path.unlink()
        elif self.path.exists():
            self.path.unlink()
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.path.parent / "tensorboard"))
            except ImportError:  # TensorBoard is optional
                self.writer = None

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns)
            w.writeheader()
            w.writerows(rows)
        tmp.replace(self.path)

    def log(self, row: dict[str, Any]) -> None:
        if self.columns is None:
            self.columns = list(row)
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, int(row["step"]))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
