"""The gateway's errors, named by the managed platform's runtime error codes.

The class name is the code: it goes into the body's ``error`` field (``infermodes.http``'s one
error shape) and into the ``x-amzn-ErrorType`` header, from which boto3's ``sagemaker-runtime``
client picks its exception (``ValidationError``, ``ModelError`` and ``ServiceUnavailable`` are
modelled there; ``ThrottlingException`` is the code botocore retries as throttling).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from fastapi import Request
from fastapi.responses import Response
from prometheus_client import Counter
from starlette.exceptions import HTTPException

from infermodes.errors import ClientClosedRequest, InfermodesError
from infermodes.http import (
    ERROR_MEDIA_TYPE,
    REQUEST_ID_HEADER,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    error_body,
    error_json,
    error_response,
    expects_continue,
    request_id,
    routing_message,
    status_kind,
)
from infermodes.logs import Throttled
from infermodes.metrics import PROTOCOL

log = logging.getLogger("infermodes.gateway")

ERROR_TYPE_HEADER = b"x-amzn-errortype"
# the platform's code for a request that names no operation (a path or method it does not serve)
UNKNOWN_OPERATION = "UnknownOperationException"
# the platform's code for a failure of its own, which boto3 retries; the body says nothing more:
# what failed is in the log, under the request's id
INTERNAL_FAILURE = "InternalFailure"
INTERNAL_FAILURE_BODY = error_json(
    "InternalServerError",
    "internal error; this server's log has the details under this request's id (x-amzn-RequestId)",
    INTERNAL_FAILURE,
)


class PlatformError(InfermodesError):
    """An error whose body carries fields of the platform's besides ``error`` and ``message``."""

    def details(self) -> dict[str, object]:
        return {}


def gateway_error_body(exc: InfermodesError) -> bytes:
    """The one error shape (``infermodes.http.error_body``), plus the platform's fields."""
    details = exc.details() if isinstance(exc, PlatformError) else {}
    if not details:
        return error_body(exc)
    return json.dumps({"error": type(exc).__name__, "message": str(exc), **details}).encode()


class ValidationError(InfermodesError):
    """The request cannot be served as sent: unknown endpoint (404), wrong phase or mode (400),
    ambiguous name (409), body too large (413). The platform's code for all of them."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
MAX_CUSTOM_ATTRIBUTES = 1024  # InvokeEndpoint's and InvokeEndpointAsync's limit


def custom_attributes_problem(text: str) -> str | None:
    """The platform refuses longer CustomAttributes on both runtime routes: a call accepted
    here would fail there (boto3 does not check a maximum length). Each route refuses with
    the code of its other header refusals (ValidationError, InvalidInput)."""
    if len(text) > MAX_CUSTOM_ATTRIBUTES:
        return f"{CUSTOM_ATTRIBUTES} has {len(text)} characters; at most {MAX_CUSTOM_ATTRIBUTES}"
    return None


class ModelError(PlatformError):
    """The model server answered a 4xx: its status and message travel on, as the platform's
    ``OriginalStatusCode`` and ``OriginalMessage``."""

    status_code = 424

    def __init__(self, endpoint: str, original_status: int, original_message: str) -> None:
        super().__init__(
            f"endpoint {endpoint}: the model answered {original_status}: {original_message}"
        )
        self.original_status = original_status
        self.original_message = original_message

    def details(self) -> dict[str, object]:
        return {
            "OriginalStatusCode": self.original_status,
            "OriginalMessage": self.original_message,
        }


class ThrottlingException(InfermodesError):
    """The endpoint's ``maxConcurrency`` is reached; the client should retry later."""

    status_code = 429


class InternalDependencyException(PlatformError):
    """A replica could not be reached or failed (5xx): 502, with its status when it answered."""

    status_code = 502

    def __init__(self, message: str, original_status: int | None = None) -> None:
        super().__init__(message)
        self.original_status = original_status

    def details(self) -> dict[str, object]:
        return {} if self.original_status is None else {"OriginalStatusCode": self.original_status}


class ServiceUnavailable(InfermodesError):
    """No replica became ready while the request was held, none can start now (its pods cannot
    be created or placed), or the gateway is stopping."""

    status_code = 503


class ModelInvocationTimeout(InfermodesError):
    """The replica did not answer within the invocation timeout."""

    status_code = 504


# this module's errors, named after the platform runtime's error codes
NAMED_ERRORS: frozenset[type[InfermodesError]] = frozenset({
    ValidationError, ModelError, ThrottlingException, InternalDependencyException,
    ServiceUnavailable, ModelInvocationTimeout, ClientClosedRequest,
})  # fmt: skip


def runtime_code(exc: InfermodesError) -> str:
    """The platform's runtime error code for an error: its name when it is named after one
    (``NAMED_ERRORS``), else by status, among the codes InvokeEndpointAsync has:
    ServiceUnavailable (503), InternalFailure (other 5xx), ValidationError (4xx)."""
    if type(exc) in NAMED_ERRORS:
        return type(exc).__name__
    return status_code_of(exc.status_code)


def status_code_of(status: int) -> str:
    """The platform's runtime code of an unnamed error, by its status."""
    if status == 503:
        return "ServiceUnavailable"
    return "InternalFailure" if status >= 500 else "ValidationError"


def refusal_code(status: int) -> str:
    """The platform's code of a refusal the HTTP protocol makes before the app sees the
    request (``http.GuardedHttpProtocol``): a head too slow to arrive (408) is
    ``RequestTimeoutException``, which botocore's standard retry mode retries as transient
    (nothing of the request was served); a malformed (400) or too large (431) head is bad input,
    coded by its status as any unnamed error (``ValidationError``)."""
    return "RequestTimeoutException" if status == 408 else status_code_of(status)


class ProtocolRefusals:
    """``uvicorn_options(on_refusal=...)`` of a server answering in the platform's codes (the
    gateway, ``async-api``): each refusal HTTP made before the app saw the request, which no
    route counts or logs, is counted at the ``protocol`` stage and logged with the id it was
    answered with; ``lines`` keeps that to a line a minute (anyone can send a malformed
    request)."""

    def __init__(self, answers: Counter, lines: Throttled) -> None:
        self.answers = answers
        self.lines = lines

    def __call__(self, status: int, message: str, named: str) -> None:
        self.answers.labels(PROTOCOL, str(status)).inc()
        self.lines.info("refused a request before routing: %d, %s (request %s)",
                        status, message, named, request=named)  # fmt: skip


def runtime_error_response(exc: InfermodesError) -> Response:
    """The one error shape, with the platform's code in ``x-amzn-ErrorType``: boto3 raises its
    exception of that code (the body's ``error`` keeps ours, which names the problem)."""
    response = error_response(exc)
    response.headers[ERROR_TYPE_HEADER.decode()] = runtime_code(exc)
    return response


async def unknown_operation(request: Request, exc: HTTPException) -> Response:
    """Routing's own 404 and 405 with the platform's code, so boto3 raises a named error, not
    one coded "404": in ``x-amzn-ErrorType`` for ``sagemaker-runtime`` (REST-JSON) and as the
    body's ``__type`` for ``sagemaker`` (JSON 1.1 reads only that). A gateway without a broker
    answers InvokeEndpointAsync so, one without the platform API its operations."""
    body = unknown_operation_body(status_kind(exc.status_code), routing_message(request, exc))
    headers = {**(exc.headers or {}), ERROR_TYPE_HEADER.decode(): UNKNOWN_OPERATION}
    return Response(body, exc.status_code, headers, ERROR_MEDIA_TYPE)


def unknown_operation_body(kind: str, message: str) -> bytes:
    """The one error shape (``kind``: NotFound, MethodNotAllowed) plus the platform's code as
    ``__type``, for the JSON 1.1 client."""
    return error_json(kind, message, UNKNOWN_OPERATION)


def error_headers(code: str, scope: Scope) -> list[tuple[bytes, bytes]]:
    """An error answer's headers: the one shape's media type and the platform's ``code``; a
    client waiting for 100 Continue gets the connection closed (``http.expects_continue``)."""
    headers = [(b"content-type", ERROR_MEDIA_TYPE.encode()), (ERROR_TYPE_HEADER, code.encode())]
    if expects_continue(scope["headers"]):
        headers.append((b"connection", b"close"))
    return headers


def internal_failure_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The headers of the platform's 500 for a bug: ``error_headers`` and the request's id,
    named here since such an answer may be made where no ``naming_request`` wraps ``send``."""
    named = (REQUEST_ID_HEADER, request_id(scope).encode())
    return [*error_headers(INTERNAL_FAILURE, scope), named]


def internal_failure_response(scope: Scope) -> Response:
    """``INTERNAL_FAILURE_BODY`` as a route's answer (the async route's, which counts it)."""
    response = Response(INTERNAL_FAILURE_BODY, 500)
    response.raw_headers.extend(internal_failure_headers(scope))
    return response


class WatchedSend:
    """A request's ``send`` that knows whether its answer started, and with what status: a bug
    handler given it cannot answer twice (``answer_bug``), and a counter reads the status."""

    __slots__ = ("send", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status: int | None = None  # the answer's, once started

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


async def answer_bug(scope: Scope, send: WatchedSend) -> None:
    """Log the exception being handled once, with the request's id, and answer the platform's
    500, which names nothing of it; unless the answer had started already (whoever raised had
    begun its own): uvicorn then ends the connection."""
    log.exception("request %s: internal error", request_id(scope))
    if send.status is not None:
        return
    body = INTERNAL_FAILURE_BODY
    headers = [*internal_failure_headers(scope), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AnsweringFailures:
    """ASGI middleware for the gateway's and ``async-api``'s FastAPI routes: an unexpected
    error (a bug) is logged once, with the request's id, and answered in the platform's shape
    (``answer_bug``). Without it Starlette answered a 500 without the platform's code and
    uvicorn logged the error again, without the id. ``answered``, if given, is told of every
    answer given (the request's scope and the status; a client gone unanswered is none):
    ``async-api`` counts them (the gateway counts its own around its routing)."""

    def __init__(self, app: ASGIApp, answered: Callable[[Scope, int], None] | None = None) -> None:
        self.app = app
        self.answered = answered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watched = WatchedSend(send)
        try:
            await self.app(scope, receive, watched)
        except Exception:
            await answer_bug(scope, watched)
        finally:
            if self.answered is not None and watched.status is not None:
                self.answered(scope, watched.status)
