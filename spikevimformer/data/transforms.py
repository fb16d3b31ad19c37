"""The Sample4Geo augmentation recipe (albumentations + OpenCV) and the evaluation resize, as CHW tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PairAugmentConfig:
    """Probabilities and strengths of the training recipe; tests switch parts off to isolate the flip."""

    flip_p: float = 0.5
    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (90, 100)
    jitter_p: float = 0.5
    brightness: float = 0.15
    contrast_satellite: float = 0.3
    contrast_drone: float = 0.7
    saturation: float = 0.3
    hue: float = 0.3
    blur_sharpen_p: float = 0.3
    dropout_p: float = 0.3
    grid_ratio: float = 0.4
    coarse_holes: tuple[int, int] = (10, 25)
    coarse_size: tuple[float, float] = (0.1, 0.2)
    satellite_rot90_p: float = 1.0


def _albumentations():
    try:
        import albumentations as A
        import cv2
    except ImportError as exc:  # optional 'train' extra
        raise ImportError("training augmentation needs albumentations and OpenCV: "
                          "pip install 'spikevimformer[train]'") from exc
    return A, cv2


def _view_pipeline(cfg: PairAugmentConfig, image_size: int, contrast: float, rotate: bool):
    A, cv2 = _albumentations()
    steps = [
        A.Resize(image_size, image_size, interpolation=cv2.INTER_LINEAR),
        A.ImageCompression(quality_range=cfg.jpeg_quality, p=cfg.jpeg_p),
        A.ColorJitter(brightness=cfg.brightness, contrast=contrast, saturation=cfg.saturation, hue=cfg.hue,
                      p=cfg.jitter_p),
        A.OneOf([A.AdvancedBlur(p=1.0), A.Sharpen(p=1.0)], p=cfg.blur_sharpen_p),
        A.OneOf([
            A.GridDropout(ratio=cfg.grid_ratio, p=1.0),
            A.CoarseDropout(num_holes_range=cfg.coarse_holes, hole_height_range=cfg.coarse_size,
                            hole_width_range=cfg.coarse_size, p=1.0),
        ], p=cfg.dropout_p),
    ]
    if rotate:
        steps.append(A.RandomRotate90(p=cfg.satellite_rot90_p))
    steps.append(A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD))
    return A.Compose(steps)


def to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 float array -> contiguous 3xHxW float32 tensor (torchvision's ToTensor without torchvision)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


class PairTransform:
    """Augments a (drone, satellite) pair with one shared flip decision and independent photometric noise.

    A call with `seed` (the training sampler passes one per sample) draws everything from that seed, so the
    augmentation belongs to the sample and a resumed run replays it exactly, whatever the worker count.
    Without one, the streams are re-seeded inside each DataLoader worker from the worker's torch seed, so
    workers do not replay each other's augmentations; with the constructor's `seed`, a run is
    reproducible given the same torch seed and worker count.
    """

    def __init__(self, image_size: int, seed: int | None = None, config: PairAugmentConfig | None = None):
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.image_size = image_size
        self.config = config or PairAugmentConfig()
        self.seed = seed
        self.drone = _view_pipeline(self.config, image_size, self.config.contrast_drone, rotate=False)
        self.satellite = _view_pipeline(self.config, image_size, self.config.contrast_satellite, rotate=True)
        self._worker_seed: int | None = None
        self._reseed(seed)

    def _reseed(self, base: int | None) -> None:
        ss = np.random.SeedSequence(base) if base is not None else np.random.SeedSequence()
        flip_seed, drone_seed, sat_seed = (int(s.generate_state(1)[0]) for s in ss.spawn(3))
        self.rng = np.random.default_rng(flip_seed)
        self.drone.set_random_seed(drone_seed)
        self.satellite.set_random_seed(sat_seed)

    def _follow_worker(self) -> None:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            self._worker_seed = info.seed
            mix = [info.seed % (2**63)] + ([self.seed] if self.seed is not None else [])
            self._reseed(int(np.random.SeedSequence(mix).generate_state(1)[0]))

    def __call__(self, drone: np.ndarray, satellite: np.ndarray,
                 seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if seed is None:
            self._follow_worker()
        else:
            self._reseed(seed)
        if self.rng.random() < self.config.flip_p:  # one decision for both views keeps them aligned
            drone = np.ascontiguousarray(drone[:, ::-1])
            satellite = np.ascontiguousarray(satellite[:, ::-1])
        d = self.drone(image=drone)["image"]
        s = self.satellite(image=satellite)["image"]
        return to_chw_tensor(d), to_chw_tensor(s)


def train_pair_transform(image_size: int, seed: int | None = None) -> PairTransform:
    """The training recipe of the spec at `image_size` (384 for the benchmarks)."""
    return PairTransform(image_size, seed)


class EvalTransform:
    """Resize + ImageNet normalisation, with the same OpenCV interpolation as training when OpenCV is present."""

    def __init__(self, image_size: int):
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.image_size = image_size
        self._mean = np.asarray(IMAGENET_MEAN, dtype=np.float32) * 255.0
        self._std = np.asarray(IMAGENET_STD, dtype=np.float32) * 255.0

    def _resize(self, image: np.ndarray) -> np.ndarray:
        size = self.image_size
        if image.shape[0] == size and image.shape[1] == size:
            return image
        try:
            import cv2
        except ImportError:  # base install without the 'train' extra
            from PIL import Image

            return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image of shape HxWx3, got {image.shape}")
        resized = self._resize(np.ascontiguousarray(image, dtype=np.uint8)).astype(np.float32)
        return to_chw_tensor((resized - self._mean) / self._std)


def eval_transform(image_size: int) -> Callable[[np.ndarray], torch.Tensor]:
    """Evaluation path: resize and normalise only."""
    return EvalTransform(image_size)


def preprocess(image, image_size: int) -> torch.Tensor:
    """One image exactly as every command reads it -> (3, S, S) float32: decoded upright by its EXIF orientation
    in 8-bit RGB (data.images.displayed), resized to `image_size` and ImageNet-normalised (eval_transform).

    `image`: a path, a PIL image, or an HxWx3 uint8 array (RGB). Stack several with torch.stack for a batch.
    Raises BadImageError for an unreadable file, ValueError for an array of another shape.
    """
    from PIL import Image

    from .images import displayed, load_rgb

    if isinstance(image, Image.Image):
        rgb = np.asarray(displayed(image)[0], dtype=np.uint8)
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"preprocess takes 8-bit arrays (uint8, 0-255), got {image.dtype}; for floats in 0..1 "
                             "pass (image * 255).round().astype(np.uint8)")  # fmt: skip
        rgb = image
    else:
        rgb = load_rgb(image)
    return eval_transform(image_size)(rgb)
