"""The operator's log level is the one asked for: kopf's ``verbose`` would make info DEBUG
(every pika callback and HTTP request, and kopf's whole-object dumps)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from infermodes.operator.handlers import configure_logging


@pytest.fixture(autouse=True)
def restored() -> Iterator[None]:
    root, pika = logging.getLogger(), logging.getLogger("pika")
    kept = (root.level, list(root.handlers), pika.level)
    yield
    root.setLevel(kept[0])
    root.handlers[:] = kept[1]
    pika.setLevel(kept[2])


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
