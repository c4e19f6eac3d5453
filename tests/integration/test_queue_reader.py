"""The operator looks at every async pool's queue once a second (``infermodes up`` at its own
each tick): on a real broker, those reads reuse kept connections instead of opening one per
read, a queue that does not exist yet reads as empty without costing the connection, and a
broker restart costs no read."""

from __future__ import annotations

import os

import httpx
import pytest

from infermodes.errors import BrokerUnavailable
from infermodes.queueing.rabbitmq import QueueReader, RequestPublisher, queue_name
from tests.support.processes import wait_until
from tests.support.rabbitmq import Broker

READS = 30


def own_connections(broker: Broker) -> list[str]:
    """The broker's names (peer and local address) of this process's connections."""
    response = httpx.get(
        f"{broker.management_url}/api/connections", auth=("guest", "guest"), timeout=5.0
    )
    response.raise_for_status()
    own = f"infermodes pid {os.getpid()}"
    return sorted(
        c["name"]
        for c in response.json()
        if (c.get("client_properties") or {}).get("connection_name") == own
    )


def one_connection(broker: Broker) -> str:
    """This process's one connection, once the broker's listing (sampled) shows it alone."""
    seen: list[list[str]] = []
    wait_until(
        lambda: seen.append(own_connections(broker)) or len(seen[-1]) == 1,
        15,
        "the broker to list one connection of this process",
        interval=0.25,
    )
    return seen[-1][0]


def test_reads_reuse_a_kept_connection_and_a_missing_queue_reads_empty(rabbitmq: Broker) -> None:
    publisher = RequestPublisher(rabbitmq.amqp_url, {"read-often": 3})
    publisher.submit("read-often", "one", b"{}")
    publisher.submit("read-often", "two", b"{}")
    publisher.close()
    reader = QueueReader(rabbitmq.amqp_url, 1)
    try:
        assert reader.read(queue_name("read-often")).ready == 2
        kept = one_connection(rabbitmq)  # a connection opened per read is gone by now
        for _ in range(READS):
            missing = reader.read(queue_name("never-accepted"))
            assert (missing.ready, missing.consumers) == (0, 0)
            found = reader.read(queue_name("read-often"))
            assert (found.ready, found.consumers, found.unacked) == (2, 0, None)
        # the same connection for every read, 30 of them closing its channel
        assert one_connection(rabbitmq) == kept
    finally:
        reader.close()


def test_the_first_read_after_a_broker_restart_reconnects(rabbitmq: Broker) -> None:
    reader = QueueReader(rabbitmq.amqp_url, 1)
    try:
        assert reader.read(queue_name("across-a-restart")).ready == 0
        rabbitmq.restart()
        assert reader.read(queue_name("across-a-restart")).ready == 0
        rabbitmq.stop()
        try:  # a look, not a request: its error says nothing of a request not accepted
            with pytest.raises(BrokerUnavailable) as down:
                reader.read(queue_name("across-a-restart"))
            assert str(down.value).startswith("message broker unreachable (")
            assert "request" not in str(down.value)
        finally:
            rabbitmq.start()
        assert reader.read(queue_name("across-a-restart")).ready == 0
    finally:
        reader.close()
