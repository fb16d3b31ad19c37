"""`spikevimformer serve --index DIR`: the localization HTTP service and its upload page."""

from __future__ import annotations

import argparse
import sys

from ..flight.session import IDLE_S, MAX_FLIGHTS, MAX_FRAMES
from ..geo.serve import (
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_PIXELS,
    QUEUE,
    RETRY_AFTER_S,
    UPLOAD_TIMEOUT_S,
    UPLOADS,
    WORKERS,
    create_app,
)
from .common import add_device, add_model, add_registration, open_localizer_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP service: POST /localize, flight sessions at /flights, GET /health, upload "
                                     "page at /")
    p.add_argument("--index", required=True, help="gallery index folder")
    add_model(p, onnx=True, index=True)
    add_device(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("-k", "--top-k", type=int, default=5,
                   help="tiles to return and verify per photo (a request's ?k= overrides it)")
    p.add_argument("--temperature", type=float, default=0.02,
                   help="softmax temperature of the per-match `weights` in answers (display only: the estimate is "
                        "the best tile or the camera)")  # fmt: skip
    p.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / 2**20,
                   help="largest upload accepted, in MiB (larger: HTTP 413)")
    p.add_argument("--max-upload-mp", type=float, default=MAX_UPLOAD_PIXELS / 1e6,
                   help="largest photo accepted, in megapixels, judged from its header before decoding (a small "
                        "file can hold a huge picture; larger: HTTP 413)")
    p.add_argument("--upload-timeout-s", type=float, default=UPLOAD_TIMEOUT_S,
                   help="seconds the body of an upload may take to arrive (slower: HTTP 408)")
    p.add_argument("--max-uploads", type=int, default=UPLOADS,
                   help="uploads whose bodies may arrive at once (a slow client holds one of these, not a worker; "
                        "beyond them HTTP 503 with Retry-After)")
    p.add_argument("--workers", type=int, default=WORKERS,
                   help="photos decoded and localized at once (each holds its decoded pixels)")
    p.add_argument("--queue", type=int, default=QUEUE,
                   help=f"further photos that may wait for a worker; beyond them HTTP 503 with Retry-After: "
                        f"{RETRY_AFTER_S}")
    p.add_argument("--max-flights", type=int, default=MAX_FLIGHTS,
                   help="flights (POST /flights) live at once; beyond them HTTP 503 with Retry-After")
    p.add_argument("--flight-idle-s", type=float, default=IDLE_S,
                   help="seconds a flight may go without a request before it is dropped (then HTTP 404)")
    p.add_argument("--max-flight-frames", type=int, default=MAX_FRAMES,
                   help="frames one flight keeps; beyond them HTTP 409 (create a new flight from its last position)")
    add_registration(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    localizer = open_localizer_from_args(args, sys.stdout)
    app = create_app(localizer, max_upload_bytes=int(args.max_upload_mb * 2**20),
                     max_upload_pixels=int(args.max_upload_mp * 1e6), upload_timeout_s=args.upload_timeout_s,
                     workers=args.workers, queue=args.queue, max_flights=args.max_flights,
                     flight_idle_s=args.flight_idle_s, max_flight_frames=args.max_flight_frames,
                     max_uploads=args.max_uploads)  # fmt: skip
    print(f"serving {len(localizer.index)} tiles ({localizer.backend}) on http://{args.host}:{args.port}/")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
