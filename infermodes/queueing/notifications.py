"""Success and error notifications of async requests: a RabbitMQ topic exchange (routing keys
``<endpoint>.success`` and ``<endpoint>.error``) and optional HTTP webhooks.

Delivery is at least once: a redelivered request whose result exists is notified again, so
consumers de-duplicate by ``inferenceId``. The body follows the managed platform's shape, with
the result inline when it is at most 128 KB.

Webhooks go through the endpoint's outbox (``broker.outbox_name``), so that a slow or dead
receiver never holds an invocation slot: ``Notifier`` publishes one webhook job (the outcome
and the body, never a URL: the receiving worker POSTs the webhooks it is configured with for
that outcome, a Secret's URL included) with a confirm before the request is acked, and
``WebhookSender``, on threads of its own, consumes the outbox, POSTs, and acks each job once
its webhooks were sent. A send that failed puts the job back with its count of sends raised,
to be delivered after a delay that grows with that count (``retry_delay``), and the last of
``OUTBOX_SENDS`` dead-letters it (``Outbox``), as does a send whose webhooks were all refused
(``destinations``: no later send can succeed); a sender killed mid-way leaves its job to be
delivered again, to any worker of the endpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum

import httpx

from infermodes import destinations
from infermodes.errors import BrokerUnavailable, DelayRefused
from infermodes.logs import redacted_url
from infermodes.metrics import WorkerMetrics
from infermodes.queueing.broker import (
    DEAD_LETTER_EXCHANGE,
    LAST_ERROR_HEADER,
    NOTIFICATION_EXCHANGE,
    OUTBOX_SENDS,
    OUTBOX_UNSETTLED,
    REASON_HEADER,
    SENDS_HEADER,
    Delivery,
    Publisher,
    Settle,
    outbox_name,
)
from infermodes.queueing.messages import Failure, InvocationRequest
from infermodes.settings import WEBHOOK_RETRY_DELAYS

log = logging.getLogger("infermodes.notifications")

INLINE_RESULT_LIMIT = 128 * 1024
WEBHOOK_TIMEOUT_SECONDS = 5.0  # each connect, write and read
WEBHOOK_ANSWER_SECONDS = 10.0  # one attempt as a whole, to the answer's status line and headers
WEBHOOK_BACKOFF_SECONDS = 0.5
WEBHOOK_ANSWER_BYTES = 64 * 1024  # of an answer's body read, so its connection is kept
# A job of an outcome a worker has no webhook for: younger than this, it is left to a worker
# that has one (a rollout adding the webhook), after a pause; older, its webhook was removed
ORPHANED_JOB_SECONDS = 600.0
NO_WEBHOOK_PAUSE_SECONDS = 1.0


def webhook_client() -> httpx.Client:
    """No proxy from the environment: it would reach addresses ``destinations.check`` never
    saw. One connection at a time, so ``Line`` knows the socket each POST goes over."""
    return httpx.Client(
        timeout=WEBHOOK_TIMEOUT_SECONDS,
        trust_env=False,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )


class Line:
    """One thread's client for one webhook origin, and the socket of its connection (kept
    between POSTs): what ``Cutoff`` shuts down."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.socket: socket.socket | None = None
        self.cutoff: Cutoff | None = None  # of the attempt under way


class Cutoff:
    """Ends one webhook attempt after ``WEBHOOK_ANSWER_SECONDS`` by shutting its connection
    down: httpx bounds each read, not the answer, so a webhook answering a byte every few
    seconds would otherwise hold the request (and its worker's slot) for hours."""

    def __init__(self, line: Line) -> None:
        self.line = line
        self.expired = False
        self.timer = threading.Timer(WEBHOOK_ANSWER_SECONDS, self._expire)
        self.timer.daemon = True

    def __enter__(self) -> Cutoff:
        with self.line.lock:
            self.line.cutoff = self
        self.timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.timer.cancel()
        with self.line.lock:
            self.line.cutoff = None

    def _expire(self) -> None:
        with self.line.lock:
            if self.line.cutoff is not self:  # the attempt ended as the timer fired
                return
            self.expired = True
            if self.line.socket is not None:
                _shut(self.line.socket)


def trace(line: Line) -> Callable[[str, dict[str, object]], None]:
    """httpcore's trace hook: the socket of each connection (TCP, then TLS) the line makes;
    shut at once when its attempt's time was up before it was made."""

    def seen(event: str, info: dict[str, object]) -> None:
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        stream = info.get("return_value")
        found = getattr(stream, "get_extra_info", lambda _: None)("socket")
        if isinstance(found, socket.socket):
            with line.lock:
                line.socket = found
                if line.cutoff is not None and line.cutoff.expired:
                    _shut(found)

    return seen


def _shut(sock: socket.socket) -> None:
    """Wakes the read blocked on it (closing it from another thread would not)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class Webhooks:
    """URLs POSTed each success and each error notification (the spec's successWebhook and
    errorWebhook)."""

    success: list[str] = field(default_factory=list)
    error: list[str] = field(default_factory=list)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def event_time(body: dict[str, object]) -> float:
    """When a notification's outcome was reached (its ``eventTime``); 0 when it names none."""
    try:
        return datetime.fromisoformat(str(body.get("eventTime"))).timestamp()
    except ValueError:
        return 0.0


def routing_key(endpoint: str, success: bool) -> str:
    return f"{endpoint}.{'success' if success else 'error'}"


def success_body(
    request: InvocationRequest, completed_at: float, result: bytes | None
) -> dict[str, object]:
    """``result`` is the output when small enough to inline (see ``INLINE_RESULT_LIMIT``)."""
    body = _common(request.inference_id, request.endpoint, request.accepted_at, completed_at)
    body["invocationStatus"] = "Completed"
    body["requestParameters"] = _request_parameters(request)
    body["responseParameters"] = {
        "contentType": request.accept,
        "outputLocation": request.output_location,
    }
    if result is not None and len(result) <= INLINE_RESULT_LIMIT:
        body["responseBody"] = {
            "content": result.decode("utf-8", "replace"),
            "encoding": "STRING",
        }
    return body


def error_body(
    inference_id: str | None,
    endpoint: str,
    failure: Failure,
    failure_location: str | None,
    completed_at: float,
    request: InvocationRequest | None,
) -> dict[str, object]:
    """``request`` is None when the message itself could not be read (only salvaged fields)."""
    received = request.accepted_at if request is not None else None
    body = _common(inference_id, endpoint, received, completed_at)
    body["invocationStatus"] = "Failed"
    if request is not None:
        body["requestParameters"] = _request_parameters(request)
    body["responseParameters"] = {"failureLocation": failure_location}
    body["failureReason"] = failure.reason
    body["failureMessage"] = failure.message
    return body


def _common(
    inference_id: str | None, endpoint: str, received_at: float | None, completed_at: float
) -> dict[str, object]:
    return {
        "eventName": "InferenceResult",
        "eventVersion": "1.0",
        "eventSource": "infermodes",
        "inferenceId": inference_id,
        "endpointName": endpoint,
        "receivedTime": _iso(received_at) if received_at is not None else None,
        "eventTime": _iso(completed_at),
    }


def _request_parameters(request: InvocationRequest) -> dict[str, object]:
    return {
        "endpointName": request.endpoint,
        "inputLocation": request.input_location,
        "contentType": request.content_type,
        "accept": request.accept,
        "customAttributes": request.custom_attributes,
        "invocationTimeoutSeconds": request.invocation_timeout_seconds,
    }


@dataclass(frozen=True)
class WebhookJob:
    """What the outbox carries for one notification: its outcome and its body, and the sends
    made of it so far, each failed, with the last one's failure. Sends are counted in the job,
    not by the queue, whose delivery count also counts returns to the outbox (a worker
    stopping, or without a webhook for the outcome), which are no sends."""

    notification: dict[str, object]
    success: bool
    sends: int = 0
    last_error: str = ""
    took: frozenset[str] = frozenset()  # ``webhook_key`` of each webhook that took it already

    @property
    def inference_id(self) -> str:
        return str(self.notification.get("inferenceId") or "")

    def encoded(self) -> bytes:
        job: dict[str, object] = {"success": self.success, "notification": self.notification}
        if self.sends:
            job |= {"sends": self.sends, "lastError": self.last_error}
        if self.took:
            job["took"] = sorted(self.took)
        return json.dumps(job).encode()


def webhook_key(url: str) -> str:
    """How a job records a webhook that took it, so that a later send skips that one: a digest,
    not the URL, which often holds a token."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def webhook_job(body: dict[str, object], success: bool) -> bytes:
    """A new notification's job, as ``Notifier`` publishes it."""
    return WebhookJob(body, success).encoded()


def read_webhook_job(data: bytes) -> WebhookJob | None:
    """The webhook job ``data`` is; None when it is not one."""
    try:
        job = json.loads(data)
    except ValueError:
        return None
    if not isinstance(job, dict):
        return None
    body, success = job.get("notification"), job.get("success")
    sends, last_error = job.get("sends", 0), job.get("lastError", "")
    took = job.get("took", [])
    if not isinstance(body, dict) or not isinstance(success, bool):
        return None
    if type(sends) is not int or sends < 0 or not isinstance(last_error, str):
        return None
    if not isinstance(took, list) or not all(isinstance(key, str) for key in took):
        return None
    return WebhookJob(body, success, sends, last_error, frozenset(took))


class JobStep(StrEnum):
    """What a sender does with a webhook job it was handed, before any POST."""

    SEND = "send"
    RETURN = "return"  # back to the outbox, unsent and uncounted, for a worker with a webhook
    ORPHANED = "orphaned"  # acked unsent: its webhook was removed from the spec
    UNSETTLED = "unsettled"  # dead-lettered unsent: its senders were killed on each delivery


def step_of(attempt: int, has_webhook: bool, age: float) -> JobStep:
    """The step for a job delivered ``attempt`` times before (none of them settled: a settled
    delivery is acked, and what goes back is a new message), ``age`` seconds after its
    outcome. ``OUTBOX_UNSETTLED`` deliveries lost in a row: what killed its senders may be in
    it, so it is not POSTed once more but dead-lettered, within either queue's limit."""
    if attempt >= OUTBOX_UNSETTLED:
        return JobStep.UNSETTLED
    if has_webhook:
        return JobStep.SEND
    return JobStep.RETURN if age < ORPHANED_JOB_SECONDS else JobStep.ORPHANED


def failed_send(
    job: WebhookJob, failure: str, took: frozenset[str] = frozenset(), refused: bool = False
) -> tuple[WebhookJob, str | None]:
    """The job after one more failed send, in which the webhooks ``took`` took it (the next
    send skips them), and why it is to be dead-lettered rather than put back for the next:
    ``refused`` when every webhook that failed was refused (``destinations.check``: a
    link-local address, which no later send can reach), ``sends_exhausted`` when its
    ``OUTBOX_SENDS`` are spent; None to put it back."""
    failed = replace(job, sends=job.sends + 1, last_error=failure, took=job.took | took)
    if refused:
        return failed, "refused"
    return failed, "sends_exhausted" if failed.sends >= OUTBOX_SENDS else None


def retry_delay(sends: int, delays: Sequence[int] = WEBHOOK_RETRY_DELAYS) -> int:
    """Seconds a job waits after its ``sends``th failed send (1 or more) before the next: the
    ``sends``th of ``delays``, its last for any later send. A receiver down for a minute is
    sent to again within it, one down for long is not asked every few seconds."""
    return delays[min(sends, len(delays)) - 1]


class Outbox:
    """An endpoint's outbox as its senders write to it: a job put back, or dead-lettered, is
    published with a confirm before the sender acks the delivery it replaces, so the job is in
    the outbox or among its dead letters at least once, whatever dies in between (a kill
    between the confirm and the ack leaves the old delivery too: its webhook is POSTed once
    more, as after any redelivery). Being a new message, a job put back does not count as a
    delivery (a requeue would, towards the queue's limit); a dead letter, published to
    ``DEAD_LETTER_EXCHANGE`` rather than nacked, reaches its queue whatever arguments the
    outbox was declared with (one declared before dead-lettering drops a nacked job) and
    without the broker's at-most-once dead-lettering of a quorum queue."""

    def __init__(self, channel: Publisher, endpoint: str) -> None:
        self.channel = channel
        self.queue = outbox_name(endpoint)

    def put(self, job: WebhookJob, delay: int = 0) -> None:
        """Delivered again ``delay`` seconds from now (``broker.Publisher``)."""
        self.channel.publish(
            "", self.queue, job.encoded(), job.inference_id, mandatory=True, delay=delay
        )

    def dead_letter(self, job: WebhookJob, reason: str) -> None:
        """To ``broker.outbox_dead_letter_name``, with headers saying why, after how many
        sends, and the last one's failure."""
        headers: dict[str, str | int] = {
            REASON_HEADER: reason,
            SENDS_HEADER: job.sends,
            LAST_ERROR_HEADER: job.last_error,
        }
        self.channel.publish(
            DEAD_LETTER_EXCHANGE,
            self.queue,
            job.encoded(),
            job.inference_id,
            mandatory=True,
            headers=headers,
        )


@dataclass(frozen=True)
class Sent:
    """One send of a job to each webhook of its outcome: ``failure`` is the last one's that
    gave up (by scheme and host only: a path is often a token), None when each took it;
    ``took``: the ``webhook_key`` of each that took it in this send; ``refused``: each that
    gave up was refused (``destinations.check``), none failed otherwise."""

    failure: str | None = None
    took: frozenset[str] = frozenset()
    refused: bool = False


class Notifier:
    """Publishes to the topic exchange when ``topic``, then, when ``webhooks`` has any for the
    outcome, a webhook job to the endpoint's outbox; both confirmed, so a failure raises
    BrokerUnavailable and the request is retried. No job is published for an outcome without
    webhooks: an endpoint without them pays nothing for the outbox."""

    def __init__(
        self,
        channel: Publisher,
        metrics: WorkerMetrics,
        webhooks: Webhooks,
        topic: bool = True,
    ) -> None:
        self.channel = channel
        self.metrics = metrics
        self.webhooks = webhooks
        self.topic = topic

    def send(self, endpoint: str, body: dict[str, object], success: bool) -> None:
        message_id = str(body.get("inferenceId") or "")
        if self.topic:
            self._publish(endpoint, json.dumps(body).encode(), message_id, success)
        if self.webhooks.success if success else self.webhooks.error:
            self.channel.publish(
                "", outbox_name(endpoint), webhook_job(body, success), message_id, mandatory=True
            )

    def _publish(self, endpoint: str, payload: bytes, message_id: str, success: bool) -> None:
        try:
            self.channel.publish(
                NOTIFICATION_EXCHANGE,
                routing_key(endpoint, success),
                payload,
                message_id,
                mandatory=False,
            )
        except BrokerUnavailable:
            self.metrics.notifications.labels("topic", "failed").inc()
            raise
        self.metrics.notifications.labels("topic", "sent").inc()


class WebhookSender:
    """POSTs each notification to each webhook of its outcome with bounded retries. A send in
    which a webhook stayed down is logged and counted, and its job put back to the outbox
    with its sends counted, delivered after ``retry_delay`` by ``retry_delays`` (it does not
    hold the outbox: other jobs go first), until ``OUTBOX_SENDS`` failed: then it is
    dead-lettered; a send whose every failure was a refusal dead-letters it at once. Once
    ``stopping`` is set (the worker's SIGTERM), a webhook waiting for its next try goes back
    to the outbox instead, uncounted and at once, for a worker that runs on (or the next to
    start): its tries are not spent at once on a receiver that may be down for a moment."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        webhooks: Webhooks,
        webhook_attempts: int,
        outbox: Outbox,
        new_client: Callable[[], httpx.Client] = webhook_client,
        check: Callable[[str], destinations.Checked] = destinations.check,
        stopping: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
        retry_delays: Sequence[int] = WEBHOOK_RETRY_DELAYS,
    ) -> None:
        self.metrics = metrics
        self.webhooks = webhooks
        self.webhook_attempts = webhook_attempts
        self.outbox = outbox
        self.new_client = new_client
        self.lines = threading.local()  # each thread's Line by webhook origin
        self.check = check  # where a webhook may be POSTed (``destinations``)
        self.stopping = stopping or threading.Event()
        self.clock = clock
        self.retry_delays = retry_delays

    def handle(self, delivery: Delivery) -> Settle:
        """The outbox consumer's handler: a job is acked once sent, or once put back or
        dead-lettered (``Outbox``: confirmed first); a job that cannot be put back or
        dead-lettered now (the broker is down) is requeued, which the queue counts."""
        job = read_webhook_job(delivery.body)
        if job is None:
            log.error("an outbox message that is no webhook job (%d bytes): dropped",
                      len(delivery.body))  # fmt: skip
            return Settle.ACK
        has_webhook = bool(self.webhooks.success if job.success else self.webhooks.error)
        age = self.clock() - event_time(job.notification)
        step = step_of(delivery.attempt, has_webhook, age)
        if step is JobStep.UNSETTLED:
            why = (f"delivered {delivery.attempt} times before, none settled (its sender "
                   "killed, or the broker lost, each time), not sent")  # fmt: skip
            return self._dead_letter(job, "unsettled", why)
        if step is JobStep.ORPHANED:
            why = f"no webhook for this outcome ({age:.0f} s after it; removed from the spec)"
            self._unsent(job.notification, job.success, "no_webhook", f"{why}: acked, not sent")
            return Settle.ACK
        if step is JobStep.RETURN:  # a rollout adding the webhook: left to a worker with it
            self.stopping.wait(NO_WEBHOOK_PAUSE_SECONDS)
            return self._put_back(job, "no_webhook", "no webhook for its outcome here")
        sent = self.post(job.notification, job.success, skip=job.took)
        if sent is None:
            return self._put_back(job, "stopping", "the worker stops")
        if sent.failure is None:
            return Settle.ACK
        failed, dead = failed_send(job, sent.failure, sent.took, sent.refused)
        if dead is not None:
            why = (f"refused, no send can succeed: {sent.failure}" if dead == "refused"
                   else f"{failed.sends} sends failed, the last: {sent.failure}")  # fmt: skip
            return self._dead_letter(failed, dead, why)
        delay = retry_delay(failed.sends, self.retry_delays)
        why = f"send {failed.sends} of {OUTBOX_SENDS} failed"
        log.warning("webhook job of inference %s: %s (%s); back to the outbox, for the next "
                    "send in %d s", failed.inference_id or "(unknown)", why, sent.failure,
                    delay)  # fmt: skip
        return self._put_back(failed, "send_failed", why, delay)

    def _put_back(self, job: WebhookJob, reason: str, why: str, delay: int = 0) -> Settle:
        """Counted by ``reason`` once the outbox has it (delivered ``delay`` s later; at once
        when the broker refuses the delay queue, as before delays existed)."""
        try:
            self.outbox.put(job, delay)
        except DelayRefused as exc:
            log.warning("webhook job of inference %s (%s): %s; put back without a delay "
                        "(docs/async.md: the broker user needs configure permission on the "
                        "delay queues)", job.inference_id or "(unknown)", why, exc)  # fmt: skip
            return self._put_back(job, reason, why)
        except BrokerUnavailable as exc:
            log.warning("webhook job of inference %s (%s): cannot put it back in the outbox "
                        "(%s); requeued", job.inference_id or "(unknown)", why, exc)  # fmt: skip
            return Settle.REQUEUE
        self.metrics.webhook_jobs_returned.labels(reason).inc()
        return Settle.ACK

    def _dead_letter(self, job: WebhookJob, reason: str, why: str) -> Settle:
        """Logged and counted once the dead-letter queue has it, not before."""
        try:
            self.outbox.dead_letter(job, reason)
        except BrokerUnavailable as exc:
            log.warning("webhook job of inference %s (%s): not dead-lettered yet (%s); "
                        "requeued", job.inference_id or "(unknown)", why, exc)  # fmt: skip
            return Settle.REQUEUE
        self._unsent(job.notification, job.success, "dead_lettered", f"{why}: dead-lettered")
        return Settle.ACK

    def _unsent(self, body: dict[str, object], success: bool, reason: str, why: str) -> None:
        """One line naming the endpoint, outcome and inference of a job settled unsent, and
        its count by ``reason``."""
        log.error(
            "webhook job of inference %s (endpoint %s, %s): %s",
            body.get("inferenceId") or "(unknown)",
            body.get("endpointName") or "(unknown)",
            "success" if success else "error",
            why,
        )
        self.metrics.webhook_jobs_unsent.labels(reason).inc()

    def post(
        self, body: dict[str, object], success: bool, skip: frozenset[str] = frozenset()
    ) -> Sent | None:
        """One send to each webhook of the outcome but those ``skip`` names (they took the
        job in an earlier send). None when the worker stopped before every webhook had its
        tries: the job is to be sent again, to each of them (a webhook is delivered at least
        once)."""
        payload = json.dumps(body).encode()
        inference_id = str(body.get("inferenceId") or "")
        failure, took, refused = None, set(), True
        for url in self.webhooks.success if success else self.webhooks.error:
            key = webhook_key(url)
            if key in skip:
                continue
            sent = self._post(url, payload, inference_id)
            if sent is None:
                return None
            if sent.failure is None:
                took.add(key)
            else:
                refused = refused and sent.refused
            failure = sent.failure or failure
            result = "failed" if sent.failure else "sent"
            self.metrics.notifications.labels("webhook", result).inc()
        return Sent(failure, frozenset(took), refused and failure is not None)

    def _post(self, url: str, payload: bytes, inference_id: str) -> Sent | None:
        """The webhook's outcome (``Sent``, with its last failure when it gave up); None when
        the worker stopped before its next try. Logs name the request and the webhook, by
        scheme and host only: its path is often its token. Each attempt looks the host up
        again and connects to the addresses it checked."""
        where = redacted_url(url, keep_path=False)
        shown = f"inference {inference_id or '(unknown)'}: webhook {where}"
        failure = f"{where}: no attempt"
        for attempt in range(self.webhook_attempts):
            if attempt and self.stopping.wait(WEBHOOK_BACKOFF_SECONDS * 2 ** (attempt - 1)):
                log.warning("%s: the worker stops; its job goes back to the outbox", shown)
                return None
            checked = self.check(url)
            if checked.refusal is not None:
                log.error("%s refused, not sent: %s", shown, checked.refusal)
                return Sent(f"{where} refused: {checked.refusal}", refused=True)
            if not checked.addresses:
                log.warning("%s failed: its host does not resolve", shown)
                failure = f"{where} failed: its host does not resolve"
                continue
            target = httpx.URL(url)
            line = self._line(f"{target.scheme}://{target.netloc.decode('ascii')}")
            with Cutoff(line) as cutoff:
                try:
                    status = self._post_to(target, checked.addresses, payload, line)
                    if status < 300:
                        return Sent()
                    log.warning("%s answered %d", shown, status)
                    failure = f"{where} answered {status}"
                except httpx.HTTPError as exc:
                    reason = _reason(exc, url, where)
                    if cutoff.expired:
                        reason = f"no answer within {WEBHOOK_ANSWER_SECONDS:g} s"
                    log.warning("%s failed: %s", shown, reason)
                    failure = f"{where} failed: {reason}"
        log.warning("%s: this send gave up after %d attempts", shown, self.webhook_attempts)
        return Sent(failure)

    def _post_to(
        self, target: httpx.URL, addresses: tuple[str, ...], payload: bytes, line: Line
    ) -> int:
        """POST to each address in turn until one takes the connection, as a client that
        resolved the name itself would, with the name in Host and in TLS (its SNI, and the
        name its certificate must carry). The status is the answer: a body beyond
        ``WEBHOOK_ANSWER_BYTES`` (it could be endless) is not read."""
        headers = {"content-type": "application/json", "host": target.netloc.decode("ascii")}
        extensions = {"sni_hostname": target.raw_host.decode("ascii"), "trace": trace(line)}

        def send(address: str) -> int:
            with line.client.stream(
                "POST",
                target.copy_with(host=address),
                content=payload,
                headers=headers,
                extensions=extensions,
            ) as response:
                # the answer is in; its body is read out only so the connection can be kept
                with contextlib.suppress(httpx.HTTPError):  # then it is closed instead
                    read = 0
                    for block in response.iter_raw():
                        read += len(block)
                        if read > WEBHOOK_ANSWER_BYTES:
                            break
                return response.status_code

        *others, last = addresses
        for address in others:
            with contextlib.suppress(httpx.ConnectError, httpx.ConnectTimeout):  # the next one
                return send(address)
            cutoff = line.cutoff
            if cutoff is not None and cutoff.expired:  # no socket to shut while connecting:
                # the try ends here, not after another connect timeout for each address left
                raise httpx.ConnectTimeout(f"no address took the connection in time ({address})")
        return send(last)

    def _line(self, origin: str) -> Line:
        """A client of its own for each webhook origin (scheme, name, port), as a client's
        connections are keyed by address and one verified for a name must never carry another
        name's requests to the same address; and for each thread, so the one connection it
        keeps is the one its POST goes over."""
        lines: dict[str, Line] = self.lines.__dict__.setdefault("by_origin", {})
        line = lines.get(origin)
        if line is None:
            line = lines[origin] = Line(self.new_client())
        return line


def _reason(exc: httpx.HTTPError, url: str, shown: str) -> str:
    """The error's words without the URL's path, as written or as sent (to an address)."""
    reason = str(exc).replace(url, shown)
    with contextlib.suppress(RuntimeError):  # an error with no request
        reason = reason.replace(str(exc.request.url), shown)
    return reason or type(exc).__name__
