"""A small HTTP/1.1 client for the gateway's hop to the model servers: one keep-alive
connection pool per replica, responses parsed by httptools, bodies passed as bytes untouched.

A general client (httpx) costs several times the whole forward; this one does what the hop
needs: one request at a time per connection, ``Content-Length`` bodies, and a clear line between
failures where the request provably never reached the replica (``NotSent``: the connection
could not be made, or was found closed before the request was written, or a reused keep-alive
connection was closed without one byte of answer, the race in which a server closes an idle
connection as a request is sent, or a new connection was reset without one byte of answer,
the request unread; see docs/gateway.md) and failures after it may have (``UpstreamFailed``),
which are never retried.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast

import httptools

# Response headers the gateway passes back to its client (lower case, as httptools gives them)
PASSED_HEADERS = frozenset({b"content-type", b"x-amzn-sagemaker-custom-attributes"})
COALESCE_BYTES = 64 * 1024  # smaller bodies are copied behind the head and written at once


class NotSent(Exception):
    """The request did not reach the replica: safe to send it to another. ``refused``: the
    replica takes no connections (it is stopping or gone), not just one closed connection.
    ``presumed``: a kept connection closed unanswered, as a replica closes an idle one, but a
    replica that died of the request (its model server killed by it) closes it the same way."""

    def __init__(self, message: str, refused: bool = False, presumed: bool = False) -> None:
        super().__init__(message)
        self.refused = refused
        self.presumed = presumed


class UpstreamFailed(Exception):
    """The replica may have seen the request but gave no complete answer. The message goes to
    the caller: it names no address (the log does)."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]  # the passed-on ones only
    body: bytes


class Connection(asyncio.Protocol):
    """One keep-alive connection to a replica; the parser's callbacks fill the answer."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.received = False
        self.closed = False
        self.reused = False
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamFailed(f"malformed answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.received:
            self._fail(UpstreamFailed("it closed the connection mid-answer"))
        elif self.reused:
            if self.waiter is not None:  # closed with a request on it: a stopping replica
                self.pool.drop_idle()  # closes all it kept; the retry must not find another
            closed = f"{self.pool.address} closed a kept connection unanswered"
            self._fail(NotSent(closed, presumed=True))
        elif isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            # a reset: the replica closed the socket with request bytes unread, or never
            # accepted it (a stopping server's listen backlog): it processed nothing
            self._fail(NotSent(f"{self.pool.address} reset a new connection unanswered"))
        else:
            self._fail(UpstreamFailed("it closed the connection unanswered"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in PASSED_HEADERS:
            self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        answer = Answer(self.parser.get_status_code(), self.headers, b"".join(self.body))
        self.headers, self.body = [], []
        if not self.parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def send(self, head: bytes, body: bytes) -> Answer:
        """Write one request and wait for its answer."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise NotSent(f"{self.pool.address} closed the connection before the request")
        self.received = False
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.waiter = waiter
        if len(body) < COALESCE_BYTES:  # one segment: one send here, one read at the replica
            transport.write(head + body)
        else:
            transport.writelines((head, body))
        try:
            return await waiter
        except asyncio.CancelledError:  # timeout or shutdown: the answer can no longer be read
            self.waiter = None  # given up here, not closed by the replica: the others stay
            self.abort()
            raise

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """Keep-alive connections to one replica. Idle connections are reused newest first and
    closed by the gateway after ``idle_seconds``, before the server's own keep-alive timeout,
    so the usual close race stays rare; ``NotSent`` covers it when it happens."""

    def __init__(self, host: str, port: int, idle_seconds: float, max_idle: int) -> None:
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.idle_seconds = idle_seconds
        self.max_idle = max_idle
        self.idle: list[Connection] = []
        self.closed = False
        self._host_header = f"Host: {self.address}\r\n".encode()

    def head(self, path: bytes, headers: list[tuple[bytes, bytes]], length: int) -> bytes:
        """The request line and headers of a POST with a body of ``length`` bytes."""
        lines = [b"POST ", path, b" HTTP/1.1\r\n", self._host_header]
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
        lines += (b"Content-Length: ", str(length).encode(), b"\r\n\r\n")
        return b"".join(lines)

    async def request(self, head: bytes, body: bytes) -> Answer:
        connection = await self._acquire()
        answer = await connection.send(head, body)
        self._release(connection)
        return answer

    async def get(self, path: str) -> int:
        """A GET on a connection of its own (probes), returning the status."""
        connection = await self._connect()
        try:
            head = f"GET {path} HTTP/1.1\r\nHost: {self.address}\r\nConnection: close\r\n\r\n"
            return (await connection.send(head.encode(), b"")).status
        finally:
            connection.close()

    async def _acquire(self) -> Connection:
        now = asyncio.get_running_loop().time()
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed and now - connection.idle_since < self.idle_seconds:
                connection.reused = True
                return connection
            connection.close()
        return await self._connect()

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(
                lambda: Connection(self), self.host, self.port
            )
        except OSError as exc:
            message = f"cannot connect to {self.address}: {exc.strerror or exc}"
            raise NotSent(message, refused=True) from None
        return protocol

    def _release(self, connection: Connection) -> None:
        if connection.closed:
            return
        if self.closed or len(self.idle) >= self.max_idle:
            connection.close()
            return
        connection.idle_since = asyncio.get_running_loop().time()
        self.idle.append(connection)

    def forget(self, connection: Connection) -> None:
        """A connection closed: it must not be handed out again."""
        if connection in self.idle:
            self.idle.remove(connection)

    def drop_idle(self) -> None:
        """Close the idle connections; busy ones close when their answer is in."""
        idle, self.idle = self.idle, []
        for connection in idle:
            connection.close()

    def close(self) -> None:
        """No more connections kept; ``drop_idle``."""
        self.closed = True
        self.drop_idle()
