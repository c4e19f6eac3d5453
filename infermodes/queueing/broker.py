"""What async processing needs from a message broker, whichever broker it is.

RabbitMQ (``rabbitmq.py``) and the local runtime's embedded queue (``embedded.py``, one SQLite
file) implement these; ``connect.broker_from_url`` picks one by URL. Workers and the accepting
side depend on these types only, so the per-message logic never sees pika or SQLite.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol, TypeAlias, TypeVar

from infermodes.errors import BrokerUrlError

NOTIFICATION_EXCHANGE = "infermodes.notifications"  # the topic every notification goes to
# Deliveries a queue allows beyond maxAttempts before it dead-letters a message by itself.
# Workers give up after maxAttempts (error object, notification, dead-letter); the extra
# deliveries let a give-up that could not notify come back and notify. The queue's own limit is
# the backstop for a worker that dies every time it holds a message.
DELIVERY_LIMIT_HEADROOM = 3
# Deliveries of one webhook job (``outbox_name``) before its queue dead-letters it by itself:
# the backstop for a job whose every sender is killed while it holds it. Only such deliveries
# count: a sender ends every job it takes with an ack, having put the job back (returned, or
# its send counted) or dead-lettered it first, each confirmed (``notifications.Outbox``), so
# neither returns nor failed sends raise a job's delivery count. (RabbitMQ delivers it once
# more than the embedded queue: 11 times, not 10.)
OUTBOX_DELIVERY_LIMIT = 10
# A delivery with this many before it, none settled, dead-letters the job unsent (reason
# ``unsettled``: what killed its senders may be in it), within either queue's limit.
OUTBOX_UNSETTLED = OUTBOX_DELIVERY_LIMIT - 1
# Sends of a webhook job (each its webhooks' ``WEBHOOK_ATTEMPTS`` tries), counted in the job
# itself: the one that fails for the last time dead-letters it (reason ``sends_exhausted``).
OUTBOX_SENDS = 9
# The exchange dead letters go to, by the name of the queue they come from (RabbitMQ binds
# each dead-letter queue on it; the embedded queue keeps them in its ``dead_letters`` table)
DEAD_LETTER_EXCHANGE = "infermodes.dead-letter"
# Where a delay queue's jobs go once their time is up, each outbox bound on it by its name; one
# whose outbox is gone (deleted, with its endpoint) goes on through its alternate exchange to
# the queue kept for them, at once: dead-lettered at least once into no queue, RabbitMQ would
# keep it and retry it every 3 minutes for ever. Their names' "_" is in no endpoint's name (a
# DNS label): no endpoint's own names, nor a clean-up of them by prefix, reach these shared ones
DELAYED_EXCHANGE = "infermodes.async._delayed"
UNROUTABLE_EXCHANGE = "infermodes.async._unroutable"
UNROUTABLE_QUEUE = "infermodes.async._unroutable-webhook-jobs"
# Headers of a webhook job its sender dead-lettered: why (``unsettled``, ``sends_exhausted``,
# ``refused``), after how many sends, and the last one's failure (each webhook by scheme and
# host only)
REASON_HEADER = "x-infermodes-reason"
SENDS_HEADER = "x-infermodes-sends"
LAST_ERROR_HEADER = "x-infermodes-last-error"
# how often a stopped consumer looks whether its work has ended (``drain``): its exit's delay
DRAIN_POLL_SECONDS = 0.1

# a URL, or what reads it at each new connection (``UrlFile``)
BrokerUrl: TypeAlias = str | Callable[[], str]
# the management API's URL, or what reads it (``OptionalUrlFile``: None when the key is not set)
ManagementUrl: TypeAlias = str | Callable[[], str | None]
_Read = TypeVar("_Read", str, str | None)


def url_now(url: str | Callable[[], _Read]) -> str | _Read:
    """The URL to open a connection with now."""
    return url() if callable(url) else url


def _read_url_file(path: Path) -> str | None:
    """The file's URL, stripped; None when no such file exists. Raises BrokerUrlError, which
    names the file and never its content."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BrokerUrlError(f"cannot read the URL from {path}: {exc.strerror}") from None
    except UnicodeDecodeError:  # its message would quote a byte of the secret
        raise BrokerUrlError(f"{path} is not UTF-8 text: it should hold a URL") from None


@dataclass(frozen=True)
class UrlFile:
    """A URL kept in a file, a mounted Secret's key: read at every new connection, so a
    rotated password reaches the next one without a restart (the kubelet rewrites the file when
    the Secret changes; an environment variable is read once, at start)."""

    path: Path

    def __call__(self) -> str:
        text = _read_url_file(self.path)
        if text is None:
            raise BrokerUrlError(f"cannot read the URL from {self.path}: no such file")
        if not text:
            raise BrokerUrlError(f"{self.path} is empty: it should hold a URL")
        return text


@dataclass(frozen=True)
class OptionalUrlFile:
    """A URL in a Secret's optional key, read as ``UrlFile`` reads one: a file that does not
    exist, or is empty, is no URL (the key is not set)."""

    path: Path

    def __call__(self) -> str | None:
        return _read_url_file(self.path) or None


def given_url(url: str | None, file: str | None) -> BrokerUrl | None:
    """The broker URL a process's settings give: inline, in a file (``UrlFile``), or none."""
    return UrlFile(Path(file)) if file else url


def given_management_url(url: str | None, file: str | None) -> ManagementUrl | None:
    """The management API's URL a process's settings give: inline, in an optional Secret key
    (``OptionalUrlFile``), or none."""
    return OptionalUrlFile(Path(file)) if file else url


def outbox_name(endpoint: str) -> str:
    """The durable queue of an endpoint's webhook jobs (``notifications``), declared with its
    work queue and kept with it. Endpoint names have no dots, so it is no endpoint's queue."""
    return f"infermodes.async.{endpoint}.webhooks"


def outbox_dead_letter_name(endpoint: str) -> str:
    """Where an endpoint's webhook jobs are dead-lettered (their ``OUTBOX_SENDS`` failed, their
    deliveries ``OUTBOX_UNSETTLED`` times unsettled, or the queue's limit reached): a queue of
    their own, not the endpoint's dead-letter queue, whose messages are requests (a job there
    would read as a malformed one to whoever sends them back to the work queue)."""
    return f"{outbox_name(endpoint)}.dead-letter"


def delayed_queue_name(queue: str, seconds: int) -> str:
    """Where RabbitMQ keeps the messages for ``queue`` published ``seconds`` later: a queue
    whose messages expire after that long into ``queue`` (``rabbitmq.delay_arguments``), one
    per delay, as a quorum queue expires only the message at its head."""
    return f"{queue}.retry.{seconds}s"


def delivery_limit(max_attempts: int) -> int:
    """The most deliveries a queue makes of one message, whichever broker it is."""
    return max_attempts + DELIVERY_LIMIT_HEADROOM


def attempts_allowed(limit: int | None, max_attempts: int) -> int:
    """The attempts workers make within a queue's delivery ``limit`` (None or negative: it has
    none): ``max_attempts``, or fewer on a RabbitMQ queue kept from an endpoint with a smaller
    ``maxAttempts`` (a queue's arguments never change), so that the workers still give up,
    notify and dead-letter before the queue drops the message without a word."""
    if limit is None or limit < 0:  # RabbitMQ 4 reads -1 as no limit
        return max_attempts
    return max(1, min(max_attempts, limit - DELIVERY_LIMIT_HEADROOM))


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


@dataclass(frozen=True)
class Work:
    """What a consumer's deliveries are, in its threads' names and its log lines: a worker
    runs two consumers, whose lines must not read alike."""

    threads: str  # the prefix of its pool's thread names
    items: str  # what its log lines count, e.g. "3 request(s) in flight"


INVOCATIONS = Work("invocation", "request(s)")
WEBHOOK_JOBS = Work("webhook-sender", "webhook job(s)")


class Enqueuer(Protocol):
    """Puts a message on an endpoint's queue and returns only once the broker has it;
    raises ``BrokerUnavailable`` otherwise."""

    def submit(self, endpoint: str, message_id: str, body: bytes) -> None: ...


class Publisher(Protocol):
    """Publishes one persistent message and returns once the broker confirmed it; raises
    ``BrokerUnavailable`` otherwise. ``mandatory``: an unroutable message is an error (work
    must reach its queue) rather than dropped (a notification may have no subscriber). The
    ``exchange`` "" is AMQP's default one: the message goes to the queue ``routing_key`` names
    (an endpoint's outbox); ``DEAD_LETTER_EXCHANGE``: to the dead letters of the queue it names.
    ``headers``: the message's own, e.g. why it was dead-lettered. ``delay``: seconds before
    the queue delivers it (with the exchange "" only), e.g. a webhook job's next send."""

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        mandatory: bool,
        headers: Mapping[str, str | int] | None = None,
        delay: int = 0,
    ) -> None: ...


class Consumer(Protocol):
    """Feeds one endpoint's deliveries to a handler, ``concurrency`` at a time, settling each
    as the handler says; ``run`` returns once ``stop`` was called and nothing is in flight,
    or raises BrokerLoginRefused when the broker keeps refusing its login (nothing in flight).
    ``stopping`` is set by ``stop`` (handlers cut their back-off waits short on it);
    ``consuming`` is set while the consumer takes deliveries (subscribed on a live connection),
    cleared when the broker is lost or at ``stop`` (the worker's readiness);
    ``on_in_flight`` is called with +1 / -1 as deliveries start and end (a metrics gauge);
    ``on_attempts_allowed`` with ``attempts_allowed`` each time the queue is declared, before
    it delivers anything (a RabbitMQ queue kept with a smaller limit allows fewer);
    ``hold_limit`` is how long the broker lets a delivery go unsettled before it takes it back
    and delivers it again (RabbitMQ's consumer timeout), None for no limit; ``turned`` is when
    (``time.monotonic``) its loop last went round, which it does while its work runs on other
    threads, however long, while it reconnects, and while it waits for its work to end after
    ``stop`` (``drain``): a loop that stops turning is stuck (the worker's liveness). It is
    None while ``run`` does not run (not yet called, or returned): no loop to be stuck."""

    stopping: threading.Event
    turned: float | None
    hold_limit: float | None
    consuming: threading.Event
    on_in_flight: Callable[[int], None]
    on_attempts_allowed: Callable[[int], None]

    def run(self, handle: Handler) -> None: ...

    def stop(self) -> None: ...

    @property
    def in_flight(self) -> int: ...


def drain(consumer: Consumer, pool: ThreadPoolExecutor) -> None:
    """Wait for the work ``consumer`` handed to ``pool`` to end, its loop still turning (it
    takes nothing more): a consumer stopped while its work runs on, an invocation of up to an
    hour, is draining, not stuck, even with no connection left to serve (the broker lost)."""
    while consumer.in_flight:
        consumer.turned = time.monotonic()
        time.sleep(DRAIN_POLL_SECONDS)
    pool.shutdown(wait=True)  # the rest of the work's last call, once it is counted out


@dataclass(frozen=True)
class Backlog:
    """An endpoint's queue as the scaler sees it."""

    ready: int
    unacked: int | None  # None: unknown, never a guess of 0
    consumers: int
    source: str  # where the figures came from, e.g. "management", "amqp" or "sqlite"
    # seconds the oldest ready message has waited since it was accepted (0 when none waits);
    # None: unknown
    oldest_age: float | None = None
    # ``unacked`` counted now, not sampled: no need to ask the workers what they hold
    unacked_exact: bool = False
    # False: the queue was never declared (RabbitMQ's passive declare found none): it holds
    # nothing, and neither do the queues declared with it
    exists: bool = True

    @property
    def total(self) -> int | None:
        """Work the endpoint has: waiting plus in flight; None when in-flight is unknown."""
        return None if self.unacked is None else self.ready + self.unacked
