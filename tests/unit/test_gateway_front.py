"""The gateway's front writes each answer in one send, and never loses or reorders bytes."""

from __future__ import annotations

from infermodes.gateway.app import OneWriteTransport
from infermodes.gateway.upstream import COALESCE_BYTES
from tests.support.transports import RecordingTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n"


def test_a_head_and_its_body_go_out_in_one_write() -> None:
    recorder = RecordingTransport()
    transport = OneWriteTransport(recorder)  # type: ignore[arg-type]
    transport.write(HEAD)
    assert recorder.writes == []
    transport.write(b"9.5\n")
    assert recorder.writes == [HEAD + b"9.5\n"]
    transport.flush()  # the end of the response: nothing left
    assert recorder.writes == [HEAD + b"9.5\n"]
    assert transport.get_extra_info("peername") == "extra peername"


def test_a_head_without_a_body_goes_out_at_the_end_of_the_response_or_on_close() -> None:
    recorder = RecordingTransport()
    transport = OneWriteTransport(recorder)  # type: ignore[arg-type]
    transport.write(HEAD)
    transport.flush()
    assert recorder.writes == [HEAD]
    transport.write(HEAD)
    transport.close()
    assert recorder.writes == [HEAD, HEAD] and recorder.closed


def test_large_bodies_are_not_copied_and_other_writes_pass_as_they_are() -> None:
    recorder = RecordingTransport()
    transport = OneWriteTransport(recorder)  # type: ignore[arg-type]
    body = b"x" * COALESCE_BYTES
    transport.write(HEAD)
    transport.write(body)
    assert recorder.writes == [HEAD, body]
    raw_error = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 2\r\n\r\n{}"
    transport.write(raw_error)
    assert recorder.writes[-1] == raw_error


def test_an_interim_100_continue_goes_out_at_once() -> None:
    recorder = RecordingTransport()
    transport = OneWriteTransport(recorder)  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert recorder.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
