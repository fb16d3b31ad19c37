"""Training configuration: one dataclass, loadable from YAML, overridable as key=value."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


@dataclass
class TrainConfig:
    """Every setting of a training run; the resolved copy is saved with each run and checkpoint."""

    # data
    data_root: str = "data/synth"
    dataset: str = "auto"  # auto | university1652 | sues200
    altitude: int | None = None  # SUES-200 only
    image_size: int = 384
    augment: bool = True
    on_bad_image: str = "fail"  # fail | skip
    workers: int = 2
    val_locations: int = 0  # hold out this many training locations for model selection
    # model
    variant: str = "tiny"
    init: str = "scratch"  # scratch | path to an E-SpikeFormer ImageNet checkpoint | path to one of ours
    time_steps: int = 1
    levels: int = 4
    shs_dropout: float = 0.5
    # objective (spec training.md)
    w_infonce: float = 1.0
    w_ssa: float = 0.6
    w_shs: float = 0.54
    w_hral: float = 1.0
    label_smoothing: float = 0.1
    hral_k: int = 15
    hral_k2: int = 6
    hral_alpha: float = 0.7
    hral_tau: float = 0.1
    hral_history: int = 512
    hral_memory: int = 4096
    # optimisation
    epochs: int = 5
    batch_size: int = 64  # global pairs per step, over all ranks
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup: float = 0.1  # share of all steps
    warmup_min_steps: int = 20  # floor: a share of a short run is only a few steps
    grad_clip: float = 100.0
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | fp16 | off
    bn: str = "batch"  # batch | frozen (running statistics; makes CPU DDP equal to one process)
    sync_bn: bool = True  # SyncBatchNorm under multi-GPU DDP
    seed: int = 1
    max_steps: int = 0  # stop after this many steps in total (0: no limit)
    time_limit_min: float = 0.0  # stop cleanly after this many minutes (0: no limit)
    device: str = "auto"  # auto | cpu | cuda (under torchrun each rank takes cuda:LOCAL_RANK)
    # bookkeeping
    out_dir: str = "runs/train"
    save_every_steps: int = 200
    eval_every_epochs: int = 1
    final_eval: bool = True  # evaluate the test split when the run ends
    eval_batch_size: int = 32
    log_every_steps: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: str, current: Any, name: str) -> Any:
    """Parse a command-line value into the type of the field it overrides."""
    parsed = yaml.safe_load(value)
    if isinstance(current, bool) and not isinstance(parsed, bool):
        raise ValueError(f"{name} expects true/false, got {value!r}")
    if isinstance(current, float) and isinstance(parsed, int) and not isinstance(parsed, bool):
        return float(parsed)
    if isinstance(current, str) and not isinstance(parsed, str):
        return value
    return parsed


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """YAML file (optional) then overrides ("key=value" strings or a dict); unknown keys are errors."""
    cfg = TrainConfig()
    names = {f.name for f in fields(TrainConfig)}
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path} must hold a mapping of settings")
        values.update(loaded)
    if isinstance(overrides, dict):
        values.update(overrides)
    else:
        for item in overrides or []:
            if "=" not in item:
                raise ValueError(f"override {item!r} is not of the form key=value")
            key, raw = item.split("=", 1)
            key = key.strip().replace("-", "_")
            if key not in names:
                raise ValueError(f"unknown setting {key!r}; known: {', '.join(sorted(names))}")
            values[key] = _coerce(raw, getattr(cfg, key), key)
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {', '.join(sorted(names))}")
    return dataclasses.replace(cfg, **values)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
    os.replace(tmp, path)
