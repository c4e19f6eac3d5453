"""At a graceful stop, a connection that has not sent a request is reset, so a proxy that just
sent one on it learns it was never read; a kept-alive connection that was answered is closed
as usual. A real uvicorn server with the infermodes protocol, on loopback."""

from __future__ import annotations

import socket
import threading

import uvicorn

from infermodes.http import Receive, Scope, Send, uvicorn_options
from tests.support.processes import wait_until


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_connection_without_a_request_is_reset_and_an_answered_one_closed_at_shutdown() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, **uvicorn_options("warning")))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30, "the server")
        answered = socket.create_connection(("127.0.0.1", port), timeout=10)
        answered.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answered.recv(4096).endswith(b"\r\n\r\nok")
        fresh = socket.create_connection(("127.0.0.1", port), timeout=10)
        wait_until(lambda: len(server.server_state.connections) == 2, 30, "both connections")
        server.should_exit = True
        wait_until(lambda: not server.server_state.connections, 30, "the connections closed")
        with fresh, answered:
            try:
                fresh_end = fresh.recv(4096)
            except ConnectionResetError:
                fresh_end = None
            assert fresh_end is None, "a connection with no request was closed, not reset"
            assert answered.recv(4096) == b""  # the usual close (FIN)
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()
