"""HTTP service: upload a photo, get the top-k tiles and a position estimate (FastAPI app factory)."""

from __future__ import annotations

import asyncio
import io
from dataclasses import asdict, dataclass, field
from importlib.resources import files

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from .imaging import SUPPORTED, open_photo, unsupported_format
from .lens import parse_camera
from .localize import Localization, Localizer, softmax_weights
from .tiles import load_tile

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "MPO")  # MPO: JPEGs written by many drone cameras
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 50_000_000  # decoded RGB costs 3 bytes a pixel (150 MB here) plus the copies made on the way
UPLOAD_TIMEOUT_S = 60.0  # for the body of an upload: 20 MiB at 2.8 Mbit/s
WORKERS = 2  # photos decoded and localized at once
QUEUE = 8  # further photos that may wait for a worker; beyond them: 503
RETRY_AFTER_S = 5
MAX_FORM_PARTS = 8
MAP_POINTS = 5000


class HTTPProblem(Exception):
    """An error answered with a status code and one sentence."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


async def _read_bounded(request, limit: int, timeout_s: float = UPLOAD_TIMEOUT_S) -> bytes:
    """The request body, refusing (413) as soon as it exceeds `limit` bytes, whether or not Content-Length is sent,
    and (408) when it has not all arrived within `timeout_s` seconds: a client that stalls mid-body would
    otherwise hold its connection and its share of memory for ever (uvicorn's timeouts do not cover bodies)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPProblem(413, f"upload of {int(declared)} bytes exceeds the limit of {limit} bytes")
    body = bytearray()

    async def read() -> None:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise HTTPProblem(413, f"upload exceeds the limit of {limit} bytes")

    try:
        await asyncio.wait_for(read(), timeout_s)
    except asyncio.TimeoutError:
        raise HTTPProblem(408, f"the upload did not arrive within {timeout_s:g} s ({len(body)} bytes came); send "
                               "it again on a faster link, or raise serve --upload-timeout-s") from None  # fmt: skip
    return bytes(body)


@dataclass
class FormPart:
    """One part of a multipart form, as bytes whether or not it names a file (RFC 7578 makes the name optional:
    `curl -F 'image=<photo.jpg'`, `requests` with `(None, data)`)."""

    name: str
    filename: str | None
    content_type: str
    data: bytearray = field(default_factory=bytearray)


class _FormCollector:
    """python-multipart's callbacks, keeping each part's name, file name, content type and bytes."""

    def __init__(self, max_parts: int) -> None:
        self.max_parts, self.parts = max_parts, []
        self._field = self._value = self._disposition = b""

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_part_data": self.part_data, "on_header_field": self.field,
                "on_header_value": self.value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished}  # fmt: skip

    def part_begin(self) -> None:
        if len(self.parts) == self.max_parts:
            raise HTTPProblem(400, f"the form has more than {self.max_parts} parts; send the photo as field "
                                   "'image' and at most a 'camera' field")  # fmt: skip
        self.parts.append(FormPart("", None, ""))
        self._disposition = b""

    def part_data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].data.extend(data[start:end])

    def field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        name = self._field.strip().lower()
        if name == b"content-disposition":
            self._disposition = self._value
        elif name == b"content-type":
            self.parts[-1].content_type = self._value.decode("latin-1").split(";")[0].strip().lower()
        self._field = self._value = b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        filename = options.get(b"filename")
        self.parts[-1].name = options.get(b"name", b"").decode("utf-8", "replace")
        self.parts[-1].filename = None if filename is None else filename.decode("utf-8", "replace")


def parse_form(content_type: str, body: bytes, max_parts: int = MAX_FORM_PARTS) -> list[FormPart]:
    """The parts of a multipart/form-data `body` held in memory (already bounded by the upload limit).

    Raises HTTPProblem (400) for a body that is not a well-formed form or has more than `max_parts` parts."""
    _, params = parse_options_header(content_type)
    if not params.get(b"boundary"):
        raise HTTPProblem(400, "malformed multipart form (no boundary in the content-type header); let the client "
                               "library build the form (curl -F image=@photo.jpg)")  # fmt: skip
    form = _FormCollector(max_parts)
    try:
        parser = MultipartParser(params[b"boundary"], form.callbacks())
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise HTTPProblem(400, f"malformed multipart form ({exc}); let the client library build the form "
                               "(curl -F image=@photo.jpg)") from exc  # fmt: skip
    return form.parts


def _image_part(content_type: str, body: bytes) -> tuple[bytes, str, str, tuple[bytes, str] | None]:
    """(bytes, content type, file name, the form's `camera` field and its name, or None) from a multipart form or
    a raw image body."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype != "multipart/form-data":
        return body, ctype, "upload", None
    parts = parse_form(content_type, body)
    camera = next((p for p in parts if p.name == "camera"), None)
    image = next((p for p in parts if p.name == "image"), None)
    image = image or next((p for p in parts if p.filename is not None and p.name != "camera"), None)
    if image is None:
        raise HTTPProblem(400, "the form has a camera file but no photo; send the photo as field 'image'"
                          if camera is not None else "the form has no file field; send the photo as field "
                          "'image'")  # fmt: skip
    if camera is not None:  # a file (named by its file name) or the text of one
        camera = (bytes(camera.data), f"{camera.filename} (form field 'camera')" if camera.filename is not None
                  else "in form field 'camera'")  # fmt: skip
    return bytes(image.data), image.content_type or "application/octet-stream", image.filename or "upload", camera


def _decode(data: bytes, ctype: str, name: str, max_pixels: int = MAX_UPLOAD_PIXELS) -> tuple[Image.Image, Image.Exif]:
    """The upload's image, its format decided from the bytes whatever the client's label says ('image/jpg',
    'image/pjpeg', 'application/octet-stream', ...); its size judged from the header before any pixel is decoded,
    since a small file can hold a huge picture (a 0.45 MB PNG of 12000 x 12000 px decodes to 432 MB)."""
    if not data:
        raise HTTPProblem(400, "the uploaded file is empty")
    try:
        with Image.open(io.BytesIO(data)) as probe:  # reads the header only
            fmt, (width, height) = probe.format, probe.size
    except Exception as exc:
        if named := unsupported_format(data[:16]):
            raise HTTPProblem(415, f"{name} is a {named} image, which is not supported; send {SUPPORTED}") from exc
        if ctype.startswith("image/") or ctype in ("", "application/octet-stream"):
            raise HTTPProblem(400, f"{name} is not a readable image ({type(exc).__name__})") from exc
        raise HTTPProblem(415, f"{name} is {ctype or 'unlabelled'} and not an image; send {SUPPORTED}") from exc
    if fmt not in ACCEPTED_FORMATS:
        raise HTTPProblem(415, f"{name} is a {fmt} image, which is not supported; send {SUPPORTED}")
    if width * height > max_pixels:
        raise HTTPProblem(413, f"{name} is {width} x {height} px ({width * height / 1e6:.1f} Mpx), above the "
                               f"limit of {max_pixels / 1e6:g} Mpx (serve --max-upload-mp); send it downscaled")
    try:
        return open_photo(data, name)
    except ValueError as exc:
        raise HTTPProblem(400, str(exc)) from exc


# OpenAPI description of /localize: the handler reads the body itself (two encodings, bounded size), so FastAPI
# cannot infer these from its signature.
LOCALIZE_BODY = {
    "required": True,
    "description": "the photo: a multipart form with the file in field `image`, or the image bytes as the body "
                   "(any content-type label; the format is read from the bytes)",
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                           "properties": {"image": {"type": "string", "format": "binary"},
                                                          "camera": {"type": "string", "format": "binary",
                                                                     "description": "the lens: OpenSfM cameras.json "
                                                                     "or {width, height, K, dist} JSON"}}}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
    },
}  # fmt: skip
LOCALIZE_ERRORS = {
    400: {"description": "unreadable image, photo too small, bad k or fov, a bad camera file, a form without "
                         "a file"},
    408: {"description": "the upload did not arrive within serve --upload-timeout-s"},
    413: {"description": "upload larger than the service's limits (serve --max-upload-mb, --max-upload-mp)"},
    415: {"description": "not an accepted image format (JPEG, PNG, TIFF, WebP, BMP); HEIC, AVIF, ... named"},
    503: {"description": "every worker busy and the queue full (serve --workers, --queue); retry after the "
                         "Retry-After header's seconds"},
}  # fmt: skip


def create_app(localizer: Localizer, max_upload_bytes: int = MAX_UPLOAD_BYTES, max_k: int = 50,
               max_upload_pixels: int = MAX_UPLOAD_PIXELS, upload_timeout_s: float = UPLOAD_TIMEOUT_S,
               workers: int = WORKERS, queue: int = QUEUE):  # fmt: skip
    """The FastAPI app: POST /localize, GET /health, GET /gallery, GET /tiles/{id}, and the page at /.

    At most `workers` photos are decoded and localized at once, off the event loop, and `queue` more wait (their
    bodies read); a request beyond those is answered 503 with Retry-After. Raises ValueError for workers < 1 or
    queue < 0."""
    if workers < 1 or queue < 0:
        raise ValueError(f"--workers must be at least 1 and --queue at least 0, got {workers} and {queue}")
    app = FastAPI(title="spikevimformer localize", version="1")
    working = asyncio.Semaphore(workers)
    admitted = 0  # /localize requests reading, waiting or working
    index = localizer.index
    by_id = {t.id: t for t in index.tiles}
    step = max(1, len(index.tiles) // MAP_POINTS)
    points = [[t.latitude, t.longitude] for t in index.tiles[::step]]
    page = files("spikevimformer").joinpath("resources/localize.html").read_text(encoding="utf-8")

    @app.exception_handler(HTTPProblem)
    async def problem(_request, exc: HTTPProblem):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(_request, exc: RequestValidationError):
        """FastAPI's own answer is a nested list; a client deserves the one sentence every other error gets."""
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid value')} "
                                       f"(got {first.get('input')!r})"}, status_code=400)  # fmt: skip

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        return page

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "backend": localizer.backend, "gallery": len(index),
                "model": asdict(index.identity), "index": index.index_params.get("kind")}  # fmt: skip

    @app.get("/gallery")
    def gallery() -> dict:
        return {"count": len(index), "points": points, "sampled_every": step}

    @app.get("/tiles/{tile_id}")
    def tile(tile_id: str, size: int = 160):
        t = by_id.get(tile_id)
        if t is None:
            raise HTTPProblem(404, f"no tile {tile_id!r} in the gallery")
        try:
            img = load_tile(t)
        except (OSError, ValueError) as exc:
            raise HTTPProblem(404, f"tile {tile_id!r} has no readable image ({exc})") from exc
        img.thumbnail((max(16, min(size, 512)),) * 2)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        return Response(buf.getvalue(), media_type="image/jpeg")

    @app.post("/localize", responses=LOCALIZE_ERRORS, openapi_extra={"requestBody": LOCALIZE_BODY})
    async def localize(request: Request, k: int | None = None, fov: float | None = None, heading: float | None = None,
                       pitch: float | None = None, altitude: float | None = None):  # fmt: skip
        """A photo (form field `image`, or the raw body) -> JSON; `k` candidates; form field `camera` a camera file
        (geo.lens: OpenSfM cameras.json or {"width", "height", "K", "dist"}) for this photo, in place of serve
        --camera; `fov` the lens in degrees when the photo's EXIF has no (or no believable) focal length;
        `heading` (degrees clockwise from north of the image's up direction), `pitch` (below the horizon, 90 =
        down) and `altitude` (m) in place of what the photo records."""
        if k is not None and not 1 <= k <= max_k:
            raise HTTPProblem(400, f"k must be between 1 and {max_k}")
        nonlocal admitted
        if admitted >= workers + queue:
            raise HTTPProblem(503, f"the service is busy ({workers} photos in work, {queue} waiting); retry in "
                                   f"{RETRY_AFTER_S} s", headers={"Retry-After": str(RETRY_AFTER_S)})  # fmt: skip
        admitted += 1
        try:
            body = await _read_bounded(request, max_upload_bytes, upload_timeout_s)
            async with working:
                result = await run_in_threadpool(answer, request.headers.get("content-type", ""), body, k, fov,
                                                 heading, pitch, altitude)  # fmt: skip
        finally:
            admitted -= 1
        out = result.to_dict()
        out["backend"] = localizer.backend
        out["weights"] = np.round(
            _weights([m.score for m in result.matches], localizer.temperature), 6
        ).tolist()
        return out

    def answer(content_type: str, body: bytes, k: int | None, fov: float | None, heading: float | None,
               pitch: float | None, altitude: float | None) -> Localization:  # fmt: skip
        """The photo's localization: parsing, decoding and the model, run on a worker thread."""
        data, ctype, name, camera = _image_part(content_type, body)
        image, exif = _decode(data, ctype, name, max_upload_pixels)
        try:
            lens = None if camera is None else parse_camera(*camera)
            intrinsics = localizer.intrinsics(image, exif, name, fov, data=data, camera=lens, label="?{}=")
            prior = localizer.photo_prior(data, exif, name, heading, pitch, altitude, label="?{}=")
            return localizer.localize([image], [name], k, [intrinsics], [prior])[0]
        except ValueError as exc:  # a nonsense EXIF focal length, a photo too small to use
            raise HTTPProblem(400, str(exc)) from exc

    return app


def _weights(scores: list[float], temperature: float) -> np.ndarray:
    return softmax_weights(np.array(scores), temperature)
