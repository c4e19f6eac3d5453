"""Fixtures of the integration tier: a private RabbitMQ broker for the whole run, and a large
async input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import AbaloneModel
from tests.support.async_plane import to_csv
from tests.support.rabbitmq import Broker, rabbitmq_broker


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[Broker]:
    """A broker of our own on loopback ports (5 to 14 s to start); ``restart`` is real."""
    with rabbitmq_broker() as broker:
        yield broker


@pytest.fixture(scope="session")
def big_input(abalone_model: AbaloneModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~25 MB of CSV (400k rows): long enough that a worker is visibly busy with it."""
    path = tmp_path_factory.mktemp("big") / "big.csv"
    block = to_csv(abalone_model.test_rows)
    with path.open("wb") as out:
        for _ in range(400_000 // len(abalone_model.test_rows) + 1):
            out.write(block)
    return path
