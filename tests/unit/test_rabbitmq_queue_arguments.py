"""A kept work queue whose delivery limit differs is used as it is, but only when nothing else
differs. RabbitMQ's refusal names the first argument that differs; the released versions
check the queue type and dead-lettering before the limit, RabbitMQ's development branch
checks ``x-consumer-timeout`` after it. A scripted broker refuses in that order; the real
broker's side is in tests/integration/test_async_queue_arguments.py."""

from __future__ import annotations

from typing import Any

import pika.exceptions
import pytest

from infermodes.queueing import rabbitmq
from infermodes.queueing.broker import attempts_allowed, delivery_limit
from infermodes.queueing.rabbitmq import (
    AT_LEAST_ONCE,
    KEPT_AT_MOST_ONCE,
    KEPT_BY_WORK_QUEUE,
    arguments_as_kept,
    declare_outbox,
    declare_work_queue,
    outbox_arguments,
    queue_arguments,
)


@pytest.fixture(autouse=True)
def _no_queue_warned_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """The earlier-release warning is logged once per queue and process: each test starts with
    none logged, whatever ran before it (a rerun, another order)."""
    monkeypatch.setattr(rabbitmq, "_at_most_once_warned", set())


class ScriptedBroker:
    """Refuses each declaration whose arguments differ from the queue's, naming one: the
    delivery limit first, then the queue's other arguments, then one it lacks."""

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
        for key in arguments.keys() - self.existing.keys():  # as RabbitMQ 3.10 words it
            raise pika.exceptions.ChannelClosedByBroker(
                406,
                f"PRECONDITION_FAILED - inequivalent arg '{key}' for queue '{self.queue}' in "
                f"vhost '/': received the value '{arguments[key]}' of type 'longstr' but "
                "current is none",
            )


def test_a_queue_that_differs_only_in_its_limit_is_used_with_its_own_limit() -> None:
    broker = ScriptedBroker({**queue_arguments("e", 2), "x-delivery-limit": 9})
    assert declare_work_queue(broker, "e", 2) == 9  # type: ignore[arg-type]
    assert [a["x-delivery-limit"] for a in broker.declared] == [delivery_limit(2), 9]


def test_a_queue_declared_as_asked_has_the_limit_max_attempts_gives() -> None:
    broker = ScriptedBroker(queue_arguments("e", 2))
    assert declare_work_queue(broker, "e", 2) == delivery_limit(2)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("limit", "max_attempts", "allowed"),
    [
        (delivery_limit(3), 3, 3),  # the queue as declared
        (delivery_limit(1), 8, 1),  # kept from maxAttempts 1, now 8: give up after 1
        (delivery_limit(8), 3, 3),  # kept from 8, now 3: the queue allows more, 3 it is
        (2, 3, 1),  # not ours (a limit under the headroom): still one attempt
        (None, 3, 3),  # no limit, or the refusal did not say: maxAttempts
        (-1, 3, 3),  # RabbitMQ 4's "no limit"
    ],
)
def test_workers_attempt_within_the_queue_s_limit(
    limit: int | None, max_attempts: int, allowed: int
) -> None:
    assert attempts_allowed(limit, max_attempts) == allowed


def test_a_queue_without_a_limit_is_checked_without_one() -> None:
    kept = {k: v for k, v in queue_arguments("e", 2).items() if k != "x-delivery-limit"}
    broker = ScriptedBroker(kept)
    assert declare_work_queue(broker, "e", 2) is None  # type: ignore[arg-type]
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
    assert declare_work_queue(broker, "e", 2) is None  # type: ignore[arg-type]
    assert len(broker.declared) == 1
    assert "without checking its other arguments" in caplog.text


def test_an_outbox_kept_from_before_its_dead_lettering_is_used_as_it_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An outbox declared without dead-lettering (before it had any): refused (406), and used
    as it is with a warning, rather than stop every worker of the endpoint."""
    caplog.set_level("WARNING", "infermodes")
    kept = {**outbox_arguments("e"), "x-dead-letter-exchange": None}  # None: the queue has none
    broker = ScriptedBroker(kept, "infermodes.async.e.webhooks")
    declare_outbox(broker, "e")  # type: ignore[arg-type]
    assert broker.declared == [outbox_arguments("e")]
    assert "infermodes.async.e.webhooks was declared with other arguments" in caplog.text
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):  # anything but a 406 is raised
        declare_outbox(Refusing(), "e")  # type: ignore[arg-type]


class Refusing(ScriptedBroker):
    """A broker that refuses every declaration for want of access (403)."""

    def __init__(self) -> None:
        super().__init__({})

    def queue_declare(self, _queue: str, durable: bool, arguments: dict[str, Any]) -> None:
        raise pika.exceptions.ChannelClosedByBroker(403, "ACCESS_REFUSED")


def earlier_release(arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments a queue declared by the release before at-least-once dead-lettering has."""
    return {k: v for k, v in arguments.items() if k not in AT_LEAST_ONCE}


def test_a_work_queue_of_an_earlier_release_is_used_with_its_own_arguments_and_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Refused over the strategy, then over the overflow (one argument named each time), it is
    declared with what it has; its limit is the one maxAttempts gives. The gateway's pool
    declares it on each connection: the warning, naming the policy that mends it, is said once."""
    caplog.set_level("WARNING", "infermodes")
    broker = ScriptedBroker(earlier_release(queue_arguments("old", 2)), "infermodes.async.old")
    assert declare_work_queue(broker, "old", 2) == delivery_limit(2)  # type: ignore[arg-type]
    assert broker.declared[-1] == earlier_release(queue_arguments("old", 2))
    assert len(broker.declared) == 3
    assert declare_work_queue(broker, "old", 2) == delivery_limit(2)  # type: ignore[arg-type]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "infermodes.async.old was declared by an earlier release" in warnings[0]
    assert "dead-letters at most once" in warnings[0]
    assert '"dead-letter-strategy":"at-least-once","overflow":"reject-publish"' in warnings[0]
    assert "another delivery limit" not in caplog.text


def test_a_work_queue_of_an_earlier_release_with_another_limit_keeps_both(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three arguments differ, named one at a time (the limit first here): all three kept."""
    caplog.set_level("WARNING", "infermodes")
    kept = {**earlier_release(queue_arguments("older", 2)), "x-delivery-limit": 9}
    broker = ScriptedBroker(kept, "infermodes.async.older")
    assert declare_work_queue(broker, "older", 2) == 9  # type: ignore[arg-type]
    assert broker.declared[-1] == kept
    assert "another delivery limit than maxAttempts 2 gives (x-delivery-limit 9" in caplog.text
    assert "infermodes.async.older was declared by an earlier release" in caplog.text


def test_a_work_queue_of_an_earlier_release_that_differs_otherwise_too_is_refused() -> None:
    kept = {**earlier_release(queue_arguments("e", 2)), "x-consumer-timeout": 1000}
    broker = ScriptedBroker(kept)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="'x-consumer-timeout'"):
        declare_work_queue(broker, "e", 2)  # type: ignore[arg-type]


def test_an_outbox_of_an_earlier_release_is_used_with_its_own_arguments(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("WARNING", "infermodes")
    broker = ScriptedBroker(earlier_release(outbox_arguments("ob")), "infermodes.async.ob.webhooks")
    declare_outbox(broker, "ob")  # type: ignore[arg-type]
    assert broker.declared[-1] == earlier_release(outbox_arguments("ob"))
    assert "infermodes.async.ob.webhooks was declared by an earlier release" in caplog.text
    assert "declared with other arguments" not in caplog.text


REFUSAL = (
    "PRECONDITION_FAILED - inequivalent arg '{name}' for queue 'infermodes.async.e' in vhost "
    "'/': received the value 'at-least-once' of type 'longstr' but current is {current}"
)


@pytest.mark.parametrize(
    ("name", "current", "kept"),
    [
        # absent on the queue: left out
        ("x-dead-letter-strategy", "none", {"x-overflow": "reject-publish", "x-delivery-limit": 5}),
        ("x-overflow", "none", {"x-dead-letter-strategy": "at-least-once", "x-delivery-limit": 5}),
        ("x-delivery-limit", "none", AT_LEAST_ONCE),
        # a limit of its own, in either of RabbitMQ's wordings
        ("x-delivery-limit", "'9'", {**AT_LEAST_ONCE, "x-delivery-limit": 9}),
        (
            "x-delivery-limit",
            "the value '-1' of type 'long'",
            {**AT_LEAST_ONCE, "x-delivery-limit": -1},
        ),
        # another strategy or overflow, set on purpose: not ours to use (no policy overrides it)
        ("x-dead-letter-strategy", "'at-most-once'", None),
        ("x-overflow", "the value 'drop-head' of type 'longstr'", None),
        ("x-delivery-limit", "'many'", None),  # a limit that is no number
        ("x-delivery-limit", "'5'", None),  # the one asked for: refused over something else
        ("x-dead-letter-exchange", "none", None),  # not kept
        ("x-queue-type", "'classic'", None),
    ],
)
def test_a_refusal_is_met_only_over_the_arguments_a_queue_may_keep(
    name: str, current: str, kept: dict[str, object] | None
) -> None:
    wanted = {**AT_LEAST_ONCE, "x-delivery-limit": 5}
    refusal = REFUSAL.format(name=name, current=current)
    assert arguments_as_kept(wanted, refusal, KEPT_BY_WORK_QUEUE) == kept


@pytest.mark.parametrize(
    "refusal",
    [
        # cut short before the queue's limit, which would have to be read
        "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'infer",
        "PRECONDITION_FAILED - parameters for queue 'q' in vhost '/' not equivalent",
        "",
    ],
)
def test_a_refusal_that_does_not_say_the_queue_s_value_is_not_met(refusal: str) -> None:
    assert arguments_as_kept(AT_LEAST_ONCE, refusal, KEPT_BY_WORK_QUEUE) is None


@pytest.mark.parametrize("name", list(AT_LEAST_ONCE))
def test_a_refusal_cut_short_over_an_argument_whose_absence_is_kept_asks_without_it(
    name: str,
) -> None:
    """RabbitMQ keeps 255 characters of a reply; with a long endpoint and vhost name, the
    refusal of a queue declared by an earlier release ends before the queue's value: no value
    is needed to ask without an argument whose absence alone is kept."""
    refusal = (
        f"PRECONDITION_FAILED - inequivalent arg '{name}' for queue 'infermodes.async.{'e' * 80}"
    )
    wanted = {**AT_LEAST_ONCE, "x-delivery-limit": 5}
    assert arguments_as_kept(wanted, refusal, KEPT_BY_WORK_QUEUE) == {
        key: value for key, value in wanted.items() if key != name
    }
    # asked without it already: the same refusal again is not met
    assert (
        arguments_as_kept(
            {key: value for key, value in wanted.items() if key != name},
            refusal,
            KEPT_BY_WORK_QUEUE,
        )
        is None
    )


def test_the_outbox_keeps_no_other_delivery_limit() -> None:
    refusal = REFUSAL.format(name="x-delivery-limit", current="'3'")
    assert arguments_as_kept({"x-delivery-limit": 10}, refusal, KEPT_AT_MOST_ONCE) is None
