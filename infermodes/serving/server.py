"""The model server: the managed platform's container contract over one XGBoost model.

``GET /ping``, ``POST /invocations`` and ``GET /metrics``. Domain errors map to HTTP codes in
one handler; metrics are recorded by one pure-ASGI middleware (no per-request task or
BaseHTTPMiddleware copy), so the one-row path stays a few tens of microseconds of Python.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from infermodes import codecs
from infermodes.errors import InfermodesError, ModelNotReady, PayloadTooLarge
from infermodes.metrics import ServerMetrics, render
from infermodes.serving.model import XGBoostModel
from infermodes.settings import ServeSettings

log = logging.getLogger("infermodes.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ROUTES = frozenset({"/ping", "/invocations", "/metrics", "/execution-parameters"})


class ModelSlot:
    """Holds the model once loaded; ``/ping`` answers 503 until then (or with the load error)."""

    def __init__(self) -> None:
        self.model: XGBoostModel | None = None
        self.error: str | None = None

    def load_in_background(
        self, load: Callable[[], XGBoostModel], on_failure: Callable[[str], None]
    ) -> threading.Thread:
        def run() -> None:
            try:
                self.model = load()
            except InfermodesError as exc:
                self.error = str(exc)
                on_failure(self.error)

        thread = threading.Thread(target=run, name="model-loader", daemon=True)
        thread.start()
        return thread


class MetricsMiddleware:
    """Request duration by route template and status, and requests in flight."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, int], Any] = {}

    def _histogram(self, route: str, status: int) -> Any:
        key = (route, status)
        child = self._children.get(key)
        if child is None:
            child = self.metrics.request_duration.labels(route, str(status))
            self._children[key] = child
        return child

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_flight = self.metrics.requests_in_flight
        in_flight.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            in_flight.dec()
            self._histogram(route, status).observe(time.perf_counter() - started)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) before reading when Content-Length is over the limit
    and while reading when it is absent (chunked uploads)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
    if declared is not None:
        return await request.body()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def error_response(exc: InfermodesError) -> JSONResponse:
    return JSONResponse({"error": type(exc).__name__, "message": str(exc)}, exc.status_code)


def create_app(
    settings: ServeSettings, slot: ModelSlot, registry: CollectorRegistry | None = None
) -> FastAPI:
    """The ASGI app for one model. ``slot`` is filled by whoever loads the model."""
    registry = registry if registry is not None else CollectorRegistry()
    metrics = ServerMetrics(registry)
    app = FastAPI(title="infermodes model server", docs_url=None, redoc_url=None)
    app.state.metrics = metrics
    limit = settings.max_payload_bytes
    offload = settings.offload_bytes

    @app.exception_handler(InfermodesError)
    async def domain_error(_: Request, exc: InfermodesError) -> JSONResponse:
        return error_response(exc)

    @app.get("/ping")
    async def ping() -> Response:
        if slot.model is None:
            reason = slot.error or "model is loading"
            return JSONResponse({"status": "unavailable", "message": reason}, 503)
        return Response(b"", 200)

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        model = slot.model
        if model is None:
            raise ModelNotReady(slot.error or "model is loading")
        headers = request.headers
        content_type = codecs.content_type_of(headers.get("content-type"))
        accept = codecs.accept_of(headers.get("accept"))
        body = await read_body(request, limit)
        metrics.request_body_size.observe(len(body))
        if len(body) >= offload:
            rows = await run_in_threadpool(codecs.decode, body, content_type, model.num_features)
        else:
            rows = codecs.decode(body, content_type, model.num_features)
        started = time.perf_counter()
        if len(body) >= offload:
            predictions = await run_in_threadpool(model.predict, rows)
        else:
            predictions = model.predict(rows)
        metrics.predict_duration.observe(time.perf_counter() - started)
        metrics.rows_predicted.inc(rows.shape[0])
        return Response(codecs.encode(predictions, accept), media_type=accept)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        payload, content_type = render(registry)
        return Response(payload, media_type=content_type)

    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
