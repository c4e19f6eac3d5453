"""The embedded durable queue: the broker interface (``broker.py``) over one SQLite file in WAL
mode, for ``infermodes up`` on one machine without RabbitMQ. The accepting side and any number
of worker processes open the same file; SQLite's locks order their writes.

Durability. ``submit`` returns after its row is committed with ``synchronous=FULL``: the WAL is
fsynced, so an accepted request survives a process kill and a power loss. Everything else
(claims, acks, requeues, dead-letter moves, notifications) commits with ``synchronous=NORMAL``:
it survives a process kill, and a power loss may undo the last of them. That never loses a
request: the WAL is one log and recovery keeps a prefix of it, so an undone notification takes
the later ack with it and the message is delivered again (the worker finds its result stored
and notifies once more); an undone ack is a redelivery, an undone dead-letter move leaves the
message queued.

Leases. A consumer claims messages with a short lease (``lease_seconds``, 15 s by default) and
renews the leases of what it is working on every fifth of that, so an invocation of an hour is
never handed to a second worker while its own is alive, and the messages of a worker that died
(SIGKILL, OOM) are taken by another one a lease later. A settle is conditional on the lease
still being its own; a worker that lost its lease (paused longer than the lease) settles
nothing, and the other delivery's worker finds the result stored. Leases use the wall clock,
which every process on the machine shares.

Delivery count and dead letters. Each claim raises the message's delivery count; ``attempt``
is the count before it. REQUEUE releases the message with its count kept raised; a message
delivered ``delivery_limit(max_attempts)`` times is moved to ``dead_letters`` by the next claim
instead (the backstop RabbitMQ's ``x-delivery-limit`` is), and DEAD_LETTER moves it there at
once. Dead letters are kept until someone removes them. A move is one write transaction (the
delete from ``messages`` and the insert into ``dead_letters`` commit together or not at all),
so a dead letter cannot be lost on the way, as with RabbitMQ's at-least-once strategy
(``rabbitmq.AT_LEAST_ONCE``): there is no dead-letter queue to be missing, and a move undone
(a failed insert, a power loss) leaves the message queued.

Notifications are appended to a topic log that ``tail`` reads with RabbitMQ's topic patterns;
it keeps ``RETAIN_SECONDS`` and at most ``RETAIN_COUNT`` entries.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infermodes.errors import BrokerUnavailable
from infermodes.queueing.broker import (
    DEAD_LETTER_EXCHANGE,
    INVOCATIONS,
    NOTIFICATION_EXCHANGE,
    OUTBOX_DELIVERY_LIMIT,
    REASON_HEADER,
    SENDS_HEADER,
    WEBHOOK_JOBS,
    Backlog,
    Delivery,
    Handler,
    Settle,
    Work,
    delivery_limit,
    drain,
    outbox_name,
)

log = logging.getLogger("infermodes.embedded_queue")

LEASE_SECONDS = 15.0
HEARTBEATS_PER_LEASE = 5
WAL_SIZE_LIMIT = 64 * 1024 * 1024
WAL_RETRY_SECONDS = 0.05  # a mode SQLite refused at once is asked again this often
BUSY_TIMEOUT_SECONDS = 10.0  # how long a write waits for another process's
POLL_MIN_SECONDS = 0.005  # an idle consumer looks again after this, doubling ...
POLL_MAX_SECONDS = 0.1  # ... up to this
RETRY_MAX_SECONDS = 5.0  # a consumer whose database fails retries at most this far apart
RETAIN_SECONDS = 24 * 3600.0
RETAIN_COUNT = 100_000
PRUNE_EVERY = 500  # notifications published between two prunes
SCHEMA_VERSION = 2  # applied (idempotently) to a file of another: 2 has the lease in its index
# The index of the queues' order carries each message's lease (``lease_until``, ``owner``),
# so that a consumer's look for a due message, its claim and ``backlog`` pass over those
# leased or delayed (a webhook job waiting out its retry delay: thousands while a webhook is
# down) in the index alone, never reading their rows (bodies up to 128 KiB of inline
# results), and the work queue's claim still walks it in order, unsorted. It replaces the one
# without the lease (version 1: a file changes at its next open; a previous release's ``up``
# would add that back, harmlessly).
ANY_DUE = "SELECT 1 FROM messages WHERE endpoint = ? AND lease_until <= ? LIMIT 1"
SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    enqueued_at REAL NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0
);
DROP INDEX IF EXISTS messages_in_order;
CREATE INDEX IF NOT EXISTS messages_in_order_due ON messages (endpoint, seq, lease_until, owner);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    enqueued_at REAL NOT NULL,
    deliveries INTEGER NOT NULL,
    reason TEXT NOT NULL,
    dead_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS consumers (
    id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    pid INTEGER NOT NULL,
    alive_until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    published_at REAL NOT NULL
);
"""


def topic_matches(pattern: str, routing_key: str) -> bool:
    """RabbitMQ's topic rule: dot-separated words, ``*`` one word, ``#`` zero or more."""
    words, keys = pattern.split("."), routing_key.split(".")
    # reach[j]: the pattern so far matches the first j words of the key
    reach = [True] + [False] * len(keys)
    for word in words:
        if word == "#":
            for j in range(1, len(reach)):
                reach[j] = reach[j] or reach[j - 1]
        else:
            reach = [False] + [
                reach[j] and (word == "*" or word == keys[j]) for j in range(len(keys))
            ]
    return reach[-1]


class Database:
    """One connection, shared by the threads of one object under a lock (waiting on a Python
    lock wakes at once, where SQLite's busy handler sleeps); other processes wait in SQLite's
    busy handler. ``synchronous``: FULL for what must survive a power loss, else NORMAL."""

    def __init__(self, path: Path, synchronous: str) -> None:
        """Raises BrokerUnavailable naming the file when it cannot be opened as a queue (a
        folder in its place, no permission, another kind of file)."""
        self.path = path
        self.lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
            )
        except (sqlite3.Error, OSError) as exc:
            raise unavailable(path, exc, "it cannot be opened") from exc
        try:
            self._prepare(synchronous)
            self.identity = file_identity(path)
        except BaseException as exc:
            self._connection.close()
            if isinstance(exc, sqlite3.Error | OSError):
                raise unavailable(path, exc, "it cannot be used as a queue") from exc
            raise

    def gone(self) -> QueueFileGone | None:
        """Why what is written here reaches no other process, when it does not: the file was
        removed (``rm -rf`` of ``up``'s state dir) or replaced since it was opened, and SQLite
        goes on writing to the open, unlinked one. One ``stat``."""
        try:
            if file_identity(self.path) == self.identity:
                return None
        except OSError:
            pass
        return QueueFileGone("the file was removed or replaced since it was opened")

    def _prepare(self, synchronous: str) -> None:
        connection = self._connection
        self._use_wal(time.monotonic() + BUSY_TIMEOUT_SECONDS)
        connection.execute(f"PRAGMA synchronous={synchronous}")
        # after a burst, the WAL shrinks back to this once checkpointed (it is reused, not
        # grown, below it)
        connection.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        connection.create_function("topic_matches", 2, topic_matches, deterministic=True)
        if connection.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            with self.write() as db:  # idempotent: another process may have just done it
                for statement in filter(str.strip, SCHEMA.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _use_wal(self, deadline: float) -> None:
        """WAL mode (it stays set in the file). Reading or switching the mode can be refused
        at once, "database is locked", without SQLite's busy handler: while another process
        switches it, or recovers the WAL of processes that were killed (every process of a
        restart opens the file together). Tried again until ``deadline``, as the handler would."""
        while True:
            try:
                if self._connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self._connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(WAL_RETRY_SECONDS)

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the file's write lock up front (a read that later
        wants to write could find its snapshot stale and fail without waiting)."""
        with self.lock:
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            finally:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")

    def read(self, sql: str, parameters: Sequence[object] = ()) -> list[Any]:
        """One statement: one consistent snapshot. Rows are tuples of SQLite's values."""
        with self.lock:
            return self._connection.execute(sql, parameters).fetchall()

    def close(self) -> None:
        with self.lock:
            self._connection.close()


class QueueFileGone(OSError):
    """The queue file is no longer the one a connection opened (``Database.gone``)."""


def file_identity(path: Path) -> tuple[int, int]:
    """(device, inode): the same while the file is the same."""
    info = os.stat(path)
    return info.st_dev, info.st_ino


def unavailable(path: Path, exc: BaseException, consequence: str) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"embedded queue {path} failed ({type(exc).__name__}: {exc}); {consequence}"
    )


@dataclass
class _Pending:
    row: tuple[str, str, bytes, float]
    done: bool = False
    error: BaseException | None = None


class EmbeddedEnqueuer:
    """Accepts requests onto the queue file. Concurrent submits share one commit (and one
    fsync): whoever takes the commit lock writes every row waiting at that moment, so callers
    arriving during an fsync go together in the next one."""

    def __init__(self, path: Path) -> None:
        self._db = Database(path, "FULL")
        self._pending: list[_Pending] = []
        self._pending_lock = threading.Lock()
        self._commit_lock = threading.Lock()

    def submit(self, endpoint: str, message_id: str, body: bytes) -> None:
        """Returns once the row is committed and fsynced to the queue file the workers open;
        raises BrokerUnavailable otherwise."""
        entry = _Pending((endpoint, message_id, body, time.time()))
        with self._pending_lock:
            self._pending.append(entry)
        with self._commit_lock:
            if not entry.done:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                error: BaseException | None = None
                try:
                    with self._db.write() as db:
                        db.executemany(
                            "INSERT INTO messages (endpoint, message_id, body, enqueued_at)"
                            " VALUES (?, ?, ?, ?)",
                            [pending.row for pending in batch],
                        )
                    error = self._db.gone()  # committed to a file no worker opens: not accepted
                except sqlite3.Error as exc:
                    error = exc
                except BaseException as exc:  # raised here; the batch's other callers hear of
                    error = exc  # it too, never "done" without a row written
                    raise
                finally:
                    for pending in batch:
                        pending.done, pending.error = True, error
        if entry.error is not None:
            raise unavailable(
                self._db.path, entry.error, "the request was not accepted, retry later"
            ) from entry.error

    def close(self) -> None:
        self._db.close()


class EmbeddedPublisher:
    """Appends notifications to the topic log (``mandatory`` changes nothing: the log keeps
    every message, so none is unroutable) and prunes it now and then. The ``exchange`` "" is
    AMQP's default one, as RabbitMQ has it: the message goes to the queue ``routing_key``
    names (an endpoint's webhook outbox), claimable from ``delay`` seconds on (its
    ``lease_until``: leased to no one till then, so no schema change; counted by ``backlog``
    neither ready nor in flight meanwhile, as a job in RabbitMQ's delay queues is not);
    ``DEAD_LETTER_EXCHANGE`` keeps it among the dead letters of that queue (``dead_letter``)."""

    def __init__(
        self, path: Path, retain_seconds: float = RETAIN_SECONDS, retain_count: int = RETAIN_COUNT
    ) -> None:
        self._db = Database(path, "NORMAL")
        self.retain_seconds = retain_seconds
        self.retain_count = retain_count

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
        if delay and exchange:
            raise ValueError(f"a delay is for the default exchange only, not {exchange!r}")
        now = time.time()
        try:
            with self._db.write() as db:
                if exchange == DEAD_LETTER_EXCHANGE:
                    dead_letter(db, routing_key, message_id, body, headers or {})
                    return
                if not exchange:  # a delayed message is leased to no one until its time
                    db.execute(
                        "INSERT INTO messages (endpoint, message_id, body, enqueued_at,"
                        " lease_until) VALUES (?, ?, ?, ?, ?)",
                        (routing_key, message_id, body, now, now + delay if delay else 0),
                    )
                    return
                cursor = db.execute(
                    "INSERT INTO notifications"
                    " (exchange, routing_key, message_id, body, published_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (exchange, routing_key, message_id, body, now),
                )
                if (cursor.lastrowid or 0) % PRUNE_EVERY == 0:
                    db.execute(
                        "DELETE FROM notifications WHERE published_at < ? OR id <= ?",
                        (now - self.retain_seconds, (cursor.lastrowid or 0) - self.retain_count),
                    )
        except sqlite3.Error as exc:
            raise unavailable(self._db.path, exc, "the notification was not published") from exc

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True)
class _Lease:
    seq: int
    body: bytes
    attempt: int  # deliveries before this one; the row's count is attempt + 1 while leased

    @property
    def key(self) -> tuple[int, int]:
        return self.seq, self.attempt + 1


def _bury(db: sqlite3.Connection, removed: list[Any], reason: str) -> int:
    """Keep messages just deleted (``RETURNING`` their columns) as dead letters."""
    now = time.time()
    db.executemany(
        "INSERT INTO dead_letters (seq, endpoint, message_id, body, enqueued_at, deliveries,"
        " reason, dead_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(*row, reason, now) for row in removed],
    )
    return len(removed)


def dead_letter(
    db: sqlite3.Connection,
    queue: str,
    message_id: str,
    body: bytes,
    headers: Mapping[str, str | int],
) -> None:
    """A message published to the dead letters of ``queue``, as RabbitMQ routes one published
    to ``DEAD_LETTER_EXCHANGE``: its ``reason`` and ``deliveries`` are the headers'
    ``REASON_HEADER`` and ``SENDS_HEADER``. It takes a message's place in the
    queue's order first (a dead letter's ``seq`` is the message's it was)."""
    removed = db.execute(
        "INSERT INTO messages (endpoint, message_id, body, enqueued_at, deliveries)"
        " VALUES (?, ?, ?, ?, ?)"
        " RETURNING seq, endpoint, message_id, body, enqueued_at, deliveries",
        (queue, message_id, body, time.time(), int(headers.get(SENDS_HEADER, 0))),
    ).fetchall()
    db.execute("DELETE FROM messages WHERE seq = ?", (removed[0][0],))
    _bury(db, removed, str(headers.get(REASON_HEADER, "rejected")))


class EmbeddedConsumer:
    """Feeds one endpoint's messages to a handler, ``concurrency`` at a time on a thread pool
    (claiming only as many as there are free threads, the prefetch of ``RabbitConsumer``). A
    heartbeat thread renews the leases of the messages in flight and tells ``backlog`` this
    consumer is alive. ``stop``: take nothing more; ``run`` returns once in-flight work settled."""

    def __init__(
        self,
        path: Path,
        endpoint: str,
        max_attempts: int,
        concurrency: int,
        lease_seconds: float = LEASE_SECONDS,
        limit: int | None = None,
        work: Work = INVOCATIONS,
    ) -> None:
        """``endpoint``: the queue's key, an endpoint's name or its outbox's; ``limit``: its
        delivery limit when not ``delivery_limit(max_attempts)``."""
        self.endpoint = endpoint
        self.work = work
        self.max_attempts = max_attempts
        # this queue's: a consumer brings its own
        self.limit = delivery_limit(max_attempts) if limit is None else limit
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.owner = f"pid {os.getpid()} {uuid.uuid4().hex[:12]}"
        self.stopping = threading.Event()
        self.consuming = threading.Event()
        self.on_in_flight: Callable[[int], None] = lambda _delta: None
        self.on_attempts_allowed: Callable[[int], None] = lambda _attempts: None
        self.hold_limit: float | None = None  # leases are renewed while a delivery is held
        self.turned: float | None = None
        self._db = Database(path, "NORMAL")
        self._changed = threading.Condition()
        self._leases: set[tuple[int, int]] = set()  # (seq, deliveries) of those in flight
        self._done = threading.Event()

    def stop(self) -> None:
        self.stopping.set()
        with self._changed:
            self._changed.notify_all()

    @property
    def in_flight(self) -> int:
        with self._changed:
            return len(self._leases)

    def run(self, handle: Handler) -> None:
        self.turned = time.monotonic()
        self.on_attempts_allowed(self.max_attempts)
        self._beat()  # registered before the first claim
        heartbeat = threading.Thread(target=self._heartbeat, name="lease-heartbeat", daemon=True)
        heartbeat.start()
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=self.work.threads)
        try:
            self._take(handle, pool)
        finally:
            drain(self, pool)  # in-flight work settles; the heartbeat renews it meanwhile
            self.turned = None
            self._done.set()
            heartbeat.join()
            self._unregister()
            self._db.close()

    def _take(self, handle: Handler, pool: ThreadPoolExecutor) -> None:
        idle = POLL_MIN_SECONDS
        retry = POLL_MIN_SECONDS
        log.info("consuming %s from %s", self.endpoint, self._db.path)
        self.consuming.set()
        while not self.stopping.is_set():
            self.turned = time.monotonic()
            with self._changed:
                self._changed.wait_for(
                    lambda: self.stopping.is_set() or len(self._leases) < self.concurrency,
                    POLL_MAX_SECONDS,
                )
                free = self.concurrency - len(self._leases)
            if self.stopping.is_set() or free <= 0:
                continue
            try:
                leases, dead = self._claim(free)
            except sqlite3.Error as exc:
                log.warning("cannot claim messages (%s); retrying in %.2f s", exc, retry)
                self.consuming.clear()
                self.stopping.wait(retry)
                retry = min(retry * 2, RETRY_MAX_SECONDS)
                continue
            retry = POLL_MIN_SECONDS
            self.consuming.set()
            for lease in leases:
                self.on_in_flight(+1)
                pool.submit(self._work, handle, lease)
            if leases or dead:
                idle = POLL_MIN_SECONDS
            else:
                self.stopping.wait(idle)
                idle = min(idle * 2, POLL_MAX_SECONDS)
        self.consuming.clear()
        log.info("stopped consuming; %d %s in flight", self.in_flight, self.work.items)

    def _claim(self, most: int) -> tuple[list[_Lease], int]:
        """The oldest messages not leased (or whose lease ran out), leased to this consumer;
        those delivered ``limit`` times already go to the dead letters instead. Looks first
        without the write lock (WAL readers never block writers), so idle polling does not
        hold up submits."""
        now = time.time()
        if not self._db.read(ANY_DUE, (self.endpoint, now)):
            return [], 0
        with self._db.write() as db:
            rows = db.execute(
                "SELECT seq, body, deliveries FROM messages"
                " WHERE endpoint = ? AND lease_until <= ? ORDER BY seq LIMIT ?",
                (self.endpoint, now, most),
            ).fetchall()
            spent = [
                db.execute(
                    "DELETE FROM messages WHERE seq = ? RETURNING"
                    " seq, endpoint, message_id, body, enqueued_at, deliveries",
                    (seq,),
                ).fetchone()
                for seq, _, deliveries in rows
                if deliveries >= self.limit
            ]
            dead = _bury(db, spent, "delivery_limit")
            leases = [_Lease(seq, body, count) for seq, body, count in rows if count < self.limit]
            db.executemany(
                "UPDATE messages SET owner = ?, lease_until = ?, deliveries = deliveries + 1"
                " WHERE seq = ?",
                [(self.owner, now + self.lease_seconds, lease.seq) for lease in leases],
            )
        with self._changed:
            self._leases.update(lease.key for lease in leases)
        if dead:
            log.error(
                "%d message(s) of %s delivered %d times without being settled: dead-lettered",
                dead,
                self.endpoint,
                self.limit,
            )
        return leases, dead

    def _work(self, handle: Handler, lease: _Lease) -> None:
        try:
            settle = handle(Delivery(lease.body, lease.attempt))
        except Exception:
            log.exception("unexpected error handling a message; requeueing it")
            settle = Settle.REQUEUE
        try:
            self._settle(lease, settle)
        except sqlite3.Error as exc:
            log.warning("cannot settle a message (%s); it comes back after its lease", exc)
        finally:
            with self._changed:
                self._leases.discard(lease.key)
                self._changed.notify_all()
            self.on_in_flight(-1)

    def _settle(self, lease: _Lease, settle: Settle) -> None:
        mine = (lease.seq, self.owner, lease.attempt + 1)  # still leased to this delivery
        with self._db.write() as db:
            if settle is Settle.ACK:
                settled = db.execute(
                    "DELETE FROM messages WHERE seq = ? AND owner = ? AND deliveries = ?", mine
                ).rowcount
            elif settle is Settle.REQUEUE:
                settled = db.execute(
                    "UPDATE messages SET owner = NULL, lease_until = 0"
                    " WHERE seq = ? AND owner = ? AND deliveries = ?",
                    mine,
                ).rowcount
            else:
                removed = db.execute(
                    "DELETE FROM messages WHERE seq = ? AND owner = ? AND deliveries = ?"
                    " RETURNING seq, endpoint, message_id, body, enqueued_at, deliveries",
                    mine,
                ).fetchall()
                settled = _bury(db, removed, "rejected")
        if not settled:
            log.warning(
                "the lease of message %d ran out before it was settled (%s); another delivery"
                " handles it",
                lease.seq,
                settle.value,
            )

    def _heartbeat(self) -> None:
        """Renew this consumer's leases and its presence until ``run`` ends; also forget
        consumers that stopped renewing long ago (killed ones never unregister)."""
        while not self._done.wait(self.lease_seconds / HEARTBEATS_PER_LEASE):
            self._beat()

    def _beat(self) -> None:
        try:
            self._renew()
        except sqlite3.Error as exc:
            log.warning("cannot renew leases (%s); retrying at the next heartbeat", exc)

    def _renew(self) -> None:
        now = time.time()
        until = now + self.lease_seconds
        with self._changed:
            held = list(self._leases)
        with self._db.write() as db:
            db.executemany(
                "UPDATE messages SET lease_until = ?"
                " WHERE seq = ? AND owner = ? AND deliveries = ?",
                [(until, seq, self.owner, deliveries) for seq, deliveries in held],
            )
            db.execute(
                "INSERT INTO consumers (id, endpoint, pid, alive_until) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET alive_until = excluded.alive_until",
                (self.owner, self.endpoint, os.getpid(), until),
            )
            db.execute(
                "DELETE FROM consumers WHERE alive_until < ?", (now - 10 * self.lease_seconds,)
            )

    def _unregister(self) -> None:
        try:
            with self._db.write() as db:
                db.execute("DELETE FROM consumers WHERE id = ?", (self.owner,))
        except sqlite3.Error as exc:
            log.warning("cannot unregister (%s); its entry lapses with its heartbeat", exc)


@dataclass(frozen=True)
class Notification:
    """One entry of the topic log; ``id`` orders them (pass the last one to ``tail``)."""

    id: int
    routing_key: str
    message_id: str
    body: bytes
    published_at: float


@dataclass(frozen=True)
class Held:
    """A message in flight: which process holds it, delivered how often (this one counted)."""

    message_id: str
    pid: int
    deliveries: int


@dataclass(frozen=True)
class DeadLetter:
    """A message the queue gave up on: ``reason`` is ``rejected`` (a worker said so, after its
    error object and notification) or ``delivery_limit`` (no worker ever settled it); a
    webhook job's sender gives its own (``REASON_HEADER``), ``deliveries`` then its sends."""

    seq: int
    message_id: str
    body: bytes
    deliveries: int
    reason: str
    enqueued_at: float
    dead_at: float


class EmbeddedQueue:
    """One queue file as a ``connect.Broker``: makes its enqueuers, publishers and consumers,
    and reads its backlog, topic log and dead letters. Safe to use from several processes.
    Only consumers use ``max_attempts`` (the delivery limit is applied when claiming), and one
    connection serves any number of publishing threads (``connections`` is RabbitMQ's)."""

    def __init__(self, path: Path, lease_seconds: float = LEASE_SECONDS) -> None:
        self.path = path
        self.lease_seconds = lease_seconds

    def enqueuer(self, max_attempts: Mapping[str, int], connections: int) -> EmbeddedEnqueuer:
        return EmbeddedEnqueuer(self.path)

    def publisher(
        self, endpoint: str, max_attempts: int, connections: int, what: str = "notifying"
    ) -> EmbeddedPublisher:
        return EmbeddedPublisher(self.path)

    def consumer(self, endpoint: str, max_attempts: int, concurrency: int) -> EmbeddedConsumer:
        return EmbeddedConsumer(self.path, endpoint, max_attempts, concurrency, self.lease_seconds)

    def outbox_consumer(
        self, endpoint: str, max_attempts: int, concurrency: int
    ) -> EmbeddedConsumer:
        """The endpoint's webhook jobs (``broker.outbox_name``); not counted in its backlog."""
        return EmbeddedConsumer(
            self.path,
            outbox_name(endpoint),
            max_attempts,
            concurrency,
            self.lease_seconds,
            OUTBOX_DELIVERY_LIMIT,
            WEBHOOK_JOBS,
        )

    def _read(self, sql: str, parameters: Sequence[object]) -> list[Any]:
        db = Database(self.path, "NORMAL")
        try:
            return db.read(sql, parameters)
        finally:
            db.close()

    def backlog(self, endpoint: str) -> Backlog:
        """Ready (including messages whose lease ran out, and delayed ones now due), in flight
        (leased to a consumer: a delayed message not yet due is held by no worker, and counted
        nowhere, as RabbitMQ counts none in its delay queues), consumers with a live
        heartbeat, and how long the oldest ready message has waited (0: none waits)."""
        now = time.time()
        ((ready, oldest, leased, consumers),) = self._read(
            "SELECT"
            " (SELECT count(*) FROM messages WHERE endpoint = ?1 AND lease_until <= ?2),"
            " (SELECT min(enqueued_at) FROM messages WHERE endpoint = ?1 AND lease_until <= ?2),"
            " (SELECT count(*) FROM messages"
            "  WHERE endpoint = ?1 AND lease_until > ?2 AND owner IS NOT NULL),"
            " (SELECT count(*) FROM consumers WHERE endpoint = ?1 AND alive_until > ?2)",
            (endpoint, now),
        )
        return Backlog(
            ready=int(ready),
            unacked=int(leased),
            consumers=int(consumers),
            source="sqlite",
            oldest_age=max(0.0, now - oldest) if isinstance(oldest, float) else 0.0,
            unacked_exact=True,  # leases are rows, counted in the same query
        )

    def waiting_webhooks(self, endpoint: str) -> int:
        """The webhook jobs ready in the endpoint's outbox (its messages, by the outbox's name)."""
        return self.backlog(outbox_name(endpoint)).ready

    def tail(
        self,
        topic_pattern: str,
        after_id: int = 0,
        limit: int = 100,
        exchange: str = NOTIFICATION_EXCHANGE,
    ) -> list[Notification]:
        """Notifications after ``after_id`` whose routing key matches ``topic_pattern``
        (``abalone.*``, ``#.error``), oldest first; poll with the last id seen to follow."""
        rows = self._read(
            "SELECT id, routing_key, message_id, body, published_at FROM notifications"
            " WHERE id > ? AND exchange = ? AND topic_matches(?, routing_key)"
            " ORDER BY id LIMIT ?",
            (after_id, exchange, topic_pattern, limit),
        )
        return [Notification(*row) for row in rows]

    def held(self, endpoint: str) -> list[Held]:
        """The messages under a lease now, with the process holding each."""
        rows = self._read(
            "SELECT message_id, pid, deliveries FROM messages JOIN consumers"
            " ON consumers.id = messages.owner WHERE messages.endpoint = ? AND lease_until > ?"
            " ORDER BY seq",
            (endpoint, time.time()),
        )
        return [Held(*row) for row in rows]

    def dead_letters(self, endpoint: str) -> list[DeadLetter]:
        rows = self._read(
            "SELECT seq, message_id, body, deliveries, reason, enqueued_at, dead_at"
            " FROM dead_letters WHERE endpoint = ? ORDER BY seq",
            (endpoint,),
        )
        return [DeadLetter(*row) for row in rows]
