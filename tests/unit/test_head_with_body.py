"""The response head waits for its body and leaves with it in one write; alone, it leaves at
the end of the loop turn; a close sends what is held first."""

from __future__ import annotations

import asyncio
from typing import Any

from infermodes.http import _HeadAlone, _HeadWithBody
from tests.support.transports import RecordingTransport


def run(scenario: Any) -> RecordingTransport:
    recorder = RecordingTransport()

    async def main() -> None:
        await scenario(_HeadWithBody(recorder, asyncio.get_running_loop()), recorder)  # type: ignore[arg-type]

    asyncio.run(main())
    return recorder


def test_head_and_body_are_one_write_and_later_chunks_pass_through() -> None:
    async def scenario(writer: _HeadWithBody, recorder: RecordingTransport) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert recorder.writes == []
        writer.write(b"body")
        writer.write(b"more")
        await asyncio.sleep(0)

    assert run(scenario).writes == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"more"]


def test_a_head_alone_leaves_at_the_end_of_the_turn() -> None:
    async def scenario(writer: _HeadWithBody, recorder: RecordingTransport) -> None:
        writer.write(b"head")
        await asyncio.sleep(0)
        assert recorder.writes == [b"head"]
        writer.write(b"chunk")

    assert run(scenario).writes == [b"head", b"chunk"]


def test_close_sends_the_held_head_first_and_other_calls_reach_the_transport() -> None:
    async def scenario(writer: _HeadWithBody, recorder: RecordingTransport) -> None:
        writer.write(b"head")
        assert writer.get_extra_info("peername") == "extra peername"
        writer.close()
        assert writer.is_closing()
        await asyncio.sleep(0)

    recorder = run(scenario)
    assert recorder.writes == [b"head"]
    assert recorder.closed


def test_a_heads_answer_is_written_at_once_and_closes_through_the_close_given() -> None:
    """Held, a HEAD's head (no body follows it) could be overtaken by an answer written
    directly in a later read; its close must still linger while a body it was sent comes."""
    closed: list[bool] = []

    async def scenario(_: _HeadWithBody, recorder: RecordingTransport) -> None:
        writer = _HeadAlone(recorder, asyncio.get_running_loop(), lambda: closed.append(True))  # type: ignore[arg-type]
        writer.write(b"head")
        assert recorder.writes == [b"head"]
        writer.close()

    recorder = run(scenario)
    assert recorder.writes == [b"head"]
    assert closed == [True] and not recorder.closed
