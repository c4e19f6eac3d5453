"""``infermodes worker``: consume one async endpoint's queue, predict, store, notify, then ack.

Two halves. ``Processor`` does everything for one delivery (decide, read, predict, write,
notify) and says how to settle it; it never touches the consumer channel. ``Worker`` owns the
connection: it runs on the main thread (pika's blocking connection is single-threaded), hands
each delivery to a pool thread (prefetch = pool size = maxConcurrentInvocationsPerInstance, so
every delivered message is being worked on), and settles it back on the main thread.

Guarantees, and where they come from:
- a message is acked only after its output (or error object) is written and notified;
- a redelivery whose result already exists is notified again and acked, never recomputed, so
  there is exactly one result object per request (consumers de-duplicate notifications by id);
- the broker's delivery count bounds attempts across crashes, restarts and transient errors;
- SIGTERM stops consuming, lets in-flight requests finish and ack, and exits 0.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from pika.adapters.blocking_connection import BlockingChannel
from prometheus_client import CollectorRegistry, start_http_server

from infermodes import codecs
from infermodes.errors import (
    EXIT_MODEL_LOAD_FAILED,
    BrokerUnavailable,
    ModelLoadError,
    StorageError,
)
from infermodes.invocations import (
    Failure,
    InvocationRequest,
    MalformedMessage,
    Step,
    classify,
    delivery_count,
    error_record,
    parse_request,
    plan,
    retry_delay,
)
from infermodes.logs import configure_logging
from infermodes.metrics import WorkerMetrics
from infermodes.notifications import INLINE_RESULT_LIMIT, Notifier, error_body, success_body
from infermodes.queue import (
    BROKER_ERRORS,
    ChannelPool,
    connect,
    declare_topology,
    queue_name,
)
from infermodes.serving.model import XGBoostModel
from infermodes.serving.streaming import Sink, predict_stream
from infermodes.storage import Storage

if TYPE_CHECKING:
    import pika
    from pika.spec import Basic, BasicProperties

    from infermodes.settings import WorkerSettings

log = logging.getLogger("infermodes.worker")

POLL_SECONDS = 0.2
RECONNECT_MIN_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 5.0
ERROR_RECORD_LIMIT = 1024 * 1024
NOTIFY_CONNECTIONS = 8


class Settle(StrEnum):
    ACK = "ack"
    REQUEUE = "requeue"  # another attempt; the broker counts it
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class Result:
    settle: Settle
    outcome: str  # one of invocations.OUTCOMES


@dataclass(frozen=True)
class Target:
    """Where an error about one message goes; ``request`` is None for an unreadable message."""

    inference_id: str | None
    endpoint: str
    failure_location: str | None
    request: InvocationRequest | None

    @classmethod
    def of(cls, request: InvocationRequest) -> Target:
        return cls(request.inference_id, request.endpoint, request.failure_location, request)


class _Head:
    """Writes through to ``sink`` and keeps the first bytes, to inline a small result in the
    notification without reading the output back."""

    def __init__(self, sink: Sink, limit: int) -> None:
        self.sink = sink
        self.limit = limit
        self.head = bytearray()

    def write(self, data: bytes) -> None:
        self.sink.write(data)
        room = self.limit + 1 - len(self.head)
        if room > 0:
            self.head += data[:room]

    @property
    def small(self) -> bytes | None:
        return bytes(self.head) if len(self.head) <= self.limit else None


class Notifies(Protocol):
    """``notifications.Notifier``: raises BrokerUnavailable when the topic did not confirm."""

    def send(self, endpoint: str, body: dict[str, object], success: bool) -> None: ...


class Processor:
    """Everything done with one delivery; returns how to settle it."""

    def __init__(
        self,
        settings: WorkerSettings,
        model: XGBoostModel,
        storage: Storage,
        notifier: Notifies,
        metrics: WorkerMetrics,
        stopping: threading.Event,
    ) -> None:
        self.settings = settings
        self.model = model
        self.storage = storage
        self.notifier = notifier
        self.metrics = metrics
        self.stopping = stopping

    def handle(self, body: bytes, count: int) -> Result:
        """A notification the broker did not confirm requeues the message: the redelivery
        finds the result stored and only notifies."""
        try:
            return self._dispatch(body, count)
        except BrokerUnavailable as exc:
            log.warning("cannot notify (%s); requeueing", exc)
            return Result(Settle.REQUEUE, "retried")

    def _dispatch(self, body: bytes, count: int) -> Result:
        try:
            request = parse_request(body)
        except MalformedMessage as exc:
            salvage = exc.salvage
            target = Target(
                salvage.inference_id,
                salvage.endpoint or self.settings.endpoint,
                salvage.failure_location,
                None,
            )
            return self._on_failure(target, classify(exc), count)
        try:
            return self._handle(request, count)
        except BrokerUnavailable:
            raise  # not a failure of the request: its result may be stored already
        except Exception as exc:
            log.warning("inference %s failed: %s", request.inference_id, exc)
            return self._on_failure(Target.of(request), classify(exc), count)

    def _handle(self, request: InvocationRequest, count: int) -> Result:
        step = plan(
            output_exists=self.storage.exists(request.output_location),
            error_exists=self.storage.exists(request.failure_location),
            delivery_count=count,
            max_attempts=self.settings.max_attempts,
            now=time.time(),
            expires_at=request.expires_at,
        )
        if step is Step.RESEND_SUCCESS:
            self._notify_success(request, self._small_output(request))
            return Result(Settle.ACK, "duplicate")
        if step is Step.RESEND_ERROR:
            self._notify_error(Target.of(request), self._stored_failure(request))
            return Result(Settle.ACK, "duplicate")
        if step is Step.GIVE_UP:
            return self._give_up(Target.of(request), count, "")
        if step is Step.EXPIRE:
            ttl = request.expires_at - request.accepted_at
            failure = Failure("Expired", f"the request's TTL of {ttl:.0f} s passed", retry=False)
            self._finish_with_error(Target.of(request), failure, count + 1)
            return Result(Settle.ACK, "expired")
        result = self._predict(request)
        self._notify_success(request, result)
        return Result(Settle.ACK, "success")

    def _predict(self, request: InvocationRequest) -> bytes | None:
        settings = self.settings
        with (
            self.storage.open_read(request.input_location) as source,
            self.storage.open_write(request.output_location) as sink,
        ):
            head = _Head(sink, INLINE_RESULT_LIMIT)
            rows = predict_stream(
                self.model,
                source,
                head,
                content_type=codecs.content_type_of(request.content_type),
                accept=codecs.accept_of(request.accept),
                timeout=request.invocation_timeout_seconds,
                chunk_bytes=settings.chunk_bytes,
                max_json_bytes=settings.max_json_bytes,
            )
        self.metrics.rows_predicted.inc(rows)
        return head.small

    def _on_failure(self, target: Target, failure: Failure, count: int) -> Result:
        """A permanent failure ends the request now; a retryable one is requeued after a
        backoff until the attempt budget is spent."""
        if not failure.retry:
            self._finish_with_error(target, failure, count + 1)
            return Result(Settle.ACK, "error")
        if count + 1 >= self.settings.max_attempts:
            return self._give_up(target, count + 1, f"; last error: {failure.message}")
        settings = self.settings
        delay = retry_delay(
            count, settings.retry_backoff_seconds, settings.retry_backoff_max_seconds
        )
        log.warning(
            "inference %s: attempt %d failed (%s), retrying in %.1f s",
            target.inference_id,
            count + 1,
            failure.message,
            delay,
        )
        self.stopping.wait(delay)
        return Result(Settle.REQUEUE, "retried")

    def _give_up(self, target: Target, attempts: int, detail: str) -> Result:
        failure = Failure(
            "AttemptsExhausted",
            f"processing failed {attempts} time(s), the maximum{detail}",
            retry=False,
        )
        try:
            self._finish_with_error(target, failure, attempts)
        except BrokerUnavailable:
            log.error("inference %s: dead-lettered without a notification", target.inference_id)
        return Result(Settle.DEAD_LETTER, "dead_lettered")

    def _finish_with_error(self, target: Target, failure: Failure, attempts: int) -> None:
        """One error object (when we know where) and one error notification."""
        if target.failure_location:
            record = error_record(
                target.inference_id,
                failure,
                attempts=attempts,
                input_location=target.request.input_location if target.request else None,
                failed_at=time.time(),
            )
            try:
                self.storage.put_bytes(target.failure_location, record)
            except StorageError as exc:
                log.error(
                    "inference %s: cannot write the error object: %s", target.inference_id, exc
                )
        self._notify_error(target, failure)

    def _small_output(self, request: InvocationRequest) -> bytes | None:
        if self.storage.size(request.output_location) > INLINE_RESULT_LIMIT:
            return None
        return self.storage.get_bytes(request.output_location)

    def _stored_failure(self, request: InvocationRequest) -> Failure:
        try:
            record = json.loads(
                self.storage.get_bytes(request.failure_location, ERROR_RECORD_LIMIT)
            )
            return Failure(str(record["reason"]), str(record["message"]), retry=False)
        except (ValueError, KeyError, TypeError, StorageError):
            return Failure("Failed", f"see {request.failure_location}", retry=False)

    def _notify_success(self, request: InvocationRequest, result: bytes | None) -> None:
        body = success_body(request, time.time(), result)
        self.notifier.send(request.endpoint, body, success=True)

    def _notify_error(self, target: Target, failure: Failure) -> None:
        body = error_body(
            target.inference_id,
            target.endpoint,
            failure,
            target.failure_location,
            time.time(),
            target.request,
        )
        self.notifier.send(target.endpoint, body, success=False)


class Worker:
    """Owns the consumer connection; reconnects with backoff when the broker goes away."""

    def __init__(
        self, settings: WorkerSettings, processor: Processor, metrics: WorkerMetrics
    ) -> None:
        self.settings = settings
        self.processor = processor
        self.metrics = metrics
        self.stopping = processor.stopping
        self.pool = ThreadPoolExecutor(
            settings.max_concurrent_invocations, thread_name_prefix="invocation"
        )
        self._lock = threading.Lock()
        self._in_flight = 0

    def request_stop(self, signum: int, _frame: object = None) -> None:
        log.info("signal %d: stopping after in-flight requests", signum)
        self.stopping.set()

    def _track(self, delta: int) -> None:
        with self._lock:
            self._in_flight += delta
        self.metrics.in_flight.inc(delta)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def run(self) -> int:
        delay = RECONNECT_MIN_SECONDS
        while True:
            try:
                self._consume()
                break
            except BROKER_ERRORS as exc:
                if self.stopping.is_set():
                    log.warning(
                        "broker lost while stopping (%s); in-flight work is redelivered", exc
                    )
                    break
                log.warning("broker connection lost (%s); reconnecting in %.1f s", exc, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
        self.pool.shutdown(wait=True)
        log.info("stopped")
        return 0

    def _consume(self) -> None:
        settings = self.settings
        connection = connect(settings.broker_url)
        channel = connection.channel()
        channel.basic_qos(prefetch_count=settings.max_concurrent_invocations)
        declare_topology(channel, settings.endpoint, settings.max_attempts)
        tag = channel.basic_consume(
            queue_name(settings.endpoint),
            functools.partial(self._on_message, connection),
        )
        log.info("consuming %s", queue_name(settings.endpoint))
        consuming = True
        while True:
            connection.process_data_events(time_limit=POLL_SECONDS)
            if self.stopping.is_set():
                if consuming:
                    channel.basic_cancel(tag)
                    consuming = False
                    log.info("stopped consuming; %d request(s) in flight", self.in_flight)
                if self.in_flight == 0:
                    break
        connection.close()

    def _on_message(
        self,
        connection: pika.BlockingConnection,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        self._track(+1)
        count = delivery_count(properties.headers)
        self.pool.submit(self._work, connection, channel, method.delivery_tag, body, count)

    def _work(
        self,
        connection: pika.BlockingConnection,
        channel: BlockingChannel,
        tag: int,
        body: bytes,
        count: int,
    ) -> None:
        started = time.perf_counter()
        try:
            result = self.processor.handle(body, count)
        except BaseException:
            log.exception("unexpected error handling a message; requeueing it")
            result = Result(Settle.REQUEUE, "retried")
        self.metrics.messages.labels(result.outcome).inc()
        self.metrics.processing_duration.labels(result.outcome).observe(
            time.perf_counter() - started
        )
        try:
            connection.add_callback_threadsafe(
                functools.partial(self._settle, channel, tag, result.settle)
            )
        except BROKER_ERRORS:
            log.warning("connection gone before settling; the broker will redeliver")
            self._track(-1)

    def _settle(self, channel: BlockingChannel, tag: int, settle: Settle) -> None:
        """Runs on the connection's thread."""
        try:
            if not channel.is_open:
                log.warning("channel closed before settling; the broker will redeliver")
            elif settle is Settle.ACK:
                channel.basic_ack(tag)
            elif settle is Settle.REQUEUE:
                channel.basic_nack(tag, requeue=True)
            else:
                channel.basic_reject(tag, requeue=False)
        finally:
            self._track(-1)


def build(settings: WorkerSettings, registry: CollectorRegistry) -> Worker:
    """Load the model and wire the parts; raises ModelLoadError."""
    storage = Storage()
    model = XGBoostModel.load(
        settings.model_uri,
        storage,
        allow_pickle=settings.allow_pickle,
        threads=settings.predict_threads,
    )
    log.info("model %s loaded in %.3f s", settings.model_uri, model.load_seconds)
    metrics = WorkerMetrics(registry)
    channel = ChannelPool(
        settings.broker_url,
        min(settings.max_concurrent_invocations, NOTIFY_CONNECTIONS),
        lambda ch: declare_topology(ch, settings.endpoint, settings.max_attempts),
    )
    notifier = Notifier(channel, metrics, settings.webhook_urls, settings.webhook_attempts)
    stopping = threading.Event()
    processor = Processor(settings, model, storage, notifier, metrics, stopping)
    return Worker(settings, processor, metrics)


def run(settings: WorkerSettings) -> int:
    """Entry point of ``infermodes worker``; returns the process exit code."""
    configure_logging(settings.log_level)
    registry = CollectorRegistry()
    try:
        worker = build(settings, registry)
    except ModelLoadError as exc:
        log.error("cannot load model: %s", exc)
        return EXIT_MODEL_LOAD_FAILED
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, settings.metrics_host, registry)
        log.info("metrics on %s:%d", settings.metrics_host, settings.metrics_port)
    return worker.run()
