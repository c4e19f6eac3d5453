"""An endpoint's queue outlives the endpoint (deleting it keeps accepted requests), so a later
endpoint of the same name may come with another ``maxAttempts``, hence another delivery limit:
RabbitMQ refuses such a redeclaration (406). The accepting side and the workers must go on
with the queue as it is, on a real broker, rather than fail for good."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from infermodes.errors import BrokerUnavailable
from infermodes.queueing.rabbitmq import (
    RequestPublisher,
    connect,
    queue_arguments,
    queue_name,
)
from tests.conftest import AbaloneModel
from tests.support.async_plane import (
    Notifications,
    consume,
    dead_letter_ids,
    plane,
    submit_unreadable,
)
from tests.support.rabbitmq import Broker


def test_a_queue_declared_with_another_max_attempts_is_used_as_it_is(
    rabbitmq: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = "redeclared"
    first = RequestPublisher(rabbitmq.amqp_url, {endpoint: 3})
    first.submit(endpoint, "before", b"{}")
    first.close()
    later = RequestPublisher(rabbitmq.amqp_url, {endpoint: 5})
    later.submit(endpoint, "after", b"{}")  # raised BrokerUnavailable (503) before
    later.close()
    assert "has another delivery limit than maxAttempts 5 gives" in caplog.text
    assert "x-delivery-limit" in caplog.text
    assert "could not be checked" not in caplog.text  # the broker's refusal gave its limit

    assert consume(rabbitmq, endpoint, 5, 2) == [b"{}", b"{}"]


def test_workers_give_up_within_a_kept_queue_s_smaller_limit_and_say_so(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The queue was declared for ``maxAttempts`` 1 (delivery limit 4) and is kept; the
    endpoint now says 8. A request that fails every time must still end in an error object, an
    error notification and the dead-letter queue, by the workers' give-up within the queue's
    4 deliveries, not be dropped there by the queue's own limit with nothing said."""
    endpoint = "kept-limit"
    notes = Notifications(rabbitmq, endpoint).declare()
    submit_unreadable(rabbitmq, endpoint, "failing", tmp_path, 1, f"file://{tmp_path}/in")
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, max_attempts=8) as live:
        live.start_worker(f"file://{abalone_model.tarball}", "w")
        notes.wait_for({"failing"}, "Failed", 60)
        dead = dead_letter_ids(rabbitmq, endpoint, 1)
    assert dead == ["failing"]
    assert notes.ids("Failed") == Counter({"failing": 1})
    record = json.loads((tmp_path / "failure/failing.error").read_text())
    assert (record["reason"], record["attempts"]) == ("AttemptsExhausted", 1), record


def test_a_classic_queue_of_the_same_name_is_still_refused(rabbitmq: Broker) -> None:
    """Without a delivery count there is no attempt limit: that queue is not used as it is."""
    connection = connect(rabbitmq.amqp_url)
    connection.channel().queue_declare(queue_name("classic"), durable=True)
    connection.close()
    publisher = RequestPublisher(rabbitmq.amqp_url, {"classic": 3})
    try:
        with pytest.raises(BrokerUnavailable, match="PRECONDITION_FAILED - inequivalent arg"):
            publisher.submit("classic", "refused", b"{}")
    finally:
        publisher.close()


def test_a_queue_that_differs_in_its_limit_and_its_dead_lettering_is_refused(
    rabbitmq: Broker,
) -> None:
    """A queue of the same name with another delivery limit and another dead-letter exchange
    (failed requests would not reach the endpoint's dead-letter queue) is not used as it is.
    The released RabbitMQ versions name the dead-letter exchange first; the order the limit
    comes first in is the scripted broker's, in tests/unit/test_rabbitmq_queue_arguments.py."""
    endpoint = "elsewhere"
    arguments = {
        **queue_arguments(endpoint, 3),
        "x-delivery-limit": 9,
        "x-dead-letter-exchange": "elsewhere",
    }
    connection = connect(rabbitmq.amqp_url)
    connection.channel().queue_declare(queue_name(endpoint), durable=True, arguments=arguments)
    connection.close()
    publisher = RequestPublisher(rabbitmq.amqp_url, {endpoint: 3})
    try:
        with pytest.raises(BrokerUnavailable, match="inequivalent arg 'x-dead-letter-exchange'"):
            publisher.submit(endpoint, "refused", b"{}")
    finally:
        publisher.close()
