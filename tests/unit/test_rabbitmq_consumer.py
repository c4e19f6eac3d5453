"""The consumer's bookkeeping when a connection dies between a settlement being queued and the
connection running it: the delivery is the broker's again, and a later stop must not wait for
an acknowledgement that can never be sent (seen in CI: a worker stopped after a broker restart
hung until it was killed). A scripted connection plays the broker; the real broker's side is
in tests/integration/test_async_reliability.py."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from unittest import mock

import pika.exceptions
import pytest

from infermodes.errors import BrokerLoginRefused
from infermodes.queueing import rabbitmq
from infermodes.queueing.broker import Delivery, Settle
from infermodes.queueing.rabbitmq import RabbitConsumer

WAIT_SECONDS = 10.0


class FakeConnection:
    """pika's blocking connection as the consumer uses it: one channel whose consumer the
    broker holds (``consumer_tags``) until it cancels it."""

    def __init__(self) -> None:
        self.is_open = True
        self.channel_ = mock.MagicMock()
        self.channel_.is_open = True
        self.channel_.consumer_tags = []
        self.channel_.basic_consume.side_effect = self._consume
        self.on_message: Callable[..., None] | None = None

    def _consume(self, _queue: str, on_message: Callable[..., None]) -> str:
        self.on_message = on_message
        self.channel_.consumer_tags = ["tag"]
        return "tag"

    def channel(self) -> mock.MagicMock:
        return self.channel_

    def close(self) -> None:
        self.is_open = False


class ScriptedConnection(FakeConnection):
    """The first connection delivers one message, waits until its settlement is queued, then
    dies without running it; the next ones run what is queued and deliver nothing."""

    def __init__(self, first: bool, settled: threading.Event) -> None:
        super().__init__()
        self.first = first
        self.settled = settled
        self.queued: list[Callable[[], None]] = []
        self.acks: list[int] = []
        self.channel_.basic_ack.side_effect = self.acks.append
        self.delivered = False

    def add_callback_threadsafe(self, callback: Callable[[], None]) -> None:
        self.queued.append(callback)
        self.settled.set()

    def process_data_events(self, time_limit: float) -> None:
        assert self.on_message is not None
        if self.first and not self.delivered:
            self.delivered = True
            method = SimpleNamespace(delivery_tag=1)
            self.on_message(self.channel_, method, SimpleNamespace(headers={}), b"request")
            assert self.settled.wait(WAIT_SECONDS)
            self.is_open = False
            raise pika.exceptions.ConnectionClosedByBroker(320, "CONNECTION_FORCED - shutdown")
        while self.queued:
            self.queued.pop(0)()
        threading.Event().wait(min(time_limit, 0.01))


def test_a_settlement_lost_with_its_connection_does_not_hold_up_a_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settled = threading.Event()
    connections: list[ScriptedConnection] = []

    def connect(_url: str) -> ScriptedConnection:
        connections.append(ScriptedConnection(not connections, settled))
        return connections[-1]

    monkeypatch.setattr(rabbitmq, "connect", connect)
    monkeypatch.setattr(rabbitmq, "RECONNECT_MIN_SECONDS", 0.01)
    consumer = RabbitConsumer("amqp://127.0.0.1", "lost", max_attempts=3, concurrency=2)
    gauge: list[int] = []
    consumer.on_in_flight = gauge.append

    def handle(_delivery: Delivery) -> Settle:
        return Settle.ACK

    runner = threading.Thread(target=consumer.run, args=(handle,), daemon=True)
    runner.start()
    for _ in range(int(WAIT_SECONDS / 0.01)):
        if len(connections) == 2:
            break
        threading.Event().wait(0.01)
    assert len(connections) == 2, "the consumer did not reconnect"
    consumer.stop()
    runner.join(WAIT_SECONDS)
    assert not runner.is_alive(), "stop waited for a settlement of a lost connection"
    assert consumer.in_flight == 0
    assert sum(gauge) == 0 and gauge[0] == 1
    assert connections[0].acks == []  # never sent on the dead connection


def eventually(condition: Callable[[], bool]) -> bool:
    """Whether ``condition`` holds within ``WAIT_SECONDS`` (polled)."""
    for _ in range(int(WAIT_SECONDS / 0.01)):
        if condition():
            return True
        threading.Event().wait(0.01)
    return condition()


class LostMidWork(FakeConnection):
    """The first connection delivers one message and dies while its work runs; the next ones
    deliver nothing and run what is queued on them."""

    def __init__(self, first: bool) -> None:
        super().__init__()
        self.first = first
        self.polls = 0

    def add_callback_threadsafe(self, callback: Callable[[], None]) -> None:
        if not self.is_open:
            raise pika.exceptions.ConnectionWrongStateError("connection is closed")
        callback()

    def process_data_events(self, time_limit: float) -> None:
        self.polls += 1
        if self.first:
            assert self.on_message is not None
            self.on_message(
                self.channel_, SimpleNamespace(delivery_tag=1), SimpleNamespace(headers={}), b"r"
            )
            self.is_open = False
            raise pika.exceptions.ConnectionClosedByBroker(320, "CONNECTION_FORCED - cut")
        threading.Event().wait(min(time_limit, 0.01))


class LostMidWorkRun:
    """A consumer whose first connection is lost while a delivery's work waits for
    ``release``; the connections it made, the bodies it handled, the thread it runs on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, concurrency: int) -> None:
        self.connections: list[LostMidWork] = []
        self.release = threading.Event()
        self.handled: list[bytes] = []
        monkeypatch.setattr(rabbitmq, "connect", self._connect)
        monkeypatch.setattr(rabbitmq, "RECONNECT_MIN_SECONDS", 0.01)
        self.consumer = RabbitConsumer("amqp://127.0.0.1", "cut", 3, concurrency)
        self.runner = threading.Thread(target=self.consumer.run, args=(self._handle,), daemon=True)

    def _connect(self, _url: str) -> LostMidWork:
        self.connections.append(LostMidWork(not self.connections))
        return self.connections[-1]

    def _handle(self, delivery: Delivery) -> Settle:
        assert self.release.wait(WAIT_SECONDS)
        self.handled.append(delivery.body)
        return Settle.ACK


def test_a_connection_lost_mid_work_is_subscribed_again_once_that_work_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lost delivery's work still occupies its thread: subscribing at once with the full
    prefetch would hold deliveries no thread can take. The gauge keeps counting that work."""
    run = LostMidWorkRun(monkeypatch, concurrency=1)
    connections, release, consumer, runner = run.connections, run.release, run.consumer, run.runner
    gauge: list[int] = []
    consumer.on_in_flight = gauge.append
    runner.start()
    try:
        assert eventually(lambda: len(connections) == 2 and connections[1].polls >= 2)
        assert not connections[1].channel_.basic_consume.called
        assert (consumer.in_flight, sum(gauge)) == (1, 1)
        assert not consumer.consuming.is_set()
    finally:
        release.set()
    assert eventually(consumer.consuming.is_set)
    assert connections[1].channel_.basic_consume.call_count == 1
    assert (consumer.in_flight, sum(gauge)) == (0, 0)
    consumer.stop()
    runner.join(WAIT_SECONDS)
    assert not runner.is_alive()
    assert connections[0].channel_.basic_ack.call_count == 0  # never on the dead connection


def test_a_connection_lost_mid_work_subscribes_at_once_to_the_slots_left_and_then_the_freed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One lost delivery's work holds one of three slots: the new connection subscribes at
    once with a prefetch of 2, and once that work ends subscribes a second consumer with a
    prefetch of 1 (RabbitMQ applies a prefetch only to the consumers subscribed after it)."""
    run = LostMidWorkRun(monkeypatch, concurrency=3)
    connections, release, consumer, runner = run.connections, run.release, run.consumer, run.runner

    def prefetches() -> list[int]:
        return [c.kwargs["prefetch_count"] for c in connections[1].channel_.basic_qos.mock_calls]

    runner.start()
    try:
        assert eventually(lambda: len(connections) == 2 and consumer.consuming.is_set())
        assert (prefetches(), consumer.in_flight) == ([2], 1)  # the lost work runs on
        assert connections[1].channel_.basic_consume.call_count == 1
    finally:
        release.set()
    assert eventually(lambda: connections[1].channel_.basic_consume.call_count == 2)
    assert (prefetches(), consumer.in_flight) == ([2, 1], 0)
    consumer.stop()
    runner.join(WAIT_SECONDS)
    assert not runner.is_alive()
    assert connections[1].channel_.basic_cancel.call_count == 2  # each consumer


def test_a_stop_while_a_lost_connections_work_runs_finishes_it_and_never_subscribes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every slot is the lost work's (a prefetch of 0 would be unlimited): no subscription."""
    run = LostMidWorkRun(monkeypatch, concurrency=1)
    connections, release, consumer, runner = run.connections, run.release, run.consumer, run.runner
    handled = run.handled
    runner.start()
    assert eventually(lambda: len(connections) == 2 and connections[1].polls >= 2)
    consumer.stop()
    runner.join(0.2)
    assert runner.is_alive()  # the lost delivery's work still runs: the stop waits for it
    release.set()
    runner.join(WAIT_SECONDS)
    assert not runner.is_alive()
    assert handled == [b"r"] and consumer.in_flight == 0
    assert not connections[1].channel_.basic_consume.called
    assert not connections[1].is_open  # closed on the way out


def test_a_stop_with_the_broker_gone_keeps_the_loop_turning_while_the_lost_work_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rollout during a broker restart: the connection is lost mid-work, no new one can be
    made, then a stop. The consumer waits for that work (there is no connection to settle it
    on: the broker redelivers it) and its loop turns meanwhile, so the liveness probe does not
    kill a worker that is finishing its work; it returns once the work ended."""
    run = LostMidWorkRun(monkeypatch, concurrency=1)
    consumer, runner, refused = run.consumer, run.runner, []

    def broker_down_after_the_first(url: str) -> LostMidWork:
        if run.connections:
            refused.append(url)
            raise ConnectionRefusedError(111, "Connection refused")
        return run._connect(url)

    monkeypatch.setattr(rabbitmq, "connect", broker_down_after_the_first)
    runner.start()
    try:
        assert eventually(lambda: len(refused) >= 2)
        consumer.stop()
        stopped = consumer.turned
        assert eventually(lambda: consumer.turned > stopped + 0.5)  # several turns, draining
        assert runner.is_alive() and consumer.in_flight == 1
    finally:
        run.release.set()
    runner.join(WAIT_SECONDS)
    assert not runner.is_alive()
    assert run.handled == [b"r"] and len(run.connections) == 1  # no reconnect once stopped


class CancelledConnection(FakeConnection):
    """A connection whose consumer the broker cancels (its queue deleted) while the connection
    stays open, as RabbitMQ does: pika raises nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.polls = 0

    def process_data_events(self, time_limit: float) -> None:
        self.polls += 1
        if self.polls == 3:
            self.channel_.consumer_tags = []  # Basic.Cancel from the broker, dispatched
        threading.Event().wait(min(time_limit, 0.01))


def test_a_consumer_the_broker_cancels_is_not_ready_and_subscribes_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connections: list[CancelledConnection] = []
    readiness: list[bool] = []

    def connect(_url: str) -> CancelledConnection:
        readiness.append(consumer.consuming.is_set())  # never ready between two connections
        connections.append(CancelledConnection())
        return connections[-1]

    monkeypatch.setattr(rabbitmq, "connect", connect)
    monkeypatch.setattr(rabbitmq, "RECONNECT_MIN_SECONDS", 0.01)
    consumer = RabbitConsumer("amqp://127.0.0.1", "cancelled", max_attempts=3, concurrency=1)
    runner = threading.Thread(target=consumer.run, args=(lambda _d: Settle.ACK,), daemon=True)
    runner.start()
    for _ in range(int(WAIT_SECONDS / 0.01)):
        if len(connections) >= 2 and consumer.consuming.is_set():
            break
        threading.Event().wait(0.01)
    consumer.stop()
    runner.join(WAIT_SECONDS)
    assert not runner.is_alive()
    assert len(connections) >= 2, "a cancelled consumer stayed subscribed to nothing"
    assert connections[0].is_open is False  # closed: what it held is the broker's again
    assert readiness[:2] == [False, False]
    assert not consumer.consuming.is_set()  # stopped


def test_a_login_refused_for_a_while_raises_and_anything_else_between_starts_the_count_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A consumer that retried a refused login forever never read a mended broker Secret (a
    container reads it at start): after ``LOGIN_REFUSED_EXIT_SECONDS`` of refusals it raises,
    for the worker to exit; a broker that answers otherwise in between (down, not refusing)
    starts the count again."""
    clock = [100.0]
    monkeypatch.setattr(rabbitmq.time, "monotonic", lambda: clock[0])
    refused = pika.exceptions.ProbableAuthenticationError("ACCESS_REFUSED")
    down = pika.exceptions.AMQPConnectionError("connection refused")
    since = rabbitmq.refused_login_since(refused, None)
    assert since == 100.0
    clock[0] += rabbitmq.LOGIN_REFUSED_EXIT_SECONDS - 1
    assert rabbitmq.refused_login_since(refused, since) == 100.0
    assert rabbitmq.refused_login_since(down, since) is None  # down: counted afresh after it
    clock[0] += 1
    with pytest.raises(BrokerLoginRefused, match="refused every login for 15 s"):
        rabbitmq.refused_login_since(refused, since)


def test_a_consumer_refused_at_every_login_gives_up_with_nothing_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts: list[str] = []

    def connect(url: str) -> FakeConnection:
        attempts.append(url)
        raise pika.exceptions.ProbableAccessDeniedError("ACCESS_REFUSED")

    monkeypatch.setattr(rabbitmq, "connect", connect)
    monkeypatch.setattr(rabbitmq, "RECONNECT_MIN_SECONDS", 0.01)
    monkeypatch.setattr(rabbitmq, "LOGIN_REFUSED_EXIT_SECONDS", 0.05)
    consumer = RabbitConsumer("amqp://127.0.0.1", "refused", max_attempts=3, concurrency=1)
    with pytest.raises(BrokerLoginRefused):
        consumer.run(lambda _d: Settle.ACK)
    assert len(attempts) >= 2  # retried before giving up
    assert consumer.in_flight == 0 and not consumer.consuming.is_set()


def test_the_loop_turns_while_it_backs_off_between_reconnects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broker down for a while: the consumer waits up to ``RECONNECT_MAX_SECONDS`` between
    connect attempts, and its loop turns meanwhile (it did not: a worker whose liveness stall
    bound was under the back-off failed its probe in an ordinary outage); a stop ends the wait
    at once."""
    monkeypatch.setattr(rabbitmq, "RECONNECT_MIN_SECONDS", 60.0)  # one long back-off
    attempts: list[str] = []

    def broker_down(url: str) -> FakeConnection:
        attempts.append(url)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(rabbitmq, "connect", broker_down)
    consumer = RabbitConsumer("amqp://127.0.0.1", "down", max_attempts=3, concurrency=1)
    runner = threading.Thread(target=consumer.run, args=(lambda _d: Settle.ACK,), daemon=True)
    runner.start()
    assert eventually(lambda: len(attempts) == 1 and consumer.turned is not None)
    backing_off = consumer.turned
    assert backing_off is not None
    assert eventually(lambda: (consumer.turned or 0) > backing_off + 3 * rabbitmq.POLL_SECONDS)
    assert len(attempts) == 1  # still within the one back-off
    consumer.stop()
    runner.join(WAIT_SECONDS)
    assert not runner.is_alive() and len(attempts) == 1  # the stop ended the wait


def test_an_outage_is_warned_once_reminded_each_minute_and_its_end_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broker away for long (or a login it keeps refusing) stays in the log's last minutes;
    the attempts in between are DEBUG, and the next outage starts its own count."""
    now = [100.0]
    outage = rabbitmq.Outage("consuming q", remind_seconds=60, clock=lambda: now[0])
    lost = pika.exceptions.AMQPConnectionError("refused")
    caplog.set_level("DEBUG", "infermodes.rabbitmq")
    for at in (100.0, 110.0, 159.0, 161.0, 200.0, 222.0):
        now[0] = at
        outage.failed(lost, "; reconnecting in 5.0 s")
    now[0] = 230.0
    outage.recovered()
    now[0] = 240.0
    outage.failed(lost)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("WARNING", "consuming q: broker unreachable (AMQPConnectionError: refused); "
                    "reconnecting in 5.0 s"),
        ("DEBUG", "consuming q: broker still unreachable (refused)"),
        ("DEBUG", "consuming q: broker still unreachable (refused)"),
        ("WARNING", "consuming q: still no broker after 61 s and 4 failed attempts (the last: "
                    "unreachable (AMQPConnectionError: refused)); reconnecting in 5.0 s"),
        ("DEBUG", "consuming q: broker still unreachable (refused)"),
        ("WARNING", "consuming q: still no broker after 122 s and 6 failed attempts (the last: "
                    "unreachable (AMQPConnectionError: refused)); reconnecting in 5.0 s"),
        ("INFO", "consuming q: broker reachable again after 130.0 s"),
        ("WARNING", "consuming q: broker unreachable (AMQPConnectionError: refused)"),
    ]  # fmt: skip


def test_a_handshake_the_broker_never_answers_is_an_outage_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pika raises its own AMQPConnectorStackTimeout, no AMQPError, when a connect's handshake
    outlasts its stack timeout (a broker slow to answer; in the drain benchmark, a worker
    paused mid-connect): the webhook outbox's consumer died of it and took the worker down
    ("its senders stopped; the worker stops too"). It is retried like any outage."""
    silent = socket.create_server(("127.0.0.1", 0))  # takes connections, never answers
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while len(accepted) < 3:
                accepted.append(silent.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    port = silent.getsockname()[1]
    monkeypatch.setattr(rabbitmq, "RECONNECT_MIN_SECONDS", 0.01)
    url = f"amqp://guest:guest@127.0.0.1:{port}/%2F?stack_timeout=0.3"
    consumer = RabbitConsumer(url, "silent", max_attempts=3, concurrency=1)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run(lambda _d: Settle.ACK)
        except BaseException as exc:  # what the test looks for
            failures.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + WAIT_SECONDS
    while len(accepted) < 2 and not failures and time.monotonic() < deadline:
        time.sleep(0.02)
    consumer.stop()
    runner.join(WAIT_SECONDS)
    silent.close()
    for connection in accepted:
        connection.close()
    assert not failures, failures
    assert len(accepted) >= 2  # it connected again after the first handshake timed out


@pytest.mark.parametrize(
    ("query", "handshake"),
    [("", rabbitmq.BROKER_CONNECT_TIMEOUT_SECONDS), ("?stack_timeout=0.3", 0.3)],
    ids=["none named", "named"],
)
def test_a_connects_handshake_is_bounded_by_the_connect_timeout_unless_the_url_names_one(
    query: str, handshake: float
) -> None:
    """pika's own handshake bound is 15 s, three times the connect timeout a worker's liveness
    stall allows for (docs/async.md): a broker that takes the connection and never answers
    held a connect that long."""
    seen: list[pika.connection.Parameters] = []
    with mock.patch.object(rabbitmq.pika, "BlockingConnection", side_effect=seen.append):
        rabbitmq.connect(f"amqp://guest:guest@127.0.0.1:5672/%2F{query}")
    assert [params.stack_timeout for params in seen] == [handshake]
    assert seen[0].socket_timeout == rabbitmq.BROKER_CONNECT_TIMEOUT_SECONDS
