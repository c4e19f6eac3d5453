"""What async processing needs from a message broker, whichever broker it is.

RabbitMQ (``rabbitmq.py``) implements these today; the local runtime's embedded queue will be
a sibling implementing the same ones. Workers and the accepting side depend on these types
only, so the per-message logic never sees pika.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

NOTIFICATION_EXCHANGE = "infermodes.notifications"  # the topic every notification goes to


class Settle(StrEnum):
    """How a delivery ends."""

    ACK = "ack"
    REQUEUE = "requeue"  # another attempt; the broker counts it
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class Delivery:
    """One message as the broker handed it over: ``attempt`` counts earlier deliveries
    (0 on the first), whatever ended them: crashes, restarts or requeues."""

    body: bytes
    attempt: int


Handler = Callable[[Delivery], Settle]


class Enqueuer(Protocol):
    """Puts a message on an endpoint's queue and returns only once the broker has it;
    raises ``BrokerUnavailable`` otherwise."""

    def submit(self, endpoint: str, message_id: str, body: bytes) -> None: ...


class Publisher(Protocol):
    """Publishes one persistent message and returns once the broker confirmed it; raises
    ``BrokerUnavailable`` otherwise. ``mandatory``: an unroutable message is an error (work
    must reach its queue) rather than dropped (a notification may have no subscriber)."""

    def publish(
        self, exchange: str, routing_key: str, body: bytes, message_id: str, mandatory: bool
    ) -> None: ...


class Consumer(Protocol):
    """Feeds one endpoint's deliveries to a handler, ``concurrency`` at a time, settling each
    as the handler says; ``run`` returns once ``stop`` was called and nothing is in flight."""

    def run(self, handle: Handler) -> None: ...

    def stop(self) -> None: ...

    @property
    def in_flight(self) -> int: ...


@dataclass(frozen=True)
class Backlog:
    """An endpoint's queue as the scaler sees it."""

    ready: int
    unacked: int | None  # None: unknown, never a guess of 0
    consumers: int
    source: str  # where the figures came from, e.g. "management" or "amqp"

    @property
    def total(self) -> int | None:
        """Work the endpoint has: waiting plus in flight; None when in-flight is unknown."""
        return None if self.unacked is None else self.ready + self.unacked
