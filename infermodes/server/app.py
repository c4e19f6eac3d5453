"""The model server: the managed platform's container contract over one XGBoost model.

``GET /ping``, ``POST /invocations`` and ``GET /metrics``. Domain errors carry their HTTP code
and render in one shape (``error_body``); metrics are recorded by one pure-ASGI middleware, and
``/invocations`` is a plain ASGI handler in front of the FastAPI app, so the one-row path stays a
few tens of microseconds of Python.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from infermodes.errors import (
    InfermodesError,
    InvalidInput,
    MethodNotAllowed,
    ModelNotReady,
)
from infermodes.http import (
    CODING_HEADERS,
    ERROR_MEDIA_TYPE,
    INTERNAL_ERROR,
    Answer,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    create_api,
    error_body,
    forwarded_id,
    read_body,
    refuse_coding,
)
from infermodes.metrics import INVOCATIONS_ROUTE, ServerMetrics
from infermodes.predict import codecs, fastcsv
from infermodes.predict.model import XGBoostModel
from infermodes.server.batching import Batcher
from infermodes.server.liveness import WorkerBeat
from infermodes.settings import ServeSettings

log = logging.getLogger("infermodes.serve")

ROUTES = frozenset({"/ping", INVOCATIONS_ROUTE, "/metrics"})
_MEDIA_TYPES = {kind: kind.encode() for kind in (*codecs.OUTPUT_TYPES, ERROR_MEDIA_TYPE)}


def load_failure(exc: Exception) -> str:
    """Why the model could not be loaded: our errors say it; anything else (a MemoryError, a
    bug) is logged with its traceback and named by its type."""
    if isinstance(exc, InfermodesError):
        return str(exc)
    log.error("unexpected error while loading the model", exc_info=exc)
    return f"unexpected error while loading the model ({type(exc).__name__}: {exc})"


class ModelSlot:
    """Holds the model once loaded; ``/ping`` answers 503 until then (or with the load error)."""

    def __init__(self) -> None:
        self.model: XGBoostModel | None = None
        self.error: str | None = None

    def require(self) -> XGBoostModel:
        """The model, or ModelNotReady saying why not (loading, or the load error)."""
        model = self.model
        if model is None:
            raise ModelNotReady(self.error or "model is loading")
        return model

    def load_in_background(
        self, load: Callable[[], XGBoostModel], on_failure: Callable[[str], None]
    ) -> threading.Thread:
        def run() -> None:
            try:
                self.model = load()
            except Exception as exc:  # anything: /ping must not say "loading" for ever
                self.error = load_failure(exc)
                on_failure(self.error)

        thread = threading.Thread(target=run, name="model-loader", daemon=True)
        thread.start()
        return thread


class MetricsMiddleware:
    """Request duration by route template and status for every route but ``/invocations``,
    which records its own (and its requests in flight) without a wrapped ``send``."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

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

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.request_took(route, status, time.perf_counter() - started)


class InvocationsHandler:
    """``POST /invocations`` as a plain ASGI callable: the hot path skips the framework's
    routing, dependency solving and response classes (about 40% more requests per second per
    worker, measured against the same handler as a FastAPI route)."""

    path = INVOCATIONS_ROUTE  # the route the protocol answers without a task (answer_now)

    def __init__(
        self,
        settings: ServeSettings,
        slot: ModelSlot,
        metrics: ServerMetrics,
        connections: Callable[[], int] | None = None,
        beat: WorkerBeat | None = None,
    ) -> None:
        self.slot = slot
        self.metrics = metrics
        self.limit = settings.max_payload_bytes
        # the bodies Python's readers read, by type: capped by the memory once the model is
        # loaded (``python_read_budgets``); None until then
        self.memory_budgets: dict[str, int] | None = None
        self.offload = settings.offload_bytes
        self.max_rows = settings.max_rows
        self.max_values = settings.max_values
        self.batcher = Batcher(
            metrics,
            settings.max_batch_rows,
            settings.max_batch_wait_us,
            connections,
            nullcontext if beat is None else beat.predicting,
            settings.loop_predict_seconds,
        )
        # Large bodies are decoded one at a time per worker: decoding holds the GIL, so a
        # second thread gains nothing and would double the memory in flight.
        self.offload_slot = asyncio.Semaphore(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.metrics
        metrics.request_started()
        started = time.perf_counter()
        status = 500
        try:
            status = await self.answer(scope, receive, send)
        finally:
            metrics.request_ended()
            metrics.request_took(INVOCATIONS_ROUTE, status, time.perf_counter() - started)

    def answer_now(self, scope: Scope, body: bytes) -> Answer | None:
        """The answer to a POST whose whole body is in hand, without awaiting anything (the
        protocol writes it without an ASGI task, ``WholeBodyRoute``); None where the request
        needs the ASGI path: no model yet (its 503), a body for the offload thread, a model
        whose predictions join batches, or rows too many to predict on the loop
        (``Batcher.fits_loop``: the ASGI path decodes them again and predicts them on a thread,
        a hop only for a prediction long enough to dwarf both)."""
        model = self.slot.model
        if model is None or len(body) >= self.offload or not self.batcher.predicts_alone(model):
            return None
        # Not counted in flight: it is answered within this one call, so no reader of the gauge
        # could see it (the ASGI path's requests, too, run to their answer in one task step).
        started = time.perf_counter()
        try:
            model, content_type, accept = self.negotiate(scope)
            rows = self.decoded(model, body, content_type)
            if not self.batcher.fits_loop(rows.shape[0]):
                return None  # the ASGI path counts its body
            self.metrics.body_received(len(body))
            predictions = self.batcher.predict_now(model, rows)
            answer: Answer = (200, accept, fastcsv.encode(predictions, accept, model.outputs))
        except Exception as exc:
            answer = failure(exc, scope)
        self.metrics.request_took(INVOCATIONS_ROUTE, answer[0], time.perf_counter() - started)
        return answer

    def abandoned(self, seconds: float, status: int) -> None:
        """A small body left unfinished, before the protocol gave it here (``WholeBodyRoute``):
        counted as the ASGI path counts one (499 a client gone, 408 a body timed out)."""
        self.metrics.request_took(INVOCATIONS_ROUTE, status, seconds)

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Respond; the status sent."""
        body_read = False
        try:
            model, content_type, accept = self.negotiate(scope)
            body = await read_body(scope, receive, self.limit)
            body_read = True
            self.metrics.body_received(len(body))
            if len(body) < self.offload:  # decoded on the event loop
                rows = self.decode(model, body, content_type)
                if self.batcher.fits_loop(len(rows)):  # predicted there, with its neighbours
                    predictions = await self.batcher.predict(model, rows)
                else:  # long: off the loop, which answers /ping and the others meanwhile
                    async with self.offload_slot:
                        predictions = await run_in_threadpool(self.batcher.predict_now, model, rows)
                payload = fastcsv.encode(predictions, accept, model.outputs)
            else:
                async with self.offload_slot:  # one thread hop: decode, predict, encode, alone
                    payload = await run_in_threadpool(self.score, model, body, content_type, accept)
            media_type, status = accept, 200
        except Exception as exc:
            status, media_type, payload = failure(exc, scope)
        headers = [
            (b"content-type", _MEDIA_TYPES.get(media_type) or media_type.encode()),
            (b"content-length", b"%d" % len(payload)),
        ]
        if status == 405:
            headers.append((b"allow", b"POST"))
        if not body_read:  # what is left of the body would be read as the next request
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return status

    def negotiate(self, scope: Scope) -> tuple[XGBoostModel, str, str]:
        """Everything decided from the headers, before any body byte is read: the model, the
        input type (one Content-Type), the output type (every Accept header, as one list), and
        no body coding we would misread."""
        if scope["method"] != "POST":
            raise MethodNotAllowed(f"{scope['method']} is not allowed on /invocations; use POST")
        model = self.slot.require()
        content_type: str | None = None
        accept: str | None = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                if content_type is not None:
                    raise InvalidInput("more than one Content-Type header")
                content_type = value.decode("latin-1")
            elif name == b"accept":
                text = value.decode("latin-1")
                accept = text if accept is None else f"{accept}, {text}"
            elif name in CODING_HEADERS:
                refuse_coding(name, value)
        return model, codecs.content_type_of(content_type), codecs.accept_of(accept)

    def decode(self, model: XGBoostModel, body: bytes, content_type: str) -> np.ndarray:
        """CSV within the limits goes to the native parser (20x the codecs on 1,000 rows, 4x
        on one); what it does not take, the codecs read or name the error of."""
        if content_type == codecs.CSV:
            lines = body.count(b"\n") + 1  # at least the codecs' count: limits hold
            if lines <= self.max_rows and lines * model.num_features <= self.max_values:
                rows = fastcsv.parse(body, model.num_features)
                if rows is not None:
                    return rows
        return codecs.decode(
            body,
            content_type,
            model.num_features,
            max_rows=self.max_rows,
            max_values=self.max_values,
            memory_budgets=self.memory_budgets,
        )

    def score(self, model: XGBoostModel, body: bytes, content_type: str, accept: str) -> bytes:
        predictions = self.batcher.predict_now(model, self.decode(model, body, content_type))
        return fastcsv.encode(predictions, accept, model.outputs)

    def decoded(self, model: XGBoostModel, body: bytes, content_type: str) -> np.ndarray:
        """``decode``, with a body it refuses counted as received, as the ASGI path counts it."""
        try:
            return self.decode(model, body, content_type)
        except Exception:
            self.metrics.body_received(len(body))
            raise


def failure(exc: Exception, scope: Scope) -> Answer:
    """A domain error's answer in the one error shape; anything else is a bug: logged, 500,
    with the id the gateway forwarded (``forwarded_id``), so the line joins the gateway's."""
    if isinstance(exc, InfermodesError):
        return exc.status_code, ERROR_MEDIA_TYPE, error_body(exc)
    log.error("unexpected error in /invocations%s", forwarded_id(scope), exc_info=exc)
    return 500, ERROR_MEDIA_TYPE, INTERNAL_ERROR


class Dispatch:
    """Sends ``/invocations`` to its plain handler and everything else, through the metrics
    middleware, to the FastAPI app."""

    def __init__(self, invocations: InvocationsHandler, rest: ASGIApp) -> None:
        self.invocations = invocations
        self.metrics = invocations.metrics
        self.rest = MetricsMiddleware(rest, invocations.metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == INVOCATIONS_ROUTE:
            await self.invocations(scope, receive, send)
        else:
            await self.rest(scope, receive, send)


def create_app(
    settings: ServeSettings,
    slot: ModelSlot,
    registry: CollectorRegistry | None = None,
    connections: Callable[[], int] | None = None,
    beat: WorkerBeat | None = None,
) -> Dispatch:
    """The ASGI app for one model (its ``metrics`` at hand for whoever loads the model).
    ``slot`` is filled by whoever loads the model; ``connections`` counts the worker's open
    connections (see ``Batcher``); ``beat`` marks its predictions for the liveness probe."""
    registry = registry if registry is not None else CollectorRegistry()
    metrics = ServerMetrics(registry)
    api = create_api("infermodes model server", registry)

    @api.api_route("/ping", methods=["GET", "HEAD"])
    async def ping() -> Response:
        slot.require()
        return Response(b"", 200)

    return Dispatch(InvocationsHandler(settings, slot, metrics, connections, beat), api)
