"""Image discovery and loading that names the offending file instead of dying anonymously hours into a run."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
BAD_IMAGE_MODES = ("fail", "skip")
_JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})
ORIENTATION = 0x0112  # EXIF tag
_READ_ERRORS = (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError)
MIN_SIDE_PX = 32  # the smallest input the backbone's four stride-2 stages turn into a feature map worth matching
MAX_ASPECT = 4.0  # wider than any drone camera, satellite tile or panorama crop we expect


class BadImageError(ValueError):
    """An image that cannot be decoded; the message names its path so the user can fix or remove it."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")

    @classmethod
    def from_message(cls, message: str) -> BadImageError:
        """Rebuild one from its message (a DataLoader worker sends back only the text)."""
        body = message.removeprefix("cannot read image ")
        path, _, reason = body.rpartition(": ") if ": " in body else (body, "", "unreadable")
        return cls(Path(path), reason)


@dataclass
class ImageReport:
    """Bad images met while loading in 'skip' mode, so a run can say afterwards what it left out."""

    bad: list[tuple[Path, str]] = field(default_factory=list)

    def add(self, path: Path, reason: str) -> None:
        self.bad.append((Path(path), reason))

    def __len__(self) -> int:
        return len(self.bad)

    def lines(self) -> list[str]:
        return [f"{p}: {r}" for p, r in self.bad]


def check_bad_image_mode(mode: str) -> str:
    if mode not in BAD_IMAGE_MODES:
        raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_MODES}, got {mode!r}")
    return mode


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name; an empty or missing folder gives []."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image(p))


def images_by_stem(folder: Path) -> dict[str, Path]:
    """Images directly inside `folder` by file name less suffix, the suffix in any case (cameras write T000.JPG,
    T000.TIF); of two with one stem (T000.jpg, T000.png) the first by name. A missing folder gives {}."""
    found: dict[str, Path] = {}
    for path in list_images(folder):
        found.setdefault(path.stem, path)
    return found


def list_subfolders(folder: Path) -> list[Path]:
    """Visible sub-folders sorted by name (hidden ones such as .ipynb_checkpoints are not locations)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def spread_images(folder: Path | str, count: int, what: str = "folder") -> list[Path]:
    """`count` images spread evenly over the sorted image files under `folder` (all subfolders); `what` names the
    flag in errors. Raises ValueError for a file or a folder without images, FileNotFoundError for a missing one."""
    from ..fileio import require_dir

    folder = require_dir(folder, what)
    files = sorted(p for p in folder.rglob("*") if is_image(p))
    if not files:
        raise ValueError(f"{what} {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    picks = np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)
    return [files[i] for i in sorted(set(picks.tolist()))]


def to_rgb8(img: Image.Image) -> Image.Image:
    """8-bit RGB as a viewer shows it; 16-bit greyscale (GIS exports, thermal and mapping cameras) is scaled by
    1/257, where Pillow's own conversion would clip it to white."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or grey.max() > 255 else 255.0
        return Image.fromarray(np.clip(grey * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":  # float rasters: their own range
        grey = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(grey)), float(np.nanmax(grey))
        scaled = (np.nan_to_num(grey, nan=lo) - lo) * (255.0 / max(hi - lo, 1e-12))
        return Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def displayed(img: Image.Image) -> tuple[Image.Image, Image.Exif]:
    """The one decoder of every reader (datasets, tiles, orthophotos, photos, uploads): the fully decoded image,
    upright by its EXIF orientation and in 8-bit RGB as a photo viewer shows it, and the EXIF it carried."""
    img.load()
    exif = img.getexif()
    upright = ImageOps.exif_transpose(img) if exif.get(ORIENTATION, 1) != 1 else img
    return to_rgb8(upright), exif


def load_rgb(path: Path | str) -> np.ndarray:
    """Decode an image fully to RGB uint8 HxWx3 (see `displayed`); a corrupt or truncated file raises
    BadImageError."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            return np.asarray(displayed(img)[0], dtype=np.uint8)
    except FileNotFoundError:
        raise
    except _READ_ERRORS as exc:
        raise BadImageError(path, str(exc) or type(exc).__name__) from exc


def shape_warning(width: int, height: int) -> str | None:
    """Why a width x height image is a suspect input (below MIN_SIDE_PX a side, or beyond MAX_ASPECT), else None."""
    if min(width, height) < MIN_SIDE_PX:
        return f"{width}x{height} px is below {MIN_SIDE_PX} px on a side"
    aspect = max(width, height) / min(width, height)
    if aspect > MAX_ASPECT:
        return f"{width}x{height} px has aspect ratio {aspect:.1f}:1, beyond {MAX_ASPECT:.0f}:1; is this a whole photo?"
    return None


def quick_check(path: Path | str) -> str | None:
    """Fast integrity test (header verify plus JPEG end marker); returns a reason, or None when it looks fine."""
    return _inspect(Path(path), full=False)[0]


def full_check(path: Path | str) -> str | None:
    """Thorough integrity test: decode every pixel; slower than quick_check."""
    return _inspect(Path(path), full=True)[0]


def _inspect(path: Path, full: bool) -> tuple[str | None, tuple[int, int] | None]:
    """(reason it is unreadable or None, (width, height) or None)."""
    if full:
        try:
            h, w = load_rgb(path).shape[:2]
        except BadImageError as exc:
            return exc.reason, None
        return None, (w, h)
    try:
        with Image.open(path) as img:
            size = img.size
            img.verify()
    except _READ_ERRORS as exc:
        return str(exc) or type(exc).__name__, None
    if path.suffix.lower() in _JPEG_SUFFIXES:
        # PIL's verify does not look at JPEG scan data; a cut-off download lacks the end-of-image marker.
        with path.open("rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 64))
            if b"\xff\xd9" not in fh.read():
                return "truncated JPEG (no end-of-image marker)", size
    return None, size


@dataclass
class ImageScan:
    """What scan_images found: unreadable images and readable ones with suspect shapes, each with its reason."""

    bad: list[tuple[Path, str]] = field(default_factory=list)
    odd_shapes: list[tuple[Path, str]] = field(default_factory=list)


def scan_images(paths: Iterable[Path], full: bool = False, progress: bool = False) -> ImageScan:
    """Check every image among `paths`: readable (header, or every pixel with `full`) and of a plausible shape."""
    from ..progress import progress_bar

    paths = list(paths)
    scan = ImageScan()
    for p in progress_bar(paths, progress=progress, desc="checking images", unit="img", leave=False):
        reason, size = _inspect(Path(p), full)
        if reason is not None:
            scan.bad.append((Path(p), reason))
        elif size is not None and (odd := shape_warning(*size)):
            scan.odd_shapes.append((Path(p), odd))
    return scan


def load_or_report(path: Path, on_bad_image: str, report: ImageReport | None) -> np.ndarray | None:
    """Load an image; in 'skip' mode a bad one is recorded, warned about and returned as None."""
    try:
        return load_rgb(path)
    except BadImageError as exc:
        if on_bad_image == "fail":
            raise
        if report is not None:
            report.add(exc.path, exc.reason)
        warnings.warn(f"skipping unreadable image {exc.path}: {exc.reason}", RuntimeWarning, stacklevel=2)
        return None
