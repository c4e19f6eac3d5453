"""Log lines a client can cause at will: escaped onto one line, and throttled with a count."""

from __future__ import annotations

import logging

import pytest

from infermodes.logs import Throttled, printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [("/endpoints/a/invocations", "/endpoints/a/invocations"),
     ("/x\n2026 CRITICAL forged", "/x\\n2026 CRITICAL forged"),
     ("/x\r\x1b[31m\x00", "/x\\r\\x1b[31m\\x00"),
     ("/ünïcode", "/ünïcode"),
     ("a" * 300, "a" * 200 + "...")],
)  # fmt: skip
def test_printable_keeps_a_client_text_on_one_line(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_throttled_logs_once_per_interval_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    told = Throttled(logging.getLogger("test.throttled"), 60.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, "test.throttled"):
        for index in range(100):
            told.info("refused %d", index)
        now[0] = 60.0
        told.info("refused %d", 100)
        told.info("refused %d", 101)
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0",
        "refused 100 (and 99 more since the last such line, not logged)",
    ]
