"""Photo -> position: retrieve the top-k gallery tiles and fuse their centres into one estimate."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from ..checkpoint import IMAGENET_TAG
from .coords import weighted_position
from .encoders import Encoder, TorchEncoder, open_onnx
from .imaging import open_image, preprocess
from .index import GalleryIndex


@dataclass(frozen=True)
class Match:
    rank: int
    id: str
    score: float
    latitude: float
    longitude: float
    footprint_m: float


@dataclass(frozen=True)
class Localization:
    """The answer for one photo: ranked tiles, a position estimate with an uncertainty radius, timings."""

    name: str
    matches: list[Match]
    latitude: float
    longitude: float
    radius_m: float
    model_s: float  # model time per image (batch time / batch size)
    search_s: float

    def to_dict(self) -> dict:
        out = asdict(self)
        out["estimate"] = {"latitude": out.pop("latitude"), "longitude": out.pop("longitude"),
                           "radius_m": out.pop("radius_m")}  # fmt: skip
        return out


def softmax_weights(scores: np.ndarray, temperature: float) -> np.ndarray:
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = (np.asarray(scores, dtype=np.float64) - np.max(scores)) / temperature
    w = np.exp(z)
    return w / w.sum()


def estimate_position(matches: Sequence[Match], temperature: float) -> tuple[float, float, float]:
    """Softmax(score / T)-weighted mean of the tile centres; radius = weighted RMS spread, at least half a tile.

    One tile cannot place the camera better than its own extent, hence the floor.
    """
    w = softmax_weights(np.array([m.score for m in matches]), temperature)
    lat, lon, spread = weighted_position([m.latitude for m in matches], [m.longitude for m in matches], w)
    return lat, lon, max(spread, matches[int(np.argmax(w))].footprint_m / 2)


class Localizer:
    """An encoder and a gallery index that agree on the model; safe to call from several threads."""

    def __init__(self, encoder: Encoder, index: GalleryIndex, k: int = 5, temperature: float = 0.02) -> None:
        if diff := index.identity.mismatch(encoder.identity):
            raise ValueError(
                f"the gallery index at {index.folder} was built with a different model ({diff}); "
                "use the model it was built with or rebuild the index"
            )
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        softmax_weights(np.zeros(1), temperature)  # validates the temperature
        self.encoder, self.index, self.k, self.temperature = encoder, index, k, temperature
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        return getattr(self.encoder, "backend", type(self.encoder).__name__)

    def localize(self, images: Sequence[Image.Image], names: Sequence[str] | None = None,
                 k: int | None = None) -> list[Localization]:  # fmt: skip
        """Localize decoded images in one batch."""
        if not images:
            return []
        names = list(names) if names is not None else [f"image-{i}" for i in range(len(images))]
        k = k or self.k
        batch = preprocess(list(images), self.encoder.identity.image_size)
        with self._lock:  # one forward at a time: keeps per-image timings honest and backends thread-safe
            start = time.perf_counter()
            desc = self.encoder.encode(batch)
            model_s = (time.perf_counter() - start) / len(images)
            start = time.perf_counter()
            scores, idx = self.index.search(desc, k)
            search_s = (time.perf_counter() - start) / len(images)
        results = []
        for name, row_s, row_i in zip(names, scores, idx, strict=True):
            matches = [
                Match(r + 1, t.id, float(s), t.latitude, t.longitude, t.footprint_m)
                for r, (s, i) in enumerate(zip(row_s, row_i, strict=True)) if i >= 0
                for t in (self.index.tiles[int(i)],)
            ]
            if not matches:
                raise ValueError(f"the index returned no tile for {name}: an approximate index probed only empty "
                                 "lists; rebuild it with --index-type flat or a larger nprobe")
            lat, lon, radius = estimate_position(matches, self.temperature)
            results.append(Localization(name, matches, lat, lon, radius, model_s, search_s))
        return results

    def localize_files(self, paths: Sequence[str], batch_size: int = 16, k: int | None = None) -> list[Localization]:
        out: list[Localization] = []
        for start in range(0, len(paths), batch_size):
            chunk = [str(p) for p in paths[start : start + batch_size]]
            out.extend(self.localize([open_image(p) for p in chunk], chunk, k=k))
        return out


def open_localizer(
    index_dir: str, checkpoint: str | None = None, variant: str | None = None, onnx: str | None = None,
    device: str = "cpu", k: int = 5, temperature: float = 0.02, init: str | None = None,
) -> Localizer:  # fmt: skip
    """Build the encoder the index asks for (variant, image size from its manifest) and check the weights match."""
    index = GalleryIndex.load(index_dir)
    ident = index.identity
    if onnx is not None:
        encoder: Encoder = open_onnx(onnx, checkpoint, variant, init)
    else:
        tag = ident.checkpoint_sha256
        if checkpoint is None and init is None and not tag.startswith("random-init"):
            what, flag = ("a checkpoint", "it with --checkpoint")
            if tag.startswith(IMAGENET_TAG):
                what, flag = ("ImageNet backbone weights", "them with --init")
            raise ValueError(
                f"the gallery index {index_dir} was built from {what} "
                f"(SHA-256 {tag.removeprefix(IMAGENET_TAG)[:12]}...); pass {flag} or give an exported model with --onnx"
            )
        if variant is not None and variant != ident.variant:
            raise ValueError(f"the gallery index was built with the {ident.variant} variant, not {variant}")
        encoder = TorchEncoder.load(checkpoint, None if checkpoint else ident.variant, ident.image_size, device, init)
    return Localizer(encoder, index, k, temperature)


def format_table(results: Sequence[Localization]) -> str:
    """Readable report: one block per image."""
    lines = []
    for r in results:
        lines.append(
            f"{r.name}: estimate {r.latitude:.6f}, {r.longitude:.6f} +/- {r.radius_m:.0f} m "
            f"(model {r.model_s * 1e3:.1f} ms/image, search {r.search_s * 1e3:.2f} ms)"
        )
        lines.append(f"  {'rank':>4}  {'tile':<28} {'score':>7}  {'latitude':>11} {'longitude':>11}")
        for m in r.matches:
            lines.append(f"  {m.rank:>4}  {m.id:<28} {m.score:>7.4f}  {m.latitude:>11.6f} {m.longitude:>11.6f}")
    return "\n".join(lines)
