"""A small POST to the protocol's route is answered without an ASGI task once its body is whole,
in one write, in order with pipelined requests; everything else, and whatever the route declines,
takes the ASGI app as before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import uvicorn
from uvicorn.server import ServerState

from infermodes.http import Answer, Receive, Scope, Send, uvicorn_options
from tests.support.transports import RecordingTransport


class ProtocolTransport(RecordingTransport):
    """What uvicorn's protocol asks of a transport besides writes: no socket details, and
    flow control."""

    def __init__(self) -> None:
        super().__init__()
        self.closed_by_server = False  # before the client went away

    def get_extra_info(self, name: str) -> None:  # type: ignore[override]
        return None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Route:
    """Answers ``200 text/csv`` with the body reversed, or declines bodies starting with
    ``decline``; records what it was given, and the requests whose client left mid-body."""

    path = "/invocations"

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.abandoned_after: list[float] = []

    def abandoned(self, seconds: float, status: int) -> None:
        assert status == 499  # the client left: none of these bodies times out
        self.abandoned_after.append(seconds)

    def answer_now(self, scope: Scope, body: bytes) -> Answer | None:
        self.bodies.append(body)
        if body.startswith(b"decline"):
            return None
        return 200, "text/csv", body[::-1]


def request(body: bytes, path: str = "/invocations", headers: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    return head.encode() + body


def answered(body: bytes, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\ncontent-type: text/csv\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def exchange(
    chunks: list[bytes], between: Callable[[ProtocolTransport], None] | None = None
) -> tuple[ProtocolTransport, Route, list[bytes]]:
    """Feed ``chunks`` to a fresh connection of the server protocol, one read each, and let the
    loop run; the transport, the route, and the bodies the ASGI app was given."""
    route = Route()
    app_bodies: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        app_bodies.append(message["body"])
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def main() -> ProtocolTransport:
        config = uvicorn.Config(app, **uvicorn_options("warning", route=route))
        config.load()
        protocol = config.http_protocol_class(config, ServerState(), {})  # type: ignore[call-arg]
        transport = ProtocolTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]  # what the protocol calls
        for chunk in chunks:
            protocol.data_received(chunk)
            for _ in range(5):
                await asyncio.sleep(0)
            if between is not None:
                between(transport)
        transport.closed_by_server = transport.closed
        protocol.connection_lost(None)
        return transport

    return asyncio.run(main()), route, app_bodies


def test_a_whole_small_post_is_answered_in_one_write_without_the_app() -> None:
    transport, route, app_bodies = exchange([request(b"1,2,3")])
    assert transport.writes == [answered(b"3,2,1")]
    assert route.bodies == [b"1,2,3"] and app_bodies == []
    assert not transport.closed_by_server


def test_a_body_its_client_left_unfinished_is_told_to_the_route_never_answered() -> None:
    """The route counts it (the model server's 499), as the app counts one it was reading."""
    transport, route, app_bodies = exchange([request(b"0123456789")[:-4]])
    assert transport.writes == [] and route.bodies == [] and app_bodies == []
    assert len(route.abandoned_after) == 1 and route.abandoned_after[0] >= 0
    transport, route, _ = exchange([request(b"0123456789")])
    assert route.abandoned_after == []  # answered: nothing left


def test_pipelined_requests_are_answered_in_order() -> None:
    transport, route, _ = exchange([request(b"ab") + request(b"cd") + request(b"ef")])
    assert transport.writes == [answered(b"ba"), answered(b"dc"), answered(b"fe")]
    assert route.bodies == [b"ab", b"cd", b"ef"]


def test_a_body_in_several_reads_is_answered_once_it_is_whole() -> None:
    whole = request(b"0123456789")

    def nothing_yet(transport: ProtocolTransport) -> None:
        if len(checked) == 0:
            assert transport.writes == []
        checked.append(True)

    checked: list[bool] = []
    transport, route, _ = exchange([whole[:-4], whole[-4:]], between=nothing_yet)
    assert transport.writes == [answered(b"9876543210")]
    assert route.bodies == [b"0123456789"]


def test_connection_close_is_answered_and_closes() -> None:
    transport, _, _ = exchange([request(b"xy", headers="Connection: close\r\n")])
    assert transport.writes == [answered(b"yx", "connection: close\r\n")]
    assert transport.closed_by_server


def test_what_the_route_declines_goes_to_the_app_with_its_body() -> None:
    transport, route, app_bodies = exchange([request(b"decline me")])
    assert route.bodies == [b"decline me"]
    assert app_bodies == [b"decline me"]
    assert len(transport.writes) == 1  # the head still waits for its body: one write
    assert transport.writes[0].startswith(b"HTTP/1.1 202 Accepted\r\n")


@pytest.mark.parametrize(
    "wire",
    [
        request(b"ab", path="/other"),
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nab\r\n0\r\n\r\n",
        request(b"ab", headers="Expect: 100-continue\r\n"),
        request(b"a" * (64 * 1024 + 1)),
    ],
    ids=["other-path", "chunked", "expect-100-continue", "over-64-KiB"],
)
def test_other_requests_take_the_app(wire: bytes) -> None:
    _, route, app_bodies = exchange([wire])
    assert route.bodies == []
    assert len(app_bodies) == 1


def test_a_connection_lost_mid_body_scores_nothing() -> None:
    transport, route, app_bodies = exchange([request(b"0123456789")[:-3]])
    assert route.bodies == [] and app_bodies == [] and transport.writes == []
