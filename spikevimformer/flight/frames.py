"""A flight's frames in time order: a folder of photos (time from EXIF, else file order at --fps) or a video file.

EXIF time is DateTimeOriginal (0x9003) plus SubSecTimeOriginal (0x9291), the two tags drone cameras write per
frame (EXIF 2.32, sec. 4.6.6), in the zone OffsetTimeOriginal (0x9011, EXIF 2.31) gives where the camera writes
it; a video's time is OpenCV's frame position at its frame rate (or `fps`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from PIL import ExifTags, Image

from ..data.images import IMAGE_SUFFIXES, list_images
from ..geo.imaging import open_photo

EXIF_IFD = ExifTags.IFD.Exif
DATETIME_ORIGINAL, SUBSEC_ORIGINAL, OFFSET_ORIGINAL = 0x9003, 0x9291, 0x9011
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".mpg", ".mpeg", ".ts")


@dataclass(frozen=True)
class Frame:
    """One frame: its position in the flight, name, time in seconds from the first frame, the decoded upright RGB
    image, its EXIF (empty for video) and the file's bytes (for XMP; None for video); a frame that cannot be
    decoded has no image and says why in `error` (the flight goes on without it). `taken` is when it was taken,
    where known: aware, or naive for a camera clock of unknown zone (see exif_datetime)."""

    index: int
    name: str
    time_s: float
    image: Image.Image | None
    exif: Image.Exif
    data: bytes | None
    error: str = ""
    taken: datetime | None = None


def exif_datetime(exif: Image.Exif) -> datetime | None:
    """When the photo was taken, from DateTimeOriginal + SubSecTimeOriginal: aware in the zone OffsetTimeOriginal
    gives, naive where the camera wrote none (its clock's zone is unknown); None without a readable time."""
    tags = exif.get_ifd(EXIF_IFD) if exif else {}
    stamp = tags.get(DATETIME_ORIGINAL)
    if not stamp:
        return None
    try:
        when = datetime.strptime(str(stamp).strip("\x00 "), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    sub = str(tags.get(SUBSEC_ORIGINAL, "")).strip("\x00 ")
    if sub.isdigit():  # a decimal fraction of the second: "25" is 0.25 s
        when = when.replace(microsecond=int(sub[:6].ljust(6, "0")))
    try:  # "+02:00"; blank or malformed (some cameras write "   :  ") leaves the zone unknown
        zone = datetime.strptime(str(tags.get(OFFSET_ORIGINAL, "")).strip("\x00 "), "%z").tzinfo
    except ValueError:
        zone = None
    return when.replace(tzinfo=zone)


def exif_time(exif: Image.Exif) -> float | None:
    """Seconds since the epoch from exif_datetime, a zoneless camera clock read as UTC (the same on any machine;
    a flight uses only the differences between its frames), or None."""
    when = exif_datetime(exif)
    return None if when is None else epoch_s(when)


def epoch_s(when: datetime) -> float:
    """Seconds since the epoch of an aware time, or of a naive one read as UTC."""
    return (when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)).timestamp()


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def read_frames(source: str | Path, fps: float | None = None, every: int = 1) -> Iterator[Frame]:
    """The frames of a folder of photos or of a video file, in time order.

    A folder's photos are timed by EXIF (all of them, or else `fps` in name order; ValueError when some have no
    time and `fps` is not given, naming one); a video's frames at its own frame rate (or `fps`). Every `every`-th
    frame (or photo) is kept. FileNotFoundError for a missing source, ValueError for one OpenCV cannot open or with
    no frames.
    """
    if fps is not None and not fps > 0:
        raise ValueError(f"--fps must be positive, got {fps}")
    if every < 1:
        raise ValueError(f"--every must be at least 1, got {every}")
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"frames {source} do not exist: give a folder of photos or a video file")
    if source.is_dir():
        yield from _folder(source, fps, every)
    else:
        yield from _video(source, fps, every)


def _folder(folder: Path, fps: float | None, every: int) -> Iterator[Frame]:
    paths = list_images(folder)
    if not paths:
        raise ValueError(f"{folder} holds no photos ({', '.join(sorted(IMAGE_SUFFIXES))}); give a folder of frames "
                         "or a video file")  # fmt: skip
    times, taken = [], [None] * len(paths)
    if fps is None:  # EXIF time for every photo, read before any is localized (a missing one is an error now)
        unreadable = set()
        for i, path in enumerate(paths):
            try:
                with Image.open(path) as img:
                    taken[i] = exif_datetime(img.getexif())
            except (OSError, SyntaxError, ValueError):  # a corrupt frame costs itself: it is placed, untimed,
                unreadable.add(i)  # after the photo before it by name, and open_photo below says why
                times.append(None)
                continue
            if taken[i] is None:
                raise ValueError(f"{path} has no EXIF DateTimeOriginal: give the frame rate (--fps) to time the "
                                 "photos in name order")  # fmt: skip
            times.append(epoch_s(taken[i]))
        if len(unreadable) == len(paths):
            raise ValueError(f"none of the photos in {folder} is a readable image")
        for i in range(len(paths)):  # name order: the readable photo before (or, for the first, after) it
            if i in unreadable:
                times[i] = times[i - 1] if i > 0 else next(t for t in times if t is not None)
        order = sorted(range(len(paths)), key=lambda i: (times[i], paths[i].name))
        first = min(times)
        paths, times, taken = [paths[i] for i in order], [times[i] - first for i in order], [taken[i] for i in order]
    else:
        times = [i / fps for i in range(len(paths))]
    paths, times, taken = paths[::every], times[::every], taken[::every]
    for i, (path, t, when) in enumerate(zip(paths, times, taken, strict=True)):
        try:
            image, exif = open_photo(path)
        except ValueError as exc:  # a corrupt frame: the filter predicts over it
            yield Frame(i, path.name, float(t), None, Image.Exif(), None, str(exc), taken=when)
            continue
        yield Frame(i, path.name, float(t), image, exif, path.read_bytes(), taken=when)


def _video(path: Path, fps: float | None, every: int) -> Iterator[Frame]:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ValueError(f"{path} is not a video OpenCV can open (is the file complete? a folder of the frames as "
                             "photos works too)")  # fmt: skip
        rate = fps or capture.get(cv2.CAP_PROP_FPS)
        if not rate or not np.isfinite(rate) or rate <= 0:
            raise ValueError(f"{path} does not say its frame rate: give it with --fps")
        n, out = 0, 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            if n % every == 0:
                image = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                yield Frame(out, f"{path.name}#{n}", n / rate, image, Image.Exif(), None)
                out += 1
            n += 1
        if n == 0:
            raise ValueError(f"{path} holds no frames OpenCV can decode")
    finally:
        capture.release()
