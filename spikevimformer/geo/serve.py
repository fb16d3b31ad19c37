"""HTTP service: upload a photo, get the top-k tiles and a position estimate (FastAPI app factory)."""

from __future__ import annotations

import io
from dataclasses import asdict
from importlib.resources import files

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.requests import Request as StarletteRequest

from .imaging import open_photo
from .lens import parse_camera
from .localize import Localizer
from .tiles import load_tile

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "MPO")  # MPO: JPEGs written by many drone cameras
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAP_POINTS = 5000


class HTTPProblem(Exception):
    """An error answered with a status code and one sentence."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


async def _read_bounded(request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it exceeds `limit`, whether or not Content-Length is sent."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPProblem(413, f"upload of {int(declared)} bytes exceeds the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPProblem(413, f"upload exceeds the limit of {limit} bytes")
    return bytes(body)


async def _image_part(request, body: bytes) -> tuple[bytes, str, str, tuple[bytes, str] | None]:
    """(bytes, content type, file name, the form's `camera` field and its name, or None) from a multipart form or
    a raw image body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        async def replay() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await StarletteRequest(request.scope, replay).form(max_files=2, max_fields=8)
        except Exception as exc:  # malformed multipart from the client
            raise HTTPProblem(400, f"malformed multipart form ({exc})") from exc
        camera = form.get("camera")
        if camera is not None:  # a file (named by its file name) or the text of one
            camera = ((await camera.read(), f"{camera.filename or 'camera'} (form field 'camera')")
                      if hasattr(camera, "read") else (camera.encode(), "in form field 'camera'"))  # fmt: skip
        upload = form.get("image") or next((v for k, v in form.items() if hasattr(v, "read") and k != "camera"), None)
        if upload is None or not hasattr(upload, "read"):
            raise HTTPProblem(400, "the form has a camera file but no photo; send the photo as field 'image'"
                              if camera is not None else "the form has no file field; send the photo as field "
                              "'image'")  # fmt: skip
        data = await upload.read()
        part_type = (upload.content_type or "application/octet-stream").split(";")[0].strip().lower()
        return data, part_type, upload.filename or "upload", camera
    return body, ctype, "upload", None


def _decode(data: bytes, ctype: str, name: str) -> tuple[Image.Image, Image.Exif]:
    """The upload's image, its format decided from the bytes whatever the client's label says ('image/jpg',
    'image/pjpeg', 'application/octet-stream', ...)."""
    if not data:
        raise HTTPProblem(400, "the uploaded file is empty")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format
    except Exception as exc:
        if ctype.startswith("image/") or ctype in ("", "application/octet-stream"):
            raise HTTPProblem(400, f"{name} is not a readable image ({type(exc).__name__})") from exc
        raise HTTPProblem(415, f"{name} is {ctype or 'unlabelled'} and not an image; send one of "
                               f"{', '.join(ACCEPTED_FORMATS[:5])}") from exc  # fmt: skip
    if fmt not in ACCEPTED_FORMATS:
        raise HTTPProblem(415, f"{name} is a {fmt} image; accepted formats are {', '.join(ACCEPTED_FORMATS[:5])}")
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
    413: {"description": "upload larger than the service's limit (serve --max-upload-mb)"},
    415: {"description": "not an accepted image format (JPEG, PNG, TIFF, WebP, BMP)"},
}


def create_app(localizer: Localizer, max_upload_bytes: int = MAX_UPLOAD_BYTES, max_k: int = 50):
    """The FastAPI app: POST /localize, GET /health, GET /gallery, GET /tiles/{id}, and the page at /."""
    app = FastAPI(title="spikevimformer localize", version="1")
    index = localizer.index
    by_id = {t.id: t for t in index.tiles}
    step = max(1, len(index.tiles) // MAP_POINTS)
    points = [[t.latitude, t.longitude] for t in index.tiles[::step]]
    page = files("spikevimformer").joinpath("resources/localize.html").read_text(encoding="utf-8")

    @app.exception_handler(HTTPProblem)
    async def problem(_request, exc: HTTPProblem):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

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
        body = await _read_bounded(request, max_upload_bytes)
        data, ctype, name, camera = await _image_part(request, body)
        image, exif = _decode(data, ctype, name)
        try:
            lens = None if camera is None else parse_camera(*camera)
            intrinsics = localizer.intrinsics(image, exif, name, fov, data=data, camera=lens, label="?{}=")
            prior = localizer.photo_prior(data, exif, name, heading, pitch, altitude, label="?{}=")
            result = (await run_in_threadpool(localizer.localize, [image], [name], k, [intrinsics], [prior]))[0]
        except ValueError as exc:  # a nonsense EXIF focal length, a photo too small to use
            raise HTTPProblem(400, str(exc)) from exc
        out = result.to_dict()
        out["backend"] = localizer.backend
        out["weights"] = np.round(
            _weights([m.score for m in result.matches], localizer.temperature), 6
        ).tolist()
        return out

    return app


def _weights(scores: list[float], temperature: float) -> np.ndarray:
    from .localize import softmax_weights

    return softmax_weights(np.array(scores), temperature)
