"""The management API's URL carries RabbitMQ credentials (``http://user:pass@host:15672``):
no part of its password may reach the operator's log, and a URL that cannot be read is never
sent anywhere (a '/' in the password would otherwise end the host there)."""

from __future__ import annotations

import base64
import logging
from typing import Any, cast

import httpx
import pytest

from infermodes.queueing.broker import Backlog
from infermodes.queueing.rabbitmq import QueueReader, backlog, backlog_from_management

SECRET = "s3cr"  # what urlsplit reads as the port of these URLs, or as part of their path
UNREADABLE = [
    f"http://monitor:{SECRET}/rest@127.0.0.1:15672",  # '/' ends the host: 's3cr' is the "port"
    f"http://monitor:{SECRET}?rest@127.0.0.1:15672",
    "http://monitor:1234/s3cr@127.0.0.1:15672",  # the "host" monitor:1234, s3cr in the path
]


class OneReading:
    def read(self, queue: str) -> Backlog:
        return Backlog(ready=2, unacked=None, consumers=1, source="amqp")


@pytest.mark.parametrize("url", UNREADABLE)
def test_no_part_of_the_password_is_logged(url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reader = cast(QueueReader, OneReading())
    found = backlog("e", "amqp://u:p@127.0.0.1:5672/", url, reader)
    assert (found.ready, found.unacked) == (2, None)  # AMQP's figures, in flight unknown
    assert "management API unavailable" in caplog.text
    assert SECRET not in caplog.text


@pytest.mark.parametrize("url", UNREADABLE)
def test_an_unreadable_url_is_never_requested(url: str) -> None:
    sent: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url)
        return httpx.Response(404)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    with client, pytest.raises(ValueError) as refused:
        backlog_from_management(url, "/", "q", client)
    assert sent == []
    assert SECRET not in str(refused.value)
    assert "percent-encode" in str(refused.value)


def test_a_readable_url_still_reads_the_queue() -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("authorization")))
        return httpx.Response(200, json={"messages_ready": 3, "messages_unacknowledged": 4})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        found = backlog_from_management("http://mon:p%2Fss@127.0.0.1:15672", "/", "q", client)
    assert (found.ready, found.unacked) == (3, 4)
    assert seen[0][0] == "http://127.0.0.1:15672/api/queues/%2F/q"
    assert seen[0][1] == "Basic " + base64.b64encode(b"mon:p/ss").decode()
