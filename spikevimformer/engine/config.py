"""Training configuration: one dataclass, loadable from YAML, overridable as key=value."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..fileio import atomic_write_text
from ..losses.branches import SSA_OBJECTIVES
from ..losses.objective import ObjectiveConfig


@dataclass
class TrainConfig:
    """Every setting of a training run; the resolved copy is saved with each run and checkpoint."""

    # data
    data_root: str = "data/synth"
    # more folders of the same layout whose training pairs join data_root's (e.g. several synthetic worlds);
    # evaluation keeps to data_root's test split
    extra_train_roots: list[str] = field(default_factory=list)
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
    # objective (spec training.md); term weights carry a w_ prefix, the other names are ObjectiveConfig's
    w_infonce: float = ObjectiveConfig.infonce
    w_ssa: float = ObjectiveConfig.ssa
    w_shs: float = ObjectiveConfig.shs
    w_hral: float = ObjectiveConfig.hral
    ssa_objective: str = ObjectiveConfig.ssa_objective  # paper | infonce (cannot collapse; losses/branches.py)
    fresh_ssa: str = "auto"  # with --init, start the SSA branch from its own initialisation (always | never | auto:
    # when the init was trained with another L_SSA; one trained with the paper's is collapsed, and a constant
    # output gives no gradient to start from)
    label_smoothing: float = ObjectiveConfig.label_smoothing
    hral_k: int = ObjectiveConfig.hral_k
    hral_k2: int = ObjectiveConfig.hral_k2
    hral_alpha: float = ObjectiveConfig.hral_alpha
    hral_tau: float = ObjectiveConfig.hral_tau
    hral_history: int = ObjectiveConfig.hral_history
    hral_memory: int = ObjectiveConfig.hral_memory
    # batches of look-alikes: each pair drawn brings pairs of this many of its location's most similar locations
    # (satellite descriptors of the current model, renewed each epoch, picked from the `similar_pool` nearest);
    # 0: random batches (data/sampler.py similar_order)
    similar_locations: int = 0
    similar_pool: int = 16
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
    time_limit_min: float = 0.0  # stop cleanly after this many minutes of this session (0: no limit)
    # steps | time: with "time" the cosine also ends at time_limit_min, which then counts over resumes
    # (keep the budget longer than the warm-up, or the run stops before its cosine starts)
    anneal_by: str = "steps"
    device: str = "auto"  # auto | cpu | cuda (under torchrun each rank takes cuda:LOCAL_RANK)
    yield_cpu: bool = True  # CPU: one thread while another process competes for the cores (engine/threads.py)
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

    def check(self) -> TrainConfig:
        """Refuse, before any work, values no run can use; one line naming the setting. Returns self."""
        from ..data.images import check_bad_image_mode
        from ..device import resolve_device
        from ..models import VARIANTS

        choices = {"dataset": ("auto", "university1652", "sues200"), "anneal_by": ("steps", "time"),
                   "amp": ("auto", "bf16", "fp16", "off"), "bn": ("batch", "frozen"), "variant": tuple(VARIANTS),
                   "ssa_objective": SSA_OBJECTIVES, "fresh_ssa": ("auto", "always", "never")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"setting {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        at_least = {"epochs": 1, "batch_size": 2, "workers": 0, "max_steps": 0, "time_limit_min": 0,
                    "save_every_steps": 0, "eval_every_epochs": 0, "eval_batch_size": 1, "log_every_steps": 1,
                    "val_locations": 0, "warmup_min_steps": 0,
                    "similar_locations": 0, "similar_pool": 1, "weight_decay": 0, "grad_clip": 0}
        for name, low in at_least.items():
            if getattr(self, name) < low:
                why = " (BatchNorm needs two pairs)" if name == "batch_size" else ""
                raise ValueError(f"setting {name} must be at least {low}{why}, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"setting lr must be positive, got {self.lr}")
        if self.similar_locations > self.similar_pool:
            raise ValueError(f"setting similar_locations ({self.similar_locations}) draws from the similar_pool "
                             f"nearest locations, so it cannot exceed similar_pool ({self.similar_pool})")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"setting warmup is a share of all steps in [0, 1), got {self.warmup}")
        if self.image_size < 32 or self.image_size % 16:
            raise ValueError(f"setting image_size must be a multiple of 16 of at least 32 px, got {self.image_size}")
        check_bad_image_mode(self.on_bad_image)
        if not self.device.startswith("cuda"):
            resolve_device(self.device)  # a name torch does not know; CUDA is checked where it is used
        return self

    def objective(self) -> ObjectiveConfig:
        """The loss settings, read by name so a new ObjectiveConfig field cannot be forgotten here."""
        own = {f.name for f in fields(self)}
        return ObjectiveConfig(**{
            f.name: getattr(self, f.name if f.name in own else f"w_{f.name}") for f in fields(ObjectiveConfig)
        })


def _typed(name: str, value: Any, annotation: str) -> Any:
    """Check (and where unambiguous convert) one setting against its field's type, naming it on error."""
    kinds = {part.strip() for part in annotation.split("|")}
    if value is None and "None" in kinds:
        return None
    try:
        if "bool" in kinds:
            if isinstance(value, bool):
                return value
            raise TypeError
        if "int" in kinds:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if "float" in kinds:
            if isinstance(value, bool):
                raise TypeError
            return float(value)  # also "1e-4", which YAML 1.1 reads as a string
        if "str" in kinds:
            return str(value)
        if annotation.startswith("list[str]"):
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list):
                raise TypeError
            return [str(v) for v in items]
        if isinstance(value, dict):
            return value
        raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"setting {name} expects {annotation}, got {value!r}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> TrainConfig:
    """YAML file (optional) then overrides ("key=value" strings or a dict); unknown keys are errors."""
    cfg = TrainConfig()
    names = {f.name for f in fields(TrainConfig)}
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"config file {path} is a folder; give a YAML file (see configs/)")
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ValueError(f"config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                             "is it a YAML file?") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValueError(f"config file {path}: YAML syntax error{where}: {what}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path} must hold a mapping of settings")
        if unknown := sorted(set(loaded) - names):
            raise ValueError(f"config file {path}: {_unknown(unknown, names)}")
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
                raise ValueError(f"--set {item}: {_unknown([key], names)}")
            values[key] = yaml.safe_load(raw) if raw.strip() else raw
    if unknown := sorted(set(values) - names):
        raise ValueError(_unknown(unknown, names))
    types = {f.name: str(f.type) for f in fields(TrainConfig)}
    return dataclasses.replace(cfg, **{k: _typed(k, v, types[k]) for k, v in values.items()}).check()


def _unknown(keys: list[str], names: set[str]) -> str:
    """'unknown setting X (did you mean Y?)', so a typo is found without reading a list of 60 names."""
    import difflib

    parts = []
    for key in keys:
        close = difflib.get_close_matches(str(key), sorted(names), n=1, cutoff=0.6)
        parts.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return (f"unknown setting{'s' if len(keys) > 1 else ''} {', '.join(parts)}; every setting is a field of "
            "TrainConfig (spikevimformer/engine/config.py), most with a flag in `spikevimformer train --help`")


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
