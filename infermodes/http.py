"""What every infermodes HTTP process shares: the error shape, body reading under a limit,
the ``/metrics`` route, and the uvicorn options.

Domain errors carry their status code (``infermodes.errors``); this is the one place that turns
them into HTTP responses, for the plain ASGI handlers and for FastAPI routes alike.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry

from infermodes.errors import InfermodesError, PayloadTooLarge
from infermodes.metrics import render

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


ERROR_MEDIA_TYPE = "application/json"


def error_body(exc: InfermodesError) -> bytes:
    """The one error shape of every route: ``{"error": <kind>, "message": <what is wrong>}``."""
    return json.dumps({"error": type(exc).__name__, "message": str(exc)}).encode()


def error_response(exc: InfermodesError) -> Response:
    return Response(error_body(exc), exc.status_code, media_type=ERROR_MEDIA_TYPE)


def create_api(title: str, registry: CollectorRegistry) -> FastAPI:
    """A FastAPI app that maps domain errors and serves the registry's ``/metrics``."""
    api = FastAPI(title=title, docs_url=None, redoc_url=None)

    @api.exception_handler(InfermodesError)
    async def domain_error(_: Request, exc: InfermodesError) -> Response:
        return error_response(exc)

    @api.get("/metrics")
    async def metrics_endpoint() -> Response:
        payload, content_type = render(registry)
        return Response(payload, media_type=content_type)

    return api


def header(scope: Scope, name: bytes) -> str | None:
    """A request header from the ASGI scope (``name`` in lower case)."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, refusing (413) before reading when Content-Length is over the limit
    and while reading when it is absent (chunked uploads)."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
    message = await receive()
    body = message.get("body", b"")
    chunks = [body]
    size = len(body)
    while True:
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        if not message.get("more_body", False):
            return body if len(chunks) == 1 else b"".join(chunks)
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)


def uvicorn_options(log_level: str) -> dict[str, Any]:
    """uvicorn settings of every infermodes server: uvloop and httptools, no websockets (their
    import costs cold start), no access log or lifespan, no Server or Date header."""
    return {
        "loop": "uvloop",
        "http": "httptools",
        "ws": "none",
        "lifespan": "off",
        "access_log": False,
        "log_level": log_level,
        "server_header": False,
        "date_header": False,
        "timeout_keep_alive": 75,
    }
