"""A connection whose answer was sent before its request's body: what the client still sends
is read and dropped, within bounds in bytes and seconds, then the connection closes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from infermodes.http import LINGER_BYTES, LINGER_SECONDS, GuardedHttpProtocol, _Lingering
from tests.support.transports import RecordingTransport


class Timer:
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Protocol:
    """What ``_Lingering`` uses of the HTTP protocol: its loop's timers and its end."""

    def __init__(self) -> None:
        self.loop = self
        self.timers: list[tuple[float, Timer]] = []
        self.lost: list[Exception | None] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        self.timers.append((delay, timer := Timer(callback)))
        return timer

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


def lingering() -> tuple[_Lingering, RecordingTransport, Protocol]:
    transport, protocol = RecordingTransport(), Protocol()
    drained = _Lingering(cast(GuardedHttpProtocol, protocol), cast(Any, transport))
    return drained, transport, protocol


def test_the_body_is_dropped_up_to_the_byte_bound_then_the_connection_closes() -> None:
    drained, transport, _ = lingering()
    drained.data_received(b"x" * (LINGER_BYTES - 1))
    drained.data_received(b"x")
    assert not transport.closed
    drained.data_received(b"x")
    assert transport.closed


def test_the_time_bound_closes_it_and_the_end_reaches_the_http_protocol() -> None:
    drained, transport, protocol = lingering()
    [(delay, timer)] = protocol.timers
    assert delay == LINGER_SECONDS
    timer.callback()
    assert transport.closed
    drained.connection_lost(None)
    assert timer.cancelled and protocol.lost == [None]


def test_the_clients_eof_closes_it() -> None:
    drained, _, _ = lingering()
    assert not drained.eof_received()  # asyncio then closes the transport
