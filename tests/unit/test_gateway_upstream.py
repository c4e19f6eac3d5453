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

import pytest
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


@contextmanager
def two_kept(then: Callable[[socket.socket], None], *more: Callable[[socket.socket], None]
             ) -> Iterator[tuple[int, threading.Barrier]]:  # fmt: skip
    """A replica whose first two connections each answer one request, wait at the barrier
    (the client's third party: both are kept now), then do ``then``; connections after them
    get the ``more`` handlers. Yields its port and the barrier."""
    listener = socket.create_server(("127.0.0.1", 0))
    answered_twice = threading.Barrier(3, timeout=10)

    def kept(conn: socket.socket) -> None:
        with conn:
            answer(conn)
            answered_twice.wait()
            then(conn)

    def serve() -> None:
        threads = []
        for handler in (kept, kept, *more):
            conn, _ = listener.accept()
            thread = threading.Thread(target=handler, args=(conn,), daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(10)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        yield listener.getsockname()[1], answered_twice
    finally:
        listener.close()
        server.join(10)


async def kept_pool(port: int, answered_twice: threading.Barrier) -> tuple[Pool, bytes]:
    """A pool holding two kept connections to the ``two_kept`` replica, and a request head."""
    pool = Pool("127.0.0.1", port, idle_seconds=30, max_idle=4)
    head = pool.head(b"/invocations", [(b"Content-Type", b"text/csv")], len(BODY))
    answers = await asyncio.gather(pool.request(head, BODY), pool.request(head, BODY))
    assert [a.body for a in answers] == [b"9.5\n"] * 2
    await asyncio.get_running_loop().run_in_executor(None, answered_twice.wait)
    return pool, head


def closed_on_next_request(conn: socket.socket) -> None:
    conn.settimeout(10)
    conn.recv(65536)  # the next request on it (or the pool's close): closed unanswered


def test_a_kept_connection_closed_with_a_request_on_it_drops_the_others_kept() -> None:
    """A stopping replica closes every connection it keeps, one after another: the retry of a
    request whose kept connection was closed under it took the next kept one, closed a moment
    later too, and the gateway gave up on a request no replica had read ("closed the
    connection twice"). A new connection is what the retry gets now."""

    async def main(port: int, answered_twice: threading.Barrier) -> list[object]:
        pool, head = await kept_pool(port, answered_twice)
        out: list[object] = []
        for _ in range(2):
            try:
                out.append((await pool.request(head, BODY)).body)
            except NotSent as exc:
                out.append(exc)
        pool.close()
        return out

    with two_kept(closed_on_next_request, answer) as (port, answered_twice), \
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # fmt: skip
        closed, retried = runner.run(main(port, answered_twice))
    assert isinstance(closed, NotSent) and closed.presumed, closed
    assert retried == b"9.5\n", retried


def test_a_request_given_up_on_keeps_the_other_connections_kept() -> None:
    """An invocation timeout aborts its own connection; the replica closed nothing, so the
    others it keeps are still good (they were all dropped, as for a stopping replica)."""
    release = threading.Event()

    async def main(port: int, answered_twice: threading.Barrier) -> int:
        pool, head = await kept_pool(port, answered_twice)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.request(head, BODY), 0.2)
        await asyncio.sleep(0.1)  # the aborted connection's close is seen
        kept = len(pool.idle)
        pool.close()
        return kept

    # a next request is left unanswered: the client gives up on it
    with two_kept(lambda _conn: release.wait(10)) as (port, answered_twice):
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                kept = runner.run(main(port, answered_twice))
        finally:
            release.set()
    assert kept == 1
