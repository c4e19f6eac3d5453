"""The management API's URL carries RabbitMQ credentials (``http://user:pass@host:15672``):
no part of its password may reach the operator's log, and a URL that cannot be read is never
sent anywhere (a '/' in the password would otherwise end the host there)."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from infermodes.errors import BrokerUrlError
from infermodes.queueing.broker import (
    Backlog,
    OptionalUrlFile,
    UrlFile,
    given_management_url,
    given_url,
    url_now,
)
from infermodes.queueing.rabbitmq import QueueReader, backlog, backlog_from_management
from infermodes.settings import GatewaySettings, OperatorSettings

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


def test_a_url_file_is_read_at_each_call_and_its_errors_never_quote_it(tmp_path: Path) -> None:
    """The chart mounts the broker Secret's keys as files (a rotated password reaches the next
    connection); a file that cannot be read is named, its content never."""
    path = tmp_path / "url"
    url = UrlFile(path)
    with pytest.raises(BrokerUrlError, match="no such file"):
        url()
    path.write_text(f"amqp://u:{SECRET}@127.0.0.1:5672/%2F\n")
    assert url_now(url) == f"amqp://u:{SECRET}@127.0.0.1:5672/%2F"
    path.write_text("amqp://u:rotated@127.0.0.1:5672/%2F")
    assert url() == "amqp://u:rotated@127.0.0.1:5672/%2F"  # read again, not kept
    path.write_bytes(b"amqp://u:\xff" + SECRET.encode())
    with pytest.raises(BrokerUrlError) as raised:
        url()
    assert "not UTF-8" in str(raised.value) and "xff" not in str(raised.value)
    path.write_text(" \n")
    with pytest.raises(BrokerUrlError, match="is empty"):
        url()
    assert given_url("amqp://inline", None) == "amqp://inline"
    assert given_url(None, str(path)) == UrlFile(path)
    assert given_url(None, None) is None


def test_an_optional_url_file_absent_or_empty_is_no_url(tmp_path: Path) -> None:
    """The management API's key is optional in the broker Secret: no file, or an empty one, is
    no management API (None), a file is its URL, read at each call; one that cannot be read is
    an error that names the file, as a required one's."""
    path = tmp_path / "management"
    url = OptionalUrlFile(path)
    assert url() is None and url_now(url) is None  # the key is not set
    path.write_text(" \n")
    assert url() is None
    path.write_text(f"http://m:{SECRET}@127.0.0.1:15672\n")
    assert url() == f"http://m:{SECRET}@127.0.0.1:15672"
    path.write_bytes(b"http://m:\xff")
    with pytest.raises(BrokerUrlError, match="not UTF-8"):
        url()
    assert given_management_url(None, str(path)) == OptionalUrlFile(path)
    assert given_management_url("http://inline", None) == "http://inline"
    assert given_management_url(None, None) is None


def test_a_url_is_given_inline_or_in_a_file_not_both() -> None:
    with pytest.raises(ValueError, match="broker_url and broker_url_file are both set"):
        GatewaySettings(broker_url="amqp://a", broker_url_file="/etc/url")
    with pytest.raises(ValueError, match="management_url and management_url_file are both"):
        OperatorSettings(management_url="http://a", management_url_file="/etc/url")
    assert OperatorSettings(broker_url_file="/etc/url").broker_url is None


def test_the_operator_refuses_to_start_with_a_broker_url_file_it_cannot_read(
    tmp_path: Path,
) -> None:
    """A mounted Secret without the key is a crash loop that names the file, not an operator
    that starts and reports every async endpoint's broker unreadable."""
    env = {**os.environ, "INFERMODES_OPERATOR_BROKER_URL_FILE": str(tmp_path / "absent")}
    started = subprocess.run(
        [sys.executable, "-c", "from infermodes.cli import main; main()", "operator"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert started.returncode != 0
    assert f"broker_url_file: cannot read the URL from {tmp_path / 'absent'}" in started.stderr
