"""Every Prometheus metric infermodes exports is defined here, on an injected registry.

Latency buckets start at 100 µs: an XGBoost prediction of one row takes ~0.15 ms, so the
usual 5 ms first bucket would put every request in one bucket. Labels stay bounded
(route templates, status codes, outcomes), never ids or raw paths.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger("infermodes.metrics")

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.0075,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
# An async request waits up to its TTL (6 h at most) and is processed for up to its timeout
# (1 h at most); a batch attempt takes up to its timeout: each lands in a finite bucket.
PROCESSING_BUCKETS = (
    *LATENCY_BUCKETS, 120.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
)  # fmt: skip
SIZE_BUCKETS = tuple(float(4**power) for power in range(3, 16))  # 64 B .. 1 GiB
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# The series the autoscaler reads from each model server (``ServerLoad``)
REQUEST_DURATION = "infermodes_http_request_duration_seconds"
REQUESTS_IN_FLIGHT = "infermodes_http_requests_in_flight"
INVOCATIONS_ROUTE = "/invocations"
# The series the operator reads from each async worker
WORKER_IN_FLIGHT = "infermodes_async_in_flight"
# webhook jobs a worker's senders hold: apart from its requests, which the scaler counts
WEBHOOK_JOBS_IN_FLIGHT = "infermodes_async_webhook_jobs_in_flight"
DEQUEUED_ACCEPTED_AT = "infermodes_async_dequeued_accepted_timestamp_seconds"


def model_metrics(registry: CollectorRegistry) -> tuple[Histogram, Counter]:
    """The predict latency and rows scored, under the same names wherever a model predicts
    (the model server, the batch runner), so one dashboard reads both."""
    predict_duration = Histogram(
        "infermodes_model_predict_duration_seconds",
        "Time spent in the model's predict call.",
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    rows_predicted = Counter(
        "infermodes_model_rows_predicted",
        "Rows the model has scored.",
        registry=registry,
    )
    return predict_duration, rows_predicted


class ServerMetrics:
    """The model server's metrics (one instance per process, shared by all routes)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.request_duration = Histogram(
            REQUEST_DURATION,
            "Time from request start to response end, by route and status code.",
            ["route", "status_code"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.requests_in_flight = Gauge(
            REQUESTS_IN_FLIGHT,
            "Requests being handled now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.request_body_size = Histogram(
            "infermodes_http_request_body_size_bytes",
            "Size of invocation request bodies.",
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.predict_duration, self.rows_predicted = model_metrics(registry)
        self.model_load_duration = Gauge(
            "infermodes_model_load_duration_seconds",
            "How long loading the model artifact took.",
            registry=registry,
            multiprocess_mode="max",
        )
        # The per-request updates, bound once: prometheus_client's own methods check labels,
        # scan buckets and add a call per value (a third of the server's Python per one-row
        # request with them); these write the same values.
        self._in_flight = _value_of(self.requests_in_flight)
        self._rows = _value_of(self.rows_predicted)
        self._body_size = _observer(self.request_body_size)
        self._predict = _observer(self.predict_duration)
        self._durations: dict[tuple[str, int], Callable[[float], None]] = {}

    def request_started(self) -> None:
        self._in_flight.inc(1)

    def request_ended(self) -> None:
        self._in_flight.inc(-1)

    def request_took(self, route: str, status: int, seconds: float) -> None:
        observe = self._durations.get((route, status))
        if observe is None:
            observe = _observer(self.request_duration.labels(route, str(status)))
            self._durations[route, status] = observe
        observe(seconds)

    def body_received(self, size: int) -> None:
        self._body_size(size)

    def predicted(self, rows: int, seconds: float) -> None:
        self._predict(seconds)
        self._rows.inc(rows)


def _value_of(metric: Counter | Gauge) -> Any:
    """The value behind an unlabelled counter or gauge (prometheus_client's ``_value``): its
    ``inc`` is what ``Counter.inc`` and ``Gauge.inc``/``dec`` end in."""
    return metric._value


def _observer(histogram: Histogram) -> Callable[[float], None]:
    """``histogram.observe`` for an unlabelled histogram or a labelled one's child: the same two
    values change (the sum, and the first bucket whose bound is at least the amount, found by
    bisection instead of a scan). Amounts here are durations and sizes, never NaN."""
    total, buckets, bounds = histogram._sum, histogram._buckets, histogram._upper_bounds

    def observe(amount: float) -> None:
        total.inc(amount)
        buckets[bisect_left(bounds, amount)].inc(1)

    return observe


class WorkerMetrics:
    """The async worker's metrics, served on its side port. ``outcome`` is one of
    ``queueing.messages.Outcome``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "infermodes_async_messages",
            "Queue deliveries handled, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.processing_duration = Histogram(
            "infermodes_async_processing_duration_seconds",
            "Time from delivery to settlement of one message.",
            ["outcome"],
            buckets=PROCESSING_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            WORKER_IN_FLIGHT,
            "Messages this worker is working on (a lost broker connection's included).",
            registry=registry,
        )
        self.notifications = Counter(
            "infermodes_async_notifications",
            "Notifications sent, by channel (topic, webhook) and result (sent, failed).",
            ["channel", "result"],
            registry=registry,
        )
        self.webhook_jobs_in_flight = Gauge(
            WEBHOOK_JOBS_IN_FLIGHT,
            "Webhook jobs this worker's senders hold (POSTing, or waiting for the next try); "
            "not in infermodes_async_in_flight, which counts requests.",
            registry=registry,
        )
        self.webhook_jobs_unsent = Counter(
            "infermodes_async_webhook_jobs_unsent",
            "Webhook jobs settled without being sent, by reason (dead_lettered: in the "
            "outbox's dead-letter queue, confirmed, its sends failed, its webhooks refused "
            "or its senders killed each time; no_webhook: its webhook removed from the spec).",
            ["reason"],
            registry=registry,
        )
        self.webhook_jobs_returned = Counter(
            "infermodes_async_webhook_jobs_returned",
            "Webhook jobs put back in the outbox (confirmed), by reason (send_failed: a "
            "webhook gave up, the send counted in the job, delivered after its retry delay; "
            "stopping: the worker stopped before their tries; no_webhook: left to a worker "
            "with its webhook); none counts as a delivery of the job.",
            ["reason"],
            registry=registry,
        )
        self.storage_waits = Counter(
            "infermodes_async_storage_waits",
            "Back-offs waited, holding a request, for storage that failed for a while.",
            registry=registry,
        )
        self.rows_predicted = Counter(
            "infermodes_async_rows_predicted",
            "Input rows the worker has scored.",
            registry=registry,
        )
        self.time_in_backlog = Histogram(
            "infermodes_async_time_in_backlog_seconds",
            "From a request's acceptance to its first delivery to a worker (TimeInBacklog).",
            buckets=PROCESSING_BUCKETS,
            registry=registry,
        )
        self.total_processing_time = Histogram(
            "infermodes_async_total_processing_time_seconds",
            "From a request's acceptance to its result and notification, by outcome "
            "(TotalProcessingTime).",
            ["outcome"],
            buckets=PROCESSING_BUCKETS,
            registry=registry,
        )
        self.dequeued_accepted_at = Gauge(
            DEQUEUED_ACCEPTED_AT,
            "When the newest request this worker took from the queue was accepted (Unix "
            "time): whatever still waits was accepted after it.",
            registry=registry,
        )


UNKNOWN_ENDPOINT = "unknown"  # the endpoint label of a request for no endpoint served


# where a process answered a request without counting it by endpoint: a refusal HTTP itself
# made before the app saw the request (a head it cannot parse, too large, too slow), one of a
# check before routing (the caller, the signature, ``up``'s token), or a route's own answer
# (every route but those whose answers are counted by endpoint)
PROTOCOL, ADMISSION, ROUTE = "protocol", "admission", "route"


def stage_answers(registry: CollectorRegistry, process: str, stages: str) -> Counter:
    """``infermodes_<process>_answers_total{stage, code}``: the answers of one process that no
    per-endpoint series counts, so that every answer it gives is in some series; ``stages``
    tells which stages the process counts, in the help text."""
    return Counter(
        f"infermodes_{process}_answers",
        f"Answers not counted by endpoint, by stage ({stages}) and HTTP status code.",
        ["stage", "code"],
        registry=registry,
    )


def async_api_answers(registry: CollectorRegistry) -> Counter:
    """``infermodes async-api``'s answers but its accept route's, which are counted by endpoint
    (``AsyncApiMetrics``, which the gateway and ``up`` share: they count these in their own
    answers): the refusals HTTP made before its app saw the request, and its other routes'."""
    return stage_answers(
        registry,
        "async_api",
        "protocol: refused by HTTP before the app; route: any route's but the accept route's",
    )


class AsyncApiMetrics:
    """The accepting side's metrics: how many requests were queued or refused, and how long
    the broker took to confirm."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._codes: dict[str, set[str]] = {}  # the status codes counted, by endpoint
        self.accepted = Counter(
            "infermodes_async_requests",
            "Async invocation requests, by endpoint and HTTP status code.",
            ["endpoint", "status_code"],
            registry=registry,
        )
        self.enqueue_duration = Histogram(
            "infermodes_async_enqueue_duration_seconds",
            "Time to store an inline input and get the broker's publisher confirm.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def count(self, endpoint: str, status: int) -> None:
        """One answer of the accept route."""
        self._codes.setdefault(endpoint, set()).add(str(status))
        self.accepted.labels(endpoint, str(status)).inc()

    def forget(self, endpoint: str) -> None:
        """Remove an endpoint's series (it is gone), as ``GatewayMetrics.forget`` does."""
        for code in self._codes.pop(endpoint, ()):
            self.accepted.remove(endpoint, code)


class BatchMetrics:
    """A batch instance's metrics on its side port: the model server's predict latency and
    rows under the same names, and progress (objects, records, mini-batches, retries) that the
    operator and a Prometheus scraping the job's pods read while it runs. ``outcome`` of a unit
    (an object or a byte range of one) is succeeded, skipped or failed; of a mini-batch attempt,
    ok or failed (then retried, or failing its object)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.predict_duration, self.rows_predicted = model_metrics(registry)
        self.units_assigned = Gauge(
            "infermodes_batch_units_assigned",
            "Objects and byte ranges of large objects this instance was given.",
            registry=registry,
        )
        self.units = Counter(
            "infermodes_batch_units",
            "Objects and byte ranges finished, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.records = Counter(
            "infermodes_batch_records",
            "Records transformed, as splitType cuts them (a line; a whole JSON document with "
            "splitType None), of which a JSON one may hold several rows.",
            registry=registry,
        )
        self.input_bytes = Counter(
            "infermodes_batch_input_bytes",
            "Input bytes transformed (after decompression).",
            registry=registry,
        )
        self.minibatch_duration = Histogram(
            "infermodes_batch_minibatch_duration_seconds",
            "Decode, predict and encode of one mini-batch attempt, by outcome.",
            ["outcome"],
            buckets=PROCESSING_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "infermodes_batch_retries",
            "Mini-batch attempts that failed or timed out and were retried.",
            registry=registry,
        )


def shared_values_in(folder: str) -> None:
    """Metrics of this process and the workers it forks from here on are shared through files
    in ``folder`` (prometheus_client's multiprocess mode: ``/metrics`` of any worker adds them
    up)."""
    os.environ[MULTIPROCESS_ENV] = folder


def worker_exited(pid: int) -> None:
    """A forked worker is gone: its live gauges (requests in flight) leave the shared sum."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # unannotated upstream


def use_forked_worker_values() -> None:
    """In a worker process forked before it created any metric (``infermodes serve``'s), make
    multiprocess values that skip prometheus_client's fork check on every update (a
    ``getpid`` and a Python call per value) and write their 16 bytes straight into the mmap at
    their key's position (found once: a key's position never changes, and the mmap object
    stays mapped when the file grows for a new key, the dict then mapping it anew): same files,
    same keys, same bytes, same exported series, about half the CPU per request's metrics.
    Call it before creating the metrics; only with ``PROMETHEUS_MULTIPROC_DIR`` set."""
    import struct
    import threading

    from prometheus_client import values

    base: Any = values.MultiProcessValue()  # type: ignore[no-untyped-call]  # unannotated upstream
    lock = threading.Lock()  # the offload thread records predictions too
    two_doubles = struct.Struct("dd").pack  # value and timestamp, as MmapedDict writes them

    class WorkerValue(base):  # type: ignore[misc]  # a class made by a function
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            position = self._file._positions[self._key]  # the key was written by __init__
            self._mmap = self._file._m
            self._slot = slice(position, position + 16)

        def inc(self, amount: float) -> None:
            with lock:
                self._value += amount
                self._timestamp = 0.0
                # one slice assignment, as MmapedDict does it (pack_into would let a reader
                # see zeros mid-write)
                self._mmap[self._slot] = two_doubles(self._value, 0.0)

        def set(self, value: float, timestamp: float | None = None) -> None:
            with lock:
                self._value = value
                self._timestamp = timestamp or 0.0
                self._mmap[self._slot] = two_doubles(value, self._timestamp)

        def get(self) -> float:
            with lock:
                return float(self._value)

    values.ValueClass = WorkerValue


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text exposition. With several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set),
    all workers' values are aggregated, whichever worker answers the scrape."""
    if os.environ.get(MULTIPROCESS_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # unannotated upstream
    return generate_latest(registry), CONTENT_TYPE_LATEST


READY_PATH = "/readyz"
LIVENESS_PATH = "/healthz"  # the model server's liveness port (``server.liveness``)


def text_headers(body: bytes) -> list[tuple[str, str]]:
    return [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]


class _MetricsHttpServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress never holds the process at exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's name
        """Scrapes and probes every second are not worth a log line each."""


def serve_metrics(
    port: int,
    host: str,
    registry: CollectorRegistry,
    ready: Callable[[], bool] | None = None,
    stuck: Callable[[], str | None] | None = None,
) -> WSGIServer:
    """Serve ``registry`` at every path on a daemon thread (Prometheus reads ``/metrics``);
    with ``ready``, ``GET /readyz`` answers 200 while it holds and 503 otherwise: a readiness
    probe that means more than an open port; with ``stuck``, ``GET /healthz`` answers 503
    with the reason it gives (a liveness probe's), 200 while it gives none."""
    expose = make_wsgi_app(registry)
    checks: dict[str, Callable[[], str | None]] = {}
    if ready is not None:
        checks[READY_PATH] = lambda: None if ready() else "not ready"
    if stuck is not None:
        checks[LIVENESS_PATH] = stuck
    passed = {READY_PATH: "ready", LIVENESS_PATH: "alive"}

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        check = checks.get(path)
        if check is None:
            return expose(environ, start_response)  # type: ignore[no-any-return]
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD"):
            refusal = f"{path} answers GET and HEAD, not {method}\n".encode()
            start_response(
                "405 Method Not Allowed", [*text_headers(refusal), ("Allow", "GET, HEAD")]
            )
            return [refusal]
        problem = check()
        status = "200 OK" if problem is None else "503 Service Unavailable"
        body = f"{passed[path] if problem is None else problem}\n".encode()
        start_response(status, text_headers(body))  # HEAD: GET's headers, no body
        return [] if method == "HEAD" else [body]

    return serve_wsgi(host, port, app, "metrics-http")


def wsgi_server(host: str, port: int, app: Any) -> WSGIServer:
    """A quiet WSGI server for ``app``, bound and listening, not yet serving: the side ports
    (metrics, readiness, liveness), each request on a thread of its own."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    class Server(_MetricsHttpServer):
        address_family = family  # an IPv6 host needs its own family

    return make_server(str(address[0]), port, app, Server, handler_class=_QuietHandler)


def serve_wsgi(host: str, port: int, app: Any, thread_name: str) -> WSGIServer:
    """Serve the WSGI ``app`` on a daemon thread: the side ports of processes whose main
    thread does other work."""
    server = wsgi_server(host, port, app)
    threading.Thread(target=server.serve_forever, name=thread_name, daemon=True).start()
    return server


@dataclass(frozen=True)
class ServerLoad:
    """A model server's load as its own ``/metrics`` tells it: the autoscaler's input."""

    invocations_total: float  # all /invocations answered so far, any status
    in_flight: float


def parse_server_load(text: str) -> ServerLoad:
    """Read ``ServerLoad`` from a model server's exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    invocations = 0.0
    in_flight = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == f"{REQUEST_DURATION}_count"
                and sample.labels.get("route") == INVOCATIONS_ROUTE
            ):
                invocations += sample.value
            elif sample.name == REQUESTS_IN_FLIGHT:
                in_flight += sample.value
    return ServerLoad(invocations, in_flight)


UPSTREAM_OUTCOMES = ("not_sent", "not_ready", "failed", "status_5xx", "timeout")


class GatewayMetrics:
    """The gateway's metrics. ``endpoint`` is an endpoint name the gateway knows, or
    ``unknown``; ``code`` an HTTP status code; an upstream error's ``outcome`` one of:
    not_sent (the replica never got the request: it went to another), not_ready (it answered
    503, its model not loaded: it went to another, or waited for one), failed (it may have got
    it: a 502), status_5xx (it answered 5xx: a 502), timeout (no answer in time: a 504)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.request_duration = Histogram(
            "infermodes_gateway_request_duration_seconds",
            "Time from request start to response end (holding included), by endpoint and code.",
            ["endpoint", "code"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "infermodes_gateway_requests_in_flight",
            "Invocations admitted and not yet answered (held ones included), by endpoint.",
            ["endpoint"],
            registry=registry,
        )
        self.held_now = Gauge(
            "infermodes_gateway_requests_held",
            "Invocations waiting for a ready replica now, by endpoint.",
            ["endpoint"],
            registry=registry,
        )
        self.throttled = Counter(
            "infermodes_gateway_throttled",
            "Invocations refused with 429 because the endpoint's maxConcurrency was reached.",
            ["endpoint"],
            registry=registry,
        )
        self.held = Counter(
            "infermodes_gateway_held_for_cold_start",
            "Invocations that had to wait for a replica (a cold start or no ready replica).",
            ["endpoint"],
            registry=registry,
        )
        self.cold_start_duration = Histogram(
            "infermodes_gateway_cold_start_duration_seconds",
            "From the first held invocation of an endpoint with no ready replica to its forward.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_errors = Counter(
            "infermodes_gateway_upstream_errors",
            "Failed attempts to reach a replica, by endpoint and outcome.",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.answers = stage_answers(
            registry,
            "gateway",
            "protocol: refused by HTTP before the app; admission: refused by a check before "
            "routing; route: any route's but the invocations'",
        )

    def answered(self, stage: str, status: int) -> None:
        """One answer made at ``stage`` (``PROTOCOL``, ``ADMISSION``, ``ROUTE``)."""
        self.answers.labels(stage, str(status)).inc()

    def forget(self, endpoint: str, codes: Iterable[int]) -> None:
        """Remove an endpoint's series (``codes``: those its durations were recorded under),
        so the labels stay those of the endpoints served."""
        for code in codes:
            self.request_duration.remove(endpoint, str(code))
        for family in (self.in_flight, self.held_now, self.throttled, self.held,
                       self.cold_start_duration):  # fmt: skip
            family.remove(endpoint)
        for outcome in UPSTREAM_OUTCOMES:
            self.upstream_errors.remove(endpoint, outcome)


def parse_batch_units(text: str) -> dict[str, float]:
    """A batch instance's progress from its exposition text: ``assigned``, the finished units
    by outcome (``succeeded``, ``skipped``, ``failed``) and ``records`` (as ``splitType`` cuts
    them, not the rows they hold)."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "infermodes_batch_units_assigned":
                found["assigned"] = sample.value
            elif sample.name == "infermodes_batch_units_total":
                outcome = sample.labels.get("outcome", "")
                found[outcome] = found.get(outcome, 0.0) + sample.value
            elif sample.name == "infermodes_batch_records_total":
                found["records"] = sample.value
    return found


def parse_sample(text: str, name: str) -> float | None:
    """The first sample called ``name`` in an exposition text (None if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return None


def parse_worker_in_flight(text: str) -> float | None:
    """An async worker's messages in flight from its exposition text (None if absent)."""
    return parse_sample(text, WORKER_IN_FLIGHT)


def parse_worker_busy(text: str) -> float | None:
    """What an async worker holds from its exposition text: its requests and its webhook
    jobs in flight (None when it does not say its requests)."""
    requests = parse_worker_in_flight(text)
    if requests is None:
        return None
    return requests + (parse_sample(text, WEBHOOK_JOBS_IN_FLIGHT) or 0.0)


def parse_worker_dequeued_accepted_at(text: str) -> float | None:
    """When the newest request an async worker took was accepted; None before its first."""
    value = parse_sample(text, DEQUEUED_ACCEPTED_AT)
    return value if value else None


def worker_reading(text: str | None, parse: Callable[[str], float | None]) -> float | None:
    """One figure of a worker's exposition text, as a scaler may use it: None when the text
    could not be read (the worker still loading its model, say), the figure is absent, or it
    is not a count or a time (not the exposition format, negative, NaN, infinite)."""
    try:
        value = parse(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value >= 0 else None


class OperatorMetrics:
    """Async endpoints as the operator (or ``infermodes up``) reads their queues, named after
    the managed platform's metrics (ApproximateBacklogSize, ApproximateBacklogSizePerInstance,
    HasBacklogWithoutCapacity, ApproximateAgeOfOldestRequest)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.backlog = Gauge(
            "infermodes_async_approximate_backlog_size",
            "Requests queued or in flight (ready + unacknowledged), by endpoint.",
            ["namespace", "endpoint"],
            registry=registry,
        )
        self.backlog_per_instance = Gauge(
            "infermodes_async_approximate_backlog_size_per_instance",
            "The backlog divided by the replicas (the backlog itself at zero replicas).",
            ["namespace", "endpoint"],
            registry=registry,
        )
        self.backlog_without_capacity = Gauge(
            "infermodes_async_has_backlog_without_capacity",
            "1 while requests wait and the endpoint has no replica.",
            ["namespace", "endpoint"],
            registry=registry,
        )
        self.broker_unreadable = Counter(
            "infermodes_async_backlog_read_failures",
            "Times the broker could not be read for an endpoint's backlog.",
            ["namespace", "endpoint"],
            registry=registry,
        )
        self.oldest_age = Gauge(
            "infermodes_async_approximate_age_of_oldest_request_seconds",
            "How long the oldest waiting request has waited since it was accepted (0: none "
            "waits), by endpoint.",
            ["namespace", "endpoint"],
            registry=registry,
        )

    def record(
        self,
        key: tuple[str, str],
        total: int | None,
        replicas: int,
        ready_replicas: int,
        oldest_age: float | None,
    ) -> None:
        """One reading of an endpoint's queue (``key``: namespace, name); an unknown figure
        (in flight, or the oldest request's age) is absent, not left as it was."""
        if oldest_age is None:
            self._drop(key, [self.oldest_age])
        else:
            self.oldest_age.labels(*key).set(oldest_age)
        if total is None:
            self._drop(
                key, [self.backlog, self.backlog_per_instance, self.backlog_without_capacity]
            )
            return
        self.backlog.labels(*key).set(total)
        self.backlog_per_instance.labels(*key).set(total / max(replicas, 1))
        self.backlog_without_capacity.labels(*key).set(1 if total and not ready_replicas else 0)

    def forget(self, key: tuple[str, str], deleted: bool = False) -> None:
        """Drop an endpoint's queue figures: while its queue cannot be read (a figure left as
        it was would read as current; the failures counter says why), and, with ``deleted``,
        every series of an endpoint that is gone."""
        self._drop(key, [
            self.backlog, self.backlog_per_instance, self.backlog_without_capacity,
            self.oldest_age, *([self.broker_unreadable] if deleted else []),
        ])  # fmt: skip

    @staticmethod
    def _drop(key: tuple[str, str], metrics: Sequence[Gauge | Counter]) -> None:
        for metric in metrics:
            with contextlib.suppress(KeyError):  # never recorded
                metric.remove(*key)


# Reading other processes' /metrics: the operator reads its pods', ``infermodes up`` its
# children's, for the scaling decisions and the status.
FETCH_TIMEOUT_SECONDS = 2.0  # one process's answer
READ_DEADLINE_SECONDS = 3.0  # every process of one reading, together
MAX_READERS = 64  # processes read at once; more wait for a free reader

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def _get_text(host: str, port: int, path: str, timeout: float) -> str | None:
    """The body of a 2xx answer to ``GET http://host:port{path}``, or None for any other
    answer or none."""
    import httpx

    shown = f"[{host}]" if ":" in host else host
    try:
        response = httpx.get(f"http://{shown}:{port}{path}", timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return response.text


def fetch_metrics_text(host: str, port: int, timeout: float = FETCH_TIMEOUT_SECONDS) -> str | None:
    """A process's exposition text from ``http://host:port/metrics``, or None when it cannot
    be read (what that means is the reader's: a model server's load leaves it out, an async
    worker's in-flight count becomes unknown)."""
    return _get_text(host, port, "/metrics", timeout)


def probe_ready(host: str, port: int, timeout: float = FETCH_TIMEOUT_SECONDS) -> bool:
    """Whether ``serve_metrics``' readiness check at ``http://host:port/readyz`` answers 200:
    what the kubelet's probe asks of a worker pod, for the local runtime."""
    return _get_text(host, port, READY_PATH, timeout) is not None


def read_all(
    read: Callable[[K], T | None], keys: Iterable[K], deadline: float = READ_DEADLINE_SECONDS
) -> dict[K, T | None]:
    """``read`` of every key at once; a key not answered within ``deadline`` seconds of the
    start is None, like one that cannot be read, and so is one whose read raised (logged).
    Read one after another, a pool of silent processes (a NetworkPolicy that drops the port,
    say) would hold the whole decision for seconds per process."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    pool = ThreadPoolExecutor(min(MAX_READERS, len(wanted)), thread_name_prefix="read-metrics")
    try:
        futures = {key: pool.submit(read, key) for key in wanted}
        wait(futures.values(), timeout=deadline)
        found: dict[K, T | None] = {}
        for key, future in futures.items():
            done = future.done()  # once: a read may end between two looks
            failed = future.exception() if done else None
            if failed is not None:
                log.warning("cannot read the metrics of %s: %r", key, failed)
            found[key] = future.result() if done and failed is None else None
        return found
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a late answer is dropped
