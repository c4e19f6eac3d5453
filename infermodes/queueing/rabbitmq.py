"""RabbitMQ behind the broker interface (``broker.py``): topology, confirmed publishing, the
consumer loop and backlog figures.

One quorum queue per endpoint (durable, replicated on a cluster, with a native delivery limit
as the backstop that dead-letters a message whose worker dies every time), a dead-letter queue
beside it, and one topic exchange for notifications. Publishing waits for the broker's confirm
of a persistent, routed message: only then has a request been accepted.

Backlog: the management API gives ready, unacknowledged (in flight on a worker) and consumer
counts, and for a classic queue the oldest waiting message's ``timestamp`` (RabbitMQ reports
none for a quorum queue, ours: the operator then estimates the age from the workers). When it
cannot be reached, the AMQP passive declare still gives ready and consumers, but not in-flight
work: ``unacked`` is then None ("unknown"), never 0, because a scaler that reads busy workers
as an empty queue scales them away mid-request (the flaw of the common AMQP scaler).
Management figures are sampled by the broker (every ``collect_statistics_interval``), so they
may lag by that much.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from queue import SimpleQueue
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

import httpx
import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from infermodes.errors import BrokerLoginRefused, BrokerUnavailable, BrokerUrlError, DelayRefused
from infermodes.logs import redacted_url
from infermodes.queueing.broker import (
    DEAD_LETTER_EXCHANGE,
    DELAYED_EXCHANGE,
    INVOCATIONS,
    NOTIFICATION_EXCHANGE,
    OUTBOX_DELIVERY_LIMIT,
    UNROUTABLE_EXCHANGE,
    UNROUTABLE_QUEUE,
    Backlog,
    BrokerUrl,
    Delivery,
    Handler,
    ManagementUrl,
    Settle,
    Work,
    attempts_allowed,
    delayed_queue_name,
    delivery_limit,
    drain,
    outbox_dead_letter_name,
    outbox_name,
    url_now,
)
from infermodes.settings import BROKER_CONNECT_TIMEOUT_SECONDS, named_handshake_seconds

if TYPE_CHECKING:
    from pika.spec import Basic, BasicProperties

log = logging.getLogger("infermodes.rabbitmq")

PERSISTENT = 2
HEARTBEAT_SECONDS = 30  # unless the URL says otherwise (``?heartbeat=N``)
# RabbitMQ closes a channel holding a message unacked longer than its consumer timeout
# (30 min by default): it must outlast the longest invocation (1 h) plus the final writes.
CONSUMER_TIMEOUT_MS = 65 * 60 * 1000
MANAGEMENT_TIMEOUT_SECONDS = 5.0
NOT_FOUND = 404  # AMQP reply code of a passive declare of a queue that does not exist
PRECONDITION_FAILED = 406  # ... of a redeclaration with other arguments
# a refusal names the first argument that differs, and the kept queue's value of it:
# "inequivalent arg 'x-delivery-limit' for queue 'q' in vhost '/': received '7' but current is
# '9'" (both sides set), "... but current is the value '9' of type 'long'", "... current is none"
INEQUIVALENT_ARGUMENT = re.compile(r"inequivalent arg '([^']*)' for ")
CURRENT_VALUE = re.compile(r" but current is (?:the value )?(?:'([^']*)'|none)")
# Dead-lettering that keeps a message until the dead-letter queue confirmed it (RabbitMQ 3.10
# with its feature flags enabled); without reject-publish RabbitMQ falls back to at most once.
AT_LEAST_ONCE: dict[str, object] = {
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}
# The arguments an existing queue may have otherwise and still be used as it is
# (``declare_as_kept``), each with how its value, as a refusal quotes it, is read (None: only
# its absence is accepted): the strategy and overflow that queues declared by an earlier release
# lack (``AT_LEAST_ONCE_POLICY`` sets them in place), and, for a work queue, a delivery limit
# kept from another maxAttempts
KEPT_AT_MOST_ONCE: dict[str, Callable[[str], object] | None] = dict.fromkeys(AT_LEAST_ONCE)
KEPT_BY_WORK_QUEUE: dict[str, Callable[[str], object] | None] = {
    "x-delivery-limit": int,
    **KEPT_AT_MOST_ONCE,
}
# The policy that sets them on queues declared without them (a policy's keys drop the "x-"),
# in place: the same values as the queues declared with them have, so it changes nothing there
AT_LEAST_ONCE_POLICY_PATTERN = r"^infermodes\.async\."
AT_LEAST_ONCE_POLICY_DEFINITION = {key.removeprefix("x-"): v for key, v in AT_LEAST_ONCE.items()}
AT_LEAST_ONCE_POLICY = (
    "rabbitmqctl set_policy --apply-to queues infermodes-at-least-once "
    f"'{AT_LEAST_ONCE_POLICY_PATTERN}' "
    f"'{json.dumps(AT_LEAST_ONCE_POLICY_DEFINITION, separators=(',', ':'))}'"
)
POLL_SECONDS = 0.2
RECONNECT_MIN_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 5.0
OUTAGE_REMINDER_SECONDS = 60.0  # a warning again while the broker stays away
# A consumer whose every login the broker refused for this long gives up (BrokerLoginRefused):
# long enough for a broker that refuses while it starts (its users, its vhost not yet there)
LOGIN_REFUSED_EXIT_SECONDS = 15.0

T = TypeVar("T")

# A broker that closes the connection while it logs in: pika's guess at a wrong user,
# password or vhost
REFUSED_LOGIN_ERRORS = (
    pika.exceptions.ProbableAuthenticationError,
    pika.exceptions.ProbableAccessDeniedError,
    pika.exceptions.AuthenticationError,
)
# What a dead or refusing broker raises through pika; callers turn these into
# BrokerUnavailable or a reconnect.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPError,
    ConnectionError,
    OSError,
    # a connect whose handshake outlasts pika's stack timeout raises its workflow's own error,
    # no AMQPError: a broker slow to answer (or a process paused mid-connect) is an outage too
    AMQPConnectorException,
)


def queue_name(endpoint: str) -> str:
    return f"infermodes.async.{endpoint}"


def dead_letter_queue_name(endpoint: str) -> str:
    return f"infermodes.async.{endpoint}.dead-letter"


def queue_arguments(endpoint: str, max_attempts: int) -> dict[str, object]:
    """The work queue's arguments. Every declarer must pass the same ones (RabbitMQ refuses a
    redeclaration with different arguments), hence this one function. ``x-consumer-timeout``
    is honoured from RabbitMQ 3.12 on; older brokers need ``consumer_timeout`` in their config.
    A request over its delivery limit, or given up by its worker, is dead-lettered at least
    once (``AT_LEAST_ONCE``): the broker keeps it until the dead-letter queue confirmed it,
    where the default strategy drops it when that publish fails (the dead-letter queue deleted,
    or without a majority). That strategy needs ``reject-publish``, which only matters with a
    length limit: we set none, but a policy's ``max-length`` would then have the gateway's
    confirmed publish nacked (a 503: the request not accepted) instead of the broker dropping
    the oldest accepted request (``drop-head``, the default)."""
    return {
        "x-queue-type": "quorum",
        "x-consumer-timeout": CONSUMER_TIMEOUT_MS,
        "x-delivery-limit": delivery_limit(max_attempts),
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": endpoint,
        **AT_LEAST_ONCE,
    }


def outbox_arguments(endpoint: str) -> dict[str, object]:
    """The webhook outbox's. Senders dead-letter jobs themselves, with a confirmed publish
    (``notifications.Outbox``), whatever the queue's arguments; the broker's dead-lettering is
    only the backstop for a job whose senders were all killed (``delivery_limit`` in its
    ``x-death``), at least once as the work queue's (``queue_arguments``: with a length limit
    set by a policy, a publish over it is nacked rather than the oldest job dropped)."""
    return {
        "x-queue-type": "quorum",
        "x-consumer-timeout": CONSUMER_TIMEOUT_MS,
        "x-delivery-limit": OUTBOX_DELIVERY_LIMIT,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": outbox_name(endpoint),
        **AT_LEAST_ONCE,
    }


def _default_exchange(value: str) -> str:
    """The earlier release's dead-letter exchange of a delay queue, the default (``""``), is
    kept; any other is not ours (ValueError)."""
    if value:
        raise ValueError(f"dead-letter exchange {value!r}")
    return value


# A delay queue declared by an earlier release dead-letters through the default exchange, and
# is used as it is: its jobs reach their outbox as before (one whose outbox is gone stays in it)
KEPT_BY_DELAY_QUEUE: dict[str, Callable[[str], object] | None] = {
    "x-dead-letter-exchange": _default_exchange
}


def delay_arguments(queue: str, seconds: int) -> dict[str, object]:
    """A delay queue's (``broker.delayed_queue_name``): each message expires after ``seconds``
    into ``queue`` through ``DELAYED_EXCHANGE``, dead-lettered at least once (the broker keeps
    it until ``queue`` confirmed it; that strategy needs ``reject-publish``, and RabbitMQ
    3.10), so a job waiting for its next send is not lost if a node fails as it moves; and
    one whose ``queue`` is gone is routed to ``UNROUTABLE_QUEUE`` (``declare_topology``), not
    kept and retried for ever."""
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": seconds * 1000,
        "x-dead-letter-exchange": DELAYED_EXCHANGE,
        "x-dead-letter-routing-key": queue,
        **AT_LEAST_ONCE,
    }


def publish_later(
    channel: BlockingChannel,
    queue: str,
    seconds: int,
    body: bytes,
    message_id: str,
    headers: Mapping[str, str | int] | None,
) -> None:
    """Into ``queue`` once ``seconds`` passed, through its delay queue, declared first
    (idempotently: the delays are the publisher's to choose, so it declares the ones it uses;
    one more round trip, on a webhook job's failed send only). A declare the broker refuses
    (the user may not configure the queue, or it exists with other arguments) raises
    DelayRefused, not BrokerUnavailable: the broker is there, and says no. One an earlier
    release declared, releasing through the default exchange, is used as it is
    (``KEPT_BY_DELAY_QUEUE``): refused, every job of an upgraded worker would be sent again at
    once, without its delay."""
    delayed = delayed_queue_name(queue, seconds)
    try:
        declare_as_kept(
            channel.connection, delayed, delay_arguments(queue, seconds), KEPT_BY_DELAY_QUEUE
        )
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code not in (403, 406):  # ACCESS_REFUSED, PRECONDITION_FAILED
            raise
        raise DelayRefused(
            f"the broker refused to declare {delayed} ({exc.reply_code}: {exc.reply_text})"
        ) from exc
    publish_persistent(channel, "", delayed, body, message_id, True, headers)


def declare_topology(channel: BlockingChannel, endpoint: str, max_attempts: int) -> int | None:
    """Declare (idempotently) everything one endpoint needs; returns the work queue's delivery
    limit (``declare_work_queue``)."""
    channel.exchange_declare(DEAD_LETTER_EXCHANGE, "direct", durable=True)
    channel.exchange_declare(NOTIFICATION_EXCHANGE, "topic", durable=True)
    dead = dead_letter_queue_name(endpoint)
    channel.queue_declare(dead, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(dead, DEAD_LETTER_EXCHANGE, routing_key=endpoint)
    outbox, dead_jobs = outbox_name(endpoint), outbox_dead_letter_name(endpoint)
    channel.queue_declare(dead_jobs, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(dead_jobs, DEAD_LETTER_EXCHANGE, routing_key=outbox)
    declare_outbox(channel.connection, endpoint)
    # the way of the outbox's delayed jobs (``delay_arguments``), and of those left without it
    channel.exchange_declare(UNROUTABLE_EXCHANGE, "fanout", durable=True)
    channel.queue_declare(UNROUTABLE_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(UNROUTABLE_QUEUE, UNROUTABLE_EXCHANGE, routing_key="")
    channel.exchange_declare(DELAYED_EXCHANGE, "direct", durable=True,
                             arguments={"alternate-exchange": UNROUTABLE_EXCHANGE})  # fmt: skip
    channel.queue_bind(outbox, DELAYED_EXCHANGE, routing_key=outbox)
    return declare_work_queue(channel.connection, endpoint, max_attempts)


def declare_outbox(connection: pika.BlockingConnection, endpoint: str) -> None:
    """The endpoint's outbox, on a channel of its own: one declared by an earlier release
    (without dead-lettering, or dead-lettering at most once) is used as it is, with a warning,
    rather than stop every worker. Senders dead-letter explicitly, so only the backstop is
    missing or weaker there."""
    queue = outbox_name(endpoint)
    try:
        declared = declare_as_kept(connection, queue, outbox_arguments(endpoint), KEPT_AT_MOST_ONCE)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != PRECONDITION_FAILED:
            raise
        log.warning(
            "%s was declared with other arguments (%s): using it as it is; senders "
            "dead-letter webhook jobs themselves, but a job whose every sender is killed "
            "may be dropped at its delivery limit (delete the queue, once empty, to declare "
            "it anew)",
            queue,
            exc.reply_text,
        )
        return
    _warn_if_at_most_once(queue, declared or {})  # None: cut short over one of those two


def declare_work_queue(
    connection: pika.BlockingConnection, endpoint: str, max_attempts: int
) -> int | None:
    """The endpoint's work queue, on a channel of its own: a queue kept from an endpoint
    declared with another ``maxAttempts`` (a changed spec, or one deleted and created again)
    has another delivery limit, and one declared by an earlier release lacks ``AT_LEAST_ONCE``:
    RabbitMQ refuses to redeclare either so (406, closing the channel). That queue, and the
    requests in it, are used as they are, with a warning: refusing would stop every worker and
    the accepting side for good. Any other difference (a classic queue: no delivery count, so
    no attempt limit; another dead-letter exchange) is refused (``declare_as_kept``). Returns
    the queue's delivery limit, which workers plan their attempts within
    (``attempts_allowed``); None when it has none or a refusal did not say."""
    queue = queue_name(endpoint)
    arguments = queue_arguments(endpoint, max_attempts)
    declared = declare_as_kept(connection, queue, arguments, KEPT_BY_WORK_QUEUE)
    if declared is None:
        log.error(
            "%s was declared with other arguments than maxAttempts %d asks for (a refusal cut "
            "short); using it as it is, without checking its other arguments (delete the queue "
            "to declare it anew)",
            queue,
            max_attempts,
        )
        return None
    kept = declared.get("x-delivery-limit")
    if kept != arguments["x-delivery-limit"]:
        log.warning(
            "%s has another delivery limit than maxAttempts %d gives (x-delivery-limit %s, "
            "not %s); using it as it is (delete the queue to declare it anew)",
            queue,
            max_attempts,
            "none" if kept is None else kept,
            arguments["x-delivery-limit"],
        )
    _warn_if_at_most_once(queue, declared)
    return kept if isinstance(kept, int) else None


def declare_as_kept(
    connection: pika.BlockingConnection,
    queue: str,
    wanted: dict[str, object],
    kept: Mapping[str, Callable[[str], object] | None],
) -> dict[str, object] | None:
    """Declare ``queue`` with ``wanted``, or, for a queue that exists with other values of the
    ``kept`` arguments only, with its own (``arguments_as_kept``). RabbitMQ names only the
    first argument that differs (its versions check them in different orders), so the queue is
    declared again with each one it names, until it is accepted, or refused over an argument
    not kept: that refusal is raised, whatever the order of the checks. Returns the arguments
    the queue was declared with; None when a refusal named a kept argument but was cut short
    before its value (RabbitMQ keeps 255 characters of a reply): the rest went unchecked."""
    arguments = dict(wanted)
    for _ in range(len(kept)):
        try:
            _declare_queue(connection, queue, arguments)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != PRECONDITION_FAILED:
                raise
            following = arguments_as_kept(arguments, exc.reply_text, kept)
            if following is not None:
                arguments = following
            elif _cut_short(exc.reply_text, kept):
                return None
            else:
                raise
        else:
            return arguments
    _declare_queue(connection, queue, arguments)  # every kept one named: only others are left
    return arguments


def arguments_as_kept(
    arguments: Mapping[str, object],
    refusal: str,
    kept: Mapping[str, Callable[[str], object] | None],
) -> dict[str, object] | None:
    """``arguments`` with the one ``refusal`` (a 406's text) names set to the queue's own
    value, read by ``kept`` (or left out where the queue has none); None when the queue may not
    keep it: an argument not in ``kept``, a value ``kept`` accepts only the absence of or
    cannot read, or one the refusal does not give, or the one we already asked for. A refusal
    cut short before the value (RabbitMQ keeps 255 characters of a reply: a long endpoint and
    vhost name) still names the argument: one whose absence alone is accepted is asked for
    without it, needing no value (a queue with a value of it is refused again, and raised)."""
    named = INEQUIVALENT_ARGUMENT.search(refusal)
    if named is None or named[1] not in kept:
        return None
    name, read = named[1], kept[named[1]]
    own = {key: value for key, value in arguments.items() if key != name}
    current = CURRENT_VALUE.search(refusal)
    if current is None:
        return own if read is None and own != arguments else None
    if current[1] is not None:  # the queue has a value of its own
        if read is None:
            return None
        try:
            own[name] = read(current[1])
        except ValueError:
            return None
    return None if own == arguments else own


def _cut_short(refusal: str, kept: Mapping[str, object]) -> bool:
    """A refusal that names a kept argument but not the queue's value of it."""
    named = INEQUIVALENT_ARGUMENT.search(refusal)
    return named is not None and named[1] in kept and CURRENT_VALUE.search(refusal) is None


_at_most_once_warned: set[str] = set()
_at_most_once_lock = threading.Lock()


def _warn_if_at_most_once(queue: str, declared: Mapping[str, object]) -> None:
    """Once per queue and process (each connection of a pool declares it): a queue declared by
    an earlier release dead-letters at most once, and a policy can change that in place."""
    if all(declared.get(key) == value for key, value in AT_LEAST_ONCE.items()):
        return
    with _at_most_once_lock:
        if queue in _at_most_once_warned:
            return
        _at_most_once_warned.add(queue)
    log.warning(
        "%s was declared by an earlier release, without x-dead-letter-strategy at-least-once "
        "and x-overflow reject-publish: using it as it is, but unless a policy sets them it "
        "dead-letters at most once (a message over its delivery limit is dropped if its "
        "dead-letter queue cannot take it then). Set them by a policy, without redeclaring the "
        "queue: %s (docs/upgrading.md)",
        queue,
        AT_LEAST_ONCE_POLICY,
    )


def _declare_queue(
    connection: pika.BlockingConnection, queue: str, arguments: dict[str, object]
) -> None:
    channel = connection.channel()
    channel.queue_declare(queue, durable=True, arguments=arguments)
    channel.close()


def heartbeat_seconds(url: str) -> int:
    """The heartbeat the URL asks for (``?heartbeat=N``), else ``HEARTBEAT_SECONDS``."""
    given = parse_qs(urlsplit(url).query).get("heartbeat", [""])[0]
    return int(given) if given.isascii() and given.isdigit() else HEARTBEAT_SECONDS


def amqp_parameters(url: str) -> pika.URLParameters:
    """pika's reading of ``url``. Its errors quote parts of the URL (a password with an
    unencoded '/' ends the host part there, and its first half is read as the port): they are
    replaced by a BrokerUrlError that shows none of it."""
    try:
        return pika.URLParameters(url)
    except (ValueError, TypeError, KeyError, SyntaxError, OSError):  # ssl_options: a literal
        raise BrokerUrlError(
            f"{redacted_url(url)!r} cannot be read as an AMQP URL: percent-encode any '/', "
            "'?', '#', '@' or ':' in its user name and password, and check its options "
            "(ssl_options and its files)"
        ) from None


def connect(url: str) -> pika.BlockingConnection:
    """A connection named after this process (``infermodes pid N`` in the management UI)."""
    params = amqp_parameters(url)
    params.socket_timeout = BROKER_CONNECT_TIMEOUT_SECONDS
    if named_handshake_seconds(url) is None:  # not pika's 15 s: a broker that takes the
        # connection and never answers holds a connect no longer than one that does not take it
        params.stack_timeout = BROKER_CONNECT_TIMEOUT_SECONDS
    params.blocked_connection_timeout = BROKER_CONNECT_TIMEOUT_SECONDS * 6
    params.heartbeat = heartbeat_seconds(url)
    params.connection_attempts = 1
    params.client_properties = {"connection_name": f"infermodes pid {os.getpid()}"}
    return pika.BlockingConnection(params)


def broker_problem(exc: BaseException) -> str:
    """What a broker error says of the broker, for a log line or an answer."""
    if isinstance(exc, REFUSED_LOGIN_ERRORS):
        return "closed the connection at login (a wrong user, password or vhost?)"
    if isinstance(exc, pika.exceptions.ConsumerCancelled):
        return "cancelled the consumer"
    return "unreachable"


class Outage:
    """One warning when the broker stops answering, a reminder each ``remind_seconds`` while it
    does not (so a long outage, or a login the broker keeps refusing, stays in the log's last
    minutes), and one line when it answers again, however many calls fail in between."""

    def __init__(
        self,
        what: str,
        remind_seconds: float = OUTAGE_REMINDER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.remind_seconds = remind_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None
        self._warned = 0.0
        self._failures = 0

    def failed(self, exc: BaseException, detail: str = "") -> None:
        now = self.clock()
        with self._lock:
            first = self._since is None
            if first:
                self._since, self._failures = now, 0
            self._failures += 1
            since, failures = self._since or now, self._failures
            remind = not first and now - self._warned >= self.remind_seconds
            if first or remind:
                self._warned = now
        problem = f"{broker_problem(exc)} ({type(exc).__name__}: {exc})"
        if first:
            log.warning("%s: broker %s%s", self.what, problem, detail)
        elif remind:
            log.warning("%s: still no broker after %.0f s and %d failed attempts (the last: %s)%s",
                        self.what, now - since, failures, problem, detail)  # fmt: skip
        else:
            log.debug("%s: broker still unreachable (%s)", self.what, exc)

    def recovered(self) -> None:
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            log.info("%s: broker reachable again after %.1f s", self.what, self.clock() - since)


def publish_persistent(
    channel: BlockingChannel,
    exchange: str,
    routing_key: str,
    body: bytes,
    message_id: str,
    mandatory: bool,
    headers: Mapping[str, str | int] | None = None,
) -> None:
    """On a confirm-mode channel this returns only once the broker has the message (and has
    written it, for a durable queue); ``mandatory`` makes an unroutable message an error rather
    than a silent drop: work must reach its queue, a notification may have no subscriber. The
    ``timestamp`` property is what the broker reports as a classic queue's
    ``head_message_timestamp`` (quorum queues do not report it)."""
    properties = pika.BasicProperties(
        delivery_mode=PERSISTENT,
        content_type="application/json",
        message_id=message_id,
        timestamp=int(time.time()),
        headers=dict(headers) if headers else None,
    )
    channel.basic_publish(exchange, routing_key, body, properties, mandatory=mandatory)


class ConfirmedChannel:
    """One connection with a confirm-mode channel, reconnected on demand; thread-safe by a lock
    (pika's blocking connection is not). ``run`` retries once on a fresh connection (an idle
    connection the broker dropped is reopened without a word), then raises BrokerUnavailable."""

    def __init__(self, url: BrokerUrl, on_connect: Callable[[BlockingChannel], object]) -> None:
        self.url = url
        self.on_connect = on_connect
        self._lock = threading.Lock()
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def _open(self) -> BlockingChannel:
        """The channel, or a new one: on the same connection when only the channel was closed
        (a passive declare of a missing queue closes it), else on a new connection."""
        if self._channel is not None and self._channel.is_open:
            return self._channel
        if self._connection is None or not self._connection.is_open:
            self._drop()
            self._connection = connect(url_now(self.url))
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
                            f"message broker {broker_problem(exc)} ({type(exc).__name__}: {exc})"
                        ) from exc
                    log.debug("broker connection lost while idle (%s); reopening", exc)
            raise AssertionError("unreachable")

    def keep_alive(self) -> None:
        """Let pika answer the broker's heartbeats on an idle connection (it does so only while
        serving I/O), so the broker does not drop it; skipped while the channel is in use."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._connection is not None and self._connection.is_open:
                self._connection.process_data_events(time_limit=0)
        except BROKER_ERRORS as exc:
            log.debug("idle broker connection lost (%s); reopened on next use", exc)
            self._drop()
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._drop()


class ChannelPool:
    """A few confirmed channels; each call takes an idle one, so concurrent callers wait for
    their confirms together (a quorum queue confirms after its log is synced, and the broker
    syncs once for everything that arrived meanwhile) instead of one after another. A thread
    keeps idle connections alive; ``outage`` logs one line per real outage."""

    def __init__(
        self, url: BrokerUrl, size: int, on_connect: Callable[[BlockingChannel], object], what: str
    ) -> None:
        self._channels = [ConfirmedChannel(url, on_connect) for _ in range(size)]
        self._idle: SimpleQueue[ConfirmedChannel] = SimpleQueue()
        for channel in self._channels:
            self._idle.put(channel)
        self.outage = Outage(what)
        self._closed = threading.Event()
        interval = max(0.5, heartbeat_seconds(url_now(url)) / 4)
        threading.Thread(
            target=self._keep_alive, args=(interval,), name="broker-keepalive", daemon=True
        ).start()

    def _keep_alive(self, interval: float) -> None:
        while not self._closed.wait(interval):
            for channel in self._channels:
                channel.keep_alive()

    def run(self, action: Callable[[BlockingChannel], T]) -> T:
        channel = self._idle.get()
        try:
            result = channel.run(action)
        except BrokerUnavailable as exc:
            self.outage.failed(exc.__cause__ or exc)
            raise
        finally:
            self._idle.put(channel)
        self.outage.recovered()
        return result

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        mandatory: bool,
        headers: Mapping[str, str | int] | None = None,
        delay: int = 0,
    ) -> None:
        if delay:
            if exchange:
                raise ValueError(f"a delay is for the default exchange only, not {exchange!r}")
            self.run(
                lambda channel: publish_later(
                    channel, routing_key, delay, body, message_id, headers
                )
            )
            return
        self.run(
            lambda channel: publish_persistent(
                channel, exchange, routing_key, body, message_id, mandatory, headers
            )
        )

    def close(self) -> None:
        self._closed.set()
        for channel in self._channels:
            channel.close()


class RequestPublisher:
    """Puts accepted requests on their endpoint's queue, declaring its topology first (again
    after a reconnect, in case the broker lost it). ``max_attempts``: each endpoint's."""

    def __init__(
        self, url: BrokerUrl, max_attempts: Mapping[str, int], connections: int = 8
    ) -> None:
        self.max_attempts = max_attempts  # read live: endpoints may come and go
        self._declared: set[str] = set()
        self._pool = ChannelPool(
            url, connections, lambda _: self._declared.clear(), "accepting requests"
        )

    def submit(self, endpoint: str, message_id: str, body: bytes) -> None:
        """Returns once the broker confirmed; raises BrokerUnavailable otherwise."""

        def send(channel: BlockingChannel) -> None:
            if endpoint not in self._declared:
                declare_topology(channel, endpoint, self.max_attempts[endpoint])
                self._declared.add(endpoint)
            publish_persistent(channel, "", queue_name(endpoint), body, message_id, True)

        try:
            self._pool.run(send)
        except BrokerUnavailable as exc:  # what the caller answers with
            raise BrokerUnavailable(f"{exc}; the request was not accepted, retry later") from (
                exc.__cause__ or exc
            )
        except BrokerUrlError as exc:  # its file (``UrlFile``) cannot be read now
            raise BrokerUnavailable(
                f"the broker URL: {exc}; the request was not accepted, retry later"
            ) from exc

    def close(self) -> None:
        self._pool.close()


def delivery_count(headers: dict[str, object] | None) -> int:
    """Quorum queues stamp ``x-delivery-count`` (absent or 0 on the first delivery)."""
    value = (headers or {}).get("x-delivery-count", 0)
    return int(value) if isinstance(value, int) else 0


@dataclasses.dataclass
class _Held:
    """How many deliveries of one connection are not settled yet (touched only on that
    connection's thread), and whether the connection was lost (under the consumer's lock)."""

    count: int = 0
    lost: bool = False


def refused_login_since(exc: BaseException, since: float | None) -> float | None:
    """When the broker began refusing every login (None: this failure is no refusal); raises
    BrokerLoginRefused once that is ``LOGIN_REFUSED_EXIT_SECONDS`` ago."""
    if not isinstance(exc, REFUSED_LOGIN_ERRORS):
        return None
    now = time.monotonic()
    since = now if since is None else since
    if now - since >= LOGIN_REFUSED_EXIT_SECONDS:
        raise BrokerLoginRefused(
            f"the broker refused every login for {now - since:.0f} s ({type(exc).__name__}: "
            f"{exc}): a wrong user, password or vhost in the broker URL"
        ) from None
    return since


class RabbitConsumer:
    """The consumer loop of one endpoint's queue. pika's blocking connection is
    single-threaded, so it runs on the calling thread, hands each delivery to a pool thread
    (prefetch = pool size = ``concurrency``, so every delivered message is being worked on) and
    settles it back on the connection's thread. Reconnects when the broker goes away, with a
    back-off that starts again from the shortest after each successful connection; after
    ``stop`` it cancels the consumer and returns once nothing is in flight.

    A lost connection's deliveries are the broker's again, but their work runs on to its end
    (the result claim keeps its output single; the settle is dropped). The new connection
    subscribes at once with a prefetch of the slots that work leaves free (a full one would hold
    deliveries no thread can take, their consumer timeout running, while other workers could
    take them), and adds a consumer for the slots each piece of it frees as it ends: RabbitMQ
    applies a prefetch to the consumers subscribed after it, never to one subscribed before, so
    the prefetches of the connection's consumers add up to the free slots. With no slot free it
    waits for one (a prefetch of 0 is unlimited). ``in_flight`` (the gauge) counts work
    running, whichever connection brought it: a worker busy with lost deliveries is not idle to
    a scale-in."""

    def __init__(
        self,
        url: str,
        endpoint: str,
        max_attempts: int,
        concurrency: int,
        queue: str | None = None,
        work: Work = INVOCATIONS,
    ) -> None:
        self.url = url
        self.work = work
        self.endpoint = endpoint
        self.queue = queue or queue_name(endpoint)  # another: the endpoint's outbox
        self.max_attempts = max_attempts
        self.concurrency = concurrency
        self.stopping = threading.Event()
        self.consuming = threading.Event()
        self.on_in_flight: Callable[[int], None] = lambda _delta: None
        self.on_attempts_allowed: Callable[[int], None] = lambda _attempts: None
        self.hold_limit: float | None = CONSUMER_TIMEOUT_MS / 1000
        self.turned: float | None = None
        self.outage = Outage(f"consuming {self.queue}")
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix=work.threads)
        self._lock = threading.Lock()
        self._working = 0  # deliveries handed to the pool whose work has not ended
        self._lost = 0  # ... of them brought by a connection since lost
        self._delay = RECONNECT_MIN_SECONDS

    def stop(self) -> None:
        self.stopping.set()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._working

    def _count_work(self, delta: int, held: _Held) -> None:
        with self._lock:
            self._working += delta
            if held.lost:
                self._lost += delta
        self.on_in_flight(delta)

    def _free_slots(self) -> int:
        """Slots the work of lost connections leaves free."""
        with self._lock:
            return max(0, self.concurrency - self._lost)

    def run(self, handle: Handler) -> None:
        """Consumes until ``stop``; raises BrokerLoginRefused when the broker refused every
        login for ``LOGIN_REFUSED_EXIT_SECONDS``: the URL is wrong, and retrying it cannot
        mend it (the caller exits, and a restart reads the URL again)."""
        refused_since: float | None = None
        self.turned = time.monotonic()
        try:
            while not self.stopping.is_set():  # a stop during a back-off takes nothing
                self.turned = time.monotonic()
                try:
                    self._consume(handle)
                    break
                except BROKER_ERRORS as exc:
                    if self.stopping.is_set():
                        log.warning(
                            "broker lost while stopping (%s); in-flight work is redelivered", exc
                        )
                        break
                    refused_since = refused_login_since(exc, refused_since)
                    self.outage.failed(exc, f"; reconnecting in {self._delay:.1f} s")
                    self._back_off(self._delay)
                    self._delay = min(self._delay * 2, RECONNECT_MAX_SECONDS)
        finally:
            drain(self, self._pool)  # a lost connection's work, after a stop while it ran
            self.turned = None

    def _back_off(self, seconds: float) -> None:
        """Waits ``seconds`` before a reconnect, ending at once on ``stop``, and turns the loop
        every ``POLL_SECONDS`` meanwhile: a back-off is the loop at work, so only a connect
        attempt (up to ``BROKER_CONNECT_TIMEOUT_SECONDS``) is a span the liveness probe sees no
        turn in."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set() and (left := deadline - time.monotonic()) > 0:
            self.turned = time.monotonic()
            self.stopping.wait(min(POLL_SECONDS, left))

    def _consume(self, handle: Handler) -> None:
        connection = connect(self.url)
        held = _Held()
        try:
            # What this connection delivers and does not settle is the broker's again once it
            # is lost (it redelivers it); its settlements could never arrive, so a stop waits
            # only for the next connection's. The work itself still runs to its end.
            self._consume_on(connection, held, handle)
        finally:
            self.consuming.clear()
            with self._lock:  # all work running now came by this connection or a lost one
                held.lost = True
                self._lost = self._working
            if connection.is_open:
                with contextlib.suppress(*BROKER_ERRORS):
                    connection.close()

    def _consume_on(
        self, connection: pika.BlockingConnection, held: _Held, handle: Handler
    ) -> None:
        channel = connection.channel()
        limit = declare_topology(channel, self.endpoint, self.max_attempts)
        self.on_attempts_allowed(attempts_allowed(limit, self.max_attempts))
        queue = self.queue
        self._delay = RECONNECT_MIN_SECONDS
        self.outage.recovered()
        prefetch = self._await_free_slot(connection)
        if not prefetch:
            return
        on_message = functools.partial(self._on_message, connection, held, handle)
        channel.basic_qos(prefetch_count=prefetch)
        tags = [channel.basic_consume(queue, on_message)]
        log.info("consuming %s", queue)
        self.consuming.set()
        while True:
            self.turned = time.monotonic()
            connection.process_data_events(time_limit=POLL_SECONDS)
            dropped = not channel.is_open or any(t not in channel.consumer_tags for t in tags)
            if dropped and self.consuming.is_set():
                # the broker cancelled the consumer (its queue deleted) or closed the channel (a
                # consumer timeout) and left the connection open: no error says so; reconnecting
                # declares the queue again
                raise pika.exceptions.ConsumerCancelled(f"the broker stopped delivering {queue}")
            if self.stopping.is_set():
                if self.consuming.is_set():
                    self.consuming.clear()
                    for tag in tags:
                        channel.basic_cancel(tag)
                    log.info("stopped consuming; %d %s in flight", self.in_flight, self.work.items)
                if held.count == 0:
                    break
            elif prefetch < self.concurrency and (freed := self._free_slots() - prefetch) > 0:
                channel.basic_qos(prefetch_count=freed)  # for the consumer subscribed next
                tags.append(channel.basic_consume(queue, on_message))
                prefetch += freed
                log.info("work taken before the connection was lost freed %d slot(s): "
                         "consuming %d at a time", freed, prefetch)  # fmt: skip

    def _await_free_slot(self, connection: pika.BlockingConnection) -> int:
        """Serve ``connection`` (its heartbeats) until the work of deliveries a lost connection
        brought leaves a slot free; the free slots, 0 when ``stop`` came first."""
        free = self._free_slots()
        if free < self.concurrency:
            log.info("%d %s taken before the connection was lost still running: "
                     "consuming %s", self.concurrency - free, self.work.items,
                     f"{free} at a time" if free else "once one ends")  # fmt: skip
        while not free and not self.stopping.is_set():
            self.turned = time.monotonic()
            connection.process_data_events(time_limit=POLL_SECONDS)
            free = self._free_slots()
        if self.stopping.is_set():
            log.info("stopped before consuming; %d %s in flight", self.in_flight, self.work.items)
            return 0
        return free

    def _on_message(
        self,
        connection: pika.BlockingConnection,
        held: _Held,
        handle: Handler,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        held.count += 1
        self._count_work(+1, held)
        delivery = Delivery(body, delivery_count(properties.headers))
        self._pool.submit(
            self._work, connection, held, channel, method.delivery_tag, handle, delivery
        )

    def _work(
        self,
        connection: pika.BlockingConnection,
        held: _Held,
        channel: BlockingChannel,
        tag: int,
        handle: Handler,
        delivery: Delivery,
    ) -> None:
        try:
            settle = handle(delivery)
        except BaseException:
            log.exception("unexpected error handling a message; requeueing it")
            settle = Settle.REQUEUE
        try:
            connection.add_callback_threadsafe(
                functools.partial(self._settle, held, channel, tag, settle)
            )
        except BROKER_ERRORS:
            log.debug("connection gone before settling; the broker redelivers the message")
        finally:
            self._count_work(-1, held)

    def _settle(self, held: _Held, channel: BlockingChannel, tag: int, settle: Settle) -> None:
        """Runs on the connection's thread."""
        try:
            if not channel.is_open:
                log.debug("channel closed before settling; the broker redelivers the message")
            elif settle is Settle.ACK:
                channel.basic_ack(tag)
            elif settle is Settle.REQUEUE:
                # reject, not nack: from RabbitMQ 4.3 only a reject counts as a failed delivery
                # (x-delivery-count, which the delivery limit and the attempt budget read)
                channel.basic_reject(tag, requeue=True)
            else:
                channel.basic_reject(tag, requeue=False)
        finally:
            held.count -= 1


def _vhost(amqp_url: str) -> str:
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def backlog_from_management(
    management_url: str, vhost: str, queue: str, client: httpx.Client | None = None
) -> Backlog:
    """``management_url`` may carry credentials: ``http://user:pass@host:15672``. One that
    cannot be read is refused (ValueError) before any request, in words that quote none of it:
    an unencoded '/', '?' or '#' in its password ends the host there (urlsplit's error quotes
    what follows as the port; a port that reads passes the rest on in the path)."""
    parts = urlsplit(management_url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port == -1 or "@" in parts.path + parts.query + parts.fragment:
        raise ValueError(
            f"{redacted_url(management_url)!r} cannot be read as the management API's URL: "
            "percent-encode any '/', '?', '#', '@' or ':' in its user name and password"
        )
    auth = (unquote(parts.username or "guest"), unquote(parts.password or "guest"))
    base = f"{parts.scheme}://{parts.hostname}:{port or 15672}{parts.path.rstrip('/')}"
    url = f"{base}/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}"
    http = client or httpx.Client(timeout=MANAGEMENT_TIMEOUT_SECONDS)
    try:
        response = http.get(url, auth=auth)
    finally:
        if client is None:
            http.close()
    response.raise_for_status()
    info = response.json()
    ready = int(info.get("messages_ready") or 0)
    head = info.get("head_message_timestamp")  # classic queues only, when messages have one
    return Backlog(
        ready=ready,
        unacked=int(info.get("messages_unacknowledged") or 0),
        consumers=int(info.get("consumers") or 0),
        source="management",
        oldest_age=max(0.0, time.time() - head) if isinstance(head, int | float) else None,
    )


def count_queue(channel: BlockingChannel, queue: str) -> Backlog:
    """Ready messages and consumers as the broker counts them now (a passive declare); in
    flight unknown. A queue that does not exist yet holds nothing (no request was ever
    accepted for it); the broker closes the channel that asked."""
    try:
        method = channel.queue_declare(queue, passive=True).method
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == NOT_FOUND:
            return Backlog(ready=0, unacked=0, consumers=0, source="amqp", exists=False)
        raise
    return Backlog(
        ready=method.message_count, unacked=None, consumers=method.consumer_count, source="amqp"
    )


def backlog_from_amqp(amqp_url: BrokerUrl, queue: str) -> Backlog:
    """``count_queue`` on a connection of its own, for a caller that reads once in a while."""
    connection = connect(url_now(amqp_url))
    try:
        return count_queue(connection.channel(), queue)
    finally:
        if connection.is_open:
            connection.close()


class QueueReader:
    """``count_queue`` over a few kept connections, for callers that read every second (the
    operator's look at every async pool, ``infermodes up``'s at its own): a connection opened
    for each read is the churn RabbitMQ warns against, a TCP handshake, a login and broker
    processes each time. Safe from ``connections`` threads at once (more wait their turn);
    raises BrokerUnavailable when the broker does not answer, after one retry on a new
    connection (the broker may have dropped an idle one)."""

    def __init__(self, url: BrokerUrl, connections: int) -> None:
        self.url = url
        self._pool = ChannelPool(url, connections, lambda _: None, "reading queues")

    def read(self, queue: str) -> Backlog:
        return self._pool.run(functools.partial(count_queue, queue=queue))

    def close(self) -> None:
        self._pool.close()


def waiting_webhooks(endpoint: str, amqp_url: BrokerUrl, reader: QueueReader | None) -> int:
    """The webhook jobs ready in the endpoint's outbox, read as its queue's ready count is
    (``reader``'s kept connections when given): they keep a worker (``scaling``)."""
    queue = outbox_name(endpoint)
    found = reader.read(queue) if reader is not None else backlog_from_amqp(amqp_url, queue)
    return found.ready


def backlog(
    endpoint: str,
    amqp_url: BrokerUrl,
    management_url: ManagementUrl | None,
    reader: QueueReader | None = None,
) -> Backlog:
    """The endpoint's backlog: ready and consumers from the AMQP passive declare (exact now, so
    a pool at zero starts within a second of the first request; through ``reader``'s kept
    connections when given), in flight from the management API (which samples every
    ``collect_statistics_interval``, 5 s by default; without it in flight is unknown). Raises
    pika's error or BrokerUnavailable when the broker does not answer (the caller keeps its
    last decision)."""
    queue = queue_name(endpoint)
    now = reader.read(queue) if reader is not None else backlog_from_amqp(amqp_url, queue)
    if now.ready == 0:
        now = dataclasses.replace(now, oldest_age=0.0)  # nothing waits
    if not management_url or now.unacked is not None:
        return now
    try:
        management = url_now(management_url)
        if management is None:  # an optional key the Secret does not have
            return now
        sampled = backlog_from_management(management, _vhost(url_now(amqp_url)), queue)
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("management API unavailable (%s); in-flight work unknown", exc)
        return now
    oldest = now.oldest_age if now.ready == 0 else sampled.oldest_age
    return Backlog(now.ready, sampled.unacked, now.consumers, "amqp+management", oldest)
