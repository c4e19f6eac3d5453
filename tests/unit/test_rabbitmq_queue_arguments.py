"""A kept work queue whose delivery limit differs is used as it is, but only when nothing else
differs. RabbitMQ's refusal names the first argument that differs; the released versions
check the queue type and dead-lettering before the limit, RabbitMQ's development branch
checks ``x-consumer-timeout`` after it. A scripted broker refuses in that order; the real
broker's side is in tests/integration/test_async_queue_arguments.py."""

from __future__ import annotations

from typing import Any

import pika.exceptions
import pytest

from infermodes.queueing.broker import delivery_limit
from infermodes.queueing.rabbitmq import declare_work_queue, queue_arguments


class ScriptedBroker:
    """Refuses each declaration whose arguments differ from the queue's, checking the delivery
    limit first; ``limit_reply``: its refusal's text, given the queue's limit."""

    def __init__(self, existing: dict[str, Any], queue: str = "infermodes.async.e") -> None:
        self.existing = existing
        self.queue = queue
        self.declared: list[dict[str, Any]] = []

    def channel(self) -> ScriptedBroker:
        return self

    def close(self) -> None:
        pass

    def queue_declare(self, _queue: str, durable: bool, arguments: dict[str, Any]) -> None:
        self.declared.append(arguments)
        limit = self.existing.get("x-delivery-limit")
        if arguments.get("x-delivery-limit") != limit:
            current = "none" if limit is None else f"'{limit}'"
            raise pika.exceptions.ChannelClosedByBroker(
                406,
                f"PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue "
                f"'{self.queue}' in vhost '/': received '{arguments.get('x-delivery-limit')}' "
                f"but current is {current}",
            )
        for key, value in self.existing.items():
            if arguments.get(key) != value:
                raise pika.exceptions.ChannelClosedByBroker(
                    406,
                    f"PRECONDITION_FAILED - inequivalent arg '{key}' for queue '{self.queue}' "
                    f"in vhost '/': received '{arguments.get(key)}' but current is '{value}'",
                )


def test_a_queue_that_differs_only_in_its_limit_is_used_with_its_own_limit() -> None:
    broker = ScriptedBroker({**queue_arguments("e", 2), "x-delivery-limit": 9})
    declare_work_queue(broker, "e", 2)  # type: ignore[arg-type]
    assert [a["x-delivery-limit"] for a in broker.declared] == [delivery_limit(2), 9]


def test_a_queue_without_a_limit_is_checked_without_one() -> None:
    kept = {k: v for k, v in queue_arguments("e", 2).items() if k != "x-delivery-limit"}
    broker = ScriptedBroker(kept)
    declare_work_queue(broker, "e", 2)  # type: ignore[arg-type]
    assert "x-delivery-limit" not in broker.declared[-1]


def test_a_queue_that_also_differs_in_another_argument_is_refused() -> None:
    kept = {**queue_arguments("e", 2), "x-delivery-limit": 9, "x-consumer-timeout": 1000}
    broker = ScriptedBroker(kept)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="'x-consumer-timeout'"):
        declare_work_queue(broker, "e", 2)  # type: ignore[arg-type]


def test_an_endpoint_named_like_the_argument_is_not_mistaken_for_a_limit_refusal() -> None:
    kept = {**queue_arguments("x-delivery-limit", 2), "x-dead-letter-exchange": "elsewhere"}
    broker = ScriptedBroker(kept, queue="infermodes.async.x-delivery-limit")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="x-dead-letter-exchange"):
        declare_work_queue(broker, "x-delivery-limit", 2)  # type: ignore[arg-type]


def test_a_refusal_cut_short_uses_the_queue_and_says_it_could_not_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RabbitMQ keeps 255 characters of a reply: a long vhost and name can cut off the limit."""

    class CutShort(ScriptedBroker):
        def queue_declare(self, _queue: str, durable: bool, arguments: dict[str, Any]) -> None:
            self.declared.append(arguments)
            raise pika.exceptions.ChannelClosedByBroker(
                406, "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'infer"
            )

    broker = CutShort({})
    declare_work_queue(broker, "e", 2)  # type: ignore[arg-type]
    assert len(broker.declared) == 1
    assert "without checking its other arguments" in caplog.text
