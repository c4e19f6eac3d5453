"""URLs in log lines, error messages and statuses: never a password, a query or (for
webhooks) a path that may be a token."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infermodes.http import forwarded_id
from infermodes.logs import configure_logging, redacted_url


@pytest.mark.parametrize(
    ("url", "shown", "host_only"),
    [
        ("amqp://u:p4ss@h:5672/%2F?heartbeat=5", "amqp://u@h:5672/%2F", "amqp://h:5672/..."),
        ("http://admin:S3cret@rabbit:15672/", "http://admin@rabbit:15672/", "http://rabbit:15672"),
        ("amqp://admin:12#34@rabbit/", "amqp:...", "amqp:..."),  # '#' in an unquoted password
        ("https://T0KEN@hooks.test/x", "https://T0KEN@hooks.test/x", "https://hooks.test/..."),
        ("sqlite:///var/q.db", "sqlite:///var/q.db", "sqlite:///..."),
        ("https://hooks.test/T0/B0/tok", "https://hooks.test/T0/B0/tok", "https://hooks.test/..."),
        ("http://[::1]:8080/x", "http://[::1]:8080/x", "http://[::1]:8080/..."),
        ("admin:p4ss@host:5672", "admin:...", "admin:..."),  # no '//': all of it may be secret
        ("http://h:99999/", "<a URL that cannot be parsed>", "<a URL that cannot be parsed>"),
        ("", "<an empty URL>", "<an empty URL>"),
    ],
)
def test_redacted_url(url: str, shown: str, host_only: str) -> None:
    assert redacted_url(url) == shown
    assert redacted_url(url, keep_path=False) == host_only


@pytest.mark.parametrize("level", ["info", "debug"])
def test_every_process_keeps_httpx_request_lines_out_at_any_level(level: str) -> None:
    """httpx logs each request's whole URL at INFO: a worker's log held every webhook's path
    and query (its ``?token=``), which our own lines redact; only `up` quieted it, for itself."""
    client, root = logging.getLogger("httpx"), logging.getLogger()
    before = client.level, root.level
    try:
        client.setLevel(logging.NOTSET)
        root.setLevel(logging.DEBUG)  # as basicConfig would, were pytest's handlers not there
        configure_logging(level)
        assert not client.isEnabledFor(logging.INFO)
        assert client.isEnabledFor(logging.WARNING)
    finally:
        client.setLevel(before[0])
        root.setLevel(before[1])


@pytest.mark.parametrize(("level", "pika_level"), [("info", logging.CRITICAL), ("debug", 0)])
def test_every_process_quiets_pika_below_debug(level: str, pika_level: int) -> None:
    """`up --broker-url` and a gateway with a broker logged pika's INFO lines ("Created
    channel=1", every Channel.CloseOk) and its tracebacks for idle connections reopened
    unnoticed: only async-api, the worker and the operator quieted it."""
    pika = logging.getLogger("pika")
    before = pika.level
    try:
        pika.setLevel(logging.NOTSET)
        configure_logging(level)
        assert pika.level == pika_level
    finally:
        pika.setLevel(before)


@given(st.binary(max_size=300))
def test_a_forwarded_request_id_of_any_bytes_is_one_printable_mention(value: bytes) -> None:
    """The model server logs the x-amzn-RequestId it was sent (the gateway's id), which a
    client calling it directly may set to anything: one line, bounded, never an exception."""
    shown = forwarded_id({"headers": [(b"x-amzn-requestid", value)]})
    assert shown.startswith(" (request ") and shown.endswith(")")
    assert shown.isprintable() and len(shown) < 64 * 4 + 20
    assert forwarded_id({"headers": [(b"content-type", value)]}) == ""
