"""ONNX export of the inference path: BN-folded backbone, global average pooling, L2 normalisation."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fileio import atomic_write
from .models.fuse import fuse_backbone

OPSET = 17


class InferenceModel(nn.Module):
    """image -> descriptor exactly as `SpikeViMFormer.encode` computes it, with BatchNorm folded away."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = fuse_backbone(backbone)

    def forward(self, images: Tensor) -> Tensor:
        return F.normalize(self.backbone(images).mean(dim=(2, 3)), dim=-1)


def export_onnx(
    model, path: str | Path, image_size: int, checkpoint_sha256: str, opset: int = OPSET, batch: int = 2
) -> Path:
    """Write an ONNX model with a dynamic batch axis and the metadata a gallery index checks against."""
    if image_size <= 0 or image_size % 16:
        raise ValueError(f"image size must be a positive multiple of 16, got {image_size}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = InferenceModel(model.backbone).eval()
    example = torch.randn(batch, 3, image_size, image_size)

    def write(tmp: str) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation; onnxscript is absent
            torch.onnx.export(
                net, (example,), tmp, input_names=["images"], output_names=["descriptors"],
                dynamic_axes={"images": {0: "batch"}, "descriptors": {0: "batch"}},
                opset_version=opset, dynamo=False,
            )  # fmt: skip
        _add_metadata(tmp, {
            "format": "spikevimformer-onnx/1", "variant": model.variant, "checkpoint_sha256": checkpoint_sha256,
            "image_size": int(image_size), "descriptor_dim": int(model.descriptor_dim), "bn_folded": True,
        })  # fmt: skip

    return atomic_write(path, write, suffix=".onnx")


def _add_metadata(path: str, info: dict) -> None:
    import onnx

    proto = onnx.load(path)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "spikevimformer", json.dumps(info)
    proto.producer_name = "spikevimformer"
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


def onnx_parity(model, onnx_path: str | Path, images: Tensor) -> tuple[float, float]:
    """(mean, min) cosine between PyTorch (`model.encode`) and ONNX Runtime descriptors of the same images.

    Not 1.0 at large inputs: a membrane potential within float rounding of an NI-LIF threshold gives one spike
    more or less, so two correct float implementations differ by ~1e-4 in cosine at 384 px (1e-7 at 64 px).
    """
    from .geo.encoders import OnnxEncoder

    with torch.inference_mode():
        ref = model.eval().encode(images).numpy()
    got = OnnxEncoder(onnx_path).encode(images.numpy())
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    return float(cos.mean()), float(cos.min())


def noise_agreement(model, images: Tensor, eps: float) -> tuple[float, float]:
    """(mean, min) cosine between PyTorch descriptors of `images` and of the same images plus N(0, eps) noise:
    how far the model itself moves under a perturbation of the given size (eps = 1e-6: float rounding)."""
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        clean = model.eval().encode(images)
        noisy = model.encode(images + eps * torch.randn(images.shape, generator=gen))
    cos = F.cosine_similarity(clean, noisy)
    return float(cos.mean()), float(cos.min())


def parity_images(image_size: int, count: int = 8, folder: str | Path | None = None) -> Tensor:
    """Real images for the parity check, preprocessed: `count` spread over `folder`, or drone views and tiles of
    a small synthetic world rendered for the purpose (random noise hides nothing but also tests nothing)."""
    import tempfile

    from .data.images import spread_images
    from .data.transforms import preprocess

    if folder is not None:
        return torch.stack([preprocess(p, image_size) for p in spread_images(folder, count, "--check-images")])
    with tempfile.TemporaryDirectory(prefix="spikevimformer-parity-") as tmp:  # 4 locations x (views + 1 tile)
        root = render_check_world(tmp, locations=4, views=max(1, -(-count // 4)))
        return torch.stack([preprocess(p, image_size) for p in spread_images(root, count)])


# The retrieval check of an int8 model: the demo's world generator (its seed and 8 views per location), half of
# 100 locations held out: 400 drone->satellite queries, so one query is 0.25 points of R@1 (with 120 queries, two
# threshold flips already moved R@1 by 1.7 points on a near-chance model).
CHECK_LOCATIONS, CHECK_VIEWS = 100, 8


def render_check_world(folder: str | Path, locations: int | None = None, views: int | None = None,
                       progress: bool = False) -> Path:  # fmt: skip
    """Render a small labelled world for export checks into `folder` (default size: CHECK_LOCATIONS x
    CHECK_VIEWS); returns its University-1652 root."""
    from .data.synth import SynthConfig, generate_world
    from .demo import DEMO_SEED

    cfg = SynthConfig(seed=DEMO_SEED, locations=locations or CHECK_LOCATIONS, views=views or CHECK_VIEWS,
                      image_size=128, test_fraction=0.5)  # fmt: skip
    generate_world(cfg, folder, overwrite=True, progress=progress)
    return Path(folder) / "University-1652"


def world_recall(encoders: dict[str, object], root: str | Path, image_size: int, batch_size: int = 16,
                 progress: bool = False) -> dict[str, float]:  # fmt: skip
    """Drone->satellite R@1 (percent, the paper's gallery protocol) of each encoder (`.encode(array) -> array`)
    on the held-out split of the world at `root`, every image preprocessed once."""
    from .data import load_benchmark
    from .data.transforms import preprocess
    from .metrics import retrieval_metrics
    from .progress import progress_bar

    query, gallery = load_benchmark(root).test["drone2satellite"]
    paths = [*query.paths, *gallery.paths]
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in encoders}
    for i in progress_bar(range(0, len(paths), batch_size), desc="R@1 check", unit="batch", progress=progress):
        batch = torch.stack([preprocess(p, image_size) for p in paths[i : i + batch_size]]).numpy()
        for name, encoder in encoders.items():  # one decode per image, a batch in memory at a time
            chunks[name].append(encoder.encode(batch))
    recall = {}
    for name, parts in chunks.items():
        desc = np.concatenate(parts)
        metrics = retrieval_metrics(desc[: len(query)], query.labels, desc[len(query) :], gallery.labels)
        recall[name] = float(metrics["R@1"])
    return recall
