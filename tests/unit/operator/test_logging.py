"""The operator's log level is the one asked for: kopf's ``verbose`` would make info DEBUG
(every pika callback and HTTP request, and kopf's whole-object dumps)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import kopf
import pytest

from infermodes.operator.handlers import configure_logging


@pytest.fixture(autouse=True)
def restored() -> Iterator[None]:
    root, pika = logging.getLogger(), logging.getLogger("pika")
    objects = logging.getLogger("kopf.objects")
    kept = (root.level, list(root.handlers), pika.level, list(objects.filters))
    yield
    root.setLevel(kept[0])
    root.handlers[:] = kept[1]
    pika.setLevel(kept[2])
    objects.filters[:] = kept[3]


@pytest.mark.parametrize(
    ("asked", "root", "pika"),
    [("info", logging.INFO, logging.CRITICAL), ("INFO", logging.INFO, logging.CRITICAL),
     ("warning", logging.WARNING, logging.CRITICAL), ("error", logging.ERROR, logging.CRITICAL),
     ("debug", logging.DEBUG, logging.NOTSET)],
)  # fmt: skip
def test_the_level_asked_for_is_the_level_logged(asked: str, root: int, pika: int) -> None:
    logging.getLogger("pika").setLevel(logging.NOTSET)
    configure_logging(asked)
    assert logging.getLogger().level == root
    assert logging.getLogger("pika").level == pika


BODY = kopf.Body({"apiVersion": "infermodes.dev/v1alpha1", "kind": "InferenceEndpoint",
                  "metadata": {"namespace": "ns", "name": "ep", "uid": "u"}})  # fmt: skip


def test_a_timer_or_event_handler_run_that_succeeded_is_not_an_info_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """kopf logs every run of a timer (a second apart for each async endpoint) and of an
    event handler (every pod change) at INFO; at info those would bury the operator's own
    lines. Their failures stay, and so do the successes of the handlers of a change."""
    configure_logging("info")
    settings = kopf.OperatorSettings()
    local, changes = (
        kopf.LocalObjectLogger(body=BODY, settings=settings),
        kopf.ObjectLogger(body=BODY, settings=settings),
    )
    with caplog.at_level(logging.INFO):
        local.info("Timer 'look_at_queue' succeeded.")
        local.info("Handler 'child_changed' succeeded.")
        local.error("Timer 'tick' failed with an exception. Will retry.")
        changes.info("Handler 'changed' succeeded.")
    assert [r.getMessage() for r in caplog.records] == [
        "Timer 'tick' failed with an exception. Will retry.",
        "Handler 'changed' succeeded.",
    ]


def test_at_debug_every_run_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging("debug")
    local = kopf.LocalObjectLogger(body=BODY, settings=kopf.OperatorSettings())
    with caplog.at_level(logging.DEBUG):
        local.info("Timer 'look_at_queue' succeeded.")
    assert [r.getMessage() for r in caplog.records] == ["Timer 'look_at_queue' succeeded."]
