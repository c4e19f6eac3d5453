"""RabbitMQ topology and confirmed publishing for async endpoints.

One quorum queue per endpoint (durable, replicated on a cluster, with a native delivery limit
as the backstop that dead-letters a message whose worker dies every time), a dead-letter queue
beside it, and one topic exchange for notifications. Publishing waits for the broker's confirm
of a persistent, routed message: only then has a request been accepted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import TypeVar

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from infermodes.errors import BrokerUnavailable

log = logging.getLogger("infermodes.queue")

DEAD_LETTER_EXCHANGE = "infermodes.dead-letter"
NOTIFICATION_EXCHANGE = "infermodes.notifications"
PERSISTENT = 2
CONNECT_TIMEOUT_SECONDS = 5.0
HEARTBEAT_SECONDS = 30
# RabbitMQ closes a channel holding a message unacked longer than its consumer timeout
# (30 min by default): it must outlast the longest invocation (1 h) plus the final writes.
CONSUMER_TIMEOUT_MS = 65 * 60 * 1000

T = TypeVar("T")

# What a dead or refusing broker raises through pika; callers turn these into
# BrokerUnavailable or a reconnect.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPError,
    ConnectionError,
    OSError,
)


def queue_name(endpoint: str) -> str:
    return f"infermodes.async.{endpoint}"


def dead_letter_queue_name(endpoint: str) -> str:
    return f"infermodes.async.{endpoint}.dead-letter"


def queue_arguments(endpoint: str, max_attempts: int) -> dict[str, object]:
    """The work queue's arguments. Every declarer must pass the same ones (RabbitMQ refuses a
    redeclaration with different arguments), hence this one function. ``x-consumer-timeout``
    is honoured from RabbitMQ 3.12 on; older brokers need ``consumer_timeout`` in their config."""
    return {
        "x-queue-type": "quorum",
        "x-consumer-timeout": CONSUMER_TIMEOUT_MS,
        "x-delivery-limit": max_attempts,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": endpoint,
    }


def declare_topology(channel: BlockingChannel, endpoint: str, max_attempts: int) -> None:
    """Declare (idempotently) everything one endpoint needs."""
    channel.exchange_declare(DEAD_LETTER_EXCHANGE, "direct", durable=True)
    channel.exchange_declare(NOTIFICATION_EXCHANGE, "topic", durable=True)
    dead = dead_letter_queue_name(endpoint)
    channel.queue_declare(dead, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(dead, DEAD_LETTER_EXCHANGE, routing_key=endpoint)
    channel.queue_declare(
        queue_name(endpoint), durable=True, arguments=queue_arguments(endpoint, max_attempts)
    )


def connect(url: str) -> pika.BlockingConnection:
    params = pika.URLParameters(url)
    params.socket_timeout = CONNECT_TIMEOUT_SECONDS
    params.blocked_connection_timeout = CONNECT_TIMEOUT_SECONDS * 6
    params.heartbeat = HEARTBEAT_SECONDS
    params.connection_attempts = 1
    return pika.BlockingConnection(params)


def publish_persistent(
    channel: BlockingChannel,
    exchange: str,
    routing_key: str,
    body: bytes,
    message_id: str,
    mandatory: bool,
) -> None:
    """On a confirm-mode channel this returns only once the broker has the message (and has
    written it, for a durable queue); ``mandatory`` makes an unroutable message an error rather
    than a silent drop: work must reach its queue, a notification may have no subscriber."""
    properties = pika.BasicProperties(
        delivery_mode=PERSISTENT, content_type="application/json", message_id=message_id
    )
    channel.basic_publish(exchange, routing_key, body, properties, mandatory=mandatory)


class ConfirmedChannel:
    """One connection with a confirm-mode channel, reconnected on demand; thread-safe by a lock
    (pika's blocking connection is not). ``run`` retries once on a fresh connection, then
    raises BrokerUnavailable."""

    def __init__(self, url: str, on_connect: Callable[[BlockingChannel], None]) -> None:
        self.url = url
        self.on_connect = on_connect
        self._lock = threading.Lock()
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def _open(self) -> BlockingChannel:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self._drop()
        self._connection = connect(self.url)
        channel = self._connection.channel()
        channel.confirm_delivery()
        self.on_connect(channel)
        self._channel = channel
        return channel

    def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except BROKER_ERRORS:
                log.debug("closing a broken connection failed", exc_info=True)

    def run(self, action: Callable[[BlockingChannel], T]) -> T:
        with self._lock:
            for attempt in (1, 2):
                try:
                    return action(self._open())
                except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
                    raise BrokerUnavailable(
                        f"the broker did not accept the message: {exc}"
                    ) from exc
                except BROKER_ERRORS as exc:
                    self._drop()
                    if attempt == 2:
                        raise BrokerUnavailable(
                            f"message broker unreachable ({type(exc).__name__}: {exc}); "
                            "the request was not accepted, retry later"
                        ) from exc
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._drop()


class ChannelPool:
    """A few confirmed channels; each call takes an idle one, so concurrent callers wait for
    their confirms together (a quorum queue confirms after its log is synced, and the broker
    syncs once for everything that arrived meanwhile) instead of one after another."""

    def __init__(self, url: str, size: int, on_connect: Callable[[BlockingChannel], None]) -> None:
        self._channels = [ConfirmedChannel(url, on_connect) for _ in range(size)]
        self._idle: SimpleQueue[ConfirmedChannel] = SimpleQueue()
        for channel in self._channels:
            self._idle.put(channel)

    def run(self, action: Callable[[BlockingChannel], T]) -> T:
        channel = self._idle.get()
        try:
            return channel.run(action)
        finally:
            self._idle.put(channel)

    def publish(
        self, exchange: str, routing_key: str, body: bytes, message_id: str, mandatory: bool
    ) -> None:
        self.run(
            lambda channel: publish_persistent(
                channel, exchange, routing_key, body, message_id, mandatory
            )
        )

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


class RequestPublisher:
    """Puts accepted requests on their endpoint's queue, declaring its topology first (again
    after a reconnect, in case the broker lost it)."""

    def __init__(self, url: str, max_attempts: int, connections: int = 8) -> None:
        self.max_attempts = max_attempts
        self._declared: set[str] = set()
        self._pool = ChannelPool(url, connections, lambda _: self._declared.clear())

    def submit(self, endpoint: str, message_id: str, body: bytes) -> None:
        """Returns once the broker confirmed; raises BrokerUnavailable otherwise."""

        def send(channel: BlockingChannel) -> None:
            if endpoint not in self._declared:
                declare_topology(channel, endpoint, self.max_attempts)
                self._declared.add(endpoint)
            publish_persistent(channel, "", queue_name(endpoint), body, message_id, True)

        self._pool.run(send)

    def close(self) -> None:
        self._pool.close()
