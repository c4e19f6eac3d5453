"""A request over its delivery limit is dead-lettered at least once: the broker keeps it until
the dead-letter queue took it, rather than drop it when that queue is gone (deleted by hand,
its leader down). Queues declared by an earlier release (dead-lettering at most once) are still
used, with a warning, and the policy it names makes them keep such requests too."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from infermodes.errors import BrokerUnavailable
from infermodes.queueing.broker import (
    UNROUTABLE_QUEUE,
    delayed_queue_name,
    delivery_limit,
    outbox_name,
)
from infermodes.queueing.rabbitmq import (
    AT_LEAST_ONCE,
    AT_LEAST_ONCE_POLICY_DEFINITION,
    AT_LEAST_ONCE_POLICY_PATTERN,
    RequestPublisher,
    connect,
    dead_letter_queue_name,
    delay_arguments,
    publish_later,
    queue_arguments,
    queue_name,
)
from tests.support.async_plane import consume, dead_letters, publish
from tests.support.processes import wait_until
from tests.support.rabbitmq import Broker, rabbitmq_broker

MAX_ATTEMPTS = 1


@pytest.fixture(scope="module")
def retrying_broker() -> Iterator[Broker]:
    """A broker whose at-least-once dead-lettering retries a dead letter no queue took after
    2 s, not RabbitMQ's default 3 minutes (``dead_letter_worker_publisher_confirm_timeout``;
    some later versions read it with ``_ms``: both are set, an unknown one is ignored)."""
    with rabbitmq_broker(
        erl_args=(
            "-rabbit dead_letter_worker_publisher_confirm_timeout 2000",
            "-rabbit dead_letter_worker_publisher_confirm_timeout_ms 2000",
        )
    ) as broker:
        yield broker


def fail_every_delivery(broker: Broker, endpoint: str) -> int:
    """Take the endpoint's request and give it back (``basic.reject``, as a worker's requeue)
    until the broker stops delivering it; returns how many deliveries it made."""
    connection = connect(broker.amqp_url)
    try:
        channel = connection.channel()
        for delivered in range(delivery_limit(MAX_ATTEMPTS) + 3):
            method, _props, _body = channel.basic_get(queue_name(endpoint), auto_ack=False)
            if method is None:
                return delivered
            channel.basic_reject(method.delivery_tag, requeue=True)
    finally:
        connection.close()
    raise AssertionError("the broker kept delivering the request past its delivery limit")


def delete_dead_letter_queue(broker: Broker, endpoint: str) -> None:
    connection = connect(broker.amqp_url)
    try:
        connection.channel().queue_delete(dead_letter_queue_name(endpoint))
    finally:
        connection.close()


def poison_reaches_the_dead_letter_queue_once_it_is_back(broker: Broker, endpoint: str) -> None:
    """The request given up while the dead-letter queue was gone: the endpoint's topology
    declared again (as a worker's start or the gateway's reconnect does), it arrives there."""
    assert fail_every_delivery(broker, endpoint) == delivery_limit(MAX_ATTEMPTS) + 1
    publish(broker, endpoint, "next", b"{}", MAX_ATTEMPTS)  # declares the dead-letter queue
    found: list[bytes] = []

    def arrived() -> bool:
        found.extend(dead_letters(broker, endpoint))
        return bool(found)

    wait_until(arrived, 30, "the given-up request in the dead-letter queue", interval=0.5)
    assert [json.loads(body)["inferenceId"] for body in found] == ["poison"]


def poison(endpoint: str) -> bytes:
    return json.dumps({"inferenceId": "poison", "endpoint": endpoint}).encode()


def test_a_request_over_its_limit_while_the_dead_letter_queue_is_gone_is_kept(
    retrying_broker: Broker,
) -> None:
    """At most once (the arguments before), the broker dropped it: the queue was gone."""
    endpoint = "dead-letter-gone"
    publish(retrying_broker, endpoint, "poison", poison(endpoint), MAX_ATTEMPTS)
    delete_dead_letter_queue(retrying_broker, endpoint)
    poison_reaches_the_dead_letter_queue_once_it_is_back(retrying_broker, endpoint)


def declare_as_an_earlier_release(broker: Broker, endpoint: str) -> None:
    earlier = {
        k: v for k, v in queue_arguments(endpoint, MAX_ATTEMPTS).items() if k not in AT_LEAST_ONCE
    }
    connection = connect(broker.amqp_url)
    try:
        connection.channel().queue_declare(queue_name(endpoint), durable=True, arguments=earlier)
    finally:
        connection.close()


def test_a_queue_declared_by_an_earlier_release_is_used_with_one_warning(
    rabbitmq: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """Its requests are accepted and processed; the warning names the queue and the policy,
    once however many connections declare it (the gateway's pool, a worker's reconnects)."""
    caplog.set_level("WARNING", "infermodes")
    endpoint = "earlier-release"
    declare_as_an_earlier_release(rabbitmq, endpoint)
    publisher = RequestPublisher(rabbitmq.amqp_url, {endpoint: MAX_ATTEMPTS})
    try:
        publisher.submit(endpoint, "first", b"1")  # a 503 before: the 406 went unmet
    finally:
        publisher.close()
    publish(rabbitmq, endpoint, "second", b"2", MAX_ATTEMPTS)  # another connection
    assert sorted(consume(rabbitmq, endpoint, MAX_ATTEMPTS, 2)) == [b"1", b"2"]
    warnings = [r.getMessage() for r in caplog.records if "earlier release" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{queue_name(endpoint)} was declared by an earlier release")
    assert "rabbitmqctl set_policy" in warnings[0]


def test_the_policy_the_warning_names_makes_an_earlier_queue_keep_its_dead_letters(
    retrying_broker: Broker,
) -> None:
    """The policy of docs/upgrading.md, set through the management API, on a queue declared by
    an earlier release: a request over its limit while the dead-letter queue is gone is kept."""
    endpoint = "earlier-with-policy"
    declare_as_an_earlier_release(retrying_broker, endpoint)
    policy = {
        "pattern": AT_LEAST_ONCE_POLICY_PATTERN,
        "definition": AT_LEAST_ONCE_POLICY_DEFINITION,
        "apply-to": "queues",
    }
    response = httpx.put(
        f"http://127.0.0.1:{retrying_broker.management_port}/api/policies/%2F/at-least-once",
        json=policy,
        auth=("guest", "guest"),
    )
    assert response.status_code in (201, 204), response.text
    publish(retrying_broker, endpoint, "poison", poison(endpoint), MAX_ATTEMPTS)
    delete_dead_letter_queue(retrying_broker, endpoint)
    poison_reaches_the_dead_letter_queue_once_it_is_back(retrying_broker, endpoint)


def test_a_request_over_a_length_limit_of_a_policy_is_refused_not_the_oldest_dropped(
    rabbitmq: Broker,
) -> None:
    """``reject-publish``, which at-least-once needs: under a ``max-length`` someone set by a
    policy, the gateway's confirmed publish is nacked (503: not accepted), where ``drop-head``
    (the default) took it and dead-lettered the oldest request accepted."""
    endpoint = "length-limited"
    policy = f"http://127.0.0.1:{rabbitmq.management_port}/api/policies/%2F/{endpoint}"
    response = httpx.put(  # set first: the queue has it from its declaration on
        policy,
        json={"pattern": f"^{queue_name(endpoint)}$", "definition": {"max-length": 1}},
        auth=("guest", "guest"),
    )
    assert response.status_code in (201, 204), response.text
    publisher = RequestPublisher(rabbitmq.amqp_url, {endpoint: MAX_ATTEMPTS})
    try:
        publisher.submit(endpoint, "first", b"1")
        publisher.submit(endpoint, "second", b"2")  # a quorum queue refuses once it is over
        with pytest.raises(BrokerUnavailable, match="did not accept"):
            publisher.submit(endpoint, "over", b"3")
    finally:
        publisher.close()
        httpx.delete(policy, auth=("guest", "guest"))
    assert sorted(consume(rabbitmq, endpoint, MAX_ATTEMPTS, 2)) == [b"1", b"2"]
    assert dead_letters(rabbitmq, endpoint) == []


def test_a_delayed_webhook_job_whose_outbox_is_gone_is_kept_apart_not_retried_for_ever(
    rabbitmq: Broker,
) -> None:
    """A job waiting in a delay queue for its next send while its outbox is deleted (with its
    endpoint, once the outbox looked empty: delayed jobs wait elsewhere): at its time it is
    dead-lettered into no queue, which RabbitMQ's at-least-once strategy keeps in the delay
    queue and retries every 3 minutes for ever. It goes to the queue kept for such jobs at
    once, saying where it came from and which outbox it was for."""
    endpoint = "outbox-gone"
    outbox = outbox_name(endpoint)
    publish(rabbitmq, endpoint, "request", b"{}", MAX_ATTEMPTS)  # the endpoint's topology
    connection = connect(rabbitmq.amqp_url)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        publish_later(channel, outbox, 1, b'{"inferenceId": "late"}', "late", {"x-a": "b"})
        channel.queue_delete(outbox)
        found: list[tuple[str, dict[str, object], bytes]] = []

        def parked() -> bool:
            method, properties, body = channel.basic_get(UNROUTABLE_QUEUE, auto_ack=True)
            if method is not None:
                found.append((method.routing_key, properties.headers, body))
            return bool(found)

        wait_until(parked, 60, "the job among the unroutable ones", interval=0.5)
        delayed = channel.queue_declare(delayed_queue_name(outbox, 1), passive=True)
        assert delayed.method.message_count == 0
    finally:
        connection.close()
    [(routing_key, headers, body)] = found
    assert (routing_key, body) == (outbox, b'{"inferenceId": "late"}')
    assert headers["x-a"] == "b"  # its own headers kept
    [death] = headers["x-death"]  # type: ignore[misc]
    assert (death["queue"], death["reason"]) == (delayed_queue_name(outbox, 1), "expired")


def test_a_delay_queue_an_earlier_release_declared_is_used_as_it_is(rabbitmq: Broker) -> None:
    """A delay queue kept from an earlier release releases its jobs through the default
    exchange: a worker of this one declares it again with another dead-letter exchange, which
    RabbitMQ refuses (406). It is used as it is, and the job reaches its outbox after its delay,
    rather than be sent again at once (a refused delay), for every failed send after an
    upgrade."""
    endpoint = "kept-delay"
    outbox = outbox_name(endpoint)
    publish(rabbitmq, endpoint, "request", b"{}", MAX_ATTEMPTS)  # the endpoint's topology
    delayed = delayed_queue_name(outbox, 1)
    earlier = {**delay_arguments(outbox, 1), "x-dead-letter-exchange": ""}
    connection = connect(rabbitmq.amqp_url)
    try:
        channel = connection.channel()
        channel.queue_declare(delayed, durable=True, arguments=earlier)
        channel.confirm_delivery()
        publish_later(channel, outbox, 1, b'{"inferenceId": "kept"}', "kept", None)
        found: list[bytes] = []

        def arrived() -> bool:
            method, _properties, body = channel.basic_get(outbox, auto_ack=True)
            if method is not None:
                found.append(body)
            return bool(found)

        wait_until(arrived, 30, "the delayed job in its outbox", interval=0.5)
    finally:
        connection.close()
    assert found == [b'{"inferenceId": "kept"}']
