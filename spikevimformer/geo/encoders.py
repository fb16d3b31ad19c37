"""Image -> descriptor backends behind one interface: the PyTorch model and an exported ONNX model."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..checkpoint import load_model
from ..progress import progress_bar
from .imaging import preprocess
from .index import ModelIdentity
from .tiles import Tile, load_tile


class Encoder(Protocol):
    identity: ModelIdentity

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) preprocessed images -> (B, D) L2-normalised float32 descriptors."""


class TorchEncoder:
    """The PyTorch model's eval path (`model.encode`)."""

    backend = "pytorch"

    def __init__(self, model, image_size: int, checkpoint_sha256: str, device: str | torch.device = "cpu",
                 weights: str = "") -> None:  # fmt: skip
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.identity = ModelIdentity(model.variant, checkpoint_sha256, int(image_size), int(model.descriptor_dim),
                                      weights)  # fmt: skip

    @classmethod
    def load(
        cls, checkpoint=None, variant: str | None = None, image_size: int | None = None, device="cpu", init=None,
    ) -> TorchEncoder:  # fmt: skip
        """Weights chosen as everywhere else (`spikevimformer.checkpoint.load_model`), tagged for the index;
        `image_size` None: the size the weights were trained at, else 384."""
        model, tag = load_model(checkpoint, variant, init)
        return cls(model, image_size or model.image_size or 384, tag, device, weights_ref(checkpoint, init))

    def encode(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            return self.model.encode(x).float().cpu().numpy()


class OnnxEncoder:
    """An ONNX model written by `spikevimformer export`, run with ONNX Runtime; identity from its metadata."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int = 0) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {path} does not exist")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()  # `--threads` governs ONNX Runtime too
        try:
            self.session = ort.InferenceSession(
                str(path), opts, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"{path} is not a loadable ONNX model ({exc})") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        raw = meta.get("spikevimformer")
        if raw is None:
            raise ValueError(f"{path} carries no spikevimformer metadata; export it with `spikevimformer export`")
        info = json.loads(raw)
        self.metadata = info
        self.identity = ModelIdentity(
            info["variant"], info["checkpoint_sha256"], int(info["image_size"]), int(info["descriptor_dim"]),
            str(path.resolve()),
        )
        self.input_name = self.session.get_inputs()[0].name

    def encode(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        return np.asarray(out, dtype=np.float32)


def open_onnx(onnx: str | Path, checkpoint=None, variant: str | None = None, init=None) -> OnnxEncoder:
    """An exported model: it carries its own weights and variant, so the PyTorch model flags must not disagree."""
    if checkpoint is not None or init is not None:
        raise ValueError("give either an exported model (--onnx) or PyTorch weights (--checkpoint / --init), not both")
    encoder = OnnxEncoder(onnx)
    if variant is not None and variant != encoder.identity.variant:
        raise ValueError(f"{onnx} was exported from the {encoder.identity.variant} variant, not {variant}")
    return encoder


def weights_ref(checkpoint=None, init=None) -> str:
    """How an index names its weights for loading them again: a release's name, else the file's absolute path."""
    from ..checkpoint import release_for, resolve_checkpoint

    if checkpoint is not None:
        release = release_for(resolve_checkpoint(checkpoint))
        return release.name if release is not None else str(Path(checkpoint).resolve())
    return str(Path(init).resolve()) if init is not None else ""


def index_encoder(
    index, checkpoint=None, variant: str | None = None, onnx=None, device="cpu", init=None, random_init: bool = False,
) -> Encoder:  # fmt: skip
    """The encoder for a gallery index: the model flags given, else the weights the index was built with (found
    again by name or path and checked against their SHA-256). An index of random weights needs `random_init`."""
    ident = index.identity
    if onnx is not None:
        return open_onnx(onnx, checkpoint, variant, init)
    if variant is not None and variant != ident.variant:
        raise ValueError(f"the gallery index {index.folder} was built with the {ident.variant} variant, not {variant}")
    if checkpoint is None and init is None:
        if ident.checkpoint_sha256.startswith("random-init"):
            if not random_init:
                raise ValueError(f"the gallery index {index.folder} was built from random weights (a test index); "
                                 "pass --random-init to use it anyway, or rebuild it with --checkpoint pretrained")
        elif ident.weights.endswith(".onnx"):  # built with --onnx: the same exported model again
            if not Path(ident.weights).is_file():
                raise ValueError(f"the gallery index {index.folder} was built with --onnx {ident.weights}, which is "
                                 "gone: pass the same model with --onnx (moved?), or rebuild the index")  # fmt: skip
            encoder = OnnxEncoder(ident.weights)
            if encoder.identity.mismatch(ident):
                raise ValueError(f"the gallery index {index.folder} was built with {ident.weights}, which has "
                                 f"changed since ({encoder.identity.mismatch(ident)}): rebuild the index")  # fmt: skip
            return encoder
        else:
            checkpoint, init = _remembered_weights(index)
            encoder = TorchEncoder.load(checkpoint, None if checkpoint else ident.variant, ident.image_size, device,
                                        init)  # fmt: skip
            found = encoder.identity.checkpoint_sha256  # hashed while loading: the file is read once for this
            if found != ident.checkpoint_sha256:
                from ..checkpoint import IMAGENET_TAG

                raise ValueError(f"the gallery index {index.folder} was built from {ident.weights}, which has changed "
                                 f"since (SHA-256 {found.removeprefix(IMAGENET_TAG)[:12]}..., was "
                                 f"{ident.checkpoint_sha256.removeprefix(IMAGENET_TAG)[:12]}...): pass the original "
                                 f"with {'--init' if init else '--checkpoint'}, or rebuild the index")  # fmt: skip
            return encoder
    elif random_init:
        raise ValueError("--random-init and --checkpoint/--init exclude each other")
    return TorchEncoder.load(checkpoint, None if checkpoint else ident.variant, ident.image_size, device, init)


def _remembered_weights(index) -> tuple[str | None, str | None]:
    """(checkpoint, init) the index names, refused in one line when they are gone (index_encoder checks the hash)."""
    from ..checkpoint import IMAGENET_TAG
    from ..pretrained import find_release

    ident = index.identity
    imagenet = ident.checkpoint_sha256.startswith(IMAGENET_TAG)
    flag = "--init" if imagenet else "--checkpoint"
    if not ident.weights:
        raise ValueError(f"the gallery index {index.folder} does not name its weights (SHA-256 "
                         f"{ident.checkpoint_sha256.removeprefix(IMAGENET_TAG)[:12]}...; built by an older version): "
                         f"pass them with {flag}, or rebuild the index")  # fmt: skip
    if not imagenet and find_release(ident.weights) is not None:
        return ident.weights, None
    path = Path(index.folder) / ident.weights  # an absolute path stays itself
    if not path.is_file():
        raise ValueError(f"the gallery index {index.folder} was built from {path}, which is gone: pass the same "
                         f"weights with {flag} (moved?), or rebuild the index")  # fmt: skip
    return (None, str(path)) if imagenet else (str(path), None)


def open_encoder(
    checkpoint: str | Path | None = None, variant: str | None = None, image_size: int | None = None,
    onnx: str | Path | None = None, device="cpu", init: str | Path | None = None,
) -> Encoder:  # fmt: skip
    """The one place the CLI turns model flags into an encoder."""
    if onnx is not None:
        return open_onnx(onnx, checkpoint, variant, init)
    return TorchEncoder.load(checkpoint, variant, image_size, device, init)


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def encode_tiles(encoder: Encoder, tiles: Sequence[Tile], batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """Descriptors of gallery tiles, in batches, with a progress bar."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    out = np.empty((len(tiles), encoder.identity.dim), dtype=np.float32)
    bar = progress_bar(total=len(tiles), desc="encoding tiles", unit="tile", progress=progress)
    done = 0
    for chunk in _batches(tiles, batch_size):
        batch = preprocess([load_tile(t) for t in chunk], encoder.identity.image_size)
        out[done : done + len(chunk)] = encoder.encode(batch)
        done += len(chunk)
        bar.update(len(chunk))
    bar.close()
    return out
