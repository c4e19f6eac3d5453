"""A kept work queue whose delivery limit differs is used as it is, but only when nothing else
differs: RabbitMQ's refusal names the first argument that differs, and which one it checks
first depends on its version. A scripted broker refuses in the order a version may; the real
broker's side is in tests/integration/test_async_queue_arguments.py."""

from __future__ import annotations

from typing import Any

import pika.exceptions
import pytest

from infermodes.queueing.broker import delivery_limit
from infermodes.queueing.rabbitmq import declare_work_queue, queue_arguments

LIMIT_TEXT = (
    "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'infermodes.async.e' "
    "in vhost '/': received the value '3' of type 'long' but current is the value '9' of type "
    "'long'"
)
DEAD_LETTER_TEXT = (
    "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue "
    "'infermodes.async.e' in vhost '/': received 'infermodes.dead-letter' but current is 'x'"
)


class ScriptedBroker:
    """Refuses each declaration whose arguments differ from the queue's, naming the delivery
    limit first (as a version might)."""

    def __init__(self, existing: dict[str, Any]) -> None:
        self.existing = existing
        self.declared: list[dict[str, Any]] = []

    def channel(self) -> ScriptedBroker:
        return self

    def close(self) -> None:
        pass

    def queue_declare(self, _queue: str, durable: bool, arguments: dict[str, Any]) -> None:
        self.declared.append(arguments)
        if arguments["x-delivery-limit"] != self.existing["x-delivery-limit"]:
            raise pika.exceptions.ChannelClosedByBroker(406, LIMIT_TEXT)
        if arguments != self.existing:
            raise pika.exceptions.ChannelClosedByBroker(406, DEAD_LETTER_TEXT)


def test_a_queue_that_differs_only_in_its_limit_is_used_with_its_own_limit() -> None:
    broker = ScriptedBroker({**queue_arguments("e", 2), "x-delivery-limit": 9})
    declare_work_queue(broker, "e", 2)  # type: ignore[arg-type]
    assert [a["x-delivery-limit"] for a in broker.declared] == [delivery_limit(2), 9]


def test_a_queue_that_also_differs_in_another_argument_is_refused() -> None:
    existing = {**queue_arguments("e", 2), "x-delivery-limit": 9, "x-dead-letter-exchange": "x"}
    broker = ScriptedBroker(existing)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="x-dead-letter-exchange"):
        declare_work_queue(broker, "e", 2)  # type: ignore[arg-type]
