"""The embedded queue (``queueing/embedded.py``) on a temporary file: order, settling and
counts, leases, draining, backlog figures, the topic log, concurrent submitters, the URL."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from infermodes.errors import BrokerUnavailable, BrokerUrlError
from infermodes.metrics import WorkerMetrics
from infermodes.queueing import embedded
from infermodes.queueing.broker import (
    DEAD_LETTER_EXCHANGE,
    NOTIFICATION_EXCHANGE,
    OUTBOX_DELIVERY_LIMIT,
    Backlog,
    Delivery,
    Settle,
    delivery_limit,
    outbox_name,
)
from infermodes.queueing.connect import RabbitBroker, broker_from_url, embedded_path, embedded_url
from infermodes.queueing.embedded import EmbeddedConsumer, EmbeddedQueue, Held, topic_matches
from infermodes.queueing.notifications import Outbox, Webhooks, WebhookSender, webhook_job
from tests.support.processes import wait_until

EP = "ep"
WAIT = 10.0  # seconds any wait here may take before the test fails


@pytest.fixture
def queue(tmp_path: Path) -> EmbeddedQueue:
    return EmbeddedQueue(tmp_path / "queue.db", lease_seconds=0.5)


def submit(queue: EmbeddedQueue, *bodies: str, endpoint: str = EP) -> None:
    enqueuer = queue.enqueuer({endpoint: 3}, 1)
    try:
        for body in bodies:
            enqueuer.submit(endpoint, body, body.encode())
    finally:
        enqueuer.close()


class Recorder:
    """A handler that records what it got and answers with ``settle(delivery)``."""

    def __init__(self, settle: Callable[[Delivery], Settle] = lambda _d: Settle.ACK) -> None:
        self.settle = settle
        self.seen: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, delivery: Delivery) -> Settle:
        with self.lock:
            self.seen.append((delivery.body.decode(), delivery.attempt))
        return self.settle(delivery)

    def count(self) -> int:
        with self.lock:
            return len(self.seen)


@contextmanager
def consuming(
    consumer: EmbeddedConsumer, handle: Callable[[Delivery], Settle]
) -> Iterator[threading.Thread]:
    """``consumer.run`` on a thread, stopped and joined on exit."""
    thread = threading.Thread(target=consumer.run, args=(handle,), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        consumer.stop()
        thread.join(WAIT)
        assert not thread.is_alive(), "run() did not return after stop()"


def empty(queue: EmbeddedQueue) -> bool:
    backlog = queue.backlog(EP)
    return backlog.ready == 0 and backlog.unacked == 0


def test_messages_come_in_the_order_they_were_submitted(queue: EmbeddedQueue) -> None:
    bodies = [f"m{i}" for i in range(20)]
    submit(queue, *bodies)
    handler = Recorder()
    consumer = queue.consumer(EP, 3, 1)
    allowed: list[int] = []
    consumer.on_attempts_allowed = allowed.append
    with consuming(consumer, handler):
        wait_until(lambda: handler.count() == 20 and empty(queue), WAIT, "20 acks")
    assert handler.seen == [(body, 0) for body in bodies]
    assert allowed == [3]  # its queue's limit is its own: all of maxAttempts


def test_requeue_raises_the_count_and_ack_removes(queue: EmbeddedQueue) -> None:
    submit(queue, "a")
    handler = Recorder(lambda d: Settle.ACK if d.attempt == 2 else Settle.REQUEUE)
    with consuming(queue.consumer(EP, 3, 1), handler):
        wait_until(lambda: handler.count() == 3 and empty(queue), WAIT, "three deliveries")
    assert handler.seen == [("a", 0), ("a", 1), ("a", 2)]
    assert queue.dead_letters(EP) == []


def test_a_handler_that_raises_is_requeued(queue: EmbeddedQueue) -> None:
    submit(queue, "a")

    def settle(delivery: Delivery) -> Settle:
        if delivery.attempt == 0:
            raise RuntimeError("boom")
        return Settle.ACK

    handler = Recorder(settle)
    with consuming(queue.consumer(EP, 3, 1), handler):
        wait_until(lambda: handler.count() == 2 and empty(queue), WAIT, "the retry")
    assert handler.seen == [("a", 0), ("a", 1)]


def test_dead_letter_keeps_the_message_with_its_count(queue: EmbeddedQueue) -> None:
    submit(queue, "poison", "fine")

    def settle(delivery: Delivery) -> Settle:
        if delivery.body == b"fine":
            return Settle.ACK
        return Settle.DEAD_LETTER if delivery.attempt == 1 else Settle.REQUEUE

    handler = Recorder(settle)
    with consuming(queue.consumer(EP, 3, 1), handler):
        wait_until(lambda: handler.count() == 3 and empty(queue), WAIT, "both settled")
    (dead,) = queue.dead_letters(EP)
    assert (dead.message_id, dead.body, dead.deliveries, dead.reason) == (
        "poison",
        b"poison",
        2,
        "rejected",
    )


def test_a_message_published_to_the_dead_letters_is_kept_with_its_reason(
    queue: EmbeddedQueue,
) -> None:
    """As RabbitMQ routes a publish to the dead-letter exchange to the queue's dead letters:
    a webhook job's sender dead-letters it so, its reason and sends from the headers; it is
    not a message of the queue (nothing delivers it), and its seq is never a message's."""
    submit(queue, "waiting", endpoint="ep.webhooks")
    publisher = queue.publisher(EP, 3, 1)
    try:
        headers = {"x-infermodes-reason": "sends_exhausted", "x-infermodes-sends": 9}
        publisher.publish(DEAD_LETTER_EXCHANGE, "ep.webhooks", b"job", "i-1", True, headers)
        publisher.publish(DEAD_LETTER_EXCHANGE, "ep.webhooks", b"job2", "i-2", True)
    finally:
        publisher.close()
    first, second = queue.dead_letters("ep.webhooks")
    assert (first.message_id, first.body, first.reason, first.deliveries) == (
        "i-1", b"job", "sends_exhausted", 9)  # fmt: skip
    assert (second.message_id, second.reason, second.deliveries) == ("i-2", "rejected", 0)
    assert queue.backlog("ep.webhooks").ready == 1  # only the one waiting
    submit(queue, "later", endpoint="ep.webhooks")
    with contextlib.closing(sqlite3.connect(queue.path)) as db:
        seqs = [row[0] for row in db.execute("SELECT seq FROM messages ORDER BY seq")]
    assert first.seq < second.seq < seqs[-1] and first.seq not in seqs


def test_the_delivery_limit_dead_letters_what_no_worker_settles(queue: EmbeddedQueue) -> None:
    submit(queue, "a")
    handler = Recorder(lambda _d: Settle.REQUEUE)
    with consuming(queue.consumer(EP, 1, 1), handler):
        wait_until(lambda: queue.dead_letters(EP) != [], WAIT, "the dead letter")
    limit = delivery_limit(1)
    assert handler.seen == [("a", attempt) for attempt in range(limit)]
    (dead,) = queue.dead_letters(EP)
    assert (dead.deliveries, dead.reason) == (limit, "delivery_limit")
    assert empty(queue)


def test_an_expired_lease_is_delivered_again_and_the_late_settle_is_void(
    queue: EmbeddedQueue,
) -> None:
    submit(queue, "a")
    killed = queue.consumer(EP, 3, 1)  # claims, then never renews: a killed process
    (lost,), _ = killed._claim(1)
    other = queue.consumer(EP, 3, 1)
    assert other._claim(1) == ([], 0)  # leased: nobody else gets it meanwhile
    wait_until(lambda: queue.backlog(EP).ready == 1, WAIT, "the lease to run out")
    (again,), _ = other._claim(1)
    assert (again.seq, again.body, again.attempt) == (lost.seq, b"a", 1)
    for settle in Settle:  # the first delivery settles late: nothing happens
        killed._settle(lost, settle)
    backlog = queue.backlog(EP)
    assert (backlog.ready, backlog.unacked, queue.dead_letters(EP)) == (0, 1, [])
    other._settle(again, Settle.ACK)
    assert empty(queue)


def test_renewed_leases_keep_a_long_invocation_with_its_worker(queue: EmbeddedQueue) -> None:
    submit(queue, "long")
    started, release = threading.Event(), threading.Event()

    def hold(_delivery: Delivery) -> Settle:
        started.set()
        release.wait(WAIT)
        return Settle.ACK

    holder, other = Recorder(hold), Recorder()
    with consuming(queue.consumer(EP, 3, 1), holder):
        assert started.wait(WAIT)
        with consuming(queue.consumer(EP, 3, 1), other):  # polls all along
            time.sleep(6 * queue.lease_seconds)  # six leases pass while it runs
            assert queue.backlog(EP).unacked == 1
            release.set()
            wait_until(lambda: empty(queue), WAIT, "the ack")
    assert holder.seen == [("long", 0)]
    assert other.seen == []


def test_stop_takes_nothing_more_and_returns_once_in_flight_work_settled(
    queue: EmbeddedQueue,
) -> None:
    submit(queue, "a", "b", "c", "d")
    release = threading.Event()
    handler = Recorder(lambda _d: Settle.ACK if release.wait(WAIT) else Settle.REQUEUE)
    consumer = queue.consumer(EP, 3, 3)
    thread = threading.Thread(target=consumer.run, args=(handler,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: consumer.in_flight == 3, WAIT, "three in flight")
        assert consumer.consuming.is_set()  # the worker's readiness
        consumer.stop()
        wait_until(lambda: not consumer.consuming.is_set(), WAIT, "taking nothing more")
        stopped = consumer.turned  # its loop ended: it drains
        thread.join(3 * queue.lease_seconds)
        assert thread.is_alive()  # still finishing its three
        assert not consumer.consuming.is_set()  # taking nothing more: not ready
        assert consumer.turned > stopped  # turning while it drains: not stuck (liveness)
        release.set()
        thread.join(WAIT)
        assert not thread.is_alive()
    finally:
        release.set()
        consumer.stop()
    assert sorted(body for body, _ in handler.seen) == ["a", "b", "c"]
    backlog = queue.backlog(EP)
    assert (backlog.ready, backlog.unacked, backlog.consumers) == (1, 0, 0)


def test_backlog_counts_ready_in_flight_consumers_and_the_oldest_wait(
    queue: EmbeddedQueue,
) -> None:
    assert queue.backlog(EP) == Backlog(0, 0, 0, "sqlite", 0.0, unacked_exact=True)
    submit(queue, "a", "b", "c", "d", "e")
    submit(queue, "x", endpoint="other")
    release = threading.Event()
    consumer = queue.consumer(EP, 3, 2)
    with consuming(
        consumer, Recorder(lambda _d: Settle.ACK if release.wait(WAIT) else Settle.REQUEUE)
    ):
        wait_until(lambda: consumer.in_flight == 2, WAIT, "two in flight")
        backlog = queue.backlog(EP)
        assert (backlog.ready, backlog.unacked, backlog.consumers, backlog.total) == (3, 2, 1, 5)
        assert backlog.oldest_age is not None and backlog.oldest_age >= 0
        assert queue.held(EP) == [Held("a", os.getpid(), 1), Held("b", os.getpid(), 1)]
        release.set()
        wait_until(lambda: empty(queue), WAIT, "the rest")
    assert queue.backlog(EP).consumers == 0
    assert queue.backlog("other").ready == 1


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("ep.success", "ep.success", True),
        ("ep.success", "ep.error", False),
        ("ep.*", "ep.error", True),
        ("ep.*", "ep", False),
        ("ep.*", "ep.a.b", False),
        ("*.error", "other.error", True),
        ("#", "ep.success", True),
        ("#", "", True),
        ("ep.#", "ep", True),
        ("ep.#", "ep.a.b", True),
        ("#.error", "ep.error", True),
        ("#.error", "ep.success", False),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.#.z", "a.b.c", False),
        ("a.*.#", "a", False),
        ("a.*.#", "a.b", True),
    ],
)
def test_topic_patterns_follow_rabbitmq(pattern: str, key: str, matches: bool) -> None:
    assert topic_matches(pattern, key) is matches


def _topic_regex(pattern: str) -> str:
    """A second statement of the rule, for the property below: every word of ``"." + key``
    starts with a dot; ``*`` is one word, ``#`` any number of them."""
    parts = {"*": r"\.[^.]*", "#": r"(?:\.[^.]*)*"}
    return "".join(parts.get(word, r"\." + re.escape(word)) for word in pattern.split("."))


@settings(max_examples=1000)  # a small space: search most of it
@given(
    st.lists(st.sampled_from(["a", "b", "", "*", "#"]), min_size=1, max_size=4),
    st.lists(st.sampled_from(["a", "b", ""]), min_size=1, max_size=4),
)
def test_topic_patterns_agree_with_a_regular_expression(pattern: list[str], key: list[str]) -> None:
    joined, routing_key = ".".join(pattern), ".".join(key)
    expected = re.fullmatch(_topic_regex(joined), "." + routing_key) is not None
    assert topic_matches(joined, routing_key) is expected


def test_tail_reads_the_topic_log_by_pattern_and_position(queue: EmbeddedQueue) -> None:
    publisher = queue.publisher(EP, 3, 1)
    for key in ("ep.success", "ep.error", "other.success", "ep.success"):
        publisher.publish(NOTIFICATION_EXCHANGE, key, key.encode(), key, False)
    publisher.close()
    assert [n.routing_key for n in queue.tail("ep.*")] == ["ep.success", "ep.error", "ep.success"]
    assert [n.routing_key for n in queue.tail("#.error")] == ["ep.error"]
    first, *_ = queue.tail("#")
    rest = queue.tail("#", after_id=first.id)
    assert [n.routing_key for n in rest] == ["ep.error", "other.success", "ep.success"]
    assert [n.routing_key for n in queue.tail("#", after_id=first.id, limit=1)] == ["ep.error"]
    assert queue.tail("#", exchange="elsewhere") == []


def test_the_topic_log_keeps_the_newest_entries(queue: EmbeddedQueue) -> None:
    publisher = embedded.EmbeddedPublisher(queue.path, retain_count=10)
    for i in range(embedded.PRUNE_EVERY):
        publisher.publish(NOTIFICATION_EXCHANGE, "ep.success", b"{}", str(i), False)
    publisher.close()
    kept = queue.tail("#", limit=1000)
    assert [n.message_id for n in kept] == [str(i) for i in range(490, 500)]


def test_concurrent_submitters_lose_nothing_and_keep_their_order(queue: EmbeddedQueue) -> None:
    enqueuer = queue.enqueuer({EP: 3}, 8)

    def submitter(t: int) -> None:
        for i in range(50):
            enqueuer.submit(EP, f"{t}-{i}", f"{t}-{i}".encode())

    threads = [threading.Thread(target=submitter, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    enqueuer.close()
    assert queue.backlog(EP).ready == 400
    handler = Recorder()
    with consuming(queue.consumer(EP, 3, 4), handler):
        wait_until(lambda: handler.count() == 400 and empty(queue), WAIT, "400 acks")
    bodies = [body for body, _ in handler.seen]
    assert sorted(bodies) == sorted(f"{t}-{i}" for t in range(8) for i in range(50))
    for t in range(8):  # each submitter's messages in its order (claims are in order)
        mine = [int(b.split("-")[1]) for b in bodies if b.startswith(f"{t}-")]
        assert mine == sorted(mine)


def test_a_locked_queue_file_refuses_the_request(
    queue: EmbeddedQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "BUSY_TIMEOUT_SECONDS", 0.05)
    submit(queue, "a")
    other = sqlite3.connect(queue.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    enqueuer = queue.enqueuer({EP: 3}, 1)
    try:
        with pytest.raises(BrokerUnavailable, match="not accepted"):
            enqueuer.submit(EP, "b", b"b")
    finally:
        other.execute("ROLLBACK")
        other.close()
    enqueuer.submit(EP, "c", b"c")
    enqueuer.close()
    assert queue.backlog(EP).ready == 2


@pytest.mark.parametrize("replaced", [False, True], ids=["removed", "replaced"])
def test_a_request_written_to_a_removed_queue_file_is_refused(
    tmp_path: Path, replaced: bool
) -> None:
    """``rm -rf`` of up's state dir: SQLite goes on writing to the open, unlinked file, which no
    worker will ever open, and the request was answered 202 until ``up`` noticed (its next
    round). After the commit the enqueuer sees the file is no longer the one it opened."""
    state = tmp_path / "state"
    queue = EmbeddedQueue(state / "queue.db")
    enqueuer = queue.enqueuer({EP: 3}, 1)
    try:
        enqueuer.submit(EP, "before", b"before")
        for file in state.iterdir():
            file.unlink()
        if replaced:  # a new queue file in its place (another up started there)
            EmbeddedQueue(state / "queue.db").enqueuer({EP: 3}, 1).close()
        with pytest.raises(BrokerUnavailable, match="was removed or replaced") as refused:
            enqueuer.submit(EP, "after", b"after")
        assert str(state / "queue.db") in str(refused.value)
        assert "the request was not accepted, retry later" in str(refused.value)
    finally:
        enqueuer.close()


def test_a_shared_commit_that_fails_unexpectedly_tells_every_caller_of_its_batch(
    queue: EmbeddedQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only sqlite's errors reached the batch: anything else (a MemoryError) left the others'
    rows unwritten while their submits returned as if accepted (202, and nothing queued)."""
    enqueuer = queue.enqueuer({EP: 3}, 2)

    real_write, calls = enqueuer._db.write, []

    def failing_write() -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("no room for the batch")
        return real_write()  # the next commit works: it must not take the lost rows as its own

    outcomes: dict[str, str] = {}

    def submitter(name: str) -> None:
        try:
            enqueuer.submit(EP, name, name.encode())
            outcomes[name] = "accepted"
        except BaseException as exc:  # what each caller is told is the test
            outcomes[name] = type(exc).__name__

    enqueuer._commit_lock.acquire()  # both wait behind one commit: they share a batch
    threads = [threading.Thread(target=submitter, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(enqueuer._pending) == 2, WAIT, "both submits pending")
    monkeypatch.setattr(enqueuer._db, "write", failing_write)
    enqueuer._commit_lock.release()
    for thread in threads:
        thread.join(WAIT)
    assert sorted(outcomes.values()) == ["BrokerUnavailable", "MemoryError"]
    assert queue.backlog(EP).ready == 0
    enqueuer.close()


@pytest.mark.parametrize("name", ["C# work", "v?lease_seconds=1", "100%", "a%20b", "plain"])
def test_the_url_of_a_queue_file_names_that_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name / "queue.db"
    assert embedded_path(embedded_url(path))[0] == path


def test_broker_from_url_picks_by_scheme(tmp_path: Path) -> None:
    broker = broker_from_url(f"sqlite://{tmp_path}/q%20x.db?lease_seconds=2.5")
    assert isinstance(broker, EmbeddedQueue)
    assert (broker.path, broker.lease_seconds) == (tmp_path / "q x.db", 2.5)
    default = broker_from_url(f"sqlite://{tmp_path}/q.db")
    assert isinstance(default, EmbeddedQueue)
    assert default.lease_seconds == embedded.LEASE_SECONDS
    rabbit = broker_from_url("amqp://guest:guest@127.0.0.1:5672/%2F", "http://127.0.0.1:15672")
    assert isinstance(rabbit, RabbitBroker)
    assert rabbit.management_url == "http://127.0.0.1:15672"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://host/q.db",
        "sqlite:///",
        "sqlite:relative.db",
        "sqlite:///q.db?lease_seconds=0",
        "sqlite:///q.db?lease_seconds=abc",
        "sqlite:///q.db?lease=5",
        "redis://127.0.0.1/0",
    ],
)
def test_broker_from_url_refuses_what_it_cannot_open(url: str) -> None:
    with pytest.raises(BrokerUrlError, match="sqlite|lease|parameter"):
        broker_from_url(url)


def test_a_refused_broker_url_is_named_without_its_password() -> None:
    """The message reaches logs, a pod's termination message and so an endpoint's status."""
    with pytest.raises(BrokerUrlError) as refused:
        broker_from_url("http://admin:S3cretPw@rabbit:15672/")
    assert "S3cretPw" not in str(refused.value)
    assert "http://admin@rabbit:15672/" in str(refused.value)


def test_a_mode_sqlite_refuses_at_once_is_asked_again_until_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every process of a restart opens the file together; one may find the mode "locked" at
    once, without the busy handler (another recovering the killed ones' WAL): the worker
    exited 1 with a traceback. It asks again, as the handler would, until its deadline."""
    monkeypatch.setattr(embedded, "WAL_RETRY_SECONDS", 0.001)
    database = embedded.Database(tmp_path / "q.db", "NORMAL")
    real = database._connection
    refusals = [sqlite3.OperationalError("database is locked")] * 3

    class Refusing:
        def execute(self, sql: str) -> sqlite3.Cursor:
            if sql.startswith("PRAGMA journal_mode") and refusals:
                raise refusals.pop()
            return real.execute(sql)

    monkeypatch.setattr(database, "_connection", Refusing())
    database._use_wal(time.monotonic() + 5)
    assert refusals == [] and real.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    refusals.extend([sqlite3.OperationalError("database is locked")] * 3)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        database._use_wal(time.monotonic())  # past its deadline: the error stands
    monkeypatch.setattr(database, "_connection", real)
    database.close()


def test_the_default_exchange_puts_a_message_on_the_outbox_not_the_work_queue(
    queue: EmbeddedQueue,
) -> None:
    """As RabbitMQ's default exchange: the webhook job goes to the queue its routing key
    names, which the outbox consumer takes and the endpoint's backlog does not count (webhooks
    are not invocations to scale for)."""
    publisher = queue.publisher(EP, 3, 1)
    try:
        publisher.publish("", outbox_name(EP), b"job", "abc", True)
    finally:
        publisher.close()
    assert queue.backlog(EP).ready == 0
    assert queue.tail("#") == []
    handler = Recorder()
    with consuming(queue.outbox_consumer(EP, 3, 1), handler):
        wait_until(lambda: handler.count() == 1, WAIT, "the job")
    assert handler.seen == [("job", 0)]
    assert queue.backlog(outbox_name(EP)).ready == 0  # acked


def test_a_delayed_message_is_not_delivered_before_its_delay(queue: EmbeddedQueue) -> None:
    """A webhook job put back after a failed send (``delay``): not claimed, nor counted
    ready, before its time, while one published after it without a delay is delivered at
    once; delivered after its time, as a first delivery."""
    publisher = queue.publisher(EP, 3, 1)
    try:
        published = time.time()  # before the delayed job's clock starts
        publisher.publish("", outbox_name(EP), b"later", "a", True, delay=2)
        publisher.publish("", outbox_name(EP), b"now", "b", True)
    finally:
        publisher.close()
    assert queue.backlog(outbox_name(EP)).ready == 1
    handler = Recorder()
    with consuming(queue.outbox_consumer(EP, 3, 1), handler):
        wait_until(lambda: handler.count() == 1, WAIT, "the job without a delay")
        assert handler.seen == [("now", 0)]
        wait_until(lambda: handler.count() == 2, WAIT, "the delayed job")
        delivered = time.time()
    assert handler.seen == [("now", 0), ("later", 0)]
    assert delivered >= published + 2  # not before its delay


def test_a_look_for_a_due_message_passes_delayed_ones_in_the_index_alone(
    queue: EmbeddedQueue, tmp_path: Path
) -> None:
    """Thousands of webhook jobs waiting out their retry delays sit in the queue's order
    before the next due one: a consumer's look for it (every 5-100 ms, per worker) read each
    of their rows, bodies and all (85 ms a look at 30,000 jobs of 8 KB). Their lease is in
    the order's index, so the look reads the index alone, and a file made with the former
    index has it replaced at its next open."""
    queue.backlog(EP)  # the file made
    with contextlib.closing(sqlite3.connect(tmp_path / "queue.db")) as db:
        db.execute("DROP INDEX messages_in_order_due")
        db.execute("CREATE INDEX messages_in_order ON messages (endpoint, seq)")
        db.execute("PRAGMA user_version=1")  # as the previous release made it
        db.commit()
    EmbeddedQueue(tmp_path / "queue.db", lease_seconds=0.5).backlog(EP)  # the next open
    with contextlib.closing(sqlite3.connect(tmp_path / "queue.db")) as db:
        plan = db.execute(f"EXPLAIN QUERY PLAN {embedded.ANY_DUE}", (EP, 0.0)).fetchall()
        indexes = {row[1] for row in db.execute("PRAGMA index_list(messages)")}
    [step] = [row[-1] for row in plan]  # SQLite's wording varies: the index and its use
    assert "COVERING INDEX messages_in_order_due" in step, step
    assert "messages_in_order" not in indexes


def test_a_delayed_message_is_counted_nowhere_until_due_then_ready(
    queue: EmbeddedQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook job waiting for its next send is held by no worker: counted neither in
    flight nor ready (as RabbitMQ counts none in its delay queues); once due it is ready,
    for the look that starts a worker."""
    publisher = queue.publisher(EP, 3, 1)
    try:
        publisher.publish("", outbox_name(EP), b"later", "a", True, delay=60)
    finally:
        publisher.close()
    waiting = queue.backlog(outbox_name(EP))
    assert (waiting.ready, waiting.unacked) == (0, 0)
    due = time.time() + 61
    monkeypatch.setattr(embedded.time, "time", lambda: due)
    became_due = queue.backlog(outbox_name(EP))
    assert (became_due.ready, became_due.unacked) == (1, 0)
    assert queue.waiting_webhooks(EP) == 1


def test_an_outbox_job_whose_sender_dies_each_time_is_dropped_at_its_own_limit(
    queue: EmbeddedQueue,
) -> None:
    consumer = queue.outbox_consumer(EP, 1, 1)
    assert consumer.limit == OUTBOX_DELIVERY_LIMIT  # not the work queue's maxAttempts + 3


def test_the_outbox_s_threads_and_log_lines_say_webhook_jobs(
    queue: EmbeddedQueue, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker runs two consumers: the outbox's must not read as the invocations' (its
    threads named ``invocation_N``, its stop logging "request(s) in flight")."""
    names: list[str] = []

    def handle(_delivery: Delivery) -> Settle:
        names.append(threading.current_thread().name)
        return Settle.ACK

    publisher = queue.publisher(EP, 3, 1)
    try:
        publisher.publish("", outbox_name(EP), b"job", "abc", True)
    finally:
        publisher.close()
    caplog.set_level("INFO", "infermodes")
    with consuming(queue.outbox_consumer(EP, 3, 1), handle):
        wait_until(lambda: len(names) == 1, WAIT, "the job")
    assert names[0].startswith("webhook-sender")
    assert "stopped consuming; 0 webhook job(s) in flight" in caplog.text
    assert "request(s)" not in caplog.text
    rabbit = RabbitBroker("amqp://guest:guest@127.0.0.1:1/", None).outbox_consumer(EP, 3, 4)
    assert getattr(rabbit, "work", None) == queue.outbox_consumer(EP, 3, 1).work


def test_a_webhook_job_put_back_again_and_again_is_never_dead_lettered(
    queue: EmbeddedQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender without the webhook of a young job's outcome (a rollout adding it) puts it
    back through the queue file, more often than the outbox's delivery limit: each time a new
    message, never a delivery counted, so the job is neither among the dead letters nor
    lost: it waits, each time a first delivery, for a sender with the webhook (the RabbitMQ
    integration test runs one)."""
    monkeypatch.setattr("infermodes.queueing.notifications.NO_WEBHOOK_PAUSE_SECONDS", 0.01)
    publisher = queue.publisher(EP, 3, 1)
    metrics = WorkerMetrics(CollectorRegistry())
    sender = WebhookSender(metrics, Webhooks(error=["http://hook.test/e"]), 1,
                           Outbox(publisher, EP))  # fmt: skip
    body = {"inferenceId": "young", "eventTime": datetime.now(UTC).isoformat()}
    publisher.publish("", outbox_name(EP), webhook_job(body, True), "young", True)
    returned = metrics.webhook_jobs_returned.labels("no_webhook")
    seen = Recorder(sender.handle)
    dead = outbox_name(EP)
    try:
        with consuming(queue.outbox_consumer(EP, 3, 1), seen):
            wait_until(lambda: seen.count() > OUTBOX_DELIVERY_LIMIT + 1 or queue.dead_letters(dead),
                       WAIT, "returns beyond the limit")  # fmt: skip
    finally:
        publisher.close()
    assert queue.dead_letters(dead) == []
    assert returned._value.get() >= OUTBOX_DELIVERY_LIMIT + 1
    assert {attempt for _, attempt in seen.seen} == {0}  # each a first delivery
    assert queue.waiting_webhooks(EP) == 1
