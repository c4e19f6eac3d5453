"""Pick the broker by URL, so the worker, the accepting side and the local runtime are written
once: ``amqp://`` / ``amqps://`` is RabbitMQ (``rabbitmq.py``), ``sqlite:///abs/path/queue.db``
the embedded queue (``embedded.py``; ``?lease_seconds=N`` sets its lease, 15 s by default).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs, quote, unquote, urlsplit

from infermodes.errors import BrokerUrlError
from infermodes.logs import redacted_url
from infermodes.queueing.broker import (
    WEBHOOK_JOBS,
    Backlog,
    BrokerUrl,
    Consumer,
    Enqueuer,
    ManagementUrl,
    Publisher,
    outbox_name,
    url_now,
)
from infermodes.queueing.embedded import LEASE_SECONDS, EmbeddedQueue

if TYPE_CHECKING:
    from infermodes.queueing.rabbitmq import QueueReader

BACKLOG_READERS = 2  # connections kept for reading queues: reads are one round trip each


class ClosingEnqueuer(Enqueuer, Protocol):
    def close(self) -> None: ...


class ClosingPublisher(Publisher, Protocol):
    def close(self) -> None: ...


class Broker(Protocol):
    """What a process needs from its broker. ``max_attempts``: the endpoint's (RabbitMQ
    declares its queues with the matching delivery limit); ``connections``: how many publish
    in parallel (the embedded queue groups concurrent commits on one); ``what``: what a
    publisher's outage lines say it was doing."""

    def enqueuer(self, max_attempts: Mapping[str, int], connections: int) -> ClosingEnqueuer: ...

    def publisher(
        self, endpoint: str, max_attempts: int, connections: int, what: str = "notifying"
    ) -> ClosingPublisher: ...

    def consumer(self, endpoint: str, max_attempts: int, concurrency: int) -> Consumer: ...

    def outbox_consumer(self, endpoint: str, max_attempts: int, concurrency: int) -> Consumer: ...

    def backlog(self, endpoint: str) -> Backlog: ...

    def waiting_webhooks(self, endpoint: str) -> int: ...


class RabbitBroker:
    """RabbitMQ's classes behind ``Broker``; pika is imported only when one is made."""

    def __init__(self, url: BrokerUrl, management_url: ManagementUrl | None) -> None:
        self.url = url
        self.management_url = management_url
        self._reader: QueueReader | None = None
        self._reader_lock = threading.Lock()

    def enqueuer(self, max_attempts: Mapping[str, int], connections: int) -> ClosingEnqueuer:
        from infermodes.queueing.rabbitmq import RequestPublisher

        return RequestPublisher(self.url, max_attempts, connections)

    def publisher(
        self, endpoint: str, max_attempts: int, connections: int, what: str = "notifying"
    ) -> ClosingPublisher:
        from infermodes.queueing.rabbitmq import ChannelPool, declare_topology

        return ChannelPool(
            self.url,
            connections,
            lambda channel: declare_topology(channel, endpoint, max_attempts),
            what,
        )

    def consumer(self, endpoint: str, max_attempts: int, concurrency: int) -> Consumer:
        from infermodes.queueing.rabbitmq import RabbitConsumer

        # a worker reads its URL once: a login refused for long ends it, and its restart
        # reads the URL again (``refused_login_since``)
        return RabbitConsumer(url_now(self.url), endpoint, max_attempts, concurrency)

    def outbox_consumer(self, endpoint: str, max_attempts: int, concurrency: int) -> Consumer:
        """The endpoint's webhook jobs (``broker.outbox_name``), declared with its topology."""
        from infermodes.queueing.rabbitmq import RabbitConsumer

        queue = outbox_name(endpoint)
        return RabbitConsumer(
            url_now(self.url), endpoint, max_attempts, concurrency, queue, WEBHOOK_JOBS
        )

    def backlog(self, endpoint: str) -> Backlog:
        """Read over kept connections: ``infermodes up`` reads every async pool's queue each
        tick."""
        from infermodes.queueing.rabbitmq import backlog

        return backlog(endpoint, self.url, self.management_url, self._kept_reader())

    def waiting_webhooks(self, endpoint: str) -> int:
        from infermodes.queueing.rabbitmq import waiting_webhooks

        return waiting_webhooks(endpoint, self.url, self._kept_reader())

    def _kept_reader(self) -> QueueReader:
        from infermodes.queueing.rabbitmq import QueueReader

        with self._reader_lock:
            if self._reader is None:
                self._reader = QueueReader(self.url, BACKLOG_READERS)
            return self._reader


def embedded_url(path: Path) -> str:
    """The ``sqlite:///`` URL of the queue file ``path`` (absolute), which ``embedded_path``
    reads back: a ``#``, ``?`` or ``%`` in a folder's name is quoted, or the workers would open
    another file than the accept route writes to."""
    return f"sqlite://{quote(str(path))}"


def embedded_path(url: str) -> tuple[Path, float]:
    """The queue file and lease of a ``sqlite:///abs/path?lease_seconds=N`` URL."""
    parts = urlsplit(url)
    shown = redacted_url(url)
    if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
        raise BrokerUrlError(f"{shown!r}: expected sqlite:///absolute/path/to/queue.db")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"lease_seconds"}
    if unknown:
        raise BrokerUrlError(f"{shown!r}: unknown parameter(s) {sorted(unknown)}")
    given = query.get("lease_seconds", [str(LEASE_SECONDS)])[-1]
    try:
        lease = float(given)
    except ValueError:
        raise BrokerUrlError(f"{shown!r}: lease_seconds must be a number") from None
    if not 0 < lease <= 3600:
        raise BrokerUrlError(f"{shown!r}: lease_seconds must be in (0, 3600]")
    return Path(unquote(parts.path)), lease


def broker_from_url(url: BrokerUrl, management_url: ManagementUrl | None = None) -> Broker:
    """The broker a URL names (a ``UrlFile``: RabbitMQ's connections read it again at each
    connect). ``management_url``: RabbitMQ's management API, for backlog figures with in-flight
    counts (the embedded queue always has them). Raises BrokerUrlError, whose text shows the
    URL without its password."""
    given = url_now(url)  # a file's, as it reads now: a bad one is refused at start
    scheme = urlsplit(given).scheme
    if scheme in ("amqp", "amqps"):
        from infermodes.queueing.rabbitmq import amqp_parameters

        amqp_parameters(given)  # refused now, not at each connection
        return RabbitBroker(url, management_url)
    if scheme == "sqlite":
        path, lease = embedded_path(given)
        return EmbeddedQueue(path, lease)
    raise BrokerUrlError(
        f"{redacted_url(given)!r}: the broker URL must start with amqp://, amqps:// or sqlite:///"
    )
