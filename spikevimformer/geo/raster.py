"""Orthophotos read window by window, so an area of any size is indexed and registered in bounded memory.

A GeoTIFF is read with rasterio (GDAL): only the blocks under a requested window are decoded, so a 20000 x 20000
tiled raster costs a few tiles' worth of memory per crop (`benchmarks/large_ortho.py` measures it). Other formats
(JPEG, PNG with a world file), and any raster when rasterio is not installed, are decoded whole once and cached,
as before; above LARGE_PIXELS that prints a one-line note suggesting a tiled GeoTIFF. Each thread reads a GeoTIFF
through its own handle (GDAL datasets are not thread-safe), so the server's workers share one open raster.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

LARGE_PIXELS = 64_000_000  # 8000 x 8000: 192 MB of RGB, where decoding whole starts to hurt
GDAL_CACHE_MB = 128


class WindowedRaster:
    """A raster file opened with rasterio; `crop` decodes only the blocks the box touches."""

    def __init__(self, path: str) -> None:
        # GDAL keeps decoded blocks in a cache of 5 % of RAM by default (1.2 GB here, as much as the raster): a row
        # of tiles reuses blocks only from the row before, so 128 MB serves; a user's own setting is kept.
        os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))
        self.path = path
        self._local = threading.local()
        bands = self._dataset.count
        if bands not in (1, 2, 3, 4):
            raise ValueError(f"orthophoto {path} has {bands} bands; expected grey, grey + alpha, RGB or RGBA")
        self._bands = [1, 1, 1] if bands < 3 else [1, 2, 3]
        dtype = np.dtype(self._dataset.dtypes[0])
        if dtype not in (np.uint8, np.uint16):
            raise ValueError(f"orthophoto {path} holds {dtype} pixels; expected 8- or 16-bit (export it as RGB)")
        self._dtype = dtype
        self.size = (self._dataset.width, self._dataset.height)

    @property
    def _dataset(self):
        """This thread's handle on the file, opened on first use: a GDAL dataset shared by threads (the server's
        workers) decodes blocks into the wrong read (a "ZIPDecode" error, or another window's pixels); the block
        cache behind the handles is GDAL's own, shared and thread-safe."""
        import rasterio

        dataset = getattr(self._local, "dataset", None)
        if dataset is None:
            with _readable(self.path):
                dataset = self._local.dataset = rasterio.open(self.path)
        return dataset

    def crop(self, box: tuple[int, int, int, int]) -> Image.Image:
        """The pixels of `box` (left, top, right, bottom) as 8-bit RGB; outside the raster black, as PIL's crop."""
        from rasterio.windows import Window

        left, top, right, bottom = (int(v) for v in box)
        data = np.zeros((3, bottom - top, right - left), self._dtype)
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(right, self.size[0]), min(bottom, self.size[1])
        if x1 > x0 and y1 > y0:  # the part inside the raster, read plainly (rasterio's boundless read warps
            # through a virtual raster, which resamples rotated rasters), pasted into black
            with _readable(self.path):
                part = self._dataset.read(self._bands, window=Window(x0, y0, x1 - x0, y1 - y0))
            data[:, y0 - top : y1 - top, x0 - left : x1 - left] = part
        if self._dtype == np.uint16:  # 16-bit as a viewer shows it: the top 8 bits (the same 1/257 rule as data.images)
            data = (data.astype(np.uint32) * 255 // 65535).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(data.transpose(1, 2, 0)), "RGB")

    def empty_overview(self, max_side: int) -> np.ndarray:
        """Nodata mask at most `max_side` px a side, read decimated (GDAL reads block by block, never whole):
        True where the raster's mask (alpha, nodata value) is empty or every band is 0."""
        from rasterio.enums import Resampling

        scale = min(1.0, max_side / max(self.size))
        shape = (max(1, round(self.size[1] * scale)), max(1, round(self.size[0] * scale)))
        with _readable(self.path):
            data = self._dataset.read(out_shape=(self._dataset.count, *shape), resampling=Resampling.nearest)
            mask = self._dataset.dataset_mask(out_shape=shape, resampling=Resampling.nearest)
        return (mask == 0) | np.all(data[: min(3, self._dataset.count)] == 0, axis=0)


class DecodedRaster:
    """A raster decoded whole with Pillow (the project's one decoder), cropped in memory."""

    def __init__(self, path: str) -> None:
        from .imaging import open_image, unbounded_pixels

        try:
            with _readable(path), unbounded_pixels():
                self._image = open_image(path)
        except ValueError as exc:
            from .geotiff import is_tiff

            if is_tiff(path):
                raise ValueError(_undecodable(path)) from exc
            raise
        self.path, self.size = path, self._image.size

    def crop(self, box: tuple[int, int, int, int]) -> Image.Image:
        return self._image.crop(tuple(int(v) for v in box))


Raster = WindowedRaster | DecodedRaster


class RowsFlipped:
    """A south-up raster (rows run north, a positive row step) read upside down, as GDAL and QGIS show it: boxes are
    of the north-up view, and each crop reads only its own rows of the file."""

    def __init__(self, raster: WindowedRaster | DecodedRaster) -> None:
        self.raster, self.path, self.size = raster, raster.path, raster.size

    def crop(self, box: tuple[int, int, int, int]) -> Image.Image:
        """The pixels of `box` (left, top, right, bottom) of the upside-down view; outside the raster black."""
        left, top, right, bottom = (int(v) for v in box)
        height = self.size[1]
        return self.raster.crop((left, height - bottom, right, height - top)).transpose(Image.Transpose.FLIP_TOP_BOTTOM)


@functools.lru_cache(maxsize=4)
def open_raster(path: str) -> WindowedRaster | DecodedRaster:
    """The orthophoto at `path`, opened once per process: windowed for a TIFF when rasterio is installed, else
    decoded whole. Raises FileNotFoundError for a missing file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"orthophoto {path} does not exist")
    if _windowed(path):
        return WindowedRaster(path)
    raster = DecodedRaster(path)
    width, height = raster.size
    if width * height > LARGE_PIXELS:
        print(f"note: {Path(path).name} ({width}x{height} px) is decoded whole; as a tiled GeoTIFF it would be read "
              "window by window (gdal_translate -co TILED=YES, or rasterio)", file=sys.stderr)  # fmt: skip
    return raster


def empty_overview(path: str | Path, max_side: int = 512) -> np.ndarray:
    """Nodata mask of the orthophoto at most `max_side` px a side (True: transparent, masked or black), without
    decoding it whole at full size: decimated windows of a GeoTIFF, JPEG draft decoding otherwise."""
    from .imaging import unbounded_pixels

    if _windowed(path):
        return open_raster(str(path)).empty_overview(max_side)
    with _readable(path), unbounded_pixels(), Image.open(path) as img:
        img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))  # JPEGs decode at 1/8 size
        small = img.convert("RGBA") if "A" in img.getbands() else img.convert("RGB")
        small.thumbnail((max_side, max_side), Image.Resampling.NEAREST)
        px = np.asarray(small)
    empty = np.all(px[..., :3] == 0, axis=-1)
    return empty | (px[..., 3] == 0) if px.shape[-1] == 4 else empty


def raster_size(path: str | Path) -> tuple[int, int]:
    """(width, height) in pixels from the header alone (rasterio for a TIFF, whatever its pixel layout)."""
    from .imaging import unbounded_pixels

    if _windowed(path):
        return open_raster(str(path)).size
    try:
        with unbounded_pixels(), Image.open(path) as img:  # only the header is read
            return img.size
    except UnidentifiedImageError as exc:
        raise ValueError(_undecodable(path)) from exc


def _windowed(path: str | Path) -> bool:
    """Whether the raster is read window by window: a TIFF, with rasterio installed."""
    from .geotiff import is_tiff

    if not is_tiff(path):
        return False
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _readable(path) -> Iterator[None]:
    """Decoder failures (a truncated or damaged file: GDAL's read error, Pillow's OSError) as one ValueError naming
    the file, instead of a traceback from deep inside the reader."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:  # Pillow's UnidentifiedImageError and rasterio's errors are OSErrors too
        while exc.__cause__ is not None:  # GDAL's "Read failed" wraps the reason (e.g. a truncated block)
            exc = exc.__cause__
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        message = f"orthophoto {path} cannot be decoded ({reason}): is the file complete and an image?"
        raise ValueError(message) from None


def _undecodable(path) -> str:
    from .geotiff import is_tiff

    if not is_tiff(path):
        return f"orthophoto {path} is not an image Pillow can read (is the file complete and an image?)"
    return (f"Pillow cannot read the pixels of {path} (16-bit colour or float TIFFs need rasterio: pip install "
            "'spikevimformer[deploy]' -c constraints.txt)")
