"""Descriptor extraction (batched, cached) and retrieval evaluation of a benchmark's test directions."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data import Benchmark, ImageDataset, ImageSet, eval_transform
from ..data.loader import batches
from ..metrics import retrieval_metrics
from ..models import SpikeViMFormer
from ..progress import progress_bar
from .signals import ignore_stop_signals


def _cache_key(image_set: ImageSet, image_size: int, flip: bool, model_tag: str, dataset_tag: str) -> str:
    """Descriptors depend on the images, the size, flip, any corruption and the weights: all go into the key."""
    h = hashlib.sha256(f"{model_tag}|{image_size}|{flip}|{image_set.name}|{dataset_tag}".encode())
    for p in image_set.paths:
        h.update(str(p).encode())
    return h.hexdigest()[:20]


def weights_tag(model: torch.nn.Module) -> str:
    """Short hash of the backbone weights, so a cache never serves another model's descriptors."""
    h = hashlib.sha256()
    for name, t in sorted(model.backbone.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def extract(
    model: SpikeViMFormer,
    image_set: ImageSet,
    image_size: int,
    device: torch.device,
    batch_size: int = 32,
    workers: int = 0,
    flip: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    dataset: Dataset | None = None,
    dataset_tag: str = "",
    model_tag: str | None = None,
    on_bad_image: str = "fail",
) -> np.ndarray:
    """L2-normalised descriptors (N x d, float32) of every image of the set, in fp32 eval mode.

    `dataset` replaces the plain resize-and-normalise loading (e.g. a corrupted view of the same
    images for robustness); it must yield (tensor, index) and `dataset_tag` must name it for the cache.
    on_bad_image="skip" encodes an unreadable image as black (warning with its path) instead of stopping.
    """
    if dataset is None and on_bad_image != "fail":
        dataset_tag = f"{dataset_tag}bad-image-{on_bad_image}"
    cache = None
    if cache_dir is not None:
        key = _cache_key(image_set, image_size, flip, model_tag or weights_tag(model), dataset_tag)
        cache = Path(cache_dir) / f"{image_set.name}-{key}.npy"
        if cache.exists():
            return np.load(cache)
    was_training = model.training
    model.eval()
    dataset = dataset if dataset is not None else ImageDataset(image_set.paths, eval_transform(image_size),
                                                               on_bad_image=on_bad_image)
    # its own generator: a loader without one draws its workers' seed from the global RNG, so an evaluation
    # between training steps would change the dropout masks that follow (and a resumed run's equality)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, generator=torch.Generator(),
                        worker_init_fn=ignore_stop_signals if workers else None)
    out = np.zeros((len(image_set), model.descriptor_dim), dtype=np.float32)
    bar = progress_bar(batches(loader), progress=progress, desc=f"descriptors {image_set.name}", total=len(loader),
                       leave=False)  # fmt: skip
    for images, index in bar:
        out[index.numpy()] = model.encode(images.to(device), flip=flip).float().cpu().numpy()
    model.train(was_training)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.replace(cache)
    return out


def evaluate_sets(
    model: SpikeViMFormer,
    pairs: dict[str, tuple[ImageSet, ImageSet]],
    image_size: int,
    device: torch.device,
    protocols: Iterable[str] = ("paper",),
    ap: str = "published",
    batch_size: int = 32,
    workers: int = 0,
    flip: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    on_bad_image: str = "fail",
) -> list[dict[str, Any]]:
    """One metrics row per (direction, protocol); each image set is encoded once."""
    encoded: dict[int, np.ndarray] = {}
    tag = weights_tag(model) if cache_dir is not None else None  # hash the weights once, not per image set

    def descriptors(s: ImageSet) -> np.ndarray:
        if id(s) not in encoded:
            encoded[id(s)] = extract(model, s, image_size, device, batch_size, workers, flip, cache_dir, progress,
                                     model_tag=tag, on_bad_image=on_bad_image)
        return encoded[id(s)]

    rows = []
    for direction, (query, gallery) in pairs.items():
        for protocol in protocols:
            m = retrieval_metrics(
                descriptors(query), query.labels, descriptors(gallery), gallery.labels, protocol=protocol, ap=ap
            )
            rows.append({"direction": direction, **m})
    return rows


def evaluate_benchmark(model: SpikeViMFormer, bench: Benchmark, image_size: int, device: torch.device,
                       **kwargs: Any) -> list[dict[str, Any]]:
    """Both test directions of a benchmark (see `evaluate_sets` for the options)."""
    return evaluate_sets(model, bench.test, image_size, device, **kwargs)


def strip_inputs(
    model: SpikeViMFormer, sets: tuple[ImageSet, ImageSet], image_size: int, device: torch.device,
    queries: int = 6, k: int = 5, seed: int = 0,
) -> tuple[list[Path], list[list[Path]], np.ndarray]:
    """Random queries, their top-k gallery paths and which of those share the query's location."""
    from ..metrics import rank_gallery

    query, gallery = sets
    pick = np.sort(np.random.default_rng(seed).choice(len(query), size=min(queries, len(query)), replace=False))
    subset = ImageSet(f"{query.name}-strip", [query.paths[i] for i in pick], query.labels[pick])
    q = extract(model, subset, image_size, device, progress=False)
    g = extract(model, gallery, image_size, device, progress=False)
    _, top = rank_gallery(q, g, k=k)
    top = top.cpu().numpy()
    ranked = [[gallery.paths[j] for j in row] for row in top]
    correct = gallery.labels[top] == subset.labels[:, None]
    return subset.paths, ranked, correct
