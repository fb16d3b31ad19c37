"""Image decoding and the inference preprocessing shared by indexing, localizing and serving."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.images import displayed

# ISO-BMFF brands (bytes 8-12 after "ftyp") of the phone and camera formats Pillow cannot decode.
ISOBMFF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"heim": "HEIC", b"heis": "HEIC",
                  b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}  # fmt: skip
SUPPORTED = "JPEG, PNG, WebP, TIFF or BMP"


def unsupported_format(head: bytes) -> str | None:
    """The name of a photo format Pillow cannot decode, from the file's first 16 bytes (HEIC/HEIF/AVIF, JPEG XL,
    PDF), or None: so a refusal names the format instead of calling the file unreadable."""
    if head[4:8] == b"ftyp" and head[8:12] in ISOBMFF_BRANDS:
        return ISOBMFF_BRANDS[head[8:12]]
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "JPEG XL"
    if head.startswith(b"%PDF"):
        return "PDF"
    return None


@contextmanager
def unbounded_pixels() -> Iterator[None]:
    """Orthophotos legitimately exceed PIL's decompression-bomb limit; lift it only while reading one."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


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
            return displayed(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(source, bytes):
            head = source[:16]
        else:
            with open(source, "rb") as f:
                head = f.read(16)
        if fmt := unsupported_format(head):
            raise ValueError(f"{label} is an image in {fmt} format, which is not supported; convert it to "
                             f"{SUPPORTED}") from exc
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
