"""The pure rules of async invocations: the message, the plan per delivery, failure classes."""

import json
from typing import Self

import pytest

from infermodes.errors import (
    BrokerUnavailable,
    InputNotAllowed,
    InvalidInput,
    InvocationTimeout,
    NotAcceptable,
    ObjectNotFound,
    StorageError,
)
from infermodes.queueing.broker import DELAYED_EXCHANGE, UNROUTABLE_EXCHANGE, UNROUTABLE_QUEUE
from infermodes.queueing.messages import (
    SUCCESS_CLAIM,
    Failure,
    MalformedMessage,
    Step,
    claims_success,
    classify,
    error_record,
    parse_request,
    plan,
    retry_delay,
)
from infermodes.queueing.rabbitmq import (
    declare_topology,
    delay_arguments,
    delivery_count,
    heartbeat_seconds,
    queue_arguments,
)
from infermodes.storage import NotAFile
from tests.unit.async_samples import invocation

REQUEST = invocation(accept="application/json", custom_attributes="k=v")


def test_message_round_trips_with_camel_case_fields() -> None:
    wire = json.loads(REQUEST.to_bytes())
    assert wire["inferenceId"] == "abc-1" and wire["invocationTimeoutSeconds"] == 900
    assert parse_request(REQUEST.to_bytes()) == REQUEST


def test_unknown_fields_from_a_newer_publisher_are_ignored() -> None:
    wire = json.loads(REQUEST.to_bytes()) | {"priority": 3}
    assert parse_request(json.dumps(wire).encode()) == REQUEST


@pytest.mark.parametrize(
    ("body", "salvaged_id", "names"),
    [
        (json.dumps(json.loads(REQUEST.to_bytes()) | {"acceptedAt": "x"}), "abc-1", "acceptedAt"),
        (json.dumps({"inferenceId": "z", "failureLocation": "file:///f"}), "z", "inputLocation"),
        ("not json at all", None, "message"),
        ("[1, 2]", None, "message"),
    ],
)
def test_malformed_messages_keep_what_can_be_read(
    body: str, salvaged_id: str | None, names: str
) -> None:
    with pytest.raises(MalformedMessage) as caught:
        parse_request(body.encode())
    assert caught.value.salvage.inference_id == salvaged_id
    assert names in str(caught.value)


@pytest.mark.parametrize(
    ("output", "error", "claimed", "count", "now", "step"),
    [
        (False, False, False, 0, 100.0, Step.PROCESS),
        (False, False, False, 2, 159.0, Step.PROCESS),
        (True, False, False, 0, 100.0, Step.RESEND_SUCCESS),
        (True, False, False, 9, 999.0, Step.RESEND_SUCCESS),  # a result beats attempts and TTL
        (False, True, False, 9, 999.0, Step.RESEND_ERROR),
        (False, False, False, 3, 100.0, Step.GIVE_UP),
        (False, False, False, 3, 999.0, Step.GIVE_UP),
        (False, False, False, 0, 160.5, Step.EXPIRE),
        # a success claimed but not stored is finished, whatever the budget and TTL, until
        # the queue's last two deliveries (maxAttempts 3 + headroom 3: the embedded queue
        # delivers counts 0 to 5, RabbitMQ 0 to 6)
        (False, False, True, 3, 100.0, Step.PROCESS),
        (False, False, True, 0, 160.5, Step.PROCESS),
        (False, False, True, 3, 999.0, Step.PROCESS),
        (False, False, True, 4, 100.0, Step.ABANDON),
        (False, False, True, 6, 100.0, Step.ABANDON),
        (True, False, True, 4, 999.0, Step.RESEND_SUCCESS),
        (True, False, True, 3, 999.0, Step.RESEND_SUCCESS),
        (False, True, True, 3, 999.0, Step.RESEND_ERROR),  # stored results still come first
    ],
)
def test_plan(output: bool, error: bool, claimed: bool, count: int, now: float, step: Step) -> None:
    decided = plan(
        output_exists=output,
        error_exists=error,
        delivery_count=count,
        max_attempts=3,
        now=now,
        expires_at=REQUEST.expires_at,
        success_claimed=claimed,
    )
    assert decided is step


@pytest.mark.parametrize(
    ("claim", "success"),
    [
        (SUCCESS_CLAIM, True),
        (
            error_record(
                "r",
                Failure("Expired", "late", False),
                attempts=1,
                input_location=None,
                failed_at=1.0,
            ),
            False,
        ),
        (b"", True),  # a success's claim is empty
        (b"[1]", False),  # anything else is an error's record, even one that cannot be read
        (b'{"status": "Completed"}', False),
    ],
)
def test_a_claim_says_whether_it_is_a_success(claim: bytes, success: bool) -> None:
    assert claims_success(claim) is success


@pytest.mark.parametrize(
    ("exc", "reason", "retry"),
    [
        (ObjectNotFound("no such object: s3://b/k"), "InputNotFound", False),
        (InvalidInput("row 1: bad"), "InvalidInput", False),
        (NotAcceptable("no"), "NotAcceptable", False),
        (InvocationTimeout("slow"), "InvocationTimeout", False),
        (NotAFile("file:///d is a directory"), "InvalidInput", False),
        (InputNotAllowed("file:///in/l is not under file:///in"), "InputNotAllowed", False),
        (StorageError("s3 error: connection refused"), "StorageUnavailable", True),
        (BrokerUnavailable("down"), "ProcessingFailed", True),
        (MemoryError(), "ProcessingFailed", True),
        (ValueError("boom"), "ProcessingFailed", True),
    ],
)
def test_classify(exc: BaseException, reason: str, retry: bool) -> None:
    failure = classify(exc)
    assert (failure.reason, failure.retry) == (reason, retry)
    assert failure.message


def test_retry_delay_doubles_up_to_the_cap() -> None:
    assert [retry_delay(n, 0.5, 3.0) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert retry_delay(10_000, 1.0, 30.0) == 30.0


@pytest.mark.parametrize(
    ("headers", "count"),
    [(None, 0), ({}, 0), ({"x-delivery-count": 0}, 0), ({"x-delivery-count": 4}, 4)],
)
def test_delivery_count(headers: dict[str, object] | None, count: int) -> None:
    assert delivery_count(headers) == count


def test_error_record_names_the_reason_and_attempts() -> None:
    record = json.loads(
        error_record(
            "abc-1",
            Failure("InvalidInput", "row 2: expected 10 features, got 9", retry=False),
            attempts=1,
            input_location="s3://b/in",
            failed_at=5.0,
        )
    )
    assert record == {
        "inferenceId": "abc-1",
        "status": "Failed",
        "reason": "InvalidInput",
        "message": "row 2: expected 10 features, got 9",
        "attempts": 1,
        "inputLocation": "s3://b/in",
        "failedAt": 5.0,
    }


def test_queue_is_a_quorum_queue_with_a_delivery_limit_and_dead_lettering() -> None:
    assert queue_arguments("ep", 4) == {
        "x-queue-type": "quorum",
        "x-consumer-timeout": 3_900_000,
        "x-delivery-limit": 7,  # 4 attempts + the headroom for a give-up to notify
        "x-dead-letter-exchange": "infermodes.dead-letter",
        "x-dead-letter-routing-key": "ep",
        # kept until the dead-letter queue confirmed it; a length limit refuses publishes
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


class Recording:
    """A channel (and its connection) that records what is declared and bound."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.arguments: dict[str, object] = {}
        self.exchanges: dict[str, tuple[str, object]] = {}
        self.connection = self

    def exchange_declare(
        self, name: str, kind: str, durable: bool, arguments: object = None
    ) -> None:
        self.exchanges[name] = (kind, arguments)

    def queue_declare(self, name: str, durable: bool, arguments: dict[str, object]) -> None:
        self.arguments[name] = arguments

    def queue_bind(self, queue: str, exchange: str, routing_key: str) -> None:
        self.calls.append((queue, exchange, routing_key))

    def channel(self) -> Self:
        return self

    def close(self) -> None:
        pass


def test_the_outbox_dead_letters_to_a_queue_of_its_own() -> None:
    """Webhook jobs no sender settled go to ``<outbox>.dead-letter``, bound on the dead-letter
    exchange by the outbox's name: not among the endpoint's dead requests."""

    channel = Recording()
    declare_topology(channel, "ep", 3)  # type: ignore[arg-type]
    outbox = channel.arguments["infermodes.async.ep.webhooks"]
    assert (outbox["x-dead-letter-exchange"], outbox["x-dead-letter-routing-key"]) == (
        "infermodes.dead-letter",
        "infermodes.async.ep.webhooks",
    )
    assert (outbox["x-dead-letter-strategy"], outbox["x-overflow"]) == (
        "at-least-once",
        "reject-publish",
    )
    assert (
        "infermodes.async.ep.webhooks.dead-letter",
        "infermodes.dead-letter",
        "infermodes.async.ep.webhooks",
    ) in channel.calls


def test_a_delayed_job_reaches_its_outbox_or_else_the_queue_of_unroutable_ones() -> None:
    """A delay queue's job, at its time, goes through the delayed exchange, on which the outbox
    is bound by its name; with the outbox gone, the exchange's alternate one takes it to a queue
    kept for such jobs (at-least-once into no queue, RabbitMQ retried it for ever)."""
    channel = Recording()
    declare_topology(channel, "ep", 3)  # type: ignore[arg-type]
    outbox = "infermodes.async.ep.webhooks"
    delay = delay_arguments(outbox, 5)
    assert (delay["x-dead-letter-exchange"], delay["x-dead-letter-routing-key"]) == (
        DELAYED_EXCHANGE,
        outbox,
    )
    assert (outbox, DELAYED_EXCHANGE, outbox) in channel.calls
    assert channel.exchanges[DELAYED_EXCHANGE] == (
        "direct",
        {"alternate-exchange": UNROUTABLE_EXCHANGE},
    )
    assert channel.exchanges[UNROUTABLE_EXCHANGE] == ("fanout", None)
    assert (UNROUTABLE_QUEUE, UNROUTABLE_EXCHANGE, "") in channel.calls


@pytest.mark.parametrize(
    ("url", "seconds"),
    [
        ("amqp://u:p@h:5672/%2F", 30),
        ("amqp://u:p@h:5672/%2F?heartbeat=2", 2),
        ("amqp://h/v?connection_attempts=3&heartbeat=600", 600),
        ("amqp://h/v?heartbeat=\xb2", 30),
    ],
)
def test_heartbeat_comes_from_the_url_or_the_default(url: str, seconds: int) -> None:
    assert heartbeat_seconds(url) == seconds
