"""Log lines a client can cause at will: escaped onto one line, and throttled with a count."""

from __future__ import annotations

import logging
import weakref

import pytest

from infermodes.logs import Throttled, ThrottledPer, printable


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
            told.info("refused %d", index, request=f"id-{index}")
        now[0] = 60.0
        told.info("refused %d", 100, request="id-100")
        told.info("refused %d", 101, request="id-101")
        now[0] = 120.0
        told.info("refused %d", 102, request="id-102")
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0",
        "refused 100 (and 99 more since the last such line, not logged: requests id-1 (first) "
        "to id-99 (last))",
        "refused 102 (and 1 more since the last such line, not logged: request id-101)",
    ]


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_throttled_per_key_drops_quiet_keys_first_when_full_and_logs_each_new_first_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A table of throttles per endpoint that only grew: endpoints deleted, or names a client
    invents, stayed for ever. At its limit a new key takes the place of keys with nothing left
    to tell; its first line is logged at once."""
    now = [0.0]
    told = ThrottledPer(logging.getLogger("test.per"), 10.0, limit=3, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, "test.per"):
        for name in ("a", "b", "c"):
            told(name).info("failed %s", name, request=f"{name}-1")
        told("a").info("failed a", request="a-2")  # counted: "a" has something to tell
        now[0] = 20.0  # "b" and "c" are quiet now; "a" still owes its count
        for name in ("d", "e"):
            told(name).info("failed %s", name, request=f"{name}-1")
        assert len(told) <= 3
        told("a").info("failed a", request="a-3")
    assert lines(caplog) == [
        "failed a", "failed b", "failed c", "failed d", "failed e",
        "failed a (and 1 more since the last such line, not logged: request a-2)",
    ]  # fmt: skip


def test_throttled_per_key_when_full_of_busy_keys_drops_the_oldest_telling_its_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every key in its period and owing a count: the oldest goes, its count told at once, so
    that nothing is lost and the new key's first line is still logged."""
    now = [0.0]
    told = ThrottledPer(logging.getLogger("test.per"), 10.0, limit=2, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, "test.per"):
        for name in ("a", "b"):
            for index in range(3):
                told(name).warning("failed %s %d", name, index, request=f"{name}-{index}")
        told("c").warning("failed c", request="c-0")
        assert len(told) == 2
    assert lines(caplog) == [
        "failed a 0", "failed b 0",
        "failed a 2 (the last of 2 more since the last such line, not logged: requests a-1 "
        "(first) to a-2 (last))",
        "failed c",
    ]  # fmt: skip


def test_forgetting_an_endpoint_drops_its_keys_and_tells_their_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    told = ThrottledPer(logging.getLogger("test.per"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, "test.per"):
        told("gone", "failed").info("failed", request="r-0")
        told("gone", "failed").info("failed", request="r-1")
        told("gone", "not_sent").info("not sent", request="r-2")
        told("kept", "failed").info("kept failed", request="r-3")
        told.forget("gone")
        assert len(told) == 1
        told("gone", "failed").info("failed again", request="r-4")  # a new endpoint of the name
    assert lines(caplog) == [
        "failed", "not sent", "kept failed",
        "failed (the last of 1 more since the last such line, not logged: request r-1)",
        "failed again",
    ]  # fmt: skip


def test_a_line_left_out_keeps_none_of_its_arguments_alive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The last line left out is kept to be told if its key is dropped: as text, so that an
    argument (an exception, whose traceback holds a request's body) is not kept with it."""

    class Failure(Exception):
        pass

    told = Throttled(logging.getLogger("test.throttled"), 60.0, clock=lambda: 0.0)
    with caplog.at_level(logging.INFO, "test.throttled"):
        told.warning("failed: %s", Failure("first"), request="r-0")
        failure = Failure("second")
        kept = weakref.ref(failure)
        told.warning("failed: %s", failure, request="r-1")
        del failure
        assert kept() is None
        told.flush()
    assert [r.getMessage() for r in caplog.records] == [
        "failed: first",
        "failed: second (the last of 1 more since the last such line, not logged: request r-1)",
    ]
