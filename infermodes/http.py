"""What every infermodes HTTP process shares: the error shape, body reading under a limit,
the ``/metrics`` route, and the uvicorn options with a hardened HTTP protocol.

Domain errors carry their status code (``infermodes.errors``); this is the one place that turns
them into HTTP responses, for the plain ASGI handlers, for FastAPI routes, for routing's own 404
and 405 and for requests too malformed or too slow to reach the app, alike.
"""

from __future__ import annotations

import asyncio
import functools
import http
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Protocol, cast

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from infermodes.errors import (
    ClientClosedRequest,
    InfermodesError,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedContentType,
    clipped,
)
from infermodes.logs import printable
from infermodes.metrics import render
from infermodes.settings import BODY_TIMEOUT_SECONDS, HEADER_TIMEOUT_SECONDS

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


ERROR_MEDIA_TYPE = "application/json"
# the platform's request id, which boto3 reads into ResponseMetadata.RequestId
REQUEST_ID_HEADER = b"x-amzn-requestid"
REQUEST_ID_KEY = "infermodes.request_id"  # where a request's id is kept in its scope
# where the protocol says why it ended a request's body: it gave up waiting (a 408, not a 499)
BODY_TIMED_OUT_KEY = "infermodes.body_timed_out"
MAX_HEADER_BYTES = 64 * 1024  # httptools sets no bound of its own


def error_json(kind: str, message: str, platform_code: str | None = None) -> bytes:
    """The one error shape of every route: ``{"error": <kind>, "message": <what is wrong>}``;
    with ``platform_code``, also as ``__type``, where the JSON 1.1 client (boto3's
    ``sagemaker``) reads the platform's code."""
    fields = {"error": kind, "message": message}
    if platform_code is not None:
        fields["__type"] = platform_code
    return json.dumps(fields).encode()


INTERNAL_ERROR = error_json("InternalServerError", "internal error; the server log has details")


def error_body(exc: InfermodesError) -> bytes:
    return error_json(type(exc).__name__, str(exc))


def status_kind(status: int) -> str:
    """The ``error`` of a response made by HTTP itself rather than a domain error: 404 ->
    ``NotFound``, 405 -> ``MethodNotAllowed`` (the domain error of the same name agrees)."""
    return http.HTTPStatus(status).phrase.title().replace(" ", "").replace("-", "")


def new_request_id() -> str:
    """128 random bits in a UUID's layout: a third of ``str(uuid.uuid4())``'s time, on the
    invocations' hot path."""
    x = os.urandom(16).hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def request_id(scope: Scope) -> str:
    """The request's id, made the first time it is asked for: what its answer's
    ``x-amzn-RequestId`` and the log lines about it say."""
    named: str | None = scope.get(REQUEST_ID_KEY)
    if named is None:
        named = scope[REQUEST_ID_KEY] = new_request_id()
    return named


def forwarded_id(scope: Scope) -> str:
    """`` (request ID)`` for a log line about a request the gateway forwarded with its id
    (``x-amzn-RequestId``, the one its client got), else nothing. Read only when a line is
    written: a request without the header costs nothing more."""
    value = header(scope, REQUEST_ID_HEADER)
    return "" if value is None else f" (request {printable(value, 64)})"


def naming_request(scope: Scope, send: Send) -> Send:
    """``send`` for routes that name no request themselves: the answer gets the request's id
    (an id the route answered with is kept)."""

    async def named(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if all(name.lower() != REQUEST_ID_HEADER for name, _ in headers):
                headers.append((REQUEST_ID_HEADER, request_id(scope).encode()))
            message = {**message, "headers": headers}
        await send(message)

    return named


class RequestNaming:
    """ASGI middleware: every HTTP answer names its request (``naming_request``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            send = naming_request(scope, send)
        await self.app(scope, receive, send)


def error_response(exc: InfermodesError) -> Response:
    return Response(error_body(exc), exc.status_code, media_type=ERROR_MEDIA_TYPE)


def routing_message(request: Request, exc: HTTPException) -> str:
    """What routing's own refusal says: the path no route serves, or the methods it allows."""
    path = clipped(request.url.path)
    if exc.status_code == 404:
        return f"no route {path}"
    if exc.status_code == 405 and exc.headers:
        return f"{request.method} is not allowed on {path}; use {exc.headers['Allow']}"
    return str(exc.detail)


async def routing_error(request: Request, exc: HTTPException) -> Response:
    """Routing's own 404 and 405 (and any other ``HTTPException``) in the one error shape."""
    return Response(
        error_json(status_kind(exc.status_code), routing_message(request, exc)),
        exc.status_code,
        headers=exc.headers,
        media_type=ERROR_MEDIA_TYPE,
    )


def create_api(title: str, registry: CollectorRegistry | None) -> FastAPI:
    """A FastAPI app that speaks the one error shape (domain errors, unknown routes, wrong
    methods, bugs), publishes no schema or docs, and serves the registry's ``/metrics`` (with
    None, none: a side port serves them, ``metrics.serve_metrics``)."""
    api = FastAPI(
        title=title, openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False
    )

    @api.exception_handler(InfermodesError)
    async def domain_error(_: Request, exc: InfermodesError) -> Response:
        return error_response(exc)

    api.exception_handler(HTTPException)(routing_error)

    @api.exception_handler(Exception)
    async def server_error(_: Request, exc: Exception) -> Response:
        """A bug, not bad input: the traceback goes to the log, the shape stays the same."""
        return Response(INTERNAL_ERROR, 500, media_type=ERROR_MEDIA_TYPE)

    if registry is not None:
        exposed = registry

        @api.api_route("/metrics", methods=["GET", "HEAD"])
        async def metrics_endpoint() -> Response:
            payload, content_type = render(exposed)
            return Response(payload, media_type=content_type)

    return api


def header(scope: Scope, name: bytes) -> str | None:
    """A request header from the ASGI scope (``name`` in lower case)."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


CODING_HEADERS = (b"content-encoding", b"transfer-encoding")


def expects_continue(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether the client waits for 100 Continue before it sends its body. Refused before the
    body is asked for, it may send it or not: the next bytes on the connection would be a
    guess, so such an answer closes it (RFC 9110, 10.1.1)."""
    return any(k == b"expect" and v.lower() == b"100-continue" for k, v in headers)


def repeated_header(name: str, count: int) -> str:
    """The refusal of a header that takes one value, given ``count`` times: taking either
    would be a guess (the gateway's sync and async routes say it alike)."""
    return f"{name} was given {count} times; send it once"


def refuse_codings(headers: Iterable[tuple[bytes, bytes]]) -> None:
    """``refuse_coding`` of every body coding header among ``headers`` (ASGI's)."""
    for name, value in headers:
        if name in CODING_HEADERS:
            refuse_coding(name, value)


def refuse_coding(name: bytes, value: bytes) -> None:
    """415 for a body coding nothing here undoes: a Content-Encoding other than identity (a
    gzip body read as CSV fails with a misleading message) or a Transfer-Encoding other than
    chunked (the HTTP parser undoes chunked alone and passes the rest through as the body)."""
    coding = value.strip().lower()
    if name == b"content-encoding" and coding not in (b"", b"identity"):
        raise UnsupportedContentType(
            f"Content-Encoding {clipped(value.decode('latin-1'), 40)!r} is not supported; "
            "send the body uncompressed"
        )
    if name == b"transfer-encoding" and coding != b"chunked":
        raise UnsupportedContentType(
            f"Transfer-Encoding {clipped(value.decode('latin-1'), 40)!r} is not supported; "
            "use chunked or Content-Length"
        )


def check_declared_length(scope: Scope, limit: int) -> str | None:
    """413 for a Content-Length over the limit, before one byte of the body is read; the
    declared length otherwise (None: chunked)."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
    return declared


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, refusing (413) before reading when Content-Length is over the limit
    and while reading when it is absent (chunked uploads). A body that ends early (the client
    closed, or took longer than the body timeout) is refused, never returned in part."""
    return await read_checked_body(scope, receive, limit, check_declared_length(scope, limit))


async def read_checked_body(
    scope: Scope, receive: Receive, limit: int, declared: str | None
) -> bytes:
    """``read_body`` for a caller that has already checked the declared length (``declared``,
    what ``check_declared_length`` returned) before deciding to read at all."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            timed_out = scope.get(BODY_TIMED_OUT_KEY)
            if timed_out is not None:  # the server gave up, not the client
                raise RequestTimeout(timed_out)
            expected = f" of {declared}" if declared is not None else ""
            raise ClientClosedRequest(
                f"the request body ended after {size}{expected} bytes: the connection closed"
            )
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunk if len(chunks) == 1 else b"".join(chunks)


RefusalCode = Callable[[int], str]  # the platform's error code of a status (the gateway's)
# told of each refusal the protocol makes with a platform code: its status, its message and
# the request id it was answered with (the gateway counts and logs it)
Refused = Callable[[int, str, str], None]


def raw_error_response(status: int, message: str, platform: tuple[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 error response, for the protocol to write when there is no app to.
    With ``platform``, the platform's code and the request id (the gateway's answers, the id
    its log line names), they are where boto3 reads them, as in the gateway's other errors:
    ``x-amzn-ErrorType`` (REST-JSON: ``sagemaker-runtime``) and the body's ``__type`` (JSON
    1.1: ``sagemaker``), and ``x-amzn-RequestId``."""
    code, headers = None, ""
    if platform is not None:
        code, named = platform
        headers = f"x-amzn-errortype: {code}\r\nx-amzn-requestid: {named}\r\n"
    body = error_json(status_kind(status), message, code)
    return b"".join(
        [
            f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode(),
            f"content-type: {ERROR_MEDIA_TYPE}\r\ncontent-length: {len(body)}\r\n".encode(),
            f"{headers}connection: close\r\n\r\n".encode(),
            body,
        ]
    )


_IDLE, _HEADERS, _BODY = 0, 1, 2
_WHOLE_BODY_BYTES = 64 * 1024  # uvicorn's HIGH_WATER_LIMIT: a larger body pauses reading
Answer = tuple[int, str, bytes]  # status, media type, payload


class WholeBodyRoute(Protocol):
    """A route that can answer a small POST without an ASGI task once its whole body is in
    hand (``GuardedHttpProtocol``): ``answer_now`` gives the answer, or None for the ASGI
    app to handle the request as usual."""

    path: str

    def answer_now(self, scope: Scope, body: bytes) -> Answer | None: ...

    def abandoned(self, seconds: float, status: int) -> None:
        """The body was not whole ``seconds`` after the head: the client left (``status``
        499) or the server gave up waiting (408, answered by the protocol); nothing was
        scored, and the route counts it as the app counts one it was reading."""


_JOIN_BYTES = 16 * 1024  # bodies up to this size are copied behind the head: one plain write
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends RST
# after a client's EOF, written before the answer it is owed: a client that closed answers
# it with a reset, one that half-closed skips it as any unexpected 1xx (RFC 9110, 15.2)
_PEER_PROBE = b"HTTP/1.1 100 Continue\r\n\r\n"
PEER_CHECK_SECONDS = 0.5  # how often a half-closed connection checks for that reset
# a body still coming when its answer closes the connection is read and dropped up to these
LINGER_BYTES = 8 * 1024 * 1024  # over the 6 MB payload limit: a body any route takes
LINGER_SECONDS = 5.0  # nginx's lingering_timeout


class _HeadWithBody:
    """The transport as a request's cycle sees it: the response head (uvicorn writes it on
    ``http.response.start``) is held until the first body write and goes out with it, in one
    system call: one TCP segment and one wake-up of the client per small response instead of
    two, and one system call less (on loopback the sender pays for the receiver's network stack
    too). A small body is joined to the head and written with ``write``: uvloop's
    ``writelines`` builds a write context for its ``writev`` on every call, which cost more than
    the copy (1 worker at 16 connections: 31,000-33,000 req/s with ``writelines``,
    33,100-34,600 joined, three short runs each); a large one goes by ``writelines``, uncopied.
    A head with no body in the same loop turn is flushed at the end of the turn."""

    __slots__ = ("_close", "_flush", "_head", "_loop", "_transport")

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        close: Callable[[], None] | None = None,
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._close = transport.close if close is None else close
        self._head: bytes | None = None
        self._flush: asyncio.Handle | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if self._flush is not None:
                self._flush.cancel()
            if len(data) <= _JOIN_BYTES:
                self._transport.write(head + data)
            else:
                self._transport.writelines((head, data))
        elif self._flush is None:  # the first write: hold it
            self._head = data
            self._flush = self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _HeadAlone(_HeadWithBody):
    """``_HeadWithBody`` for the answer to a HEAD, which writes no body: its head goes out at
    once (held, an answer written directly in a later read could overtake it); its close is
    the one given, as any other answer's."""

    __slots__ = ()

    def write(self, data: bytes) -> None:
        self._transport.write(data)


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b" 0")):
            return True
    return False


def _head_size(url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    return len(url) + sum(len(name) + len(value) + 4 for name, value in headers)  # ": ", CRLF


_MALFORMED_WARNING = "Invalid HTTP request received."  # uvicorn's, before send_400_response


@functools.cache
def _protocol_log(log: logging.Logger) -> logging.Logger:
    """uvicorn's log for the protocol, less its warning for each malformed request (written
    at log level debug only): a client could fill the log at the rate it connects, and each
    such request gets its 400 anyway. A child of ``log``, at its level (uvicorn reads the
    level itself for its trace lines); made on the first connection, after uvicorn has set
    its logging up."""
    child = log.getChild("protocol")
    child.setLevel(log.level)
    child.addFilter(lambda r: r.msg != _MALFORMED_WARNING or log.isEnabledFor(logging.DEBUG))
    return child


class _Lingering(asyncio.Protocol):
    """A connection after an answer that closes it while the client is still sending (a 415
    or 413 decided on the headers, a 400 or 431 refusing the head itself): closing a socket
    with unread bytes resets it, and a client still sending would see the reset instead of
    the answer. So, as nginx's lingering close: the answer is followed by the server's EOF,
    and what the client still sends is read and dropped until its EOF, ``LINGER_BYTES`` or
    ``LINGER_SECONDS``, whichever comes first.
    The transport is handed to this protocol, so the HTTP protocol's reads stay as they were."""

    def __init__(self, protocol: GuardedHttpProtocol, transport: asyncio.Transport) -> None:
        self.protocol = protocol
        self.transport = transport
        self.left = LINGER_BYTES
        self.deadline = protocol.loop.call_later(LINGER_SECONDS, transport.close)

    def data_received(self, data: bytes) -> None:
        self.left -= len(data)
        if self.left < 0:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadline.cancel()
        self.protocol.connection_lost(exc)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus what it lacks against slow or hostile clients: a
    deadline for a request's headers (from its first byte) and one for its body (from the end
    of the headers), so a client trickling bytes cannot hold a connection for ever; a bound on
    header bytes; and the one error shape for requests too malformed to reach the app. The
    fast path (a request in one read) only sets the phase; timers start when a read ends
    mid-request. A small POST to ``route`` is answered without an ASGI task when its body is
    whole: no task, coroutines, messages or header checks per request (``/invocations`` of one
    row: ~30 % of the server's CPU per request, which uvicorn's cycle and our handler's ASGI
    side cost)."""

    header_timeout = HEADER_TIMEOUT_SECONDS
    body_timeout = BODY_TIMEOUT_SECONDS
    route: WholeBodyRoute | None = None
    refusal_code: RefusalCode | None = None  # the platform's codes in refusals (the gateway)
    on_refusal: Refused | None = None  # told of each coded refusal (the gateway counts, logs)

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.logger = _protocol_log(self.logger)
        self.phase = _IDLE
        self.header_bytes = 0  # of the reads that ended mid-head
        self.read_bytes = 0  # of the read being parsed
        self.refused = False  # answered with an error and closing: nothing more is served
        self.deadline: asyncio.TimerHandle | None = None
        self.deferred: tuple[WholeBodyRoute, RequestResponseCycle, ASGIApp] | None = None
        self.deferred_at = 0.0  # perf_counter when the deferred request's head was in
        self.half_closed = False  # the client sent its EOF and is owed answers
        self.lingering = False  # answered and handed to ``_Lingering``
        self.stopping = False  # ``shutdown`` was called: the server is stopping
        self.peer_check: asyncio.TimerHandle | None = None
        self.close_answered = self._close_answered  # bound once, for each request's cycle

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn narrows BaseTransport the same way
        super().connection_made(transport)
        self._arm(self.timeout_keep_alive)  # a new connection may idle as a kept-alive one

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.peer_check is not None:
            self.peer_check.cancel()
        if self.deferred is not None:  # its body never came whole: nothing was scored
            route, cycle, _ = self.deferred
            timed_out = BODY_TIMED_OUT_KEY in cycle.scope
            status = RequestTimeout if timed_out else ClientClosedRequest
            route.abandoned(time.perf_counter() - self.deferred_at, status.status_code)
            self.deferred = None
        super().connection_lost(exc)

    def eof_received(self) -> bool:  # type: ignore[override]  # uvicorn's returns None: close
        """The client's EOF: a client that shut its sending side (``nc -N``) still reads
        the answers to the requests it sent whole (RFC 9112, 9.3.2 and 9.6), so the connection
        stays open for writing until the last of them, which closes it. A client that closed
        sends the same EOF: the running request's answer is then preceded by a ``100
        Continue``, which such a client's kernel answers with a reset (``_check_peer``); one
        with nothing owed, or whose last request is unfinished, is closed as before."""
        last = self.cycle  # the last request parsed; those before it are answered first
        if self.half_closed:  # reading resumed after a pipelined answer: the same EOF again
            return True
        if (
            self.refused
            or last is None
            or last.response_complete
            or last.more_body  # its body will never come whole
            or last.scope["http_version"] != "1.1"  # no 1xx may go to an HTTP/1.0 client
        ):
            return False
        self.half_closed = True
        last.keep_alive = False  # its answer says connection: close and closes it
        if not self.pipeline and not last.response_started:  # the running request
            last.waiting_for_100_continue = False  # the probe is its 100 Continue
            self.transport.write(_PEER_PROBE)
            self.peer_check = self.loop.call_later(PEER_CHECK_SECONDS, self._check_peer)
        return True

    def _check_peer(self) -> None:
        """Close a half-closed connection once the probe was reset: its client had left, and
        the app sees it go (``http.disconnect``), as before the EOF kept connections open."""
        self.peer_check = None
        sock = self.transport.get_extra_info("socket")
        if sock is not None and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.transport.close()
        elif not self.transport.is_closing():
            self.peer_check = self.loop.call_later(PEER_CHECK_SECONDS, self._check_peer)

    def data_received(self, data: bytes) -> None:
        self.read_bytes = len(data)
        super().data_received(data)
        if self.phase == _IDLE or self.refused or self.transport.is_closing():
            return  # the usual case: the read held whole requests
        if self.phase == _HEADERS:
            self.header_bytes += len(data)
            if self.header_bytes > MAX_HEADER_BYTES:
                self._refuse(431, f"request headers over {MAX_HEADER_BYTES} bytes")
            elif self.deadline is None:
                self._arm(self.header_timeout)
        elif self.phase == _BODY and self.deadline is None:
            self._arm(self.body_timeout)

    def on_message_begin(self) -> None:
        if self.refused:  # pipelined behind a refused request: not served
            return
        super().on_message_begin()
        self.phase = _HEADERS
        self.header_bytes = 0
        if self.deadline is not None:
            self._disarm()

    def on_headers_complete(self) -> None:
        if self.refused:  # a request pipelined behind a refused one
            return
        if self.parser.should_upgrade() and _has_body(self.headers):
            # llhttp stops at an upgrade and parses no body: refused, not scored empty (one
            # without a body, Java's GET /ping asking for h2c, is answered as usual)
            self._refuse(400, "Connection: Upgrade is not supported (its body would go unread): "
                         "send the request without it (curl: --http1.1)")  # fmt: skip
            return
        if (  # the reads that brought the head can hold more than the bound: measure it
            self.header_bytes + self.read_bytes > MAX_HEADER_BYTES
            and _head_size(self.url, self.headers) > MAX_HEADER_BYTES
        ):
            self._refuse(431, f"request headers over {MAX_HEADER_BYTES} bytes")
            return
        super().on_headers_complete()
        if self.deferred is None:  # a deferred request's answer is one write already
            self._join_head_and_body(self.cycle)
        self.phase = _BODY
        if self.deadline is not None:
            self._disarm()

    def on_body(self, body: bytes) -> None:
        if not self.refused:  # refused: no cycle reads it
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.refused:  # refused: no cycle reads it
            return
        super().on_message_complete()
        self.phase = _IDLE
        if self.deadline is not None:
            self._disarm()
        deferred = self.deferred
        if deferred is not None:
            self.deferred = None
            self._answer_whole(*deferred)

    def _unsupported_upgrade_warning(self) -> None:
        """uvicorn warns of every upgrade it does not do, and tells to install a WebSocket
        library: a client could fill the log with it. Ours are refused or answered as usual."""

    def _join_head_and_body(self, cycle: RequestResponseCycle) -> None:
        """The cycle writes through ``_HeadWithBody`` (``_HeadAlone`` for a HEAD) and closes
        through ``_close_answered``: a HEAD too may have been sent a body still coming."""
        writer = _HeadAlone if cycle.scope["method"] == "HEAD" else _HeadWithBody
        cycle.transport = writer(self.transport, self.loop, self.close_answered)  # type: ignore[assignment]  # a proxy of the methods the cycle calls

    def _close_answered(self) -> None:
        """The cycle's close after an answer that ends the connection: lingering
        (``_Lingering``) while a request's body is still coming, at once otherwise."""
        cycle = self.cycle  # a request whose body is coming is the last one parsed
        if cycle is None or not cycle.more_body or self.transport.is_closing():
            self.transport.close()
        else:
            self._linger()

    def _linger(self) -> None:
        """Hand the connection to ``_Lingering``, after the answer already written; once the
        server is stopping, close it instead, as ``shutdown`` closes one lingering then (it
        has passed: nothing else would end this one before the linger's bound)."""
        self._disarm()
        self.flow.resume_reading()  # a large body paused it
        self.transport.write_eof()  # after the answer: the client sees it whole
        if self.stopping:
            self.transport.close()
            return
        self.lingering = True
        self.transport.set_protocol(_Lingering(self, self.transport))

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGIApp) -> None:  # type: ignore[override]  # uvicorn types the app as its ASGI3Application
        """The request's ASGI task, or, for a small POST to the ``route``, nothing until its
        body is whole (``on_message_complete``), as uvicorn starts a pipelined request's task
        only once the one before it has answered."""
        route = self.route
        if route is not None and self._whole_body_candidate(route, cycle, app):
            self.deferred = (route, cycle, app)
            self.deferred_at = time.perf_counter()
        else:
            super()._start_asgi_task(cycle, app)  # type: ignore[arg-type]

    def _whole_body_candidate(
        self, route: WholeBodyRoute, cycle: RequestResponseCycle, app: ASGIApp
    ) -> bool:
        """A POST to the route with a Content-Length that will not pause reading, still to
        come (a pipelined request whose body is already here takes the task), not waiting for
        ``100 Continue``, for the app itself (not uvicorn's 503 of ``limit_concurrency``),
        and no access log to write."""
        scope = cycle.scope
        if (
            scope["path"] != route.path
            or scope["method"] != "POST"
            or not cycle.more_body
            or cycle.waiting_for_100_continue
            or app is not self.app
            or self.access_log
        ):
            return False
        for name, value in scope["headers"]:
            if name == b"content-length":
                return value.isdigit() and int(value) <= _WHOLE_BODY_BYTES
        return False

    def _answer_whole(
        self, route: WholeBodyRoute, cycle: RequestResponseCycle, app: ASGIApp
    ) -> None:
        """Write the route's answer as uvicorn's cycle would (status line, default headers,
        Content-Type and -Length, ``connection: close`` when the connection ends), in one
        write, and go on as after any response; or start the ASGI task after all."""
        answer = route.answer_now(cast(Scope, cycle.scope), bytes(cycle.body))
        if answer is None:
            self._join_head_and_body(cycle)
            super()._start_asgi_task(cycle, app)  # type: ignore[arg-type]
            return
        status, media_type, payload = answer
        cycle.body = bytearray()
        cycle.response_started = cycle.response_complete = True
        parts = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            parts += [name, b": ", value, b"\r\n"]
        parts += [b"content-type: ", media_type.encode("latin-1"), b"\r\ncontent-length: "]
        parts += [b"%d\r\n" % len(payload)]
        if not cycle.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += [b"\r\n", payload]
        self.transport.write(b"".join(parts))
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def shutdown(self) -> None:
        """Graceful stop. A connection that has not carried a whole request head yet is reset
        (SO_LINGER 0), not closed: its client's request, if one is on the way, was not read, and
        a reset says so (a plain close after a partly read head, or before the request arrived,
        would look like a server that read it and failed, which a proxy must not retry).
        A lingering connection is closed at once: its answer and EOF are out, and the drain
        would otherwise wait out the linger's bound (uvicorn closes only a connection whose
        last request was answered, and a refused body's request never is); so is one that
        starts lingering later (``_linger``)."""
        self.stopping = True
        if self.lingering:
            self.transport.close()
            return
        if self.cycle is None:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "malformed HTTP request")

    def _arm(self, seconds: float) -> None:
        self.deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _refuse(self, status: int, message: str, linger: bool = True) -> None:
        """Refuse a request the app does not see (or no longer sees), and end the connection
        after the answers to the requests before it, in order: the refusal waits for the last
        of them when it is a new request's head, or takes the turn of a pipelined request
        whose body failed; the running request whose body failed is told its client left
        (nothing partial is scored). Nothing more is parsed meanwhile."""
        already = self.refused or self.transport.is_closing()
        self.refused = True
        if already:
            return
        answer = self._refusal(status, message)
        cycle = self.cycle  # the last request parsed
        if cycle is None or cycle.response_complete:
            self._end_refused(answer, linger)
        elif self.phase != _BODY:  # a new request's head: after the last one's answer
            self.flow.pause_reading()
            answered = cycle.on_response

            def then_refuse() -> None:
                answered()
                self._end_refused(answer, linger)

            cycle.on_response = then_refuse
        elif self.pipeline:  # the body of a request waiting its turn: refused in its turn
            cycle.disconnected = True  # its task then ends quietly

            async def refusal(scope: Scope, receive: Receive, send: Send) -> None:
                self._end_refused(answer, linger)

            self.pipeline[0] = (cycle, refusal)  # type: ignore[assignment]  # uvicorn types the app as its ASGI3Application
        else:  # the body of the running request
            cycle.disconnected = True  # the app reads http.disconnect
            cycle.message_event.set()
            self._end_refused(answer, linger)

    def _refusal(self, status: int, message: str) -> bytes:
        """The refusal's answer: with the platform's code and a new request id where the
        protocol has a ``refusal_code``, and ``on_refusal`` told of it then."""
        coded = type(self).refusal_code  # a plain function: read from the class, not bound
        if coded is None:
            return raw_error_response(status, message)
        named = new_request_id()
        told = type(self).on_refusal
        if told is not None:
            told(status, message, named)
        return raw_error_response(status, message, (coded(status), named))

    def _end_refused(self, answer: bytes, linger: bool) -> None:
        """Send a refusal, then drain what the client still sends (``_Lingering``: the rest of
        a request behind a bad head), unless it is cut off for being slow (408, as nginx
        does) or the connection is closing already."""
        if self.transport.is_closing():
            return
        self.transport.write(answer)
        if linger:
            self._linger()
        else:
            self.transport.close()

    def _expired(self) -> None:
        self.deadline = None
        cycle = self.cycle  # the current request's, or in the header phase the previous one's
        busy = cycle is not None and not cycle.response_complete
        if self.phase == _HEADERS and busy:
            self._arm(self.header_timeout)  # pipelined: reading waits for the previous answer
        elif self.phase == _HEADERS:
            message = f"request headers not received within {self.header_timeout:g} s"
            self._refuse(408, message, linger=False)
        elif self.phase == _BODY and not cycle.response_started:
            message = f"request body not received within {self.body_timeout:g} s"
            cast(Scope, cycle.scope)[BODY_TIMED_OUT_KEY] = message  # a 408 to the app: not a 499
            self._refuse(408, message, linger=False)
        else:  # idle, or the answer is already out while the client still sends its body
            self.transport.close()


def uvicorn_options(
    log_level: str,
    header_timeout: float = HEADER_TIMEOUT_SECONDS,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    route: WholeBodyRoute | None = None,
    refusal_code: RefusalCode | None = None,
    on_refusal: Refused | None = None,
) -> dict[str, Any]:
    """uvicorn settings of every infermodes server: uvloop, httptools behind the guarded
    protocol (answering ``route``'s small requests without a task, and its own refusals with
    ``refusal_code``'s platform codes, ``on_refusal`` told of each), no websockets (their
    import costs cold start), no access log or lifespan, no Server or Date header."""

    class ServerProtocol(GuardedHttpProtocol):
        pass

    ServerProtocol.header_timeout = header_timeout
    ServerProtocol.body_timeout = body_timeout
    ServerProtocol.route = route
    ServerProtocol.refusal_code = refusal_code
    ServerProtocol.on_refusal = on_refusal
    return {
        "loop": "uvloop",
        "http": ServerProtocol,
        "ws": "none",
        "lifespan": "off",
        "access_log": False,
        "log_level": log_level,
        "server_header": False,
        "date_header": False,
        "timeout_keep_alive": 75,
    }
