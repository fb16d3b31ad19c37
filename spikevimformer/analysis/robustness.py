"""Test-time corruptions: the paper's RandomKeepPatches masking and University-1652's ten weather conditions.

RandomKeepPatches works on image tensors after resizing; the weather transforms work on
uint8 RGB numpy images before resizing (albumentations / OpenCV), like the datasets' code.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch import Tensor

ASPECT_RANGE = (0.5, 2.0)
_QUADRATURE = 16  # aspect ratios used to compute the expected union area


# ----------------------------------------------------------------------------- RandomKeepPatches


def _side_lengths(area_fraction: float, ratio: float | np.ndarray, height: int, width: int):
    """Rectangle (h, w) in pixels with h*w ~ area_fraction * H * W and w/h ~ ratio, inside the image."""
    area = area_fraction * height * width
    w = np.clip(np.rint(np.sqrt(area * ratio)), 1, width).astype(np.int64)
    h = np.clip(np.rint(np.sqrt(area / ratio)), 1, height).astype(np.int64)
    return h, w


def _coverage_1d(length: int, side: np.ndarray) -> np.ndarray:
    """P(pixel x is inside a segment of `side` pixels placed uniformly inside `length`), per side: (S, length)."""
    x = np.arange(length)[None, :]
    s = side[:, None]
    starts = np.minimum(x, length - s) - np.maximum(0, x - s + 1) + 1
    return np.clip(starts, 0, None) / (length - s + 1)


def expected_keep_fraction(area_fraction: float, patches: int, height: int, width: int) -> float:
    """Expected fraction of the image inside the union of `patches` random rectangles of one area.

    Each rectangle has the given area fraction, an aspect ratio uniform in [0.5, 2] (midpoint
    rule over 16 ratios) and a position uniform among those that keep it inside the image;
    rectangles are independent, so a pixel stays black with probability (1 - p(x, y))^P.
    """
    lo, hi = ASPECT_RANGE
    ratios = lo + (hi - lo) * (np.arange(_QUADRATURE) + 0.5) / _QUADRATURE
    h, w = _side_lengths(area_fraction, ratios, height, width)
    p = np.einsum("ry,rx->yx", _coverage_1d(height, h), _coverage_1d(width, w)) / _QUADRATURE
    return float(np.mean(1.0 - (1.0 - p) ** patches))


@functools.lru_cache(maxsize=256)
def patch_area_fraction(keep: float, patches: int, height: int, width: int) -> float:
    """Area fraction a of each rectangle such that the union's expected area fraction is `keep`.

    Starts from the edge-free answer a = 1 - (1 - R)^(1/P) and corrects for rectangles
    having to lie inside the image (border pixels are covered less often) by bisection on
    `expected_keep_fraction`, which is monotone in a.
    """
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if expected_keep_fraction(mid, patches, height, width) < keep:
            lo = mid
        else:
            hi = mid
    return hi


def keep_mask(
    height: int, width: int, keep: float, patches: int, generator: torch.Generator | None = None, batch: int = 1
) -> Tensor:
    """Boolean (batch, H, W) masks, True inside the union of `patches` random rectangles."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep}")
    if patches < 1:
        raise ValueError(f"patches must be >= 1, got {patches}")
    if keep >= 1.0:
        return torch.ones(batch, height, width, dtype=torch.bool)
    area = patch_area_fraction(float(keep), int(patches), int(height), int(width))
    lo, hi = ASPECT_RANGE
    u = torch.rand(batch, patches, 3, generator=generator, dtype=torch.float64).numpy()
    h, w = _side_lengths(area, lo + (hi - lo) * u[..., 0], height, width)
    top = np.floor(u[..., 1] * (height - h + 1)).astype(np.int64)
    left = np.floor(u[..., 2] * (width - w + 1)).astype(np.int64)
    mask = torch.zeros(batch, height, width, dtype=torch.bool)
    for b in range(batch):
        for p in range(patches):
            mask[b, top[b, p] : top[b, p] + h[b, p], left[b, p] : left[b, p] + w[b, p]] = True
    return mask


def random_keep_patches(
    image: Tensor,
    keep: float,
    patches: int,
    generator: torch.Generator | None = None,
    fill: float | Sequence[float] = 0.0,
) -> Tensor:
    """Keep a fraction `keep` of the area in `patches` random rectangles and black out the rest.

    Rectangles: aspect ratio uniform in [0.5, 2], uniform random positions inside the image,
    overlaps allowed, all of the same area, chosen by `patch_area_fraction` so that the union
    covers `keep` of the image in expectation. `image` is (C, H, W) or (B, C, H, W); each image
    gets its own rectangles. `fill` is the value of "black": 0 for [0, 1] or uint8 images, or
    per channel -mean/std for normalised tensors. `keep` = 1 returns the image unchanged.
    """
    if image.ndim not in (3, 4):
        raise ValueError(f"expected an image (C, H, W) or a batch (B, C, H, W), got shape {tuple(image.shape)}")
    batch = image.unsqueeze(0) if image.ndim == 3 else image
    if keep >= 1.0:
        return image.clone()
    b, c, h, w = batch.shape
    mask = keep_mask(h, w, keep, patches, generator, batch=b).to(batch.device)[:, None]
    fill_t = torch.as_tensor(fill, dtype=batch.dtype, device=batch.device).reshape(1, -1, 1, 1)
    if fill_t.shape[1] not in (1, c):
        raise ValueError(f"fill has {fill_t.shape[1]} values for {c} channels")
    out = torch.where(mask, batch, fill_t)
    return out[0] if image.ndim == 3 else out


@dataclass
class RandomKeepPatches:
    """Callable form for data pipelines: a seeded generator shared by successive calls."""

    keep: float
    patches: int
    seed: int = 0
    fill: float | Sequence[float] = 0.0
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, image: Tensor) -> Tensor:
        return random_keep_patches(image, self.keep, self.patches, self.generator, self.fill)

    @property
    def label(self) -> str:
        """The paper's way of writing the setting, e.g. "R=20, P=5"."""
        return f"R={round(self.keep * 100)}, P={self.patches}"


# ----------------------------------------------------------------------------- weather

WEATHER_CONDITIONS = (
    "normal", "fog", "rain", "snow", "fog+rain", "fog+snow", "rain+snow", "dark", "over-exposure", "wind",
)  # fmt: skip

Step = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _fog(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cloud layer: a bright (~225) haze whose density is smooth multi-scale noise, as imgaug's CloudLayer."""
    h, w = image.shape[:2]
    density = np.zeros((h, w), np.float32)
    for cells, weight in ((2, 0.5), (4, 0.3), (8, 0.2)):
        coarse = rng.random((cells + 1, cells + 1), dtype=np.float32)
        density += weight * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    alpha = np.clip(0.45 + 0.5 * (density - 0.5), 0.2, 0.85)[..., None]
    haze = rng.uniform(215, 235)
    return np.clip(image * (1 - alpha) + haze * alpha, 0, 255).astype(np.uint8)


def _streaks(
    image: np.ndarray, rng: np.random.Generator, density: float, length: float, radius: tuple[float, float],
    angle: float, brightness: float, blur: float,
) -> np.ndarray:
    """Falling particles (rain drops or snowflakes): dots smeared along the fall direction, screened on."""
    h, w = image.shape[:2]
    scale = min(h, w) / 256.0
    layer = np.zeros((h, w), np.float32)
    count = int(density * h * w / 100)
    ys, xs = rng.integers(0, h, count), rng.integers(0, w, count)
    radii = rng.uniform(*radius, count) * scale
    for y, x, r in zip(ys, xs, radii, strict=True):
        cv2.circle(layer, (int(x), int(y)), max(1, int(round(r))), 1.0, -1, lineType=cv2.LINE_AA)
    k = max(1, int(round(length * scale)))
    if k > 1:
        kernel = np.zeros((k, k), np.float32)
        kernel[:, k // 2] = 1.0 / k
        rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), angle, 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        kernel /= max(kernel.sum(), 1e-6)
        layer = cv2.filter2D(layer, -1, kernel) * min(k, 4)
    if blur > 0:
        layer = cv2.GaussianBlur(layer, (0, 0), blur * scale)
    alpha = np.clip(layer * brightness, 0, 1)[..., None]
    return np.clip(image * (1 - alpha) + 240.0 * alpha, 0, 255).astype(np.uint8)


def _rain(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Several layers of thin, long, slanted drops, as imgaug's stacked Rain augmenters."""
    angle = rng.uniform(-20, 20)
    out = image
    for _ in range(3):
        out = _streaks(out, rng, density=0.25, length=rng.uniform(12, 22), radius=(0.5, 1.0),
                       angle=angle + rng.uniform(-3, 3), brightness=0.55, blur=0.3)
    return (out * 0.9).astype(np.uint8)  # overcast


def _snow(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Several layers of soft round flakes with a short fall blur, as imgaug's stacked Snowflakes."""
    angle = rng.uniform(-30, 30)
    out = image
    for _ in range(3):
        out = _streaks(out, rng, density=0.12, length=rng.uniform(2, 5), radius=(0.8, 2.2),
                       angle=angle, brightness=0.9, blur=0.6)
    return out


def _brightness(image: np.ndarray, mul: float, add: float, blend: bool) -> np.ndarray:
    """Scale and shift luma (YCrCb), optionally after flattening contrast (dark: 0.6 x + 50 first)."""
    x = image.astype(np.float32)
    if blend:
        x = 0.6 * x + 50.0
    ycc = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2YCrCb).astype(np.float32)
    ycc[..., 0] = ycc[..., 0] * mul + add
    return cv2.cvtColor(np.clip(ycc, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)


def _dark(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _brightness(image, 0.2, rng.uniform(-30, -15), blend=True)


def _over_exposure(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _brightness(image, 1.6, rng.uniform(0, 30), blend=False)


def _albumentations_step(transform_factory: Callable[[], object]) -> Step:
    """Wrap an albumentations transform so its randomness comes from our per-image generator."""
    import albumentations as A

    compose = A.Compose([transform_factory()], seed=0)

    def step(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        compose.set_random_seed(int(rng.integers(2**31 - 1)))
        return compose(image=image)["image"]

    return step


def _wind() -> Step:
    import albumentations as A

    return _albumentations_step(lambda: A.MotionBlur(blur_limit=(15, 15), allow_shifted=False, p=1.0))


def _steps(name: str) -> list[Step]:
    table: dict[str, Callable[[], list[Step]]] = {
        "normal": lambda: [],
        "fog": lambda: [_fog],
        "rain": lambda: [_rain],
        "snow": lambda: [_snow],
        "fog+rain": lambda: [_fog, _rain],
        "fog+snow": lambda: [_fog, _snow],
        "rain+snow": lambda: [_snow, _rain],
        "dark": lambda: [_dark],
        "over-exposure": lambda: [_over_exposure],
        "wind": lambda: [_wind()],
    }
    if name not in table:
        raise ValueError(f"unknown weather condition {name!r}; choose one of {', '.join(WEATHER_CONDITIONS)}")
    return table[name]()


@dataclass
class WeatherTransform:
    """One University-1652 weather condition on uint8 RGB (H, W, 3) images.

    Deterministic per (seed, image): the random state of each call is derived from the seed and
    a CRC of the image bytes, so results do not depend on call order or data-loader workers.
    """

    name: str
    seed: int = 0
    steps: list[Step] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.steps = _steps(self.name)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image)
            raise ValueError(f"weather transforms take uint8 RGB images (H, W, 3), got {got}")
        image = np.ascontiguousarray(image)
        rng = np.random.default_rng([self.seed, zlib.crc32(image.data), *image.shape])
        out = image.copy()
        for step in self.steps:
            out = step(out, rng)
        return out


def weather_transform(name: str, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """The named condition (one of WEATHER_CONDITIONS) as a deterministic-per-seed image function."""
    return WeatherTransform(name, seed)


def masked_fraction_bound(keep: float, patches: int) -> float:
    """Edge-free per-rectangle area 1 - (1 - R)^(1/P); a lower bound on `patch_area_fraction`."""
    return 1.0 - math.pow(1.0 - keep, 1.0 / patches)
