"""The worker's per-delivery logic on real files, with a recording notifier: one result object
per request, errors and retries settled the right way, redeliveries never recomputed."""

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
import pytest
import xgboost as xgb
from prometheus_client import CollectorRegistry

from infermodes.errors import EXIT_CANNOT_START, BrokerUnavailable, StorageError
from infermodes.metrics import WorkerMetrics
from infermodes.predict import codecs
from infermodes.predict.memory import peak_rss_bytes
from infermodes.predict.model import XGBoostModel
from infermodes.queueing.broker import Settle, outbox_name
from infermodes.queueing.connect import embedded_url
from infermodes.queueing.embedded import EmbeddedQueue
from infermodes.queueing.messages import (
    GAVE_UP,
    OUTPUT_NOT_STORED,
    SUCCESS_CLAIM,
    Failure,
    error_record,
)
from infermodes.queueing.notifications import webhook_job
from infermodes.settings import WorkerSettings
from infermodes.storage import FileStore, ObjectRef, Storage, StorageRefused
from infermodes.workers.async_worker import (
    Processor,
    Result,
    WebhookSendersStopped,
    Worker,
    build,
    input_caps_of,
    input_cost,
    read_budgets_of,
    run,
    storage_wait_budget,
    stuck,
    webhooks_of,
)
from tests.support import recordio as recordio_samples
from tests.support.processes import wait_until
from tests.unit.async_samples import invocation, tiny_model


class RecordingNotifier:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, object], bool]] = []
        self.down = False

    def send(self, endpoint: str, body: dict[str, object], success: bool) -> None:
        if self.down:
            raise BrokerUnavailable("down")
        self.sent.append((endpoint, body, success))


@pytest.fixture(scope="module")
def model() -> XGBoostModel:
    return tiny_model(4)


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def processor(model: XGBoostModel, notifier: RecordingNotifier) -> Processor:
    settings = WorkerSettings(  # failing storage requeued at once, as without a wait
        endpoint="ep", model_uri="unused", max_attempts=3, retry_backoff_seconds=0,
        storage_wait_seconds=0,
    )  # fmt: skip
    metrics = WorkerMetrics(CollectorRegistry())
    return Processor(settings, model, Storage(), notifier, metrics, threading.Event())


def request(tmp_path: Path, body: bytes | None = b"1,2,3\n4,5,6\n", **kw: object) -> bytes:
    if body is not None:
        (tmp_path / "in.csv").write_bytes(body)
    now = time.time()
    fields = {
        "inference_id": "r1",
        "input_location": f"file://{tmp_path}/in.csv",
        "output_location": f"file://{tmp_path}/out/r1.out",
        "failure_location": f"file://{tmp_path}/fail/r1.error",
        "accepted_at": now,
        "expires_at": now + 60,
    } | kw
    return invocation(**fields).to_bytes()


def test_success_writes_the_output_and_notifies_with_the_result_inline(
    processor: Processor, notifier: RecordingNotifier, model: XGBoostModel, tmp_path: Path
) -> None:
    assert processor.handle(request(tmp_path), 0) == Result(Settle.ACK, "success")
    output = (tmp_path / "out/r1.out").read_text()
    want = model.predict(np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))
    np.testing.assert_array_equal(np.array(output.split(), "f4"), want)
    [(endpoint, body, success)] = notifier.sent
    assert (endpoint, success, body["inferenceId"]) == ("ep", True, "r1")
    assert body["responseBody"] == {"content": output, "encoding": "STRING"}


@pytest.mark.parametrize(
    ("own", "stamped", "outcome"),
    [
        ("team-b", "team-a", "foreign"),  # a kept queue's request of the deleted team-a's
        ("team-b", "team-b", "success"),
        ("team-b", None, "success"),  # an older gateway stamps nothing
        (None, "team-a", "success"),  # outside Kubernetes (infermodes up, async-api)
    ],
)
def test_a_request_of_another_namespace_is_dead_lettered_unread(
    model: XGBoostModel,
    notifier: RecordingNotifier,
    tmp_path: Path,
    own: str | None,
    stamped: str | None,
    outcome: str,
) -> None:
    """A queue outlives its endpoint and is named after the endpoint alone: a same-named
    endpoint of another namespace inherits it, and its workers must neither read the other's
    inputs nor write its outputs, nor tell their own subscribers about it."""
    settings = WorkerSettings(endpoint="ep", namespace=own, model_uri="unused")
    metrics = WorkerMetrics(CollectorRegistry())
    worker = Processor(settings, model, Storage(), notifier, metrics, threading.Event())
    message = request(tmp_path, namespace=stamped, inline_input=True)
    result = worker.handle(message, 0)
    assert result.outcome == outcome
    if outcome == "foreign":
        assert result == Result(Settle.DEAD_LETTER, "foreign")
        assert (tmp_path / "in.csv").exists()  # not removed, nor anything written
        assert not (tmp_path / "out").exists() and not (tmp_path / "fail").exists()
        assert notifier.sent == []
    else:
        assert (tmp_path / "out/r1.out").exists() and len(notifier.sent) == 1


def test_a_redelivery_after_success_notifies_again_without_rewriting(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    message = request(tmp_path)
    processor.handle(message, 0)
    (tmp_path / "out/r1.out").write_text("kept\n")
    assert processor.handle(message, 1) == Result(Settle.ACK, "duplicate")
    assert (tmp_path / "out/r1.out").read_text() == "kept\n"
    assert [b["responseBody"]["content"] for _, b, _ in notifier.sent][1] == "kept\n"  # type: ignore[index]


def test_bad_input_ends_in_one_error_object_and_is_not_retried(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    message = request(tmp_path, b"1,2\n")
    assert processor.handle(message, 0) == Result(Settle.ACK, "error")
    record = json.loads((tmp_path / "fail/r1.error").read_text())
    assert (record["reason"], record["attempts"]) == ("InvalidInput", 1)
    assert "row 1: expected 3 features, got 2" in record["message"]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    assert processor.handle(message, 1) == Result(Settle.ACK, "duplicate")
    assert [(s, b["failureReason"]) for _, b, s in notifier.sent] == [
        (False, "InvalidInput"),
        (False, "InvalidInput"),
    ]


def test_a_bad_input_is_logged_by_its_reason_never_quoting_the_request_body(
    processor: Processor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller's error object quotes the value that could not be read; the worker's log,
    which its operators read, names the request and the reason only."""
    with caplog.at_level(logging.INFO, "infermodes"):
        result = processor.handle(request(tmp_path, b"1,hunter2-secret,3\n"), 0)
    assert result == Result(Settle.ACK, "error")
    assert "hunter2" in (tmp_path / "fail/r1.error").read_text()  # the caller's to read
    assert "hunter2" not in caplog.text
    assert "inference r1 failed: InvalidInput" in caplog.text


def test_a_failure_of_the_operators_to_mend_is_logged_with_its_message(
    processor: Processor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only an input that does not decode is logged by its reason alone: a missing input, a
    store that refuses, say what and where, which the worker's operators act on."""
    missing = request(tmp_path, None, input_location=f"file://{tmp_path}/gone.csv")
    with caplog.at_level(logging.INFO, "infermodes"):
        assert processor.handle(missing, 0) == Result(Settle.ACK, "error")
    assert f"{tmp_path}/gone.csv" in caplog.text


def test_an_error_object_that_cannot_be_written_requeues_and_notifies_nothing(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """A request ends with its one result object: acked without one, a caller waiting on its
    FailureLocation would wait forever. The inline input stays for the next attempt."""
    message = request(tmp_path, b"1,2\n", inline_input=True)  # permanently bad input
    (tmp_path / "fail").write_bytes(b"")  # the failure prefix cannot take objects now
    assert processor.handle(message, 0) == Result(Settle.REQUEUE, "retried")
    assert not notifier.sent and (tmp_path / "in.csv").exists()
    (tmp_path / "fail").unlink()  # the store is back
    assert processor.handle(message, 1) == Result(Settle.ACK, "error")
    assert json.loads((tmp_path / "fail/r1.error").read_text())["reason"] == "InvalidInput"
    assert [(s, b["failureReason"]) for _, b, s in notifier.sent] == [(False, "InvalidInput")]
    assert not (tmp_path / "in.csv").exists()  # the request has its result


def test_the_last_attempt_notifies_even_without_its_error_object(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """A failure location that can never be written (a missing bucket, no permission) ends
    with the error notification at least, once the attempts are spent, never in silence."""
    (tmp_path / "fail").write_bytes(b"")
    bad = request(tmp_path, b"1,2\n", inline_input=True)
    assert processor.handle(bad, 1) == Result(Settle.REQUEUE, "retried")
    assert processor.handle(bad, 2) == Result(Settle.ACK, "error")  # attempt 3 of 3
    given_up = request(tmp_path, b"1,2,3\n", inference_id="r2")
    assert processor.handle(given_up, 3) == Result(Settle.DEAD_LETTER, "dead_lettered")
    assert [(s, b["failureReason"]) for _, b, s in notifier.sent] == [
        (False, "InvalidInput"),
        (False, "AttemptsExhausted"),
    ]
    # nothing to point at: no failure location in either notification
    assert {str(b["responseParameters"]) for _, b, _ in notifier.sent} == {
        str({"failureLocation": None})
    }
    # and why not, which the caller alone can mend (its failure path): null said nothing
    for _, body, _ in notifier.sent:  # both at request()'s failure location
        assert (f"(its error object could not be stored: cannot write file://{tmp_path}/fail/"
                "r1.error") in str(body["failureMessage"]), body  # fmt: skip
        assert "a file is in the way of its folder" in str(body["failureMessage"]), body


def test_expired_requests_fail_without_being_processed(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    message = request(tmp_path, expires_at=time.time() - 1)
    assert processor.handle(message, 0) == Result(Settle.ACK, "expired")
    assert json.loads((tmp_path / "fail/r1.error").read_text())["reason"] == "Expired"


class FlakyStore(FileStore):
    """Reads fail as an unreachable store's do."""

    def open_read(
        self, ref: ObjectRef, start: int = 0, within: ObjectRef | None = None
    ) -> contextlib.AbstractContextManager[IO[bytes]]:
        raise StorageError(f"s3 error on {ref.uri}: connection refused")


class CreateRecorder(FileStore):
    """Records whether each exclusive create was made durable."""

    def __init__(self) -> None:
        self.creates: list[tuple[str, bool]] = []

    def create(
        self, ref: ObjectRef, data: bytes, durable: bool = True, content_type: str | None = None
    ) -> bool:
        self.creates.append((Path(ref.key).name, durable))
        return super().create(ref, data, durable, content_type)


def test_an_error_s_claim_is_fsynced_and_a_success_s_is_not(
    processor: Processor, tmp_path: Path
) -> None:
    """An error's claim holds its record, which a power loss must not leave empty (an empty
    claim is a success's); a success's claim is empty, on the hot path, and needs no fsync."""
    store = CreateRecorder()
    processor.storage = Storage(file_store=store)
    for name, body in (("good", b"1,2,3\n"), ("bad", b"1,2\n")):
        where = {
            "claim_location": f"file://{tmp_path}/in/{name}.result",
            "output_location": f"file://{tmp_path}/out/{name}.out",
            "failure_location": f"file://{tmp_path}/fail/{name}.error",
        }
        processor.handle(request(tmp_path, body, inference_id=name, **where), 0)
    claims = [(name, durable) for name, durable in store.creates if name.endswith(".result")]
    assert claims == [("good.result", False), ("bad.result", True)]


def test_transient_failures_are_requeued_then_dead_lettered_on_the_last_attempt(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    processor.storage = Storage(file_store=FlakyStore())
    message = request(tmp_path)
    assert processor.handle(message, 0) == Result(Settle.REQUEUE, "retried")
    assert processor.handle(message, 1) == Result(Settle.REQUEUE, "retried")
    assert not notifier.sent and not (tmp_path / "fail").exists()
    assert processor.handle(message, 2) == Result(Settle.DEAD_LETTER, "dead_lettered")
    record = json.loads((tmp_path / "fail/r1.error").read_text())
    assert (record["reason"], record["attempts"]) == ("AttemptsExhausted", 3)
    assert "connection refused" in record["message"]
    assert [b["failureReason"] for _, b, _ in notifier.sent] == ["AttemptsExhausted"]


class OutageStore(FileStore):
    """Reads fail, as an unreachable store's do, the first ``failures`` times (None: always)."""

    def __init__(self, failures: int | None) -> None:
        self.failures = failures
        self.tries = 0

    def open_read(
        self, ref: ObjectRef, start: int = 0, within: ObjectRef | None = None
    ) -> contextlib.AbstractContextManager[IO[bytes]]:
        self.tries += 1
        if self.failures is None or self.tries <= self.failures:
            raise StorageError(f"s3 error on {ref.uri}: connection refused")
        return super().open_read(ref, start, within)


def test_a_storage_outage_is_waited_out_holding_the_request_not_spent_in_attempts(
    model: XGBoostModel, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """Requeued at each failure, every queued request spent its three attempts within seconds
    of an outage and ended AttemptsExhausted. The worker now holds it and tries again after
    each back-off: the outage ends, the request succeeds on its first delivery. Past
    ``storage_wait_seconds`` the failure spends an attempt, as before."""
    settings = WorkerSettings(endpoint="ep", model_uri="unused", retry_backoff_seconds=0,
                              storage_wait_seconds=60)  # fmt: skip
    registry = CollectorRegistry()
    store = OutageStore(failures=4)
    processor = Processor(settings, model, Storage(file_store=store), notifier,
                          WorkerMetrics(registry), threading.Event())  # fmt: skip
    assert processor.handle(request(tmp_path), 0) == Result(Settle.ACK, "success")
    assert store.tries == 5 and (tmp_path / "out/r1.out").exists()
    assert [success for _, _, success in notifier.sent] == [True]
    assert registry.get_sample_value("infermodes_async_storage_waits_total") == 4

    brief = WorkerSettings(endpoint="ep", model_uri="unused", retry_backoff_seconds=0,
                           storage_wait_seconds=1.0)  # fmt: skip
    down = OutageStore(failures=None)
    waiting = Processor(brief, model, Storage(file_store=down), notifier,
                        WorkerMetrics(CollectorRegistry()), threading.Event())  # fmt: skip
    assert waiting.handle(request(tmp_path, inference_id="r2"), 0) == Result(
        Settle.REQUEUE, "retried"
    )
    assert down.tries >= 2 and len(notifier.sent) == 1  # tried again, then requeued


class RevokedKeyStore(FileStore):
    """Refuses the worker, as S3 refuses a revoked key, the first ``refusals`` calls of
    ``refused`` (the look for a result, or the output's write)."""

    def __init__(self, refusals: int, refused: str = "exists") -> None:
        self.refusals, self.refused = refusals, refused

    def refuse(self, method: str, ref: ObjectRef) -> None:
        if method == self.refused and self.refusals > 0:
            self.refusals -= 1
            raise StorageRefused(f"s3 refused access to {ref.uri}: InvalidAccessKeyId")

    def exists(self, ref: ObjectRef) -> bool:
        self.refuse("exists", ref)
        return super().exists(ref)

    def open_write(
        self, ref: ObjectRef, content_type: str | None = None
    ) -> contextlib.AbstractContextManager[IO[bytes]]:
        self.refuse("open_write", ref)
        return super().open_write(ref, content_type)


@pytest.mark.parametrize("refused", ["exists", "open_write"])
def test_the_endpoints_own_storage_refusing_the_worker_is_waited_out_not_the_requests_end(
    model: XGBoostModel, notifier: RecordingNotifier, tmp_path: Path, refused: str
) -> None:
    """A storage Secret rotated under a running worker: its output store refuses its key. That
    is no fault of the request, which ended StorageRefused on its first attempt; it is held
    as failing storage, and completes once the store takes the worker (a restarted one)."""
    settings = WorkerSettings(endpoint="ep", model_uri="unused", retry_backoff_seconds=0,
                              storage_wait_seconds=60)  # fmt: skip
    registry = CollectorRegistry()
    processor = Processor(settings, model, Storage(file_store=RevokedKeyStore(2, refused)),
                          notifier, WorkerMetrics(registry), threading.Event())  # fmt: skip
    assert processor.handle(request(tmp_path), 0) == Result(Settle.ACK, "success")
    assert (tmp_path / "out/r1.out").exists()
    assert [success for _, _, success in notifier.sent] == [True]
    assert registry.get_sample_value("infermodes_async_storage_waits_total") == 2


@pytest.mark.parametrize(
    ("hold_limit", "after", "budget"),
    [
        (None, 3630, 300),  # the embedded queue renews its leases: no limit
        (3900, 930, 300),  # the default timeout (900 s) and back-off leave room for it all
        (3900, 3630, 180),  # a one-hour invocation after a 300 s wait passed 65 minutes
        (3900, 3800, 10),
        (3900, 4200, 0),  # a 600 s back-off after a one-hour invocation: no wait at all
    ],
)
def test_the_storage_wait_ends_where_the_broker_would_take_the_delivery_back(
    hold_limit: float | None, after: float, budget: float
) -> None:
    """RabbitMQ takes back a delivery held past its consumer timeout (65 min): it closes the
    channel, redelivers everything the worker holds, and the work in progress is orphaned.
    A wait for storage, the invocation and back-off that may follow it, and the finish must
    fit in it."""
    assert storage_wait_budget(300, hold_limit, after) == budget


def test_a_worker_with_no_time_left_under_the_hold_limit_requeues_without_waiting(
    model: XGBoostModel, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """The request's own timeout uses the whole of what the broker allows: failing storage
    spends an attempt at once rather than hold the delivery into the broker's timeout."""
    settings = WorkerSettings(endpoint="ep", model_uri="unused", retry_backoff_seconds=0,
                              storage_wait_seconds=2)  # fmt: skip
    registry = CollectorRegistry()
    down = OutageStore(failures=None)
    processor = Processor(settings, model, Storage(file_store=down), notifier,
                          WorkerMetrics(registry), threading.Event())  # fmt: skip
    processor.hold_limit = 3600 + 30 + 90  # the invocation timeout, back-off and finish
    message = request(tmp_path, invocation_timeout_seconds=3600)
    assert processor.handle(message, 0) == Result(Settle.REQUEUE, "retried")
    assert down.tries == 1 and not notifier.sent
    assert registry.get_sample_value("infermodes_async_storage_waits_total") == 0


def test_a_worker_told_to_stop_ends_its_wait_for_storage_and_requeues(
    model: XGBoostModel, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    settings = WorkerSettings(endpoint="ep", model_uri="unused", retry_backoff_seconds=0,
                              storage_wait_seconds=600)  # fmt: skip
    stopping = threading.Event()
    processor = Processor(settings, model, Storage(file_store=OutageStore(None)), notifier,
                          WorkerMetrics(CollectorRegistry()), stopping)  # fmt: skip
    threading.Timer(0.3, stopping.set).start()
    assert processor.handle(request(tmp_path), 0) == Result(Settle.REQUEUE, "retried")
    assert not notifier.sent


def test_a_queue_that_allows_fewer_attempts_is_given_up_within_them(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """A RabbitMQ queue kept from an endpoint with a smaller maxAttempts: the worker gives up
    on the attempt the queue's limit allows last, not after maxAttempts (the queue would
    have dropped the message into the dead-letter queue without a word before)."""
    processor.storage = Storage(file_store=FlakyStore())
    processor.allow_attempts(2)
    message = request(tmp_path)
    assert processor.handle(message, 0) == Result(Settle.REQUEUE, "retried")
    assert processor.handle(message, 1) == Result(Settle.DEAD_LETTER, "dead_lettered")
    record = json.loads((tmp_path / "fail/r1.error").read_text())
    assert (record["reason"], record["attempts"]) == ("AttemptsExhausted", 2)
    assert [b["failureReason"] for _, b, _ in notifier.sent] == ["AttemptsExhausted"]


def test_a_give_up_that_cannot_notify_is_requeued_and_dead_lettered_once_notified(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """The broker went down under the give-up: the message must come back to notify."""
    message = request(tmp_path)
    notifier.down = True
    assert processor.handle(message, 3) == Result(Settle.REQUEUE, "retried")
    assert json.loads((tmp_path / "fail/r1.error").read_text())["reason"] == "AttemptsExhausted"
    notifier.down = False
    assert processor.handle(message, 4) == Result(Settle.DEAD_LETTER, "dead_lettered")
    assert [b["failureReason"] for _, b, _ in notifier.sent] == ["AttemptsExhausted"]


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_an_input_that_is_not_a_file_is_a_permanent_invalid_input(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path, kind: str
) -> None:
    target = tmp_path / kind
    target.mkdir() if kind == "folder" else os.mkfifo(target)
    message = request(tmp_path, None, input_location=f"file://{target}")
    assert processor.handle(message, 0) == Result(Settle.ACK, "error")
    record = json.loads((tmp_path / "fail/r1.error").read_text())
    assert (record["reason"], record["attempts"]) == ("InvalidInput", 1)
    assert "is a directory or a special file, not an object" in record["message"]


@pytest.mark.parametrize("link", ["file", "folder", "dotdot"])
def test_a_link_out_of_the_allowed_prefix_is_refused_when_opened(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path, link: str
) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub/secret.csv").write_bytes(b"1,2,3\n")
    allowed.mkdir()
    location = {
        "file": allowed / "link.csv",
        "folder": allowed / "dir" / "secret.csv",
        "dotdot": allowed / "up" / ".." / ".." / "outside/sub/secret.csv",
    }[link]
    if link == "file":
        location.symlink_to(outside / "sub/secret.csv")
    elif link == "folder":
        location.parent.symlink_to(outside / "sub")
    else:
        (allowed / "up").symlink_to(outside / "sub")
    message = request(
        tmp_path, None, input_location=f"file://{location}", input_root=f"file://{allowed}"
    )
    assert processor.handle(message, 0) == Result(Settle.ACK, "error")
    record = json.loads((tmp_path / "fail/r1.error").read_text())
    assert record["reason"] == "InputNotAllowed"
    assert not (tmp_path / "out").exists()
    assert "1,2,3" not in json.dumps(notifier.sent)


def test_a_link_that_stays_inside_is_followed(processor: Processor, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "data").mkdir(parents=True)
    (allowed / "data/rows.csv").write_bytes(b"1,2,3\n")
    (allowed / "latest.csv").symlink_to(allowed / "data/rows.csv")
    message = request(
        tmp_path,
        None,
        input_location=f"file://{allowed}/latest.csv",
        input_root=f"file://{allowed}",
    )
    assert processor.handle(message, 0) == Result(Settle.ACK, "success")


def test_an_inline_input_is_removed_once_its_request_has_a_result(
    processor: Processor, tmp_path: Path
) -> None:
    ok = request(tmp_path, inline_input=True)
    assert processor.handle(ok, 0) == Result(Settle.ACK, "success")
    assert not (tmp_path / "in.csv").exists()
    assert processor.handle(ok, 1) == Result(Settle.ACK, "duplicate")  # a redelivery
    bad = request(tmp_path, b"1,2\n", inline_input=True, **elsewhere(tmp_path, "r2"))
    assert processor.handle(bad, 0) == Result(Settle.ACK, "error")
    assert not (tmp_path / "in.csv").exists()
    retried = request(tmp_path, b"1,2,3\n", inline_input=True, **elsewhere(tmp_path, "r3"))
    processor.storage = Storage(file_store=FlakyStore())
    assert processor.handle(retried, 0) == Result(Settle.REQUEUE, "retried")
    assert (tmp_path / "in.csv").exists()  # still needed


def elsewhere(tmp_path: Path, inference_id: str) -> dict[str, str]:
    return {
        "inference_id": inference_id,
        "output_location": f"file://{tmp_path}/out/{inference_id}.out",
        "failure_location": f"file://{tmp_path}/fail/{inference_id}.error",
    }


def test_a_by_reference_input_is_never_removed(processor: Processor, tmp_path: Path) -> None:
    assert processor.handle(request(tmp_path), 0) == Result(Settle.ACK, "success")
    assert (tmp_path / "in.csv").exists()


def test_an_input_removed_by_a_concurrent_delivery_that_finished_is_no_error(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """Two deliveries of one request (a caller's retry queues it again): the first wrote the
    output and removed the inline input before the second opened it."""
    message = request(tmp_path, None, inline_input=True)
    (tmp_path / "out").mkdir()
    (tmp_path / "out/r1.out").write_text("7\n")
    processor.storage = Storage(file_store=LateOutputStore(tmp_path / "out/r1.out"))
    assert processor.handle(message, 0) == Result(Settle.ACK, "duplicate")
    assert not (tmp_path / "fail").exists()
    assert [s for _, _, s in notifier.sent] == [True]


class LateOutputStore(FileStore):
    """The output appears after the worker looked for it, as another delivery writes it."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.looked = 0

    def exists(self, ref: ObjectRef) -> bool:
        if ref.key == str(self.output):
            self.looked += 1
            return self.looked > 1
        return super().exists(ref)


def test_a_delivery_past_the_budget_is_given_up_without_processing(
    processor: Processor, tmp_path: Path
) -> None:
    assert processor.handle(request(tmp_path), 3) == Result(Settle.DEAD_LETTER, "dead_lettered")
    assert not (tmp_path / "out").exists()


def test_unreadable_messages_are_reported_where_they_say(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    body = json.loads(request(tmp_path)) | {"acceptedAt": "yesterday"}
    message = json.dumps(body).encode()
    assert processor.handle(message, 0) == Result(Settle.REQUEUE, "retried")
    assert processor.handle(message, 2) == Result(Settle.DEAD_LETTER, "dead_lettered")
    record = json.loads((tmp_path / "fail/r1.error").read_text())
    assert "acceptedAt" in record["message"] and record["inputLocation"] is None
    assert notifier.sent[0][1]["inferenceId"] == "r1"


def test_an_unreadable_message_of_another_namespace_is_dead_lettered_unread(
    model: XGBoostModel, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """Not reported where it says (the other's failure path) nor to this endpoint's
    subscribers: what can be read of it is enough to see it is not this endpoint's."""
    settings = WorkerSettings(endpoint="ep", namespace="team-b", model_uri="unused")
    worker = Processor(settings, model, Storage(), notifier, WorkerMetrics(CollectorRegistry()),
                       threading.Event())  # fmt: skip
    body = json.loads(request(tmp_path, namespace="team-a")) | {"acceptedAt": "yesterday"}
    assert worker.handle(json.dumps(body).encode(), 2) == Result(Settle.DEAD_LETTER, "foreign")
    assert not (tmp_path / "fail").exists() and notifier.sent == []


def test_a_lost_notification_requeues_and_the_redelivery_only_notifies(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    message = request(tmp_path)
    notifier.down = True
    assert processor.handle(message, 0) == Result(Settle.REQUEUE, "retried")
    assert (tmp_path / "out/r1.out").exists() and not (tmp_path / "fail").exists()
    notifier.down = False
    assert processor.handle(message, 1) == Result(Settle.ACK, "duplicate")
    assert len(notifier.sent) == 1


def test_a_lost_error_notification_requeues_and_keeps_the_one_error_object(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    message = request(tmp_path, b"1,2\n")
    notifier.down = True
    assert processor.handle(message, 0) == Result(Settle.REQUEUE, "retried")
    first = (tmp_path / "fail/r1.error").read_bytes()
    notifier.down = False
    assert processor.handle(message, 1) == Result(Settle.ACK, "duplicate")
    assert (tmp_path / "fail/r1.error").read_bytes() == first
    assert [b["failureReason"] for _, b, _ in notifier.sent] == ["InvalidInput"]


def test_time_in_backlog_total_time_and_the_newest_acceptance_taken_are_measured(
    processor: Processor, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    processor.metrics = WorkerMetrics(registry)
    value = registry.get_sample_value
    now = time.time()
    older = request(tmp_path, accepted_at=now - 30, expires_at=now + 60)
    assert processor.handle(older, 0).outcome == "success"
    waited = value("infermodes_async_time_in_backlog_seconds_sum")
    assert waited is not None and 30 <= waited < 60
    assert value("infermodes_async_dequeued_accepted_timestamp_seconds") == now - 30
    total = ("infermodes_async_total_processing_time_seconds_count", {"outcome": "success"})
    assert value(*total) == 1
    newer = request(tmp_path, inference_id="r2", accepted_at=now - 5,
                    output_location=f"file://{tmp_path}/out/r2.out")  # fmt: skip
    processor.handle(newer, 0)
    processor.handle(older, 1)  # a redelivery: waited before, counted then; nothing new done
    assert value("infermodes_async_time_in_backlog_seconds_count") == 2
    assert value("infermodes_async_dequeued_accepted_timestamp_seconds") == now - 5  # newest
    assert value(*total) == 2  # the duplicate is not a second result


def tiny_model_file(tmp_path: Path) -> Path:
    features = np.random.default_rng(5).random((30, 3))
    path = tmp_path / "model.json"
    xgb.train({"nthread": 1}, xgb.DMatrix(features, features.sum(axis=1)), 2).save_model(path)
    return path


def test_a_broker_url_of_another_scheme_stops_the_worker_without_its_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The chart's Secret also holds the management URL (http://user:pass@...): put in the
    wrong key, the worker ends with a clear line, and its log (a crashing pod's status
    message) never shows the password."""
    settings = WorkerSettings(
        endpoint="ep",
        model_uri=f"file://{tiny_model_file(tmp_path)}",
        broker_url="http://admin:S3cretPw@rabbit:15672/",
        metrics_port=0,
    )
    assert run(settings) == EXIT_CANNOT_START
    assert "must start with amqp://" in caplog.text and "http://admin@rabbit:15672/" in caplog.text
    assert "S3cretPw" not in caplog.text


@pytest.mark.parametrize(
    "url",
    [
        "amqp://admin:S3cr/etPw@127.0.0.1:5672/",
        "amqp://admin:S3cr#etPw@127.0.0.1:5672/",
        "amqp://admin:S3cr?etPw@127.0.0.1:5672/",
        "amqps://admin:S3cretPw@127.0.0.1:5671/?ssl_options={bad",  # pika's literal_eval
        "amqps://admin:S3cretPw@127.0.0.1:5671/?ssl_options={'ca_certs':'/nonexistent/ca.pem'}",
    ],
)
def test_a_url_pika_cannot_read_stops_the_worker_without_a_piece_of_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, url: str
) -> None:
    """A base64 password often holds a '/': unencoded, pika reads its first half as the port
    and says so in its error, which would reach the pod's status and an Event."""
    settings = WorkerSettings(
        endpoint="ep",
        model_uri=f"file://{tiny_model_file(tmp_path)}",
        broker_url=url,
        metrics_port=0,
    )
    assert run(settings) == EXIT_CANNOT_START
    assert "cannot be read as an AMQP URL: percent-encode" in caplog.text
    assert "S3cr" not in caplog.text and "etPw" not in caplog.text


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("ftp://hooks.example/T0K3N", "must be an http(s) URL with a host"),
        ("http://hooks.example/T0K3N with space", "must be an http(s) URL with a host"),
        ("http://169.254.169.254/T0K3N", "169.254.169.254 is a link-local or metadata address"),
    ],
)
def test_a_webhook_secret_that_holds_no_webhook_stops_the_worker_without_showing_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, value: str, said: str
) -> None:
    """The spec checks its own webhook URLs; one from a Secret (``successWebhookSecretRef``)
    is checked at the worker's start, and the message (the pod's status, an Event) never
    shows its path, often its token."""
    settings = WorkerSettings(
        endpoint="ep",
        model_uri=f"file://{tmp_path / 'no-model-needed'}",  # refused before the model loads
        broker_url="amqp://u:p@127.0.0.1:1/",
        secret_success_webhook_url=value,
        metrics_port=0,
    )
    assert "T0K3N" not in repr(settings)
    assert run(settings) == EXIT_CANNOT_START
    assert said in caplog.text and "successWebhookSecretRef" in caplog.text
    assert "T0K3N" not in caplog.text


def test_webhooks_from_secrets_join_the_listed_ones() -> None:
    settings = WorkerSettings(
        endpoint="ep", model_uri="file:///m", broker_url="amqp://u:p@127.0.0.1:1/",
        success_webhook_urls=["http://127.0.0.1:9/listed"],
        secret_success_webhook_url=" http://127.0.0.1:9/from-secret\n",  # a key's newline
        secret_error_webhook_url="https://hooks.example/err",
    )  # fmt: skip
    hooks = webhooks_of(settings)
    assert hooks.success == ["http://127.0.0.1:9/listed", "http://127.0.0.1:9/from-secret"]
    assert hooks.error == ["https://hooks.example/err"]


def claimed(tmp_path: Path, body: bytes | None = b"1,2,3\n4,5,6\n", **kw: object) -> bytes:
    """A request with a result claim location, as the accepting side makes it."""
    return request(tmp_path, body, claim_location=f"file://{tmp_path}/in/r1.result", **kw)


def another_copys_error(tmp_path: Path, reason: str = "Expired") -> bytes:
    record = error_record(
        "r1",
        Failure(reason, "claimed by the other copy", False),
        attempts=1,
        input_location=None,
        failed_at=1.0,
    )
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "in/r1.result").write_bytes(record)
    return record


def test_a_success_claims_the_result_before_its_output_appears(
    processor: Processor, tmp_path: Path
) -> None:
    assert processor.handle(claimed(tmp_path), 0) == Result(Settle.ACK, "success")
    assert (tmp_path / "in/r1.result").read_bytes() == SUCCESS_CLAIM
    assert (tmp_path / "out/r1.out").exists()


def test_an_error_claimed_by_another_copy_drops_this_copys_output(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """The other copy expired (or gave up) while this one predicted: its error is the
    request's one result, stored here too in case that copy died before storing it."""
    record = another_copys_error(tmp_path)
    assert processor.handle(claimed(tmp_path), 0) == Result(Settle.ACK, "duplicate")
    assert not list((tmp_path / "out").glob("*")), "the output must not appear"
    assert (tmp_path / "fail/r1.error").read_bytes() == record
    assert [(s, b["failureReason"]) for _, b, s in notifier.sent] == [(False, "Expired")]


def test_a_claimed_give_up_is_dead_lettered_by_the_copy_that_stores_it(
    processor: Processor, tmp_path: Path
) -> None:
    another_copys_error(tmp_path, GAVE_UP)
    assert processor.handle(claimed(tmp_path), 0) == Result(Settle.DEAD_LETTER, "dead_lettered")


def test_an_error_loses_to_a_success_claimed_first_and_waits_for_its_output(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """This copy's input went bad (the caller replaced it) after another copy predicted and
    claimed success: no error object, no notification; the redelivery finds the output."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in/r1.result").write_bytes(SUCCESS_CLAIM)
    message = claimed(tmp_path, body=b"1,2\n")
    assert processor.handle(message, 0) == Result(Settle.REQUEUE, "retried")
    assert not (tmp_path / "fail").exists() and notifier.sent == []
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out/r1.out").write_text("7\n")
    assert processor.handle(message, 1) == Result(Settle.ACK, "duplicate")
    assert [s for _, _, s in notifier.sent] == [True]


@pytest.mark.parametrize(
    ("count", "expires_in"), [(3, 60.0), (0, -1.0)], ids=["past the budget", "expired"]
)
def test_a_success_claimed_but_never_stored_is_finished_not_given_up(
    processor: Processor,
    notifier: RecordingNotifier,
    tmp_path: Path,
    count: int,
    expires_in: float,
) -> None:
    """The copy that claimed success died before its output was stored: a later delivery
    finishes that success rather than contradict it with an error."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in/r1.result").write_bytes(SUCCESS_CLAIM)
    message = claimed(tmp_path, expires_at=time.time() + expires_in)
    assert processor.handle(message, count) == Result(Settle.ACK, "success")
    assert (tmp_path / "out/r1.out").exists() and not (tmp_path / "fail").exists()
    assert [s for _, _, s in notifier.sent] == [True]


def test_an_error_claims_the_result_with_its_record(processor: Processor, tmp_path: Path) -> None:
    assert processor.handle(claimed(tmp_path, body=b"1,2\n"), 0) == Result(Settle.ACK, "error")
    claim = (tmp_path / "in/r1.result").read_bytes()
    assert claim == (tmp_path / "fail/r1.error").read_bytes()
    assert json.loads(claim)["reason"] == "InvalidInput"


@pytest.mark.parametrize(
    ("held_at", "result", "success"),
    [("predicting", "r1.error", False), ("storing", "r1.out", True)],
)
def test_two_copies_racing_leave_exactly_one_result(
    model: XGBoostModel, tmp_path: Path, held_at: str, result: str, success: bool
) -> None:
    """One copy is held while predicting (before it claims) or while storing its output
    (claimed), as the other copy of the request finds its TTL passed: the first claim decides
    the one result, and every notification reports it."""
    message = claimed(tmp_path)
    late = json.dumps(json.loads(message) | {"expiresAt": time.time() - 1}).encode()
    settings = WorkerSettings(endpoint="ep", model_uri="unused", retry_backoff_seconds=0,
                              storage_wait_seconds=0)  # fmt: skip
    notes = RecordingNotifier()
    metrics = WorkerMetrics(CollectorRegistry())
    held = HeldOutput(held_at)
    slow = Processor(settings, model, Storage(held), notes, metrics, threading.Event())
    quick = Processor(settings, model, Storage(), notes, metrics, threading.Event())
    settled: list[Result] = []
    copy = threading.Thread(target=lambda: settled.append(slow.handle(message, 0)))
    copy.start()
    assert held.reached.wait(10)
    other = quick.handle(late, 0)
    held.release.set()
    copy.join(10)
    stored = sorted(p.name for p in (tmp_path / "out").glob("*")) + sorted(
        p.name for p in (tmp_path / "fail").glob("*")
    )
    assert stored == [result], (other, settled)
    assert [s for _, _, s in notes.sent] == [success, success]


class HeldOutput(FileStore):
    """Holds the output's write at its first write (``predicting``: not claimed yet) or at
    its end (``storing``: claimed, not stored yet) until ``release``."""

    def __init__(self, at: str) -> None:
        self.at = at
        self.reached = threading.Event()
        self.release = threading.Event()

    def _hold(self) -> None:
        self.reached.set()
        assert self.release.wait(10)

    @contextlib.contextmanager
    def open_write(self, ref: ObjectRef, content_type: str | None = None) -> Iterator[IO[bytes]]:
        with super().open_write(ref) as handle:
            if ref.key.endswith(".out") and self.at == "predicting":
                write = handle.write

                def held_write(data: bytes) -> int:
                    if not self.reached.is_set():
                        self._hold()
                    return write(data)

                handle.write = held_write  # type: ignore[method-assign,assignment]
            yield handle
            if ref.key.endswith(".out") and self.at == "storing":
                self._hold()


class FailingOutputWrite(FileStore):
    """Every write of an object named ``*<suffix>`` fails: before it is stored (``stored``
    False), or after it got its name (as an fsync of its folder would)."""

    def __init__(self, stored: bool, suffix: str = ".out") -> None:
        self.stored = stored
        self.suffix = suffix

    @contextlib.contextmanager
    def open_write(self, ref: ObjectRef, content_type: str | None = None) -> Iterator[IO[bytes]]:
        failure = StorageError(f"cannot write {ref.uri}: input/output error")
        with super().open_write(ref) as handle:
            yield handle
            if ref.key.endswith(self.suffix) and not self.stored:
                raise failure
        if ref.key.endswith(self.suffix):
            raise failure


def test_an_output_that_cannot_be_stored_keeps_its_claim_and_a_later_copy_stores_it(
    processor: Processor, model: XGBoostModel, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """Even on the last attempt, and even when the copy that stores it found its TTL passed:
    had the claim been released, that copy's expiry (or this one's give-up) could have
    claimed an error while a third copy, already past its own claim, stored the output."""
    processor.storage = Storage(file_store=FailingOutputWrite(stored=False))
    message = claimed(tmp_path)
    assert processor.handle(message, 0) == Result(Settle.REQUEUE, "retried")
    assert processor.handle(message, 2) == Result(Settle.REQUEUE, "retried")  # not given up
    assert (tmp_path / "in/r1.result").read_bytes() == SUCCESS_CLAIM
    assert not (tmp_path / "fail").exists() and notifier.sent == []
    expired = json.dumps(json.loads(message) | {"expiresAt": time.time() - 1}).encode()
    processor.storage = Storage()
    assert processor.handle(expired, 0) == Result(Settle.ACK, "success")
    assert (tmp_path / "out/r1.out").exists() and not (tmp_path / "fail").exists()
    assert [s for _, _, s in notifier.sent] == [True]


def said_on_the_last_but_one(
    processor: Processor, notifier: RecordingNotifier, message: bytes, outcome: str
) -> dict[str, object]:
    """Requeued with nothing said on counts 0 to 3 (maxAttempts 3), then dead-lettered on
    count 4 with one error notification without a failure location: its body."""
    for count in range(4):
        assert processor.handle(message, count) == Result(Settle.REQUEUE, "retried")
    assert notifier.sent == []
    assert processor.handle(message, 4) == Result(Settle.DEAD_LETTER, outcome)
    [(_, body, success)] = notifier.sent
    assert not success and body["responseParameters"] == {"failureLocation": None}
    return body


def test_a_claimed_success_no_delivery_could_store_is_notified_and_dead_lettered(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """Its input is gone (the copy that claimed it died, the caller removed the input): the
    deliveries keep the claim's promise until the queue's last two (maxAttempts 3 + 3: the
    embedded queue's last is count 5), the first of which says so, with a delivery to spare
    for a notification that cannot go out, instead of leaving the queue to drop the message
    silently. No error object (nor a location for one): a resend of the request can still
    complete the claimed success."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in/r1.result").write_bytes(SUCCESS_CLAIM)
    body = said_on_the_last_but_one(processor, notifier, claimed(tmp_path, body=None), "abandoned")
    assert body["failureReason"] == OUTPUT_NOT_STORED
    assert "(this is delivery 5 of this message)" in str(body["failureMessage"])
    assert not (tmp_path / "fail").exists() and not (tmp_path / "out").exists()
    assert (tmp_path / "in/r1.result").read_bytes() == SUCCESS_CLAIM


def test_an_abandoned_request_keeps_its_inline_input_and_a_stored_output_wins(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """A resend in flight may still need the input; and a copy that stored the output between
    the decision and the notification makes it a success."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in/r1.result").write_bytes(SUCCESS_CLAIM)
    message = claimed(tmp_path, body=b"1,2\n", inline_input=True)
    assert processor.handle(message, 4) == Result(Settle.DEAD_LETTER, "abandoned")
    assert (tmp_path / "in.csv").exists()

    class StoredMeanwhile(FileStore):
        def exists(self, ref: ObjectRef) -> bool:
            if ref.key.endswith(".out") and not (tmp_path / "out/r1.out").exists():
                (tmp_path / "out").mkdir(exist_ok=True)
                (tmp_path / "out/r1.out").write_text("7\n")
                return False  # what plan saw
            return super().exists(ref)

    processor.storage = Storage(file_store=StoredMeanwhile())
    assert processor.handle(message, 4) == Result(Settle.ACK, "duplicate")
    assert [s for _, _, s in notifier.sent] == [False, True]


class UnclaimableResult(FileStore):
    """The store answers every attempt to create a result claim with an error."""

    def create(
        self, ref: ObjectRef, data: bytes, durable: bool = True, content_type: str | None = None
    ) -> bool:
        if ref.key.endswith(".result"):
            raise StorageError(f"cannot create {ref.uri}: service unavailable")
        return super().create(ref, data, durable, content_type)


def test_an_error_whose_claim_cannot_be_taken_is_said_only_on_the_queues_last_deliveries(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """Another copy may have claimed success: until the queue's last two deliveries the error
    is neither stored nor notified, even past the attempt budget; then it is notified without
    an object (there is no claim to store it under) and dead-lettered."""
    processor.storage = Storage(file_store=UnclaimableResult())
    message = claimed(tmp_path, body=None)  # its input is missing: a permanent failure
    body = said_on_the_last_but_one(processor, notifier, message, "dead_lettered")
    assert body["failureReason"] == GAVE_UP
    assert body["failureMessage"].endswith(  # why failureLocation is null
        "(its error object could not be stored: its result could not be claimed: cannot "
        f"create file://{tmp_path}/in/r1.result: service unavailable)"
    )
    assert not (tmp_path / "fail").exists()


def test_a_claimed_error_that_cannot_be_stored_is_notified_on_the_last_attempt(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """Requeued before (another delivery may store it), notified without the object then."""
    another_copys_error(tmp_path)
    processor.storage = Storage(file_store=FailingOutputWrite(stored=False, suffix=".error"))
    message = claimed(tmp_path)
    assert processor.handle(message, 1) == Result(Settle.REQUEUE, "retried")
    assert notifier.sent == []
    assert processor.handle(message, 2) == Result(Settle.ACK, "duplicate")
    assert [(s, b["failureReason"]) for _, b, s in notifier.sent] == [(False, "Expired")]
    assert notifier.sent[0][1]["responseParameters"] == {"failureLocation": None}
    assert "its error object could not be stored" in notifier.sent[0][1]["failureMessage"]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


class SweptClaim(FileStore):
    """The claim exists when this copy tries to take it and is gone before it reads it (the
    retention sweep removed it)."""

    def __init__(self) -> None:
        self.tries = 0

    def create(
        self, ref: ObjectRef, data: bytes, durable: bool = True, content_type: str | None = None
    ) -> bool:
        self.tries += 1
        return self.tries > 1 and super().create(ref, data, durable, content_type)


def test_a_claim_removed_before_it_is_read_is_taken_again(
    processor: Processor, tmp_path: Path
) -> None:
    store = SweptClaim()
    processor.storage = Storage(file_store=store)
    assert processor.handle(claimed(tmp_path), 0) == Result(Settle.ACK, "success")
    assert store.tries == 2 and (tmp_path / "in/r1.result").read_bytes() == SUCCESS_CLAIM


def test_an_output_stored_before_its_write_failed_keeps_its_claim(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """Even on the last attempt, whose give-up would otherwise claim a second result: the
    stored output is the result, and is notified."""
    processor.storage = Storage(file_store=FailingOutputWrite(stored=True))
    assert processor.handle(claimed(tmp_path), 2) == Result(Settle.ACK, "duplicate")
    assert (tmp_path / "in/r1.result").read_bytes() == SUCCESS_CLAIM
    assert (tmp_path / "out/r1.out").exists() and not (tmp_path / "fail").exists()
    assert [s for _, _, s in notifier.sent] == [True]


def test_a_request_whose_workers_died_holding_it_says_so_when_it_is_given_up(
    processor: Processor, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """Delivered a last time with its attempts spent and nothing stored, a request's earlier
    deliveries ended with no result and no error: their workers stopped while holding it (a
    model that crashes the process, out of memory, a kill). The error said only "processing
    failed 3 time(s)", as if a failure had been seen, giving the caller no reason to look for."""
    assert processor.handle(request(tmp_path), 3) == Result(Settle.DEAD_LETTER, "dead_lettered")
    [(_, body, success)] = notifier.sent
    assert not success and body["failureReason"] == "AttemptsExhausted"
    message = str(body["failureMessage"])
    assert "the worker holding it stopped" in message and "out of memory" in message, message
    stored = json.loads((tmp_path / "fail/r1.error").read_text())
    assert stored["message"] == message


def test_csv_and_libsvm_chunks_are_bounded_by_the_memory_share_of_an_invocation_slot() -> None:
    """CSV and libsvm are decoded a chunk at a time: a chunk is bounded by the worker's memory
    per invocation slot at ``input_cost`` (libsvm at Python's reader's shortest rows; CSV, which
    the native reader takes, at Python's cost of a long line), as whole inputs are, and at
    most 16 chunks where memory is plenty."""
    used = peak_rss_bytes()
    share = 16 << 20  # a slot's share of what the process does not hold yet
    small = WorkerSettings(
        endpoint="ep", model_uri="unused", memory_bytes=used + 2 * share,
        max_concurrent_invocations=2,
    )  # fmt: skip
    caps = input_caps_of(small)
    for kind in (codecs.CSV, codecs.LIBSVM, codecs.JSON, codecs.RECORDIO):
        expected = share // input_cost(kind)
        assert expected * 0.9 <= caps[kind] <= expected, kind  # the process may grow meanwhile
    plenty = WorkerSettings(endpoint="ep", model_uri="unused", memory_bytes=1 << 50)
    caps = input_caps_of(plenty)
    assert caps[codecs.CSV] == caps[codecs.LIBSVM] == 16 * plenty.chunk_bytes
    assert caps[codecs.JSON] == caps[codecs.RECORDIO] == plenty.max_json_bytes


@pytest.mark.parametrize("content_type", [codecs.JSON, codecs.RECORDIO])
def test_an_input_decoded_whole_is_held_to_its_types_memory_cap(
    model: XGBoostModel, notifier: RecordingNotifier, tmp_path: Path, content_type: str
) -> None:
    """JSON and RecordIO are decoded whole, by Python's readers: each is capped by the
    worker's memory (input_caps) at its own
    cost; an input at its cap is predicted, one over it fails with the cap named, and a type
    without a cap of its own keeps max_json_bytes."""
    settings = WorkerSettings(endpoint="ep", model_uri="unused")
    metrics = WorkerMetrics(CollectorRegistry())
    rows = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    bodies = {
        codecs.JSON: json.dumps({"instances": rows.tolist()}).encode(),
        codecs.RECORDIO: recordio_samples.dense(rows),
    }
    body = bodies[content_type]
    other = codecs.JSON if content_type == codecs.RECORDIO else codecs.RECORDIO
    for name, caps, outcome in [
        ("over", {content_type: len(body) - 1}, "error"),
        ("at", {content_type: len(body)}, "success"),
        ("other", {other: len(body) - 1}, "success"),
    ]:
        worker = Processor(
            settings, model, Storage(), notifier, metrics, threading.Event(), input_caps=caps
        )
        folder = tmp_path / name
        folder.mkdir()
        message = request(folder, body, content_type=content_type)
        assert worker.handle(message, 0) == Result(Settle.ACK, outcome), name
        if outcome == "error":
            record = json.loads((folder / "fail/r1.error").read_bytes())
            assert record["reason"] == "PayloadTooLarge"
            assert f"limited to {len(body) - 1} bytes" in record["message"]
        else:
            scores = np.array((folder / "out/r1.out").read_text().split(), "f4")
            np.testing.assert_array_equal(scores, model.predict(rows))


def test_a_recordio_input_is_held_to_its_estimate_from_its_frames(
    model: XGBoostModel, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """Within its length cap, a RecordIO input's estimate (its frames and bytes, as the model
    server's) is held to its read budget: the budget refuses empty frames of the dense body's
    size with the model server's 413 text, naming the estimate and the budget, and the dense
    body is predicted (at the narrowest frames' cost per byte, its length alone was refused)."""
    settings = WorkerSettings(endpoint="ep", model_uri="unused")
    metrics = WorkerMetrics(CollectorRegistry())
    rows = np.tile(np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32), (50, 1))
    dense = recordio_samples.dense(rows)
    narrow = recordio_samples.frame(b"") * (len(dense) // 8)
    cost = codecs.PYTHON_READ_COST[codecs.RECORDIO]
    width = model.num_features  # the estimate counts the matrix of the model's width too
    budget = cost.estimate(len(rows), len(dense), width)
    assert budget < cost.worst_per_byte * len(dense)  # what the length cap alone charged
    worker = Processor(
        settings,
        model,
        Storage(),
        notifier,
        metrics,
        threading.Event(),
        input_caps={codecs.RECORDIO: len(narrow)},
        read_budgets={codecs.RECORDIO: budget},
    )
    for name, body, outcome in [("narrow", narrow, "error"), ("dense", dense, "success")]:
        folder = tmp_path / name
        folder.mkdir()
        message = request(folder, body, content_type=codecs.RECORDIO)
        assert worker.handle(message, 0) == Result(Settle.ACK, outcome), name
    record = json.loads((tmp_path / "narrow/fail/r1.error").read_bytes())
    assert record["reason"] == "PayloadTooLarge"
    counted = recordio_samples.frames_over(budget, len(narrow), width)  # as far as it needs
    estimate = cost.estimate(counted, len(narrow), width)
    assert f"at an estimated at least {estimate} bytes of memory" in record["message"]
    assert f"(at least {counted} rows x {cost.per_row} + " in record["message"]
    assert f"one read may take up to {budget} bytes of memory here" in record["message"]
    scores = np.array((tmp_path / "dense/out/r1.out").read_text().split(), "f4")
    np.testing.assert_array_equal(scores, model.predict(rows))


def test_the_recordio_read_budget_is_a_slots_memory_share_and_at_least_a_small_bodys() -> None:
    """The budget is the slot's share of what the process does not hold yet, as the caps',
    and never under the estimate of a 64 KiB body of the narrowest frames (the caps' floor)."""
    used = peak_rss_bytes()
    share = 64 << 20
    settings = WorkerSettings(
        endpoint="ep", model_uri="unused", memory_bytes=used + 2 * share,
        max_concurrent_invocations=2,
    )  # fmt: skip
    [(kind, budget)] = read_budgets_of(settings).items()
    assert kind == codecs.RECORDIO and share * 0.9 <= budget <= share
    tiny = WorkerSettings(endpoint="ep", model_uri="unused", memory_bytes=1)
    worst = codecs.PYTHON_READ_COST[codecs.RECORDIO].worst_per_byte
    assert read_budgets_of(tiny) == {codecs.RECORDIO: (64 << 10) * worst}


class IdleConsumer:
    """A consumer that takes nothing: ``run`` waits for ``stop``; ``broken``, it raises."""

    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.stopping, self.consuming = threading.Event(), threading.Event()
        self.consuming.set()
        self.hold_limit = None
        self.on_in_flight = self.on_attempts_allowed = lambda _n: None
        self.in_flight = 0
        self.turned: float | None = None

    def run(self, handle: object) -> None:
        if self.broken:
            raise RuntimeError("a bug in the outbox's consumer")
        self.stopping.wait(30)

    def stop(self) -> None:
        self.stopping.set()


def test_a_worker_whose_webhook_senders_stop_by_themselves_stops_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Taking requests on, it would publish webhook jobs it never sends (and keep its pool
    from scaling to zero): it ends, to be started again, naming why."""
    requests, outbox = IdleConsumer(), IdleConsumer(broken=True)
    worker = Worker(requests, lambda _d: Settle.ACK, (outbox, lambda _d: Settle.ACK))  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, "infermodes"), pytest.raises(WebhookSendersStopped):
        worker.run()
    assert requests.stopping.is_set()
    assert "its senders stopped" in caplog.text


def embedded_worker(tmp_path: Path, registry: CollectorRegistry | None = None) -> Worker:
    """A worker built on ``up``'s queue (a file in ``tmp_path``) and a tiny model."""
    settings = WorkerSettings(
        endpoint="ep",
        model_uri=f"file://{tiny_model_file(tmp_path)}",
        broker_url=embedded_url(tmp_path / "queue.db"),
        metrics_port=0,
    )
    return build(settings, CollectorRegistry() if registry is None else registry)


STALL = 60.0


def loops_turned(requests: float | None, outbox: float | None) -> Worker:
    """A worker whose queue's loop last turned ``requests`` seconds ago and its outbox's
    ``outbox`` ago (None: that loop does not run)."""
    consumers = IdleConsumer(), IdleConsumer()
    for consumer, ago in zip(consumers, (requests, outbox), strict=True):
        consumer.turned = None if ago is None else time.monotonic() - ago
    return Worker(consumers[0], lambda _d: Settle.ACK, (consumers[1], lambda _d: Settle.ACK))  # type: ignore[arg-type]


def test_liveness_names_the_webhook_outboxs_loop_once_it_stops_turning() -> None:
    """The outbox's consumer runs on a thread of its own: its loop stuck, webhook jobs pile
    up (keeping the pool from scaling to zero) while the queue's loop turns on."""
    assert stuck(loops_turned(0, STALL - 1).loops, STALL) is None
    reason = stuck(loops_turned(0, STALL + 1).loops, STALL)
    assert reason is not None
    assert reason.startswith("the webhook outbox's consumer loop has not turned for 6")
    assert "; " not in reason  # the queue's loop turns: not named


def test_liveness_names_each_stuck_loop_and_the_queues_as_before() -> None:
    reason = stuck(loops_turned(STALL + 1, None).loops, STALL)
    assert reason is not None and reason.startswith("the consumer loop has not turned for 6")
    both = stuck(loops_turned(STALL + 1, STALL + 2).loops, STALL)
    assert both is not None
    assert both.startswith("the consumer loop has not turned for 6")
    assert "; the webhook outbox's consumer loop has not turned for 6" in both


def test_a_loop_not_started_or_ended_is_not_stuck(tmp_path: Path) -> None:
    """Before the outbox is consumed (it waits for the queue's first subscription, which may
    take a broker outage) and after a stop, a loop that does not run has nothing to turn:
    the worker's real consumers (the embedded queue's) say so."""
    worker = embedded_worker(tmp_path)
    assert [c.turned for c in worker.loops.values()] == [None, None]
    assert stuck(worker.loops, 1) is None
    runs = threading.Thread(target=worker.run, daemon=True)
    runs.start()
    try:
        wait_until(lambda: None not in [c.turned for c in worker.loops.values()], 30,
                   "both loops to run")  # fmt: skip
    finally:
        worker.stop()
        runs.join(30)
    assert not runs.is_alive()
    assert [c.turned for c in worker.loops.values()] == [None, None]
    assert stuck(worker.loops, 1) is None
    assert stuck(loops_turned(None, None).loops, 0) is None


def test_a_worker_without_webhooks_settles_the_jobs_left_in_its_outbox(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Jobs of webhooks since removed from the spec: a worker that has none consumes its
    outbox all the same (idle while it is empty), and acks each with a line naming it."""
    queue = EmbeddedQueue(tmp_path / "queue.db")
    publisher = queue.publisher("ep", 3, 1)
    body = {"inferenceId": "left", "endpointName": "ep"}
    try:
        publisher.publish("", outbox_name("ep"), webhook_job(body, False), "left", True)
    finally:
        publisher.close()
    worker = embedded_worker(tmp_path)
    caplog.set_level(logging.INFO, "infermodes")
    runs = threading.Thread(target=worker.run, daemon=True)
    runs.start()
    try:
        wait_until(lambda: queue.waiting_webhooks("ep") == 0, 30, "the job settled")
    finally:
        worker.stop()
        runs.join(30)
    assert "webhook job of inference left (endpoint ep, error)" in caplog.text
    assert queue.dead_letters(outbox_name("ep")) == []


def test_a_worker_counts_the_webhook_jobs_its_senders_hold_apart_from_its_requests(
    tmp_path: Path,
) -> None:
    """A worker POSTing a webhook job is busy to a scale-in (its deletion cost), but not with
    a request: the scaler's in-flight count stays the requests'."""
    registry = CollectorRegistry()
    worker = embedded_worker(tmp_path, registry)
    worker.outbox[0].on_in_flight(+1)
    assert registry.get_sample_value("infermodes_async_webhook_jobs_in_flight") == 1
    assert registry.get_sample_value("infermodes_async_in_flight") == 0
