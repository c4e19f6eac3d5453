"""Fixtures of the integration tier: a private RabbitMQ broker for the whole run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.rabbitmq import Broker, rabbitmq_broker


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[Broker]:
    """A broker of our own on loopback ports (5 to 14 s to start); ``restart`` is real."""
    with rabbitmq_broker() as broker:
        yield broker
