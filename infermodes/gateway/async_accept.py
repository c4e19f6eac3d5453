"""Accepting async invocations: ``POST /endpoints/{name}/async-invocations``.

Shaped like the managed platform's InvokeEndpointAsync, so its clients can call it: the input
by reference (``X-Amzn-SageMaker-InputLocation``) or inline in the body (stored to the
endpoint's input prefix first), and a 202 with the inference id and the output and failure
locations. The 202 is sent only after the broker confirmed the persistent message; a broker
that is down gets the client a 503, never a 202 for a request that was not stored.

``create_router`` is what the gateway mounts; ``create_app`` and ``serve`` run it on its own.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from infermodes.errors import (
    EndpointNotFound,
    InfermodesError,
    InputNotAllowed,
    InvalidInput,
    StorageError,
)
from infermodes.http import create_api, read_body, uvicorn_options
from infermodes.logs import configure_logging
from infermodes.metrics import AsyncApiMetrics
from infermodes.predict import codecs
from infermodes.queueing.broker import Enqueuer
from infermodes.queueing.messages import (
    DEFAULT_INVOCATION_TIMEOUT_SECONDS,
    DEFAULT_TTL_SECONDS,
    INFERENCE_ID,
    MAX_INVOCATION_TIMEOUT_SECONDS,
    MAX_TTL_SECONDS,
    InvocationRequest,
    new_inference_id,
)
from infermodes.queueing.rabbitmq import RequestPublisher
from infermodes.settings import AsyncApiSettings, AsyncEndpoint
from infermodes.storage import ObjectRef, Storage, join_uri, parse_uri

log = logging.getLogger("infermodes.async_api")

INPUT_LOCATION = "X-Amzn-SageMaker-InputLocation"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
REQUEST_TTL = "X-Amzn-SageMaker-RequestTTLSeconds"
INVOCATION_TIMEOUT = "X-Amzn-SageMaker-InvocationTimeoutSeconds"
INFERENCE_ID_HEADER = "X-Amzn-SageMaker-Inference-Id"
OUTPUT_LOCATION = "X-Amzn-SageMaker-OutputLocation"
FAILURE_LOCATION = "X-Amzn-SageMaker-FailureLocation"
MAX_CUSTOM_ATTRIBUTES = 1024


def header_seconds(value: str | None, name: str, default: int, maximum: int) -> int:
    """A whole number of seconds in 1..maximum, or ``default`` when the header is absent."""
    if value is None:
        return default
    if not value.strip().isdigit() or not 1 <= int(value) <= maximum:
        raise InvalidInput(f"{name} must be a whole number of seconds from 1 to {maximum}")
    return int(value)


def inference_id_of(value: str | None) -> str:
    if value is None:
        return new_inference_id()
    if not INFERENCE_ID.match(value):
        raise InvalidInput(
            f"{INFERENCE_ID_HEADER} must be 1 to 64 letters, digits, '.', '_' or '-'"
        )
    return value


def input_location_of(value: str, allowed: list[str], own_prefix: str) -> str:
    """The location, normalised. A worker reads whatever it is pointed at, so: with ``allowed``
    prefixes it must lie under one of them (or the endpoint's own input prefix); without them
    ``s3://`` may be anywhere (the store's own permissions govern) but ``file://`` only under the
    endpoint's input prefix, since a file path could name any of the worker's files."""
    try:
        ref = parse_uri(value)
    except StorageError as exc:
        raise InvalidInput(f"{INPUT_LOCATION}: {exc}") from None
    if ref.scheme == "file":
        ref = ObjectRef("file", "", posixpath.normpath(ref.key))
    permitted = [*allowed, own_prefix] if allowed or ref.scheme == "file" else []
    if permitted and not any(ref.uri.startswith(p.rstrip("/") + "/") for p in permitted):
        raise InputNotAllowed(
            f"{INPUT_LOCATION} {ref.uri} is not under an allowed prefix: {', '.join(permitted)}"
            " (add one with --allow-input-prefix)"
        )
    return ref.uri


def create_router(
    endpoints: dict[str, AsyncEndpoint],
    publisher: Enqueuer,
    storage: Storage,
    metrics: AsyncApiMetrics,
    max_inline_bytes: int,
    allowed_input_prefixes: list[str],
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """The route; domain errors are mapped by the app's ``InfermodesError`` handler."""
    router = APIRouter()

    @router.post("/endpoints/{name}/async-invocations", status_code=202)
    async def invoke_async(name: str, request: Request) -> Response:
        endpoint = endpoints.get(name)
        if endpoint is None:
            metrics.accepted.labels("unknown", "404").inc()
            raise EndpointNotFound(f"no async endpoint named {name!r}")
        try:
            response = await _accept(name, endpoint, request)
        except InfermodesError as exc:
            metrics.accepted.labels(name, str(exc.status_code)).inc()
            raise
        metrics.accepted.labels(name, "202").inc()
        return response

    def enqueue(message: InvocationRequest, inline: bytes | None) -> None:
        """Store an inline input, then queue the reference: one thread hop for both."""
        if inline is not None:
            storage.put_bytes(message.input_location, inline)
        publisher.submit(message.endpoint, message.inference_id, message.to_bytes())

    async def _accept(name: str, endpoint: AsyncEndpoint, request: Request) -> Response:
        headers = request.headers
        content_type = codecs.content_type_of(headers.get("content-type"))
        accept = codecs.accept_of(headers.get("accept"))
        ttl = header_seconds(
            headers.get(REQUEST_TTL), REQUEST_TTL, DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS
        )
        timeout = header_seconds(
            headers.get(INVOCATION_TIMEOUT),
            INVOCATION_TIMEOUT,
            DEFAULT_INVOCATION_TIMEOUT_SECONDS,
            MAX_INVOCATION_TIMEOUT_SECONDS,
        )
        attributes = headers.get(CUSTOM_ATTRIBUTES)
        if attributes is not None and len(attributes) > MAX_CUSTOM_ATTRIBUTES:
            raise InvalidInput(f"{CUSTOM_ATTRIBUTES} is longer than {MAX_CUSTOM_ATTRIBUTES}")
        inference_id = inference_id_of(headers.get(INFERENCE_ID_HEADER))
        location = headers.get(INPUT_LOCATION)
        body = await read_body(request.scope, request.receive, max_inline_bytes)
        if location and body:
            raise InvalidInput(f"send the input inline or by {INPUT_LOCATION}, not both")
        if not location and not body:
            raise InvalidInput(f"no input: send a body or an {INPUT_LOCATION} header")
        started = time.perf_counter()
        if location:
            location = input_location_of(location, allowed_input_prefixes, endpoint.input_path)
        else:
            location = join_uri(endpoint.input_path, f"{inference_id}.in")
        now = clock()
        message = InvocationRequest(
            inference_id=inference_id,
            endpoint=name,
            input_location=location,
            output_location=join_uri(endpoint.output_path, f"{inference_id}.out"),
            failure_location=join_uri(endpoint.failure_path, f"{inference_id}.error"),
            content_type=content_type,
            accept=accept,
            custom_attributes=attributes,
            accepted_at=now,
            expires_at=now + ttl,
            invocation_timeout_seconds=timeout,
        )
        await run_in_threadpool(enqueue, message, body or None)
        metrics.enqueue_duration.observe(time.perf_counter() - started)
        return JSONResponse(
            {
                "InferenceId": inference_id,
                "OutputLocation": message.output_location,
                "FailureLocation": message.failure_location,
            },
            202,
            headers={
                OUTPUT_LOCATION: message.output_location,
                FAILURE_LOCATION: message.failure_location,
            },
        )

    return router


def create_app(
    settings: AsyncApiSettings,
    publisher: Enqueuer,
    storage: Storage | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The router on its own, with ``/ping`` and ``/metrics``."""
    registry = registry if registry is not None else CollectorRegistry()
    app = create_api("infermodes async invocations", registry)
    router = create_router(
        settings.endpoints,
        publisher,
        storage or Storage(),
        AsyncApiMetrics(registry),
        settings.max_inline_bytes,
        settings.allowed_input_prefixes,
    )
    app.include_router(router)

    @app.get("/ping")
    async def ping() -> Response:
        return Response(b"", 200)

    return app


def serve(settings: AsyncApiSettings) -> int:
    """Entry point of ``infermodes async-api``."""
    import uvicorn

    configure_logging(settings.log_level)
    publisher = RequestPublisher(
        settings.broker_url, settings.max_attempts, settings.publish_connections
    )
    app = create_app(settings, publisher)
    log.info("accepting async invocations for %s", ", ".join(sorted(settings.endpoints)))
    try:
        uvicorn.run(
            app, host=settings.host, port=settings.port, **uvicorn_options(settings.log_level)
        )
    finally:
        publisher.close()
    return 0
