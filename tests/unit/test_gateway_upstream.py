"""Which unanswered requests the gateway's hop may send again: those a replica provably never
read (a reused connection closed idle, a new one reset with the request unread), and not one
a replica read before closing. Replicas here are plain sockets on loopback, so each close is
exactly the one named; the client runs on uvloop, as in the gateway."""

from __future__ import annotations

import asyncio
import select
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvloop

from infermodes.gateway.upstream import NotSent, Pool, UpstreamFailed

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n9.5\n"
BODY = b"1,2,3\n"


def read_request(conn: socket.socket) -> None:
    """Read one whole request (the head, then its Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += conn.recv(65536)


def close_unread(conn: socket.socket) -> None:
    """Close once the request has arrived, without reading it: the kernel sends RST."""
    select.select([conn], [], [], 10)
    conn.close()


@contextmanager
def replica(*handlers: Callable[[socket.socket], None]) -> Iterator[int]:
    """A replica taking one connection, calling each handler on it in turn, then closing."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            for handler in handlers:
                handler(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(10)


def answer(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(ANSWER)


def requests(port: int, count: int) -> list[object]:
    """Send ``count`` requests one after another through one pool; each answer or error."""

    async def main() -> list[object]:
        pool = Pool("127.0.0.1", port, idle_seconds=30, max_idle=4)
        head = pool.head(b"/invocations", [(b"Content-Type", b"text/csv")], len(BODY))
        out: list[object] = []
        for _ in range(count):
            try:
                out.append((await pool.request(head, BODY)).body)
            except (NotSent, UpstreamFailed) as exc:
                out.append(exc)
        pool.close()
        return out

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def test_a_new_connection_reset_with_the_request_unread_was_not_sent() -> None:
    with replica(close_unread) as port:
        [outcome] = requests(port, 1)
    assert isinstance(outcome, NotSent), outcome
    assert not outcome.refused  # one connection, not the replica, is gone


def test_a_new_connection_closed_after_the_request_was_read_failed() -> None:
    with replica(read_request) as port:
        [outcome] = requests(port, 1)
    assert isinstance(outcome, UpstreamFailed), outcome
    assert str(port) not in str(outcome)  # the caller is told what, not where: the log says


def test_a_reused_connection_closed_without_an_answer_was_not_sent() -> None:
    with replica(answer, read_request) as port:
        first, second = requests(port, 2)
    assert first == b"9.5\n"
    assert isinstance(second, NotSent), second


def test_a_half_answer_on_a_reused_connection_is_a_failure() -> None:
    def half(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(ANSWER[:20])

    with replica(answer, half) as port:
        first, second = requests(port, 2)
    assert first == b"9.5\n"
    assert isinstance(second, UpstreamFailed), second
