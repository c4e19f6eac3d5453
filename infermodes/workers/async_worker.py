"""``infermodes worker``: consume one async endpoint's queue, predict, store, notify, then ack.

``Processor`` does everything for one delivery (decide, read, predict, write, notify) and says
how to settle it; it never touches the broker. The broker's consumer loop (``queueing``) feeds
it deliveries, ``maxConcurrentInvocationsPerInstance`` at a time, and settles them.

Guarantees, and where they come from:
- a message is acked only after its output (or error object) is written and notified (on
  the last attempt, an error object that cannot be written is notified without it);
- a redelivery whose result already exists is notified again and acked, never recomputed, so
  there is exactly one result object per request (consumers de-duplicate notifications by id);
- of two copies of a request processed at once, the first to claim a result (the request's
  ``claim_location``, just before storing it) decides whether it ends in an output or an
  error; the other drops its own and reports that one. A claim is never released: a success
  claimed but not stored is finished by a later delivery, or, if none can before the queue's
  last two, notified as ``OutputNotStored`` and dead-lettered without an error object;
- the broker's delivery count bounds attempts across crashes, restarts and transient errors;
  a request given up on is dead-lettered only once its error notification went out;
- an inline input is removed once its request has its result; a ``file://`` input is read only
  if the file actually opened lies under the prefix the accepting side allowed;
- a webhook never holds an invocation slot: the request's webhook job is published to the
  endpoint's outbox (confirmed) before the ack, and the worker's webhook senders POST it and
  ack it once sent, or once put back (a failed send, counted in the job) or dead-lettered, each
  confirmed first, so a sender killed mid-way leaves it to another one;
- SIGTERM stops consuming, lets in-flight requests (and webhook jobs) finish and ack, and
  exits 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from infermodes.destinations import webhook_refusal
from infermodes.errors import (
    EXIT_BROKER_LOGIN_REFUSED,
    EXIT_CANNOT_START,
    EXIT_MODEL_LOAD_FAILED,
    BrokerLoginRefused,
    BrokerUnavailable,
    BrokerUrlError,
    InvalidInput,
    ModelLoadError,
    ObjectNotFound,
    StorageError,
)
from infermodes.logs import configure_logging
from infermodes.metrics import LIVENESS_PATH, READY_PATH, WorkerMetrics, serve_metrics
from infermodes.predict import codecs
from infermodes.predict.memory import (
    InputCap,
    log_input_caps,
    memory_share,
    process_input_caps,
    read_budgets,
)
from infermodes.predict.model import XGBoostModel
from infermodes.predict.stream import (
    LINE_LIMIT_CHUNKS,
    STREAMED_TYPES,
    WHOLE_TYPES,
    Sink,
    predict_stream,
)
from infermodes.queueing.broker import Consumer, Delivery, Handler, Settle
from infermodes.queueing.connect import broker_from_url
from infermodes.queueing.messages import (
    GAVE_UP,
    OUTPUT_NOT_STORED,
    STORAGE_UNAVAILABLE,
    SUCCESS_CLAIM,
    Failure,
    InvocationRequest,
    MalformedMessage,
    Outcome,
    Step,
    claims_success,
    classify,
    error_record,
    last_resort,
    parse_request,
    plan,
    retry_delay,
)
from infermodes.queueing.notifications import (
    INLINE_RESULT_LIMIT,
    Notifier,
    Outbox,
    Webhooks,
    WebhookSender,
    error_body,
    success_body,
)
from infermodes.settings import warn_of_unknown_variables
from infermodes.storage import Storage, StorageRefused

if TYPE_CHECKING:
    from infermodes.settings import WorkerSettings

log = logging.getLogger("infermodes.worker")
# between two tries of failing storage at least this: a store that refuses at once is not hammered
STORAGE_RETRY_FLOOR_SECONDS = 0.1
# what a delivery may still need once its invocation ended, within the broker's hold limit,
# besides a back-off before a requeue: the result's claim and writes, the notifications
FINISH_RESERVE_SECONDS = 90.0
# threads POSTing webhook jobs from the outbox (its prefetch), whatever the concurrency
WEBHOOK_SENDERS = 4

ERROR_RECORD_LIMIT = 1024 * 1024
NOTIFY_CONNECTIONS = 8
# the webhook senders' own, for their put-backs and dead letters: a failing webhook's jobs
# going back never queue a request's notifications (``NOTIFY_CONNECTIONS``) behind them
SENDER_CONNECTIONS = 1


@dataclass(frozen=True)
class Result:
    settle: Settle
    outcome: Outcome


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


class ErrorNotStored(Exception):
    """A request's error object could not be written, so the request is not finished."""


# why a request given up at the start of a delivery failed: the one before it ended with no
# result and no error stored, so its worker stopped while holding it or, more rarely, could
# not store the error it found (the storage failing then: its log says so)
UNSETTLED = (
    "; the delivery before this one ended without a result or an error stored: the worker "
    "holding it stopped (a crash, out of memory, a kill, or its broker connection lost), or "
    "could not store the error it found (see the workers' logs)"
)


class SuccessClaimed(Exception):
    """A copy of the request (maybe this one, earlier) claimed its success: no error is
    stored; a later delivery finishes that success."""

    def __init__(self, request: InvocationRequest) -> None:
        super().__init__(f"inference {request.inference_id}: a delivery claimed success")


class InputRefused(Exception):
    """The store refused the worker the request's input (``refusal``): the caller's location,
    which its credentials do not reach."""

    def __init__(self, refusal: StorageRefused) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


def as_judged(exc: Exception) -> Exception:
    """An attempt's failure as ``classify`` is to judge it. The store refusing the request's
    input (``InputRefused``) ends it at once (``StorageRefused``: no retry mends it). The store
    refusing anything else (its output, error object or claim: the endpoint's own storage) is
    the worker's credentials, no fault of the request (a storage Secret rotated under running
    workers: a pod reads it at start): storage that fails, waited out and retried (a restarted
    worker has the new credentials), never the end of a request that was accepted."""
    if isinstance(exc, InputRefused):
        return exc.refusal
    if isinstance(exc, StorageRefused):
        return StorageError(
            f"{exc} (the endpoint's own storage refuses this worker: restart the workers once "
            "their credentials are mended)"
        )
    return exc


class ErrorClaimed(Exception):
    """Another copy of the request claimed an error first: this copy's output is dropped
    (raised inside the output's write, which it aborts)."""

    def __init__(self, record: bytes) -> None:
        super().__init__("another delivery claimed the request's error")
        self.record = record


def _unstored(target: Target) -> Target:
    """The target of an error notified without its object: no failure location to point at."""
    return dataclasses.replace(target, failure_location=None)


def unstored_failure(failure: Failure, why: str) -> Failure:
    """``failure`` as notified without its error object, saying why the object is not at its
    location (the notification's ``failureLocation`` is then null): a failure path that cannot
    hold it (a file in the way of its folder, a store refusing the write) is the caller's to
    mend, and this is all the caller sees of it."""
    return dataclasses.replace(
        failure, message=f"{failure.message} (its error object could not be stored: {why})"
    )


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
        hold_limit: float | None = None,
        input_caps: Mapping[str, int] | None = None,
        read_budgets: Mapping[str, int] | None = None,
    ) -> None:
        self.settings = settings
        # the most of an input decoded at once, by type (``input_caps_of``): JSON and RecordIO
        # whole, CSV and libsvm a chunk; a type not in it: max_json_bytes, or 16 chunks
        self.input_caps = input_caps or {}
        # the memory a Python read of a type may take, against its estimate (``read_budgets_of``)
        self.read_budgets = read_budgets or {}
        self.hold_limit = hold_limit  # the consumer's: how long a delivery may stay unsettled
        self.model = model
        self.storage = storage
        self.notifier = notifier
        self.metrics = metrics
        self.stopping = stopping
        self.max_attempts = settings.max_attempts  # within the queue's limit: allow_attempts
        self._taken_lock = threading.Lock()
        self._newest_taken = 0.0

    def allow_attempts(self, attempts: int) -> None:
        """Give up within the attempts the queue allows (the consumer's ``on_attempts_allowed``):
        fewer than maxAttempts on a RabbitMQ queue kept from an endpoint with a smaller one."""
        if attempts < self.settings.max_attempts:
            log.warning(
                "the queue's delivery limit allows %d attempt(s) of a request, not maxAttempts "
                "%d: giving up after %d (delete the queue, once empty, to declare it anew)",
                attempts,
                self.settings.max_attempts,
                attempts,
            )
        self.max_attempts = attempts

    def handle(self, body: bytes, count: int) -> Result:
        """A notification the broker did not confirm requeues the message (after a back-off):
        the redelivery finds the result stored and only notifies. So does an error object that
        could not be written, until the last attempt (``_finish_with_error``)."""
        try:
            return self._dispatch(body, count)
        except BrokerUnavailable as exc:
            log.info("cannot notify (%s); requeueing", exc)
            self._back_off(count)
            return Result(Settle.REQUEUE, "retried")
        except ErrorNotStored as exc:
            log.warning("%s; requeueing", exc)
            self._back_off(count)
            return Result(Settle.REQUEUE, "retried")

    def _foreign(self, namespace: str | None, inference_id: str | None) -> bool:
        """Whether a request was accepted for a same-named endpoint of another namespace, whose
        kept queue this one inherited: it is dead-lettered unread (nothing read or written
        where the other's results go, nothing told to this endpoint's subscribers)."""
        own = self.settings.namespace
        if own is None or namespace is None or namespace == own:
            return False
        log.warning(  # not naming the other namespace: these are another tenant's logs
            "inference %s was accepted for a same-named endpoint of another namespace, whose "
            "queue this one inherited: dead-lettered unread",
            inference_id,
        )
        return True

    def _back_off(self, count: int) -> None:
        settings = self.settings
        self.stopping.wait(
            retry_delay(count, settings.retry_backoff_seconds, settings.retry_backoff_max_seconds)
        )

    def _dispatch(self, body: bytes, count: int) -> Result:
        try:
            request = parse_request(body)
        except MalformedMessage as exc:
            salvage = exc.salvage
            if self._foreign(salvage.namespace, salvage.inference_id):
                return Result(Settle.DEAD_LETTER, "foreign")
            target = Target(
                salvage.inference_id,
                salvage.endpoint or self.settings.endpoint,
                salvage.failure_location,
                None,
            )
            return self._on_failure(target, classify(exc), count)
        if self._foreign(request.namespace, request.inference_id):
            return Result(Settle.DEAD_LETTER, "foreign")
        self._taken(request, count)
        try:
            result = self._attempt(request, count)
        except SuccessClaimed as exc:
            result = self._await_claimed_success(request, count, exc)
        if result.settle is not Settle.REQUEUE:
            if result.outcome != "duplicate":
                self.metrics.total_processing_time.labels(result.outcome).observe(
                    max(0.0, time.time() - request.accepted_at)
                )
            if request.inline_input and result.outcome != "abandoned":
                self._remove_input(request)  # an abandoned request has no result: kept
        return result

    def _attempt(self, request: InvocationRequest, count: int) -> Result:
        """One attempt. Storage that fails for a while is waited out in place (up to
        ``storage_wait_seconds``, trying again after each back-off): requeued at once, every
        request queued would spend its attempts within seconds of an outage (a store
        restarting, a brownout) and end ``AttemptsExhausted`` though nothing was wrong with
        it. Every step is safe to run again, as a redelivery runs it."""
        settings = self.settings
        budget = storage_wait_budget(
            settings.storage_wait_seconds,
            self.hold_limit,
            request.invocation_timeout_seconds + settings.retry_backoff_max_seconds,
        )
        deadline = time.monotonic() + budget
        waits = 0
        while True:
            try:
                return self._handle(request, count)
            except (BrokerUnavailable, ErrorNotStored, SuccessClaimed):
                raise  # not a failure of the request: its result may be stored already
            except Exception as exc:
                judged = as_judged(exc)
                failure = classify(judged)
                if failure.reason != STORAGE_UNAVAILABLE or not self._storage_back(
                    request, failure, waits, deadline
                ):
                    return self._failed(request, count, judged, failure)
                waits += 1

    def _storage_back(
        self, request: InvocationRequest, failure: Failure, waits: int, deadline: float
    ) -> bool:
        """Waits one back-off for failing storage; whether to try again: not past the
        deadline, nor once the worker stops (the delivery is then requeued, as before)."""
        settings = self.settings
        delay = max(
            STORAGE_RETRY_FLOOR_SECONDS,
            retry_delay(waits, settings.retry_backoff_seconds, settings.retry_backoff_max_seconds),
        )
        if time.monotonic() + delay > deadline or self.stopping.is_set():
            return False
        log.warning("inference %s: storage fails (%s); trying again in %.1f s",
                    request.inference_id, failure.message, delay)  # fmt: skip
        self.metrics.storage_waits.inc()
        return not self.stopping.wait(delay)

    def _failed(
        self, request: InvocationRequest, count: int, exc: Exception, failure: Failure
    ) -> Result:
        """An attempt that failed: requeued, or ended with an error. An input that does not
        decode is logged by its reason alone: its message quotes the input, which is the
        caller's to read in the error object, not the operators' in the log; any other
        failure (storage that refuses, a timeout) by its message, which is theirs to act on."""
        if isinstance(exc, InvalidInput):
            log.warning("inference %s failed: %s (the message is in its error object and "
                        "notification)", request.inference_id, failure.reason)  # fmt: skip
        else:
            log.warning("inference %s failed: %s", request.inference_id, exc)
        if not failure.retry and self._has_output(request):
            # another delivery of the request (a caller's retry re-queues it) finished first
            # and removed the inline input this one was about to read
            return self._resend_success(request)
        return self._on_failure(Target.of(request), failure, count)

    def _await_claimed_success(
        self, request: InvocationRequest, count: int, claimed: SuccessClaimed
    ) -> Result:
        """This copy failed after a copy claimed the request's success: report that success
        once it is stored; until then, requeue (a later delivery finishes it)."""
        if self._has_output(request):
            return self._resend_success(request)
        log.info("%s, not stored yet; requeueing", claimed)
        self._back_off(count)
        return Result(Settle.REQUEUE, "retried")

    def _taken(self, request: InvocationRequest, count: int) -> None:
        """Time in backlog (first deliveries), and the newest acceptance time taken, which
        bounds the age of what still waits (the operator's estimate for a quorum queue)."""
        if count == 0:
            self.metrics.time_in_backlog.observe(max(0.0, time.time() - request.accepted_at))
        with self._taken_lock:
            if request.accepted_at > self._newest_taken:
                self._newest_taken = request.accepted_at
                self.metrics.dequeued_accepted_at.set(request.accepted_at)

    def _has_output(self, request: InvocationRequest) -> bool:
        try:
            return self.storage.exists(request.output_location)
        except StorageError:
            return False

    def _remove_input(self, request: InvocationRequest) -> None:
        """The request has its result: its stored body is no longer needed."""
        try:
            self.storage.delete(request.input_location)
        except StorageError as exc:
            log.warning(
                "inference %s: cannot remove the inline input (%s); the retention sweep will",
                request.inference_id,
                exc,
            )

    def _handle(self, request: InvocationRequest, count: int) -> Result:
        decide = functools.partial(
            plan,
            output_exists=self.storage.exists(request.output_location),
            error_exists=self.storage.exists(request.failure_location),
            delivery_count=count,
            max_attempts=self.max_attempts,
            now=time.time(),
            expires_at=request.expires_at,
        )
        step = decide()
        if step in (Step.GIVE_UP, Step.EXPIRE) and self._success_claimed(request):
            step = decide(success_claimed=True)
        if step is Step.RESEND_SUCCESS:
            return self._resend_success(request)
        if step is Step.RESEND_ERROR:
            return self._resend_error(Target.of(request), self._stored_failure(request))
        if step is Step.GIVE_UP:  # the delivery before ended with nothing stored, unsettled
            return self._give_up(Target.of(request), count, count, UNSETTLED)
        if step is Step.ABANDON:
            return self._abandon(request, count)
        if step is Step.EXPIRE:
            failure = Failure("Expired", expiry_message(request, count), retry=False)
            self._finish_with_error(Target.of(request), failure, count + 1, count)
            return Result(Settle.ACK, "expired")
        try:
            result = self._predict(request)
        except ErrorClaimed as claimed:
            return self._store_claimed_error(request, claimed.record, count)
        self._notify_success(request, result)
        return Result(Settle.ACK, "success")

    def _resend_success(self, request: InvocationRequest) -> Result:
        self._notify_success(request, self._small_output(request))
        return Result(Settle.ACK, "duplicate")

    def _resend_error(self, target: Target, failure: Failure) -> Result:
        self._notify_error(target, failure)
        if failure.reason == GAVE_UP:  # its give-up could not notify: finish it now
            return Result(Settle.DEAD_LETTER, "dead_lettered")
        return Result(Settle.ACK, "duplicate")

    def _abandon(self, request: InvocationRequest, count: int) -> Result:
        """A success was claimed, and no delivery could store its output before the queue's
        last two: say so in an error notification and dead-letter the message, rather than
        let the queue drop it silently. No error object: the claim decided success, which a
        resend of the request can still complete."""
        if self._has_output(request):  # a copy in flight stored it just now
            return self._resend_success(request)
        failure = Failure(
            OUTPUT_NOT_STORED,
            "a delivery claimed the request's success but its output was never stored, and "
            f"no delivery since could store it (this is delivery {count + 1} of this "
            "message); the message is dead-lettered",
            retry=False,
        )
        log.error("inference %s: %s", request.inference_id, failure.message)
        self._notify_error(_unstored(Target.of(request)), failure)
        return Result(Settle.DEAD_LETTER, "abandoned")

    def _claim(self, location: str | None, claim: bytes) -> bytes | None:
        """Claim the request's one result: None when this delivery holds the claim now (or
        the request has no claim location), else the claim a copy took first. A claim is
        never released: once a success is claimed, no copy can end the request in an error
        (and the reverse), whatever fails afterwards. A success's (empty) claim is not
        fsynced: it matters only until its output is stored (durably), and results are looked
        at before claims. An error's is: a power loss could leave it empty, a success's claim."""
        for _ in range(2):  # gone when read (an S3 409 for a create that did not complete,
            # or the retention sweep): claim again
            if location is None or self.storage.create(location, claim, durable=bool(claim)):
                return None
            try:
                return self.storage.get_bytes(location, ERROR_RECORD_LIMIT)
            except ObjectNotFound:
                continue
        raise StorageError(f"the result claim {location} keeps changing")

    def _success_claimed(self, request: InvocationRequest) -> bool:
        """A copy claimed the request's success but its output is not there: it died storing
        it (or is storing it now)."""
        if request.claim_location is None:
            return False
        try:
            return claims_success(
                self.storage.get_bytes(request.claim_location, ERROR_RECORD_LIMIT)
            )
        except ObjectNotFound:
            return False

    def _store_claimed_error(self, request: InvocationRequest, record: bytes, count: int) -> Result:
        """Another copy claimed the request's error first: store it (that copy may have died
        before it could) and notify it, as a redelivery would."""
        target, failure = Target.of(request), _failure_of(record, request.failure_location)
        why = self._store_error(target.inference_id, request.failure_location, record, count + 1)
        if why is not None:
            target, failure = _unstored(target), unstored_failure(failure, why)
        return self._resend_error(target, failure)

    def _predict(self, request: InvocationRequest) -> bytes | None:
        """Predict into the output, claiming success just before the output is stored. An
        output that then cannot be stored keeps the claim: the request ends in success, which
        a later delivery finishes."""
        settings = self.settings
        accept = codecs.accept_of(request.accept)  # the output's type, as the server answers
        with contextlib.ExitStack() as stack:
            try:
                source = stack.enter_context(
                    self.storage.open_read(request.input_location, within=request.input_root)
                )
            except StorageRefused as exc:  # the caller's location (``as_judged``)
                raise InputRefused(exc) from exc
            sink = stack.enter_context(self.storage.open_write(request.output_location, accept))
            content_type = codecs.content_type_of(request.content_type)
            cap = self.input_caps.get(content_type)
            head = _Head(sink, INLINE_RESULT_LIMIT)
            rows = predict_stream(
                self.model,
                source,
                head,
                content_type=content_type,
                accept=accept,
                timeout=request.invocation_timeout_seconds,
                chunk_bytes=settings.chunk_bytes,
                max_json_bytes=settings.max_json_bytes if cap is None else cap,
                max_chunk_bytes=cap,
                memory_budgets=self.read_budgets,
            )
            claimed = self._claim(request.claim_location, SUCCESS_CLAIM)
            if claimed is not None and not claims_success(claimed):
                raise ErrorClaimed(claimed)
        self.metrics.rows_predicted.inc(rows)
        return head.small

    def _on_failure(self, target: Target, failure: Failure, count: int) -> Result:
        """A permanent failure ends the request now; a retryable one is requeued after a
        backoff until the attempt budget is spent."""
        if not failure.retry:
            self._finish_with_error(target, failure, count + 1, count)
            return Result(Settle.ACK, "error")
        if count + 1 >= self.max_attempts:
            return self._give_up(target, count + 1, count, f"; last error: {failure.message}")
        log.warning(
            "inference %s: attempt %d failed (%s), retrying",
            target.inference_id,
            count + 1,
            failure.message,
        )
        self._back_off(count)
        return Result(Settle.REQUEUE, "retried")

    def _give_up(self, target: Target, attempts: int, count: int, detail: str) -> Result:
        """Error object, error notification, dead-letter. When the notification cannot go
        out (the broker is down), ``handle`` requeues instead: the redelivery finds the error
        object, notifies and dead-letters then (the queue's delivery limit leaves room)."""
        failure = Failure(
            GAVE_UP,
            f"processing failed {attempts} time(s), the maximum{detail}",
            retry=False,
        )
        self._finish_with_error(target, failure, attempts, count)
        return Result(Settle.DEAD_LETTER, "dead_lettered")

    def _finish_with_error(
        self, target: Target, failure: Failure, attempts: int, count: int
    ) -> None:
        """One error object (when we know where) and one error notification. The error is
        claimed first: a copy that claimed success wins (SuccessClaimed), one that claimed
        another error has that one stored and notified. A claim that cannot be taken or read
        raises ErrorNotStored (requeue: nothing may be said before the claim decides) until
        the queue's last two deliveries (``last_resort``), which notify without it rather
        than leave the caller nothing at all. An object that cannot be written once its claim
        is held raises it until the last attempt, which notifies without the object."""
        location = target.failure_location
        if location:
            record = error_record(
                target.inference_id,
                failure,
                attempts=attempts,
                input_location=target.request.input_location if target.request else None,
                failed_at=time.time(),
            )
            try:
                if target.request is not None:
                    claimed = self._claim(target.request.claim_location, record)
                    if claimed is not None and claims_success(claimed):
                        raise SuccessClaimed(target.request)
                    if claimed is not None:
                        record = claimed
                        failure = _failure_of(claimed, location)
            except StorageError as exc:
                problem = f"inference {target.inference_id}: cannot claim its result: {exc}"
                if not last_resort(count, self.max_attempts):
                    raise ErrorNotStored(problem) from exc
                log.error("%s; the queue's last delivery notifies the error without it", problem)
                target = _unstored(target)
                failure = unstored_failure(failure, f"its result could not be claimed: {exc}")
            else:
                why = self._store_error(target.inference_id, location, record, attempts)
                if why is not None:
                    target, failure = _unstored(target), unstored_failure(failure, why)
        self._notify_error(target, failure)

    def _store_error(
        self, inference_id: str | None, location: str, record: bytes, attempts: int
    ) -> str | None:
        """The claimed error's object; None once stored. On the last attempt, one that cannot
        be written is notified without it: why it could not (the storage's error)."""
        try:
            self.storage.put_bytes(location, record, codecs.JSON)  # error_record's
        except StorageError as exc:
            problem = f"inference {inference_id}: cannot write the error object: {exc}"
            if attempts < self.max_attempts:
                raise ErrorNotStored(problem) from exc
            log.error("%s; the last attempt notifies without it", problem)
            return str(exc)
        return None

    def _small_output(self, request: InvocationRequest) -> bytes | None:
        if self.storage.size(request.output_location) > INLINE_RESULT_LIMIT:
            return None
        return self.storage.get_bytes(request.output_location)

    def _stored_failure(self, request: InvocationRequest) -> Failure:
        try:
            record = self.storage.get_bytes(request.failure_location, ERROR_RECORD_LIMIT)
        except StorageError:
            record = b""
        return _failure_of(record, request.failure_location)

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


def storage_wait_budget(storage_wait: float, hold_limit: float | None, after: float) -> float:
    """How long one delivery may wait out failing storage: ``storage_wait``, cut so that what
    may come ``after`` the wait (an invocation tried again, a back-off) and the finish still
    settle within the broker's ``hold_limit`` (RabbitMQ's consumer timeout). Past that the
    broker closes the channel, and redelivers every request the worker holds while it still
    works on them."""
    if hold_limit is None:
        return storage_wait
    return max(0.0, min(storage_wait, hold_limit - after - FINISH_RESERVE_SECONDS))


def expiry_message(request: InvocationRequest, count: int) -> str:
    """Why a request expired: before it started, or before a retry could (``count``: the
    deliveries before this one), which the caller would otherwise take for never started."""
    ttl = f"the request's TTL of {request.expires_at - request.accepted_at:.0f} s passed"
    if count == 0:
        return ttl
    return (
        f"{ttl} before its attempt {count + 1} could start (attempt {count} failed, or its "
        "worker stopped: the workers' logs say why)"
    )


def _failure_of(record: bytes, failure_location: str) -> Failure:
    """The failure an error record describes."""
    try:
        stored = json.loads(record)
        return Failure(str(stored["reason"]), str(stored["message"]), retry=False)
    except (ValueError, KeyError, TypeError):
        return Failure("Failed", f"see {failure_location}", retry=False)


def delivery_handler(processor: Processor, metrics: WorkerMetrics) -> Handler:
    """The consumer's handler: process one delivery and count its outcome."""

    def handle(delivery: Delivery) -> Settle:
        started = time.perf_counter()
        result = processor.handle(delivery.body, delivery.attempt)
        metrics.messages.labels(result.outcome).inc()
        metrics.processing_duration.labels(result.outcome).observe(time.perf_counter() - started)
        return result.settle

    return handle


class WebhookSecretError(ValueError):
    """A webhook URL from a Secret that is not one (the message never shows it: its path is
    often its token)."""


def secret_webhook(url: SecretStr | None, field: str) -> list[str]:
    """The URL a Secret's key gave (``field``: the spec's field that named the key), checked
    as the spec checks its own webhooks."""
    if url is None:
        return []
    text = url.get_secret_value().strip()
    refused = webhook_refusal(text)
    if refused is not None:
        raise WebhookSecretError(f"the URL in the Secret key of {field} (not shown): {refused}")
    return [text]


def webhooks_of(settings: WorkerSettings) -> Webhooks:
    """The webhooks the settings list, and those from Secrets (the spec's ...SecretRef)."""
    success = secret_webhook(settings.secret_success_webhook_url, "successWebhookSecretRef")
    error = secret_webhook(settings.secret_error_webhook_url, "errorWebhookSecretRef")
    return Webhooks(
        [*settings.success_webhook_urls, *success], [*settings.error_webhook_urls, *error]
    )


def input_cost(kind: str) -> int:
    """The bytes of memory per byte of input its cap is figured at: Python's reader's at the
    shortest rows, but for CSV (streamed) its cost per byte of a long line, as the native
    reader takes most CSV chunks (at about twice their size) and a chunk of many short lines
    is bounded by ``chunk_bytes`` anyway; and for RecordIO its cost per byte, as its frames
    are then counted and its whole estimate held to ``read_budgets_of``'s budget."""
    cost = codecs.PYTHON_READ_COST[kind]
    return cost.per_byte if kind in (codecs.CSV, codecs.RECORDIO) else cost.worst_per_byte


def input_caps_of(settings: WorkerSettings) -> dict[str, int]:
    """The most of an input an invocation decodes at once, by type, within the worker's memory
    share per invocation slot at ``input_cost``, measured once the model is loaded: JSON and
    RecordIO are decoded whole (up to max_json_bytes), CSV and libsvm a chunk of whole lines
    at a time (up to ``LINE_LIMIT_CHUNKS`` chunks: uncapped, libsvm's could take ~1.5 GiB)."""
    configured = {
        WHOLE_TYPES: settings.max_json_bytes,
        STREAMED_TYPES: LINE_LIMIT_CHUNKS * settings.chunk_bytes,
    }
    caps: dict[str, InputCap] = {}
    for types, most in configured.items():
        caps |= process_input_caps(
            most,
            settings.memory_bytes,
            settings.max_concurrent_invocations,
            {kind: input_cost(kind) for kind in types},
        )
    log_input_caps(caps)
    return {content_type: cap.bytes for content_type, cap in caps.items()}


def read_budgets_of(settings: WorkerSettings) -> dict[str, int]:
    """The memory an invocation's Python read of a RecordIO input may take: the worker's
    memory share per invocation slot (measured once the model is loaded), against the input's
    estimate from its frames and bytes, as the model server holds its bodies (its narrowest
    frames' cost per byte, as a cap on length alone, held dense rows under what they may
    take). Empty when the memory is unknown."""
    share = memory_share(settings.memory_bytes, settings.max_concurrent_invocations, 1)
    if share is None:
        return {}
    return read_budgets(share, [codecs.RECORDIO])


class WebhookSendersStopped(RuntimeError):
    """The outbox's consumer ended by itself (a bug): a worker that goes on taking requests
    would publish webhook jobs that it never sends, and keep the pool from scaling to zero
    (``scaling.backlog_replicas`` keeps a worker for them); it exits, to be started again."""


@dataclass(frozen=True)
class Worker:
    """The worker's consumers: its queue's, with the handler of its requests, and its outbox's,
    with the handler that POSTs them. The outbox is consumed without webhooks too: jobs of
    webhooks since removed from the spec are settled (logged, counted) rather than kept for
    ever; idle on an empty outbox, it adds nothing to a request's path."""

    consumer: Consumer
    handle: Handler
    outbox: tuple[Consumer, Handler]
    senders_failed: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        self.consumer.stop()
        self.outbox[0].stop()

    @property
    def loops(self) -> dict[str, Consumer]:
        """The consumers whose loops its liveness watches, by the name ``stuck`` gives each."""
        return {"consumer": self.consumer, "webhook outbox's consumer": self.outbox[0]}

    def run(self) -> None:
        """Consume until ``stop``; the outbox on a thread of its own, from when the queue is
        consumed. Raises BrokerLoginRefused as ``Consumer.run``."""
        sender = threading.Thread(
            target=self._send, args=self.outbox, name="webhook-outbox", daemon=True
        )
        sender.start()
        try:
            self.consumer.run(self.handle)
        finally:
            self.stop()
            sender.join()
        if self.senders_failed.is_set():
            raise WebhookSendersStopped("the webhook senders stopped (see above)")

    def _send(self, outbox: Consumer, handle: Handler) -> None:
        while not self.consumer.consuming.wait(0.2):  # its log's "consuming" comes first
            if outbox.stopping.is_set():
                return
        try:
            outbox.run(handle)
        except BrokerLoginRefused as exc:  # so does the queue's consumer, which ends the worker
            log.error("webhook outbox: %s", exc)
        except Exception:
            log.exception("webhook outbox: its senders stopped; the worker stops too")
            self.senders_failed.set()
            self.consumer.stop()


def build(settings: WorkerSettings, registry: CollectorRegistry) -> Worker:
    """Load the model and wire the parts; raises ModelLoadError, BrokerUrlError for a
    broker URL that names no broker, or WebhookSecretError."""
    webhooks = webhooks_of(settings)  # before the model's load: a bad one fails fast
    storage = Storage()
    model = XGBoostModel.load(
        settings.model_uri,
        storage,
        allow_pickle=settings.allow_pickle,
        threads=settings.predict_threads,
    )
    log.info("model %s loaded in %.3f s", settings.model_uri, model.load_seconds)
    metrics = WorkerMetrics(registry)
    broker = broker_from_url(settings.broker_url)  # RabbitMQ, or the embedded queue of `up`
    channel = broker.publisher(
        settings.endpoint,
        settings.max_attempts,
        min(settings.max_concurrent_invocations, NOTIFY_CONNECTIONS),
    )
    consumer = broker.consumer(
        settings.endpoint, settings.max_attempts, settings.max_concurrent_invocations
    )
    notifier = Notifier(channel, metrics, webhooks, topic=settings.notify_topic)
    consumer.on_in_flight = metrics.in_flight.inc
    processor = Processor(
        settings,
        model,
        storage,
        notifier,
        metrics,
        consumer.stopping,
        consumer.hold_limit,
        input_caps_of(settings),
        read_budgets_of(settings),
    )
    consumer.on_attempts_allowed = processor.allow_attempts
    jobs = broker.outbox_consumer(settings.endpoint, settings.max_attempts, WEBHOOK_SENDERS)
    jobs.on_in_flight = metrics.webhook_jobs_in_flight.inc  # a worker busy to a scale-in
    senders_channel = broker.publisher(
        settings.endpoint, settings.max_attempts, SENDER_CONNECTIONS, "webhook senders"
    )
    outbox = Outbox(senders_channel, settings.endpoint)
    sender = WebhookSender(
        metrics,
        webhooks,
        settings.webhook_attempts,
        outbox,
        stopping=jobs.stopping,
        retry_delays=settings.webhook_retry_delays,
    )
    return Worker(consumer, delivery_handler(processor, metrics), (jobs, sender.handle))


def stuck(loops: Mapping[str, Consumer], stall_seconds: float) -> str | None:
    """Why the worker is stuck, for its liveness probe: a consumer's loop (``Worker.loops``:
    the queue's, and the webhook outbox's on its own thread) that runs and has not turned for
    ``stall_seconds``. Invocations and webhook POSTs run on each consumer's pool, so an
    hour-long one leaves its loop turning; a loop that stops (a deadlock, a call that never
    returns) does not. One not started yet, or ended, is not stuck (``Consumer.turned``)."""
    now = time.monotonic()
    stalled = []
    for name, consumer in loops.items():
        turned = consumer.turned  # read once: the loop's thread sets it
        if turned is not None and now - turned > stall_seconds:
            stalled.append(f"the {name} loop has not turned for {now - turned:.1f} s")
    return "; ".join(stalled) or None


def run(settings: WorkerSettings) -> int:
    """Entry point of ``infermodes worker``; returns the process exit code."""
    configure_logging(settings.log_level)
    warn_of_unknown_variables(settings)
    registry = CollectorRegistry()
    try:
        worker = build(settings, registry)
    except ModelLoadError as exc:
        log.error("cannot load model: %s", exc)
        return EXIT_MODEL_LOAD_FAILED
    except (BrokerUrlError, BrokerUnavailable, WebhookSecretError) as exc:  # a URL, a queue
        # file it cannot open, a webhook Secret's value
        log.error("cannot start: %s", exc)
        return EXIT_CANNOT_START

    def request_stop(signum: int, _frame: object = None) -> None:
        log.info("signal %d: stopping after in-flight requests", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    if settings.metrics_port:
        try:
            serve_metrics(
                settings.metrics_port,
                settings.metrics_host,
                registry,
                worker.consumer.consuming.is_set,
                functools.partial(stuck, worker.loops, settings.liveness_stall_seconds),
            )
        except OSError as exc:  # a busy port: its readiness could never be asked
            log.error(
                "cannot serve metrics and readiness on %s:%d: %s",
                settings.metrics_host,
                settings.metrics_port,
                exc.strerror,
            )
            return 1
        log.info(
            "metrics, readiness (%s) and liveness (%s) on %s:%d",
            READY_PATH,
            LIVENESS_PATH,
            settings.metrics_host,
            settings.metrics_port,
        )
    try:
        worker.run()
    except BrokerLoginRefused as exc:
        log.error("%s; exiting, so that a restart reads the broker URL again", exc)
        return EXIT_BROKER_LOGIN_REFUSED
    except WebhookSendersStopped as exc:
        log.error("%s; exiting, so that a restart sends the endpoint's webhooks again", exc)
        return 1
    log.info("stopped")
    return 0
