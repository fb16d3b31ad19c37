"""Checkpoint I/O: official E-SpikeFormer ImageNet weights in, our own run checkpoints in and out."""

from __future__ import annotations

import functools
import re
import zipfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .fileio import atomic_write, plain
from .models.backbone import BackboneCfg, ESpikeFormer
from .models.calibrate import calibrate_batchnorm
from .models.spikevimformer import VARIANTS, SpikeViMFormer, build_model

FORMAT = "spikevimformer/1"
_WRAPPERS = ("model", "state_dict", "model_state", "module", "net")
_KEY_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers, in either order or both
_OFFICIAL = {"tiny": "V3_10.0M_1x4.pth", "small": "V3_19.0M_1x4.pth"}
RANDOM_INIT_SEED = 0
IMAGENET_TAG = "imagenet-init:sha256="


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with a sentence saying why."""


def _existing_file(path: str | Path) -> Path:
    """The checkpoint path, refused in one line when it is missing or a folder."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a checkpoint file in it (such as {path / 'best.pt'})")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def _read(path: str | Path) -> Any:
    path = _existing_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for bad input; all mean the same here
        raise CheckpointError(f"{path} ({path.stat().st_size:,} bytes) is not a readable PyTorch checkpoint: "
                              f"{_why_unreadable(path, exc)}") from exc


def _why_unreadable(path: Path, exc: Exception) -> str:
    """The cause of a failed torch.load in words, with what to do about it (torch's own text is pages long)."""
    with path.open("rb") as fh:
        head = fh.read(4)
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        return ("it is truncated (the zip archive torch.save writes has no end record); "
                "the copy or download was probably cut short, so fetch it again")  # fmt: skip
    if isinstance(exc, EOFError) or "unexpected EOF" in str(exc):
        return "it is truncated (the file ends early); the copy or download was probably cut short, so fetch it again"
    if found := re.search(r"Unsupported global: GLOBAL (\S+)", str(exc)):
        return (f"it holds a Python object ({found.group(1)}) that safe (weights-only) loading refuses; if you trust "
                "the file, load it in Python and torch.save its state_dict alone to a new file")  # fmt: skip
    first = re.split(r"(?<=\.)\s", str(exc).strip(), maxsplit=1)[0][:300]
    return f"it is corrupt, truncated or not a torch.save file ({type(exc).__name__}{': ' + first if first else ''})"


def plain_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """State-dict keys without the prefixes wrappers add (`module.` of DataParallel/DDP, `_orig_mod.` of
    torch.compile, both in any order): every reader of ours loads a wrapped model's file like the bare model's."""
    def bare(key: str) -> str:
        while prefix := next((p for p in _KEY_PREFIXES if key.startswith(p)), None):
            key = key.removeprefix(prefix)
        return key

    return {bare(k): v for k, v in state.items()}


def bare_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DataParallel/DDP (`.module`) and torch.compile (`._orig_mod`) wrappers, however nested."""
    while True:
        inner = next((m for m in (getattr(model, "module", None), getattr(model, "_orig_mod", None))
                      if isinstance(m, torch.nn.Module)), None)  # fmt: skip
        if inner is None:
            return model
        model = inner


def _unwrap(obj: Any, path: str | Path) -> dict[str, Tensor]:
    """Find the tensor dict inside the usual wrappings and strip the wrappers' key prefixes (`plain_keys`)."""
    while isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not any(isinstance(v, Tensor) for v in obj.values()):
        found = type(obj).__name__ + (f" with keys {sorted(obj)[:8]}" if isinstance(obj, Mapping) else "")
        raise CheckpointError(f"{path} holds no state dict of tensors (found {found})")
    return plain_keys({k: v for k, v in obj.items() if isinstance(v, Tensor)})


@functools.cache
def _expected_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        backbone = ESpikeFormer(VARIANTS[variant])
    return {k: tuple(v.shape) for k, v in backbone.state_dict().items()}


def detect_variant(state: Mapping[str, Tensor]) -> str | None:
    """The variant whose backbone keys and shapes the state dict matches exactly, if any."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    return next((name for name in VARIANTS if _expected_shapes(name) == shapes), None)


def _describe_mismatch(state: Mapping[str, Tensor], variant: str) -> str:
    expected = _expected_shapes(variant)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} shape mismatches (e.g. {k}: {tuple(state[k].shape)} vs {expected[k]})")
    return "; ".join(parts)


def read_checkpoint_file(path: str | Path) -> Any:
    """Read any checkpoint file once, safely (weights_only / safetensors); `is_ours` tells the kinds apart."""
    return _read(path)


def _official_state(payload: Any, path: str | Path) -> dict[str, Tensor]:
    """The backbone tensors of an official checkpoint, without `head.*` (the 1000-class ImageNet head)."""
    return {k: v for k, v in _unwrap(payload, path).items() if not k.startswith("head.")}


def _load_official_state(backbone: ESpikeFormer, state: dict[str, Tensor], path: str | Path) -> str:
    found = detect_variant(state)
    target = next((n for n, cfg in VARIANTS.items() if cfg.dims == backbone.cfg.dims), None)
    if found is None:
        detail = _describe_mismatch(state, target or "tiny")
        raise CheckpointError(
            f"{path} is not an E-SpikeFormer tiny (10M) or small (19M) backbone checkpoint: "
            f"against the {target or 'tiny'} backbone it has {detail}"
        )
    if found != target:
        raise CheckpointError(
            f"{path} holds the E-SpikeFormer {found} backbone ({_OFFICIAL[found]}, {VARIANTS[found].out_dim}-d), "
            f"but the model is {target or 'a custom width'} ({backbone.out_dim}-d); use build_model({found!r})"
        )
    backbone.load_state_dict(state, strict=True)
    return found


def load_backbone_checkpoint(model: SpikeViMFormer | ESpikeFormer, path: str | Path) -> str:
    """Load an official E-SpikeFormer ImageNet checkpoint into `model.backbone`; returns its variant.

    The variant is read from the tensor shapes, never the file name; `head.*` (the 1000-class
    ImageNet head) is dropped; everything else must match strictly.
    """
    return load_official_backbone(model, _read(path), path)


def load_official_backbone(model: SpikeViMFormer | ESpikeFormer, payload: Any, path: str | Path) -> str:
    """`load_backbone_checkpoint` for a file already read with `read_checkpoint_file`."""
    backbone = model.backbone if isinstance(model, SpikeViMFormer) else model
    return _load_official_state(backbone, _official_state(payload, path), path)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(
    path: str | Path,
    model: SpikeViMFormer,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    half_heads: bool = False,
) -> Path:
    """Save model (+ optimizer, resolved config, metrics, extra state) atomically.

    Everything stored is tensors or plain Python values, so it loads with `weights_only=True`: numpy numbers and
    arrays, paths and enums in `config`, `metrics` or `extra` are written as Python ones (`fileio.plain`), anything
    else raises TypeError naming its key before the file is touched. A DDP or torch.compile wrapper is saved as
    the model inside it. `half_heads` stores the training-only blocks (SSA, SHS, classifier) in fp16: the
    backbone, hence inference, stays exact, and the heads only seed further training (a tiny checkpoint:
    46 -> 43 MB). Loaders return them in fp32.
    """
    bare = bare_model(model)
    state = bare.state_dict()
    if half_heads:
        state = {k: v.half() if v.is_floating_point() and not k.startswith("backbone.") else v
                 for k, v in state.items()}  # fmt: skip
    payload: dict[str, Any] = {
        "format": FORMAT,
        "variant": bare.variant,
        "num_classes": bare.num_classes,
        "image_size": bare.image_size or dict(config or {}).get("image_size"),
        "backbone_cfg": asdict(bare.backbone.cfg),
        "model": state,
        "config": dict(config or {}),
        "metrics": dict(metrics or {}),
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if extra:
        payload.update(extra)
    payload = {key: plain(value, key, keep=(Tensor,)) for key, value in payload.items()}
    return atomic_torch_save(payload, path)


def is_ours(payload: Any) -> bool:
    """Whether a loaded file is one of our checkpoints (as opposed to official ImageNet weights)."""
    return isinstance(payload, Mapping) and payload.get("format") == FORMAT


def _bare_model_state(payload: Any) -> tuple[str, int, dict[str, Tensor]] | None:
    """(variant, classes, state) of a bare `torch.save(model.state_dict())` of a SpikeViMFormer, else None."""
    try:
        state = _unwrap(payload, "")
    except CheckpointError:
        return None
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    variant = detect_variant(backbone) if backbone else None
    if variant is None:
        return None
    fc = state.get("classifier.fc.weight")
    return variant, int(fc.shape[0]) if fc is not None else 0, state


def _not_ours(payload: Any, path: str | Path) -> CheckpointError:
    """What a file that is not one of our checkpoints is, and what to pass on the command line instead."""
    try:
        official = detect_variant(_official_state(payload, path))
    except CheckpointError:
        official = None
    if official is not None:
        return CheckpointError(f"{path} holds official E-SpikeFormer ImageNet weights ({official}), not a "
                               "spikevimformer checkpoint: pass it with --init (Python: load_backbone_checkpoint)")
    return CheckpointError(f"{path} is not a spikevimformer checkpoint (no format tag {FORMAT!r}) nor a state_dict "
                           "of a tiny or small model; pass a runs/<name>/best.pt or last.pt of `spikevimformer "
                           "train`, or ImageNet weights with --init")  # fmt: skip


def read_init(path: str | Path) -> tuple[str, dict[str, Tensor], str | None]:
    """What `train --init` names, as ("ours", whole-model state, L_SSA it was trained with) or ("official",
    E-SpikeFormer backbone state, None): a release name or file, one of our checkpoints, a bare state_dict of our
    model, or ImageNet weights. Weights that do not say how their SSA branch was trained count as "paper": every
    run before the choice existed used the paper's L_SSA."""
    path = resolve_checkpoint(path)
    if path.suffix == ".safetensors":
        return "ours", load_release(path).state_dict(), "paper"
    payload = _read(path)
    if is_ours(payload):
        return "ours", plain_keys(payload["model"]), (payload.get("config") or {}).get("ssa_objective", "paper")
    if (bare := _bare_model_state(payload)) is not None:
        return "ours", bare[2], "paper"
    return "official", _official_state(payload, path), None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read one of our checkpoints safely and check that it is one."""
    payload = _read(path)
    if not is_ours(payload):
        raise _not_ours(payload, path)
    return dict(payload)


def model_from_checkpoint(path: str | Path) -> SpikeViMFormer:
    """Rebuild the model a checkpoint was saved from and load its weights strictly; a bare state_dict of our model
    (`torch.save(model.state_dict())`, the common PyTorch habit) loads too, its variant read from the shapes."""
    payload = _read(path)
    if not is_ours(payload):
        bare = _bare_model_state(payload)
        if bare is None:
            raise _not_ours(payload, path)
        variant, classes, state = bare
        return _assemble(asdict(VARIANTS[variant]), classes, variant, state, path)
    model = _assemble(payload["backbone_cfg"], payload["num_classes"], payload["variant"], payload["model"], path)
    model.image_size = payload.get("image_size") or (payload.get("config") or {}).get("image_size")
    return model


def _assemble(
    backbone_cfg: Mapping[str, Any], num_classes: int, variant: str, state: Mapping[str, Tensor], path: str | Path
) -> SpikeViMFormer:
    """Build the model on the meta device and adopt the saved tensors: no random init, no global RNG spent."""
    cfg = BackboneCfg(**{**backbone_cfg, "dims": tuple(backbone_cfg["dims"])})
    with torch.device("meta"):
        model = SpikeViMFormer(cfg, num_classes=num_classes, variant=variant)
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in plain_keys(state).items()}  # fp16 -> fp32
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match the {variant} model it describes: {exc}") from exc
    return model


def random_init_tag(seed: int = RANDOM_INIT_SEED) -> str:
    return f"random-init:seed={seed}+bn-calibrated"


def load_model(
    checkpoint: str | Path | None = None, variant: str | None = None, init: str | Path | None = None,
    seed: int = RANDOM_INIT_SEED,
) -> tuple[SpikeViMFormer, str]:  # fmt: skip
    """The one way to get a model, in eval mode, with an identity tag that says which weights it holds.

    - `checkpoint`: one of our checkpoints (.pt, or a `save_release` .safetensors; its own variant), or the name
      of a shipped release (`pretrained`, see spikevimformer.pretrained; checked against its SHA-256);
      tag = the file's SHA-256. `model.image_size` is the size it was trained at, when recorded.
    - `init`: official E-SpikeFormer ImageNet weights for the backbone of `variant` (default: the
      variant the file holds); tag = "imagenet-init:sha256=" + the file's SHA-256.
    - neither: a seeded, BN-calibrated random init of `variant` (default tiny);
      tag = "random-init:seed=N+bn-calibrated". The tag ties gallery indexes and ONNX files to weights.
    """
    if checkpoint is not None and init is not None:
        raise ValueError(
            "give either a spikevimformer checkpoint (--checkpoint) or official E-SpikeFormer ImageNet weights "
            "(--init), not both: a checkpoint already holds the whole model"
        )
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
    if checkpoint is not None:
        checkpoint = resolve_checkpoint(checkpoint)
        shipped = release_for(checkpoint)
        if shipped is not None:
            model = load_release(checkpoint, sha256=shipped.sha256)
            model.image_size = shipped.image_size
        elif Path(checkpoint).suffix == ".safetensors":
            model = load_release(checkpoint)
        else:
            model = model_from_checkpoint(checkpoint)
        if variant is not None and variant != model.variant:
            raise ValueError(f"{checkpoint} holds the {model.variant} variant, not {variant}; leave --variant out")
        return model.eval(), file_sha256(checkpoint)
    if init is not None:
        state = _official_state(_read(init), init)
        model = build_model(variant or detect_variant(state) or "tiny")
        _load_official_state(model.backbone, state, init)
        return model.eval(), IMAGENET_TAG + file_sha256(init)
    model = build_model(variant or "tiny")
    model.load_state_dict(_random_init_state(variant or "tiny", seed))
    return model.eval(), random_init_tag(seed)


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A --checkpoint value as a file: an existing path as given, else a shipped release's name -> its file.

    Raises CheckpointError for a missing file and ValueError for a name that is no release (listing the names).
    """
    from .pretrained import find_release, get_release

    path = Path(checkpoint)
    if path.exists() or (release := find_release(str(checkpoint))) is None:
        if not path.exists() and path.suffix == "" and len(path.parts) == 1:
            get_release(str(checkpoint))  # a bare word: a mistyped release name, said as such
        return _existing_file(path)
    return release.path


def trained_image_size(checkpoint: str | Path) -> int | None:
    """The input size a checkpoint's weights were trained at, when it records one (our .pt files and releases);
    None for official ImageNet weights and files that do not say."""
    path = resolve_checkpoint(checkpoint)
    if (release := release_for(path)) is not None:
        return release.image_size
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            size = (f.metadata() or {}).get("image_size")
        return int(size) if size else None
    payload = _read(path)
    if not is_ours(payload):
        return None
    return payload.get("image_size") or (payload.get("config") or {}).get("image_size")


def release_for(path: str | Path):
    """The shipped Release whose file `path` is, else None (a release copied elsewhere is just a file)."""
    from .pretrained import RELEASES

    resolved = Path(path).resolve()
    return next((r for r in RELEASES.values() if r.path.resolve() == resolved), None)


@functools.lru_cache(maxsize=4)
def _random_init_state(variant: str, seed: int) -> dict[str, Tensor]:
    """Seeded init + BN calibration, computed once per process (calibration costs a forward pass)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(variant)
    calibrate_batchnorm(model.backbone, seed=seed)
    return {k: v.clone() for k, v in model.state_dict().items()}


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_release(model: SpikeViMFormer, path: str | Path, metadata: Mapping[str, str] | None = None) -> str:
    """Write the whole model (backbone and heads) as fp16 safetensors, atomically; returns its SHA-256.

    Shipped checkpoints use this: half the size of fp32, no pickle, and the model's shape in the header.
    """
    import json

    from safetensors.torch import save_file

    bare = bare_model(model)
    tensors = {
        k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in bare.state_dict().items()
    }
    header = {"format": FORMAT, "variant": bare.variant, "num_classes": str(bare.num_classes),
              "backbone_cfg": json.dumps(asdict(bare.backbone.cfg)), **dict(metadata or {})}
    if bare.image_size:
        header["image_size"] = str(bare.image_size)
    return file_sha256(atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header)))


def load_release(path: str | Path, sha256: str | None = None) -> SpikeViMFormer:
    """Load a `save_release` file in fp32; with `sha256`, a file whose hash differs is refused."""
    import json

    from safetensors import safe_open

    path = _existing_file(path)
    if sha256 is not None:
        found = file_sha256(path)
        if found != sha256:
            raise CheckpointError(f"{path} has SHA-256 {found[:16]}..., expected {sha256[:16]}...: "
                                  "the file is damaged or not the released one")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from exc
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a spikevimformer release (no format tag {FORMAT!r})")
    cfg, num_classes = json.loads(header["backbone_cfg"]), int(header["num_classes"])
    model = _assemble(cfg, num_classes, header["variant"], _read(path), path)
    model.image_size = int(header["image_size"]) if header.get("image_size") else None
    return model
