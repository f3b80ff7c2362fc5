"""The server's ASGI app (Starlette): TF Serving's REST API, the page, the limits, the log.

Routes:

- `GET /v1/models/NAME[/versions/N]`: the model status, as TF Serving answers it;
- `GET /v1/models/NAME[/versions/N]/metadata`: the signature defs (TF Serving's metadata API);
- `POST /v1/models/NAME[/versions/N]:predict`: a predict call (`rest.py` has the formats);
- `GET /`: the page; `POST /segment`: the page's call, the image file's bytes as the body
  (`page.py`).

Another model name or version is a 404 with TF Serving's message (`Servable not found for
request: Latest(NAME)`). Every error of the app is JSON (an unknown path or method too, as
Starlette's 404 and 405 are turned into it; uvicorn's own 503 beyond `--max-connections` is
plain text), `{"error": "<message>"}`, and only ends its own
request: 400 for a bad request, 413 for a body over `max_request_bytes` (refused on its
`Content-Length`, or as soon as it streams past the limit, and never held in memory), 500 for
a bug, whose traceback goes to the log.

At most `max_concurrency` requests decode, run the model and encode at once, each in a worker
thread: the event loop only reads bodies and writes answers, so the status API and the page
itself (`GET /`) answer while the model runs, and further model calls wait their turn. A
waiting request holds its body (at most `max_request_bytes`) in memory: with uvicorn's
`--max-connections`, at most that many bodies are held at once.

Every request is logged as one line, when it is answered:

    POST /v1/models/tiny:predict 200 in=2484B out=46181B 41.2ms images=2
"""

import contextlib
import json
import logging
import re
import time
import traceback

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from deeplab_family.serve import page as page_lib
from deeplab_family.serve.rest import (
    RequestError,
    format_predict_response,
    parse_predict_request,
    status_response,
)

LOGGER = logging.getLogger("deeplab_family.serve")
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_CONCURRENCY = 2
# The most of a refused body that is read and dropped before the 413 (see `read_body`).
DRAIN_BYTES = 64 * 1024 * 1024

_MODEL_PATH = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?(?P<tail>/metadata|:[A-Za-z]+)?$"
)


def _json_response(content, status=200):
    body = content if isinstance(content, bytes) else json.dumps(content).encode("utf-8")
    return Response(body, status_code=status, media_type="application/json")


def _error(request, error):
    request.state.error = str(error)
    return _json_response({"error": str(error)}, error.status)


async def _drain(chunks, budget):
    """Reads and drops up to `budget` more bytes of a refused body."""
    async for chunk in chunks:
        budget -= len(chunk)
        if budget < 0:
            return


async def read_body(request, limit):
    """The whole body, or a 413 `RequestError` once it is known to be over `limit` bytes.

    A refused body is read on (and dropped) up to `DRAIN_BYTES`, so that the client, which
    sends its whole body before it reads the answer, reads the 413 instead of a connection
    reset; a client that sent `Expect: 100-continue` (curl, for large bodies) is answered at
    once and never sends the body.
    """
    declared = request.headers.get("content-length", "")
    too_large = f"over the server's limit of {limit} bytes (--max-request-bytes)"
    drain = "100-continue" not in request.headers.get("expect", "").lower()
    if declared.isdigit() and int(declared) > limit:
        if drain and int(declared) <= DRAIN_BYTES:
            await _drain(request.stream(), DRAIN_BYTES)
        raise RequestError(f"the request body is {int(declared)} bytes, {too_large}", 413)
    chunks, size = [], 0
    stream = request.stream()
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            if drain:
                await _drain(stream, DRAIN_BYTES - size)
            raise RequestError(f"the request body is {too_large}", 413)
        chunks.append(chunk)
    return b"".join(chunks)


class RequestLog:
    """ASGI middleware: one log line per request (method, path, status, bytes in and out,
    milliseconds, the images of a predict call, the error of a failed one)."""

    def __init__(self, app, logger=LOGGER):
        self.app = app
        self.logger = logger

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        counts = {"status": 0, "in": 0, "out": 0}
        state = scope.setdefault("state", {})

        async def counting_receive():
            message = await receive()
            if message["type"] == "http.request":
                counts["in"] += len(message.get("body", b""))
            return message

        async def counting_send(message):
            if message["type"] == "http.response.start":
                counts["status"] = message["status"]
            elif message["type"] == "http.response.body":
                counts["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            ms = 1000 * (time.perf_counter() - start)
            line = (f"{scope['method']} {scope['path']} {counts['status'] or 500} "
                    f"in={counts['in']}B out={counts['out']}B {ms:.1f}ms "
                    f"images={state.get('images', '-')}")
            if "error" in state:
                line += f" error={json.dumps(state['error'][:300])}"
            self.logger.info(line)


def create_app(model, max_request_bytes=DEFAULT_MAX_REQUEST_BYTES,
               max_concurrency=DEFAULT_MAX_CONCURRENCY, alpha=0.5, on_ready=None,
               logger=LOGGER):
    """The Starlette app serving `model`.

    Args:
        model: a `model.ServedModel` (or an object with its `name`, `version`, `inputs`,
            `spec`, `predict` and `metadata`).
        max_request_bytes: int. The largest request body; larger ones get a 413.
        max_concurrency: int. Model calls at once; the others wait.
        alpha: float. The page's overlay opacity.
        on_ready: called once the server has started, before the first request.
    """
    if max_request_bytes < 1:
        raise ValueError(f"max_request_bytes must be >= 1. Received: {max_request_bytes}")
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1. Received: {max_concurrency}")
    limiter = anyio.CapacityLimiter(max_concurrency)
    html = page_lib.page_html(model)

    async def in_worker(function, *args):
        return await anyio.to_thread.run_sync(function, *args, limiter=limiter)

    def predict_json(body):
        name, batch, form = parse_predict_request(body, model.inputs)
        outputs = model.predict(name, batch)
        return len(next(iter(batch.values()))), json.dumps(
            format_predict_response(outputs, form), separators=(",", ":")).encode("utf-8")

    def servable(name, version):
        if name != model.name or (version is not None and version != str(model.version)):
            which = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise RequestError(f"Servable not found for request: {which}", status=404)

    def guarded(handler):
        """`handler` with its errors answered as JSON: a `RequestError` with its status, any
        other exception as a 500 whose traceback goes to the log."""

        async def run(request):
            try:
                return await handler(request)
            except RequestError as e:
                return _error(request, e)
            except Exception as e:  # a bug: this request fails, the server goes on
                logger.error("internal error on %s %s:\n%s", request.method, request.url.path,
                             "".join(traceback.format_exception(e)))
                return _error(request, RequestError(f"internal error: {type(e).__name__}: {e}",
                                                    status=500))

        return run

    async def models_api(request):
        match = _MODEL_PATH.match(request.path_params["rest"])
        if not match:
            raise RequestError(f"no such REST endpoint: {request.url.path}", status=404)
        name, version, tail = match["name"], match["version"], match["tail"]
        servable(name, version)
        method = request.method
        if tail is None and method == "GET":
            return _json_response(status_response(model.version))
        if tail == "/metadata" and method == "GET":
            return _json_response(model.metadata())
        if tail == ":predict" and method == "POST":
            body = await read_body(request, max_request_bytes)
            images, content = await in_worker(predict_json, body)
            request.state.images = images
            return _json_response(content)
        if tail in (":classify", ":regress") and method == "POST":
            raise RequestError(f"{tail[1:]} is not served: this model has predict signatures "
                               "only (POST ...:predict)")
        raise RequestError(f"{method} {request.url.path} is not an endpoint of this server "
                           "(GET status, GET .../metadata, POST ...:predict)", status=404)

    def segment_json(body, start):
        answer = page_lib.segment(model, body, alpha)
        answer["milliseconds"] = round(1000 * (time.perf_counter() - start), 1)
        return json.dumps(answer).encode("utf-8")  # megabytes of base64: not on the loop

    async def segment(request):
        start = time.perf_counter()
        body = await read_body(request, max_request_bytes)
        content = await in_worker(segment_json, body, start)
        request.state.images = 1
        return _json_response(content)

    async def index(request):
        return HTMLResponse(html)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if on_ready is not None:
            on_ready()
        yield

    async def http_error(request, exc):
        """Starlette's own 404 (no such path) and 405 (wrong method), as JSON like the rest."""
        allowed = {"allow": exc.headers["allow"]} if exc.headers and "allow" in exc.headers else {}
        message = {404: f"no such endpoint: {request.method} {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}
        error = message.get(exc.status_code, exc.detail)
        request.state.error = error
        return Response(json.dumps({"error": error}).encode("utf-8"), status_code=exc.status_code,
                        media_type="application/json", headers=allowed)

    return Starlette(
        exception_handlers={HTTPException: http_error},
        routes=[
            Route("/", guarded(index), methods=["GET"]),
            Route("/segment", guarded(segment), methods=["POST"]),
            Route("/v1/models/{rest:path}", guarded(models_api), methods=["GET", "POST"]),
        ],
        middleware=[Middleware(RequestLog, logger=logger)],
        lifespan=lifespan,
    )
