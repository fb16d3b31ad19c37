"""HTTP service: upload a photo, get the top-k tiles and a position estimate (FastAPI app factory)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from typing import Annotated

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from ..flight.filter import FilterConfig
from ..flight.fly import FlightConfig, StartNames
from ..flight.session import (
    IDLE_S,
    MAX_FLIGHTS,
    MAX_FRAMES,
    FlightRegistry,
    FlightSession,
    FrameConflict,
    SessionLimits,
    TooManyFlights,
    UnknownFlight,
    point_json,
)
from ..flight.track import TrackPoint, geojson, gpx_text, kml_text
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
UPLOADS = 32  # uploads whose bodies may arrive at once; a place in the work queue is taken only once one has
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
        raise HTTPProblem(413, f"upload of {int(declared)} bytes exceeds the limit of {limit} bytes (serve "
                               "--max-upload-mb)")
    body = bytearray()

    async def read() -> None:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise HTTPProblem(413, f"upload exceeds the limit of {limit} bytes (serve --max-upload-mb)")

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


def _image_part(content_type: str, body: bytes) -> tuple[bytes, str, str, tuple[bytes, str] | None, list[FormPart]]:
    """(bytes, content type, file name, the form's `camera` field and its name, or None, and the form's parts for
    the caller's own fields, none for a raw body) from a multipart form or a raw image body."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype != "multipart/form-data":
        return body, ctype, "upload", None, []
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
    return (bytes(image.data), image.content_type or "application/octet-stream", image.filename or "upload", camera,
            parts)


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
            raise HTTPProblem(415, f"{name} is an image in {named} format, which is not supported; send "
                                   f"{SUPPORTED}") from exc
        if ctype.startswith("image/") or ctype in ("", "application/octet-stream"):
            raise HTTPProblem(400, f"{name} is not a readable image ({exc or type(exc).__name__})") from exc
        raise HTTPProblem(415, f"{name} is {ctype or 'unlabelled'} and not an image; send {SUPPORTED}") from exc
    if fmt not in ACCEPTED_FORMATS:
        raise HTTPProblem(415, f"{name} is an image in {fmt} format, which is not supported; send {SUPPORTED}")
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


class FlightSpec(BaseModel):
    """A new flight's settings, as JSON or as query parameters (not both); every one optional, numbers finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    start_latitude: float | None = Field(None, ge=-90, le=90, description="the last GNSS position, degrees")
    start_longitude: float | None = Field(None, ge=-180, le=180, description="with start_latitude")
    start_radius_m: float = Field(FlightConfig.start_radius_m, gt=0, description="95 % radius of the start, metres")
    fps: float | None = Field(None, gt=0, description="frames per second: times frames sent without time_s by "
                                                      "their order, in place of their EXIF time")  # fmt: skip
    accel: float = Field(FilterConfig.accel_sigma, gt=0, description="the filter's acceleration noise (standard "
                                                                     "deviation, m/s^2)")  # fmt: skip
    name: str | None = Field(None, max_length=100, description="a label for the GPX and KML files (default: the id)")

    @field_validator("start_latitude", "start_longitude", "start_radius_m", "fps", "accel", mode="before")
    @classmethod
    def _not_boolean(cls, value: object) -> object:
        """JSON true is not the number 1 (pydantic's lax mode would take it as 1.0)."""
        if isinstance(value, bool):
            raise PydanticCustomError("float_type", "Input should be a number, not true or false")
        return value


SETTINGS = ", ".join(FlightSpec.model_fields)
REQUEST_START = StartNames("start_latitude {lat}, start_longitude {lon}", "start_radius_m")  # FlightSpec's names


FLIGHT_404 = {404: {"description": "no flight by that id (never created, deleted, or dropped when idle)"}}
FLIGHT_CREATE_ERRORS = {
    400: {"description": "a body that is not a JSON object, a setting of the wrong type, out of range or unknown, "
                         "only one of start_latitude/start_longitude, a start the index does not reach, settings "
                         "both as JSON and as query parameters"},
    503: {"description": "the service holds serve --max-flights flights; retry after the Retry-After header's "
                         "seconds (when the stalest idle flight expires) or delete a finished one"},
}  # fmt: skip
FRAME_ERRORS = {
    **LOCALIZE_ERRORS, **FLIGHT_404,
    400: {"description": "as for /localize, and a frame without a time (no time_s, no EXIF DateTimeOriginal, no "
                         "fps) or with a camera field (a flight's lens is the photo's EXIF or serve --camera/--fov)"},
    409: {"description": "a frame of this flight is still in work (post each after the answer to the one before), "
                         "a time before the previous frame's or on another clock than the first frame's, or the "
                         "flight holds serve --max-flight-frames frames"},
}  # fmt: skip
FRAME_BODY = {
    "required": True,
    "description": "the frame as /localize takes a photo: a multipart form with the file in field `image` (and "
                   "its time in field `time_s`, seconds on any clock), or the image bytes as the body (its time as "
                   "?time_s=); without time_s the flight's fps or the photo's EXIF DateTimeOriginal times it",
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                           "properties": {"image": {"type": "string", "format": "binary"},
                                                          "time_s": {"type": "number"}}}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
    },
}  # fmt: skip
JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "true or false"}
SHOWN_CHARS = 60  # of a refused value, quoted back
TRACK_TYPES = {"geojson": "application/geo+json", "gpx": "application/gpx+xml",
               "kml": "application/vnd.google-earth.kml+xml"}  # fmt: skip


def create_app(localizer: Localizer, max_upload_bytes: int = MAX_UPLOAD_BYTES, max_k: int = 50,
               max_upload_pixels: int = MAX_UPLOAD_PIXELS, upload_timeout_s: float = UPLOAD_TIMEOUT_S,
               workers: int = WORKERS, queue: int = QUEUE, max_flights: int = MAX_FLIGHTS,
               flight_idle_s: float = IDLE_S, max_flight_frames: int = MAX_FRAMES,
               max_uploads: int = UPLOADS):  # fmt: skip
    """The FastAPI app: POST /localize, the flight sessions under /flights, GET /health, GET /gallery,
    GET /tiles/{id}, and the page at /.

    At most `max_uploads` bodies arrive at once; once arrived, at most `workers` photos (of /localize and of
    flights together) are decoded and localized at once, off the event loop, and `queue` more wait; a request
    beyond those is answered 503 with Retry-After (a slow client holds an upload place, never a worker's).
    At most `max_flights` flights live at once, each dropped after `flight_idle_s` seconds without a request and
    keeping at most `max_flight_frames` frames. Raises ValueError for workers < 1, queue < 0, max_flights or
    max_flight_frames < 1, or flight_idle_s <= 0."""
    if workers < 1 or queue < 0 or max_uploads < 1:
        raise ValueError(f"--workers and --max-uploads must be at least 1 and --queue at least 0, got {workers}, "
                         f"{max_uploads} and {queue}")
    app = FastAPI(title="spikevimformer localize", version="1")
    working = asyncio.Semaphore(workers)
    admitted = 0  # /localize and frame requests waiting or working (their bodies arrived)
    receiving = 0  # uploads whose bodies are arriving
    flights = FlightRegistry(localizer, SessionLimits(max_flights, flight_idle_s, max_flight_frames))
    index = localizer.index
    by_id = {t.id: t for t in index.tiles}
    step = max(1, len(index.tiles) // MAP_POINTS)
    points = [[t.latitude, t.longitude] for t in index.tiles[::step]]
    page = files("spikevimformer").joinpath("resources/localize.html").read_text(encoding="utf-8")

    @app.exception_handler(HTTPProblem)
    async def problem(_request, exc: HTTPProblem):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(UnknownFlight)
    async def unknown_flight(_request, exc: UnknownFlight):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(TooManyFlights)
    async def too_many_flights(_request, exc: TooManyFlights):
        return JSONResponse({"detail": str(exc)}, status_code=503,
                            headers={"Retry-After": str(round(exc.retry_after_s))})  # fmt: skip

    @app.exception_handler(FrameConflict)
    async def frame_conflict(_request, exc: FrameConflict):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @asynccontextmanager
    async def admission() -> AsyncIterator[None]:
        """A place among the requests reading, waiting or working; 503 with Retry-After when there is none."""
        nonlocal admitted
        if admitted >= workers + queue:
            raise HTTPProblem(503, f"the service is busy ({workers} photos in work, {queue} waiting); retry in "
                                   f"{RETRY_AFTER_S} s", headers={"Retry-After": str(RETRY_AFTER_S)})  # fmt: skip
        admitted += 1
        try:
            yield
        finally:
            admitted -= 1

    async def receive(request: Request) -> bytes:
        """The upload's body, read in one of `max_uploads` places (503 with Retry-After when none is free)."""
        nonlocal receiving
        if receiving >= max_uploads:
            raise HTTPProblem(503, f"the service is receiving {max_uploads} uploads already; retry in "
                                   f"{RETRY_AFTER_S} s", headers={"Retry-After": str(RETRY_AFTER_S)})  # fmt: skip
        receiving += 1
        try:
            return await _read_bounded(request, max_upload_bytes, upload_timeout_s)
        finally:
            receiving -= 1

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError):
        """FastAPI's own answer is a nested list; a client deserves the one sentence every other error gets."""
        first = exc.errors()[0] if exc.errors() else {}
        return JSONResponse({"detail": _invalid(first, request.headers.get("content-type", ""))}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        return page

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "backend": localizer.backend, "gallery": len(index),
                "model": asdict(index.identity), "index": index.index_params.get("kind"),
                "flights": len(flights)}  # fmt: skip

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
        body = await receive(request)
        async with admission(), working:
            result = await run_in_threadpool(answer, request.headers.get("content-type", ""), body, k, fov, heading,
                                             pitch, altitude)  # fmt: skip
        out = result.to_dict()
        out["backend"] = localizer.backend
        out["weights"] = np.round(
            _weights([m.score for m in result.matches], localizer.temperature), 6
        ).tolist()
        return out

    def answer(content_type: str, body: bytes, k: int | None, fov: float | None, heading: float | None,
               pitch: float | None, altitude: float | None) -> Localization:  # fmt: skip
        """The photo's localization: parsing, decoding and the model, run on a worker thread."""
        data, ctype, name, camera, _ = _image_part(content_type, body)
        image, exif = _decode(data, ctype, name, max_upload_pixels)
        try:
            lens = None if camera is None else parse_camera(*camera)
            intrinsics = localizer.intrinsics(image, exif, name, fov, data=data, camera=lens, label="?{}=")
            prior = localizer.photo_prior(data, exif, name, heading, pitch, altitude, label="?{}=")
            return localizer.localize([image], [name], k, [intrinsics], [prior])[0]
        except ValueError as exc:  # a nonsense EXIF focal length, a photo too small to use
            raise HTTPProblem(400, str(exc)) from exc

    @app.get("/flights")
    def list_flights() -> dict:
        """The live flights, oldest first: each one's `id`, `name`, `created` and `last_seen` (UTC, ISO 8601; a
        flight unseen for `expires_after_idle_s` is dropped), `frames`, `fixes`, `busy` (a frame in work) and last
        online `position` (`latitude`, `longitude`, `radius_m`, `source`, `time_s`; null until a frame is placed).
        Listing touches no flight: it keeps none alive."""
        return {"flights": [s.brief() for s in flights.live()], "max_flights": flights.limits.max_flights,
                "expires_after_idle_s": flights.limits.idle_s}  # fmt: skip

    @app.post("/flights", status_code=201, responses=FLIGHT_CREATE_ERRORS)
    async def create_flight(query: Annotated[FlightSpec, Query()], spec: FlightSpec | None = None) -> JSONResponse:
        """Start a flight: its settings as JSON or query parameters, all optional -> 201, the flight's summary
        (`id` names it in the URLs below) and a Location header. Then post its frames in time order, one after
        the answer to the one before."""
        if spec is not None and spec.model_fields_set and query.model_fields_set:
            raise HTTPProblem(400, "give the flight's settings as JSON or as query parameters, not both")
        spec = spec if spec is not None and spec.model_fields_set else query
        if (spec.start_latitude is None) != (spec.start_longitude is None):
            raise HTTPProblem(400, "give both start_latitude and start_longitude (the last GNSS position), or neither")
        start = None if spec.start_latitude is None else (spec.start_latitude, spec.start_longitude)
        cfg = FlightConfig(start, spec.start_radius_m, FilterConfig(accel_sigma=spec.accel), names=REQUEST_START)
        session = await run_in_threadpool(new_flight, cfg, spec.fps, spec.name)
        return JSONResponse(session.summary(), status_code=201, headers={"Location": f"/flights/{session.id}"})

    def new_flight(cfg: FlightConfig, fps: float | None, name: str | None) -> FlightSession:
        """The flight, built on a worker thread (its start is checked against every tile of the index)."""
        try:
            return flights.create(cfg, fps, name)
        except ValueError as exc:  # a start the index does not reach
            raise HTTPProblem(400, str(exc)) from exc

    @app.post("/flights/{flight_id}/frames", responses=FRAME_ERRORS, openapi_extra={"requestBody": FRAME_BODY})
    async def post_frame(flight_id: str, request: Request, time_s: float | None = None) -> dict:
        """The flight's next frame (as /localize takes a photo; `time_s` in seconds on any clock, here or as a
        form field, else the flight's fps or the photo's EXIF time) -> its online estimate: `latitude`,
        `longitude`, `radius_m` (95 %), `source` (fix: a camera fix fused; predicted: none, or `rejected` by the
        filter's gate; tile: tile level, nothing known yet), `inliers`, the frame's own fix (`fix_latitude`, ...),
        `time_s` from the first frame and `seconds` of work. One frame of a flight at a time: a frame posted while
        another is in work is refused (409), not queued."""
        session = flights.get(flight_id)
        session.claim()
        try:
            body = await receive(request)
            async with admission(), working:
                point, seconds = await run_in_threadpool(add_frame, session, request.headers.get("content-type", ""),
                                                         body, time_s)  # fmt: skip
        finally:
            session.release()
        return {"flight": session.id, **point_json(point), "seconds": round(seconds, 3)}

    def add_frame(session: FlightSession, content_type: str, body: bytes,
                  time_s: float | None) -> tuple[TrackPoint, float]:  # fmt: skip
        """The frame decoded, localized and fused on a worker thread, and the seconds that took."""
        begin = time.perf_counter()
        data, ctype, name, camera, parts = _image_part(content_type, body)
        if camera is not None:
            raise HTTPProblem(400, "a flight's frames take their lens from their EXIF or serve --camera/--fov; send "
                                   "no camera field")  # fmt: skip
        field_time = next((p for p in parts if p.name == "time_s"), None)
        if field_time is not None:
            if time_s is not None:
                raise HTTPProblem(400, "time_s is given both as a query parameter and as a form field; give it once")
            try:
                time_s = float(field_time.data.decode("utf-8", "replace"))
            except ValueError as exc:
                raise HTTPProblem(400, f"form field time_s must be seconds, got {bytes(field_time.data)[:40]!r}") \
                    from exc  # fmt: skip
        name = name if parts else f"frame-{session.progress.frames}"  # a raw body has no file name
        image, exif = _decode(data, ctype, name, max_upload_pixels)
        try:
            point = session.add(image, exif, data, name, time_s)
        except ValueError as exc:  # no time, or not a finite one
            raise HTTPProblem(400, str(exc)) from exc
        return point, time.perf_counter() - begin

    @app.get("/flights/{flight_id}", responses=FLIGHT_404)
    def flight_summary(flight_id: str) -> dict:
        """The flight's settings, counts (`frames`, `fixes`, `rejected`), `time_source`, latest `warnings` and
        `last` online point (the answer to its last frame); answered at once, even with a frame in work."""
        return flights.get(flight_id).summary()

    @app.get("/flights/{flight_id}/track.{fmt}", responses={
        **FLIGHT_404, 200: {"content": {t: {} for t in TRACK_TYPES.values()},
                            "description": "the track as GeoJSON (RFC 7946), GPX 1.1 or KML 2.2"}})  # fmt: skip
    async def flight_track(flight_id: str, fmt: str, smoothed: bool = False) -> Response:
        """The track so far, `fmt` geojson, gpx or kml: the online estimates (each from the frames before it: what
        the drone was told), or with `?smoothed=1` the smoothed pass over every frame so far (better, also for the
        frames before the first fix). GeoJSON: the track as a LineString and every placed frame as a Point with its
        radius, source and fix flag. GPX and KML are timed in UTC from the flight's `started` (its summary): the
        first frame's EXIF time where EXIF times the flight, else when the first frame arrived. A frame in work is
        waited for."""
        session = flights.get(flight_id)
        if fmt not in TRACK_TYPES:
            raise HTTPProblem(404, f"no track format {fmt!r}; ask for track.geojson, track.gpx or track.kml")
        flight = await run_in_threadpool(session.track, smoothed)
        label = "smoothed" if smoothed else "online"
        text = (json.dumps(geojson(flight.points, label), allow_nan=False) if fmt == "geojson"
                else gpx_text(flight.points, f"{session.name} ({label})", flight.started) if fmt == "gpx"
                else kml_text(flight.points, session.name, label, flight.started))  # fmt: skip
        return Response(text, media_type=TRACK_TYPES[fmt])

    @app.delete("/flights/{flight_id}", responses=FLIGHT_404)
    def delete_flight(flight_id: str) -> dict:
        """End the flight and free its place (a frame in work still gets its answer) -> its last summary."""
        return flights.delete(flight_id).summary()

    return app


def _invalid(error: dict, content_type: str) -> str:
    """One sentence for pydantic's first complaint about a request: the field, what it takes and what came. A JSON
    body and fields refused as unknown are FlightSpec's: no other route takes either."""
    kind, loc, given = error.get("type"), error.get("loc", ()), error.get("input")
    where = ".".join(str(p) for p in loc[1:])
    if kind == "json_invalid":
        return (f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'unreadable')} at character "
                f"{where or 0}); send the flight's settings as one JSON object, such as {{\"fps\": 2}}")
    if loc == ("body",):
        if isinstance(given, bytes):
            return (f"the body is {content_type.split(';')[0] or 'unlabelled'}, not JSON; send the flight's settings "
                    "with content-type application/json, or as query parameters")  # fmt: skip
        return (f"the body must be a JSON object of the flight's settings ({SETTINGS}), got a JSON "
                f"{JSON_KINDS.get(type(given), type(given).__name__)}")  # fmt: skip
    if kind == "extra_forbidden":
        return f"{where} is not a flight setting; the settings are {SETTINGS}"
    shown = json.dumps(given, default=repr)  # as the client wrote it: true, null, "text"
    shown = shown if len(shown) <= SHOWN_CHARS else shown[:SHOWN_CHARS - 3] + "..."
    return f"{where or 'request'}: {error.get('msg', 'invalid value')} (got {shown})"


def _weights(scores: list[float], temperature: float) -> np.ndarray:
    return softmax_weights(np.array(scores), temperature)
