"""Image decoding and the inference preprocessing shared by indexing, localizing and serving."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ORIENTATION = 0x0112  # EXIF tag


@contextmanager
def unbounded_pixels() -> Iterator[None]:
    """Orthophotos legitimately exceed PIL's decompression-bomb limit; lift it only while reading one."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def to_rgb8(img: Image.Image) -> Image.Image:
    """8-bit RGB as a viewer shows it; 16-bit greyscale (GIS exports, thermal and mapping cameras) is scaled by
    1/257, where Pillow's own conversion would clip it to white."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or grey.max() > 255 else 255.0
        return Image.fromarray(np.clip(grey * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def open_photo(source: str | Path | bytes, name: str | None = None) -> tuple[Image.Image, Image.Exif]:
    """Decode fully now (a truncated file fails here, named) and upright by its EXIF orientation, as a viewer shows it.

    Returns the RGB image and the EXIF it carried (empty when none), for the camera's focal length.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "uploaded image")
    if not isinstance(source, bytes) and Path(source).is_dir():
        raise ValueError(f"{label} is a folder, not an image; give the image files in it")
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise FileNotFoundError(f"image {label} does not exist")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            img.load()
            exif = img.getexif()
            upright = ImageOps.exif_transpose(img) if exif.get(ORIENTATION, 1) != 1 else img
            return to_rgb8(upright), exif
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{label} is not a readable image ({exc})") from exc
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{label} is too large to decode safely ({exc})") from exc


def open_image(source: str | Path | bytes, name: str | None = None) -> Image.Image:
    """The decoded, upright RGB image (see open_photo)."""
    return open_photo(source, name)[0]


def preprocess(images: list[Image.Image], image_size: int) -> np.ndarray:
    """The evaluation transform of the benchmarks (one definition), batched -> (B, 3, S, S) float32."""
    from ..data.transforms import eval_transform

    if image_size <= 0 or image_size % 16:
        raise ValueError(f"image size must be a positive multiple of 16, got {image_size}")
    transform = eval_transform(image_size)
    out = np.empty((len(images), 3, image_size, image_size), dtype=np.float32)
    for i, img in enumerate(images):
        out[i] = transform(np.asarray(img.convert("RGB"))).numpy()
    return out
