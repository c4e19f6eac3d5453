"""What the async data plane promises when things go wrong, proven with real processes: a
worker killed mid-way, the broker restarted, a scale-down, bad inputs, poison messages, and
backlog figures that never mistake in-flight work for an empty queue."""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infermodes.queueing.broker import outbox_name
from infermodes.queueing.rabbitmq import (
    backlog,
    connect,
    delivery_count,
    queue_name,
    waiting_webhooks,
)
from infermodes.settings import WORKER_LIVENESS_STALL_LEAST_SECONDS
from tests.conftest import AbaloneModel
from tests.support.async_plane import (
    Notifications,
    Plane,
    Process,
    dead_letter_ids,
    plane,
    spawn_worker,
    submit_unreadable,
    to_csv,
)
from tests.support.processes import free_port, stop_process, wait_until
from tests.support.rabbitmq import Broker
from tests.support.s3 import holding_s3_server

LOCATION = "X-Amzn-SageMaker-InputLocation"
MESSAGES = "infermodes_async_messages_total"


def metric(worker: Process, name: str, **labels: str) -> float:
    try:
        text = httpx.get(f"{worker.url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return -1.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def readiness(worker: Process) -> int:
    """The status of the worker's readiness probe (``/readyz`` on its metrics port)."""
    return httpx.get(f"{worker.url}/readyz", timeout=5).status_code


def outputs(folder: Path) -> list[Path]:
    """Result objects (temp files of interrupted writes start with a dot and do not count)."""
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if not p.name.startswith(".")]


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n    measured: {line}")


def model_uri(abalone_model: AbaloneModel) -> str:
    return f"file://{abalone_model.tarball}"


def test_sigkill_mid_way_loses_nothing_and_writes_each_output_once(
    rabbitmq: Broker,
    abalone_model: AbaloneModel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    endpoint = "crash"
    notes = Notifications(rabbitmq, endpoint).declare()
    rows = abalone_model.test_rows
    expected = abalone_model.booster().inplace_predict(rows)
    inputs = {}  # inference id -> row indices
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path) as live:
        for i in range(300):
            picked = [(i * 7 + k) % len(rows) for k in range(1 + i % 50)]
            response = live.invoke(to_csv(rows[picked]))
            assert response.status_code == 202, response.text
            inputs[response.json()["InferenceId"]] = picked
        first = live.start_worker(model_uri(abalone_model), "a", concurrency=4)
        wait_until(lambda: len(outputs(tmp_path / "output")) >= 60, 60, "60 outputs", 0.005)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        done_at_kill = len(outputs(tmp_path / "output"))
        assert done_at_kill < 300, "the worker finished before it could be killed"
        second = live.start_worker(model_uri(abalone_model), "b", concurrency=4)
        notes.wait_for(set(inputs), "Completed", 120)
        duplicates_processed = metric(
            second, "infermodes_async_messages_total", outcome="duplicate"
        )
    written = outputs(tmp_path / "output")
    assert sorted(p.name for p in written) == sorted(f"{i}.out" for i in inputs)
    for inference_id, picked in inputs.items():
        got = np.array((tmp_path / "output" / f"{inference_id}.out").read_text().split(), "f4")
        np.testing.assert_array_equal(got, expected[picked])
    assert not outputs(tmp_path / "failure")
    seen = notes.ids("Completed")
    assert set(seen) == set(inputs)
    duplicates = sum(n - 1 for n in seen.values())
    report(
        capsys,
        f"SIGKILL after {done_at_kill}/300 outputs; 300 outputs, each once; "
        f"{duplicates} duplicate success notification(s) seen by the consumer; "
        f"{duplicates_processed:.0f} redelivery(ies) found their output already written",
    )


def test_broker_restart_completes_every_accepted_request_and_refuses_while_down(
    rabbitmq: Broker,
    abalone_model: AbaloneModel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    endpoint = "restart"
    notes = Notifications(rabbitmq, endpoint).declare()
    row = to_csv(abalone_model.test_rows[:3])
    accepted: set[str] = set()
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path) as live:
        worker = live.start_worker(model_uri(abalone_model), "w")
        assert readiness(worker) == 200
        for _ in range(60):
            response = live.invoke(row)
            assert response.status_code == 202, response.text
            accepted.add(response.json()["InferenceId"])
        rabbitmq.stop()
        refused = [live.invoke(row) for _ in range(5)]
        assert [r.status_code for r in refused] == [503] * 5
        assert "broker unreachable" in refused[0].json()["message"]
        assert "not accepted" in refused[0].json()["message"]
        wait_until(lambda: readiness(worker) == 503, 30, "the worker to say it is not ready")
        restarted = time.monotonic()
        rabbitmq.start()
        wait_until(lambda: readiness(worker) == 200, 60, "the worker to be ready again")
        for _ in range(60):
            response = live.invoke(row)
            assert response.status_code == 202, response.text
            accepted.add(response.json()["InferenceId"])
        notes.wait_for(accepted, "Completed", 120)
        took = time.monotonic() - restarted
    assert sorted(p.name for p in outputs(tmp_path / "output")) == sorted(
        f"{i}.out" for i in accepted
    )
    report(
        capsys, f"120 accepted, 5 refused with 503 while down; all done {took:.1f} s after restart"
    )


def test_a_worker_the_broker_does_not_let_in_is_never_ready_and_never_logs_the_password(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A wrong password in the broker URL (a Secret edited by mistake, say): the worker loads
    its model and serves its metrics, but its readiness probe fails for as long as it cannot
    consume, so a rollout never replaces a working worker with it."""
    password = "not-the-password-7f3a"
    url = rabbitmq.amqp_url.replace("guest:guest@", f"guest:{password}@")
    worker = spawn_worker(rabbitmq, "shut-out", model_uri(abalone_model),
                          tmp_path / "worker.log", broker_url=url)  # fmt: skip
    try:
        wait_until(lambda: "metrics, readiness" in worker.log, 60, "the model to load")
        wait_until(lambda: "connection at login" in worker.log, 30, "the broker's refusal")
        for _ in range(10):  # across several attempts to connect
            assert readiness(worker) == 503
            time.sleep(0.3)
        assert worker.proc.poll() is None, worker.log
        assert httpx.get(f"{worker.url}/metrics", timeout=5).status_code == 200
    finally:
        assert stop_process(worker.proc) == 0
    assert password not in worker.log


def test_a_worker_whose_queue_is_deleted_declares_it_again_and_consumes(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """An operator deletes a queue to declare it anew (the README's kept queue): RabbitMQ
    cancels its consumers and leaves their connections open, which pika reports nowhere. The
    worker notices, is not ready meanwhile, declares the queue again and serves from it."""
    endpoint = "redeclared"
    notes = Notifications(rabbitmq, endpoint).declare()
    row = to_csv(abalone_model.test_rows[:2])
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path) as live:
        worker = live.start_worker(model_uri(abalone_model), "w")
        assert readiness(worker) == 200
        connection = connect(rabbitmq.amqp_url)
        try:
            connection.channel().queue_delete(queue_name(endpoint))
        finally:
            connection.close()
        # the work queue's lines, not the outbox's (``consuming ...redeclared.webhooks``)
        wait_until(lambda: worker.log.count("consuming infermodes.async.redeclared\n") >= 2, 30,
                   "the worker to consume the queue it declared again")  # fmt: skip
        assert "the broker stopped delivering" in worker.log
        wait_until(lambda: readiness(worker) == 200, 30, "the worker to be ready again")
        response = live.invoke(row)
        assert response.status_code == 202, response.text
        notes.wait_for({response.json()["InferenceId"]}, "Completed", 60)


HELD_INPUT = "s3://inputs/held/rows.csv"


@contextlib.contextmanager
def held_by_their_input(
    rabbitmq: Broker,
    abalone_model: AbaloneModel,
    tmp_path: Path,
    endpoint: str,
    requests: int,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[Notifications, threading.Event, Process, set[str]]]:
    """A worker (2 invocation threads; ``env``: more of its environment) and ``requests``
    requests accepted for it, each reading ``HELD_INPUT``, whose reads the S3 server holds
    until the event is set (minutes, however slow the machine): the notifications watched,
    the event, the worker and the ids."""
    notes = Notifications(rabbitmq, endpoint).declare()
    release = threading.Event()
    with (
        holding_s3_server(lambda path: release if "/held/" in path else None) as s3,
        plane(
            rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, env={**s3.env, **(env or {})}
        ) as live,
    ):
        client: Any = s3.client()
        client.create_bucket(Bucket="inputs")
        client.put_object(
            Bucket="inputs", Key="held/rows.csv", Body=to_csv(abalone_model.test_rows[:2])
        )
        worker = live.start_worker(model_uri(abalone_model), "w", concurrency=2)
        ids = {live.invoke(headers={LOCATION: HELD_INPUT}).json()["InferenceId"]
               for _ in range(requests)}  # fmt: skip
        try:
            yield notes, release, worker, ids
        finally:
            release.set()


def test_sigterm_after_a_broker_restart_does_not_wait_for_the_lost_connection(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Deliveries held when the broker went away can never be settled on that connection (the
    broker redelivers them): a worker stopped later finishes its work and exits, rather than
    waiting for acknowledgements that cannot happen."""
    with held_by_their_input(rabbitmq, abalone_model, tmp_path, "lost", 2) as held:
        notes, release, worker, ids = held
        wait_until(lambda: metric(worker, "infermodes_async_in_flight") == 2, 60,
                   "both requests held by their input")  # fmt: skip
        rabbitmq.stop()
        rabbitmq.start()
        wait_until(lambda: "broker reachable again" in worker.log, 60, "the worker to reconnect")
        release.set()
        notes.wait_for(ids, "Completed", 120)
        wait_until(lambda: metric(worker, "infermodes_async_in_flight") == 0, 60, "no work left")
        # it subscribes again once the work it held across the restart has ended
        wait_until(lambda: readiness(worker) == 200, 60, "the worker to consume again")
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(60) == 0, worker.log[-2000:]
        assert "stopped consuming; 0 request(s) in flight" in worker.log


STALL_SECONDS = WORKER_LIVENESS_STALL_LEAST_SECONDS  # the least a worker takes


def test_sigterm_while_the_broker_is_down_drains_alive_and_the_work_is_settled_once(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A rollout during a broker restart: the connection is lost with two invocations in
    flight, then SIGTERM comes. The worker does not reconnect (nothing more to take; the lost
    deliveries cannot be settled on another connection), stays alive (``/healthz``) while
    its work runs on, stores the results and exits 0 once it ended; the broker redelivers the
    two requests, and the next worker notifies their stored results and acks them: one output
    each, nothing recomputed into a second one, nothing dead-lettered, the queue empty."""
    stall = {"INFERMODES_WORKER_LIVENESS_STALL_SECONDS": str(STALL_SECONDS)}
    with held_by_their_input(rabbitmq, abalone_model, tmp_path, "drained", 2, stall) as held:
        notes, release, worker, ids = held
        wait_until(lambda: metric(worker, "infermodes_async_in_flight") == 2, 60,
                   "both requests held by their input")  # fmt: skip
        rabbitmq.stop()
        wait_until(lambda: "broker unreachable" in worker.log, 30, "the worker to lose it")
        worker.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "signal 15" in worker.log, 30, "the worker to take the signal")
        until = time.monotonic() + 2 * STALL_SECONDS  # the work runs on through the bound
        while time.monotonic() < until:
            answer = httpx.get(f"{worker.url}/healthz", timeout=10)
            assert (answer.status_code, answer.text) == (200, "alive\n")
        assert worker.proc.poll() is None, worker.log[-2000:]
        rabbitmq.start()
        release.set()
        assert worker.proc.wait(120) == 0, worker.log[-2000:]
        assert "broker reachable again" not in worker.log  # stopped: it never reconnected
        assert sorted(p.name for p in outputs(tmp_path / "output")) == sorted(
            f"{i}.out" for i in ids
        )
        stored = {p.name: p.read_bytes() for p in outputs(tmp_path / "output")}
        after = spawn_worker(rabbitmq, "drained", model_uri(abalone_model), tmp_path / "b.log")
        try:
            notes.wait_for(ids, "Completed", 120)
            wait_until(lambda: metric(after, MESSAGES, outcome="duplicate") == 2, 60,
                       "the redeliveries to be settled")  # fmt: skip
            assert metric(after, MESSAGES, outcome="success") == 0  # none computed again
            after.proc.send_signal(signal.SIGTERM)
            assert after.proc.wait(60) == 0, after.log[-2000:]
        finally:
            stop_process(after.proc)
        assert {p.name: p.read_bytes() for p in outputs(tmp_path / "output")} == stored
        assert backlog("drained", rabbitmq.amqp_url, None).ready == 0  # none left behind
        assert dead_letter_ids(rabbitmq, "drained", 0, timeout=1) == []


def test_sigterm_finishes_in_flight_work_and_nothing_is_redelivered(
    rabbitmq: Broker, abalone_model: AbaloneModel, big_input: Path, tmp_path: Path
) -> None:
    endpoint = "drain"
    notes = Notifications(rabbitmq, endpoint).declare()
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path) as live:
        ids = set()
        for _ in range(6):
            response = live.invoke(headers={LOCATION: f"file://{big_input}"})
            assert response.status_code == 202
            ids.add(response.json()["InferenceId"])
        busy = live.start_worker(model_uri(abalone_model), "a", concurrency=2)
        wait_until(lambda: metric(busy, "infermodes_async_in_flight") == 2, 60, "2 in flight")
        busy.proc.send_signal(signal.SIGTERM)
        assert busy.proc.wait(120) == 0
        assert "stopped consuming; 2 request(s) in flight" in busy.log
        finished = {p.name.removesuffix(".out") for p in outputs(tmp_path / "output")}
        assert len(finished) >= 2
        notes.wait_for(finished, "Completed", 30)
        # nothing left unacknowledged: the rest waits, ready, for the next worker
        wait_until(
            lambda: (
                backlog(endpoint, rabbitmq.amqp_url, rabbitmq.management_url).total
                == 6 - len(finished)
            ),
            30,
            "the backlog to settle",
        )
        live.start_worker(model_uri(abalone_model), "b")
        notes.wait_for(ids, "Completed", 120)
    assert notes.ids("Completed") == Counter(dict.fromkeys(ids, 1))  # none redelivered


def test_bad_inputs_each_end_in_one_error_object_and_one_error_notification(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    endpoint = "bad"
    notes = Notifications(rabbitmq, endpoint).declare()
    good = to_csv(abalone_model.test_rows[:2])
    (tmp_path / "folder").mkdir()
    cases = {
        "missing": ({LOCATION: f"file://{tmp_path}/absent.csv"}, b"", "InputNotFound"),
        "folder": ({LOCATION: f"file://{tmp_path}/folder"}, b"", "InvalidInput"),
        # a name no file can have: was a bare OSError, retried until the attempts ran out
        "toolong": ({LOCATION: f"file://{tmp_path}/{'a' * 300}.csv"}, b"", "UnusableLocation"),
        "malformed": ({}, b"1,0,0,0.5,abc,0.1,0.5,0.2,0.1,0.1\n", "InvalidInput"),
        "width": ({}, b"1,0,0,0.5,0.4,0.1,0.5,0.2,0.1\n", "InvalidInput"),
        "json": ({"content-type": "application/json"}, b'{"instances": [[1, 2,', "InvalidInput"),
        "expired": ({"X-Amzn-SageMaker-RequestTTLSeconds": "1"}, good, "Expired"),
    }
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path) as live:
        for name, (headers, body, _) in cases.items():
            headers = {**headers, "X-Amzn-SageMaker-Inference-Id": name}
            assert live.invoke(body, headers).status_code == 202
        accepted = time.time()
        wait_until(lambda: time.time() > accepted + 1.5, 5, "the 1 s TTL to pass")
        worker = live.start_worker(model_uri(abalone_model), "w")
        notes.wait_for(set(cases), "Failed", 60)
        ok = live.invoke(good, {"X-Amzn-SageMaker-Inference-Id": "after"})
        assert ok.status_code == 202
        notes.wait_for({"after"}, "Completed", 60)
        assert worker.proc.poll() is None
        outcomes = {
            outcome: metric(worker, "infermodes_async_messages_total", outcome=outcome)
            for outcome in ("success", "error", "expired", "retried")
        }
        assert outcomes == {"success": 1, "error": 6, "expired": 1, "retried": 0}
        assert (
            metric(worker, "infermodes_async_processing_duration_seconds_count", outcome="error")
            == 6
        )
        assert metric(worker, "infermodes_async_in_flight") == 0
    assert notes.ids("Failed") == Counter(dict.fromkeys(cases, 1))
    errors = sorted(p.name for p in outputs(tmp_path / "failure"))
    assert errors == sorted(f"{name}.error" for name in cases)
    assert [p.name for p in outputs(tmp_path / "output")] == ["after.out"]
    for name, (_, _, reason) in cases.items():
        record = json.loads((tmp_path / "failure" / f"{name}.error").read_text())
        assert record["reason"] == reason, record
        note = next(n for n in notes.received if n["inferenceId"] == name)
        assert note["routingKey"] == f"{endpoint}.error"
        assert note["failureReason"] == reason
        assert note["responseParameters"]["failureLocation"].endswith(f"{name}.error")
    width = json.loads((tmp_path / "failure/width.error").read_text())
    assert "row 1: expected 10 features, got 9" in width["message"]
    folder = json.loads((tmp_path / "failure/folder.error").read_text())
    assert "is a directory or a special file, not an object" in folder["message"]
    assert folder["attempts"] == 1  # permanent: never retried
    too_long = json.loads((tmp_path / "failure/toolong.error").read_text())
    assert "File name too long" in too_long["message"] and too_long["attempts"] == 1


def test_poison_messages_end_in_the_dead_letter_queue_after_n_attempts(
    rabbitmq: Broker, abalone_model: AbaloneModel, big_input: Path, tmp_path: Path
) -> None:
    """Two kinds: a message no worker can read, and a request whose worker process dies every
    time (killed while it holds it)."""
    endpoint = "poison"
    attempts = 3
    notes = Notifications(rabbitmq, endpoint).declare()
    submit_unreadable(rabbitmq, endpoint, "unreadable", tmp_path, attempts, f"file://{big_input}")
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, max_attempts=attempts) as live:
        first = live.start_worker(model_uri(abalone_model), "w0")
        notes.wait_for({"unreadable"}, "Failed", 60)
        stop_process(first.proc)
        # a request whose worker dies every time it holds it
        headers = {LOCATION: f"file://{big_input}", "X-Amzn-SageMaker-Inference-Id": "crasher"}
        assert live.invoke(headers=headers).status_code == 202
        for attempt in range(attempts):
            worker = live.start_worker(model_uri(abalone_model), f"k{attempt}")
            wait_until(lambda w=worker: metric(w, "infermodes_async_in_flight") == 1, 30, "work")
            worker.proc.send_signal(signal.SIGKILL)
            worker.proc.wait(10)
        live.start_worker(model_uri(abalone_model), "last")
        notes.wait_for({"crasher"}, "Failed", 60)
        wait_until(
            lambda: backlog(endpoint, rabbitmq.amqp_url, None).ready == 0, 30, "an empty queue"
        )
        dead = dead_letter_ids(rabbitmq, endpoint, 2)
    assert sorted(dead) == ["crasher", "unreadable"]
    assert notes.ids("Failed") == Counter({"unreadable": 1, "crasher": 1})
    for name in ("unreadable", "crasher"):
        record = json.loads((tmp_path / "failure" / f"{name}.error").read_text())
        assert record["reason"] == "AttemptsExhausted", record
        assert record["attempts"] == attempts
    assert (
        "acceptedAt" in json.loads((tmp_path / "failure/unreadable.error").read_text())["message"]
    )
    assert not outputs(tmp_path / "output")


def test_backlog_counts_in_flight_work_and_falls_back_to_amqp(
    rabbitmq: Broker, abalone_model: AbaloneModel, big_input: Path, tmp_path: Path
) -> None:
    endpoint = "backlog"
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path) as live:
        for _ in range(5):
            response = live.invoke(headers={LOCATION: f"file://{big_input}"})
            assert response.status_code == 202

        def figures() -> tuple[int, int | None, int]:
            found = backlog(endpoint, rabbitmq.amqp_url, rabbitmq.management_url)
            assert found.source == "amqp+management"
            return found.ready, found.unacked, found.consumers

        wait_until(lambda: figures() == (5, 0, 0), 30, "5 ready")
        worker = live.start_worker(model_uri(abalone_model), "w", concurrency=2)
        wait_until(lambda: metric(worker, "infermodes_async_in_flight") == 2, 60, "2 in flight")
        worker.proc.send_signal(signal.SIGSTOP)  # busy, and stays busy while we look
        try:
            ready = 5 - 2 - len(outputs(tmp_path / "output"))  # 0 done, unless one just ended
            wait_until(lambda: figures() == (ready, 2, 1), 30, "2 in flight, 1 consumer")
            assert backlog(endpoint, rabbitmq.amqp_url, rabbitmq.management_url).total == ready + 2
            fallback = backlog(endpoint, rabbitmq.amqp_url, "http://127.0.0.1:9")
            assert (fallback.source, fallback.ready, fallback.consumers) == ("amqp", ready, 1)
            assert fallback.unacked is None and fallback.total is None  # unknown, never 0
        finally:
            worker.proc.send_signal(signal.SIGCONT)


def writes_in_progress(folder: Path) -> list[Path]:
    """Hidden files: outputs being written."""
    return sorted(folder.glob(".*")) if folder.is_dir() else []


def stopped_mid_write(live: Plane, model: AbaloneModel, name: str, output: Path) -> Process:
    """A worker (one invocation at a time) stopped with SIGSTOP once it writes an output
    under ``output``; the caller sends it SIGCONT."""
    worker = live.start_worker(model_uri(model), name, concurrency=1)
    wait_until(lambda: bool(writes_in_progress(output)), 60, "a write", 0.01)
    worker.proc.send_signal(signal.SIGSTOP)
    return worker


def test_a_request_given_up_while_the_broker_is_down_is_notified_and_dead_lettered_after(
    rabbitmq: Broker, abalone_model: AbaloneModel, big_input: Path, tmp_path: Path
) -> None:
    """Its one attempt fails while the broker is down (its worker may no longer write files
    past 1 MiB, and the output grows past that before it is claimed): the error object is
    written, the notification cannot be; once the broker is back the request comes back, is
    notified and ends in the dead-letter queue."""
    endpoint = "outage"
    notes = Notifications(rabbitmq, endpoint).declare()
    headers = {LOCATION: f"file://{big_input}", "X-Amzn-SageMaker-Inference-Id": "doomed"}
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, max_attempts=1) as live:
        assert live.invoke(headers=headers).status_code == 202
        worker = stopped_mid_write(live, abalone_model, "w", tmp_path / "output")
        try:
            rabbitmq.stop()
            resource.prlimit(worker.proc.pid, resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
            worker.proc.send_signal(signal.SIGCONT)
            wait_until(lambda: "cannot notify" in worker.log, 60, "the give-up to fail to notify")
            assert (tmp_path / "failure/doomed.error").exists()
        finally:
            worker.proc.send_signal(signal.SIGCONT)
            rabbitmq.start()
        notes.wait_for({"doomed"}, "Failed", 120)
        wait_until(
            lambda: metric(worker, "infermodes_async_messages_total", outcome="dead_lettered") == 1,
            60,
            "the dead-lettering",
        )
        dead = dead_letter_ids(rabbitmq, endpoint, 1)
    assert dead == ["doomed"]
    record = json.loads((tmp_path / "failure/doomed.error").read_text())
    assert (record["reason"], record["attempts"]) == ("AttemptsExhausted", 1)
    assert "File too large" in record["message"], record
    assert notes.ids("Failed") == Counter({"doomed": 1})


def test_a_request_that_outlasts_its_invocation_timeout_fails_with_invocation_timeout(
    rabbitmq: Broker, abalone_model: AbaloneModel, big_input: Path, tmp_path: Path
) -> None:
    """A 25 MB input with a 1 s timeout, on a worker that stalls mid-way (stopped for longer
    than the timeout): the deadline, checked between chunks, ends it."""
    endpoint = "timeout"
    notes = Notifications(rabbitmq, endpoint).declare()
    headers = {
        LOCATION: f"file://{big_input}",
        "X-Amzn-SageMaker-Inference-Id": "slow",
        "X-Amzn-SageMaker-InvocationTimeoutSeconds": "1",
    }
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path) as live:
        assert live.invoke(headers=headers).status_code == 202
        worker = stopped_mid_write(live, abalone_model, "w", tmp_path / "output")
        try:
            threading.Event().wait(1.5)
        finally:
            worker.proc.send_signal(signal.SIGCONT)
        notes.wait_for({"slow"}, "Failed", 60)
        fast = live.invoke(
            to_csv(abalone_model.test_rows[:2]), {"X-Amzn-SageMaker-Inference-Id": "ok"}
        )
        assert fast.status_code == 202
        notes.wait_for({"ok"}, "Completed", 60)
    record = json.loads((tmp_path / "failure/slow.error").read_text())
    assert (record["reason"], record["attempts"]) == ("InvocationTimeout", 1)
    assert "longer than the invocation timeout of 1" in record["message"]
    assert sorted(p.name for p in (tmp_path / "output").iterdir()) == ["ok.out"]  # no partial


def test_two_copies_of_a_request_end_in_one_result_the_first_claimed(
    rabbitmq: Broker, abalone_model: AbaloneModel, big_input: Path, tmp_path: Path
) -> None:
    """A caller's retry queues a second copy while the first is mid-way (its worker stopped),
    and the caller has meanwhile replaced the input with one that is not valid: the second
    copy, on another worker, fails and claims the request's error; the first, resumed,
    finishes its prediction, drops its output and reports that same error. Exactly one result
    object, and every notification says Failed."""
    endpoint = "twice"
    notes = Notifications(rabbitmq, endpoint).declare()
    source = tmp_path / "data/rows.csv"
    source.parent.mkdir()
    shutil.copy(big_input, source)
    headers = {LOCATION: f"file://{source}", "X-Amzn-SageMaker-Inference-Id": "twice"}
    with plane(rabbitmq, endpoint, f"file://{tmp_path}/ep", tmp_path) as live:
        assert live.invoke(headers=headers).status_code == 202
        first = stopped_mid_write(live, abalone_model, "first", tmp_path / "ep/output")
        try:
            replacement = source.with_suffix(".new")
            replacement.write_bytes(b"1,2\n")
            replacement.replace(source)  # the first copy keeps reading what it opened
            second = live.start_worker(model_uri(abalone_model), "second", concurrency=1)
            assert live.invoke(headers=headers).status_code == 202  # queued again
            notes.wait_for({"twice"}, "Failed", 60)
        finally:
            first.proc.send_signal(signal.SIGCONT)
        settled = ("success", "duplicate")
        wait_until(
            lambda: sum(metric(first, MESSAGES, outcome=o) for o in settled) >= 1,
            120,
            "the first copy to finish",
        )
        assert [metric(first, MESSAGES, outcome=o) for o in settled] == [0, 1]
        assert metric(second, MESSAGES, outcome="error") == 1
        notes.drain()
    assert outputs(tmp_path / "ep/output") == [] and not writes_in_progress(tmp_path / "ep/output")
    record = json.loads((tmp_path / "ep/failure/twice.error").read_text())
    assert record["reason"] == "InvalidInput"
    assert notes.ids("Completed") == Counter()
    assert notes.ids("Failed") == Counter({"twice": 2})


def test_a_claimed_success_no_delivery_can_store_is_notified_and_dead_lettered(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A copy claimed the request's success and died before storing its output (the claim is
    put in place here), and the caller then removed the input: no later delivery can keep the
    claim's promise. They try until the real quorum queue's last two deliveries, the first of
    which notifies ``OutputNotStored`` and dead-letters the message, rather than the queue
    dropping it into the dead-letter queue by itself with nothing said. No error object
    contradicts the claim."""
    endpoint = "orphan"
    notes = Notifications(rabbitmq, endpoint).declare()
    source = tmp_path / "data/rows.csv"
    source.parent.mkdir()
    headers = {LOCATION: f"file://{source}", "X-Amzn-SageMaker-Inference-Id": "orphan"}
    claim = tmp_path / "ep/input/orphan.result"
    claim.parent.mkdir(parents=True)
    claim.write_bytes(b"")  # a success's claim
    with plane(rabbitmq, endpoint, f"file://{tmp_path}/ep", tmp_path, max_attempts=1) as live:
        assert live.invoke(headers=headers).status_code == 202
        worker = live.start_worker(model_uri(abalone_model), "w")
        notes.wait_for({"orphan"}, "Failed", 60)
        wait_until(
            lambda: metric(worker, MESSAGES, outcome="abandoned") == 1, 30, "the dead-letter"
        )
        dead = dead_letter_ids(rabbitmq, endpoint, 1)
        retried = metric(worker, MESSAGES, outcome="retried")
    assert dead == ["orphan"]
    assert retried == 2  # of RabbitMQ's 5 deliveries (maxAttempts 1 + headroom 3, plus one)
    [note] = [n for n in notes.received if n["inferenceId"] == "orphan"]
    assert note["failureReason"] == "OutputNotStored", note
    assert note["responseParameters"] == {"failureLocation": None}
    assert claim.read_bytes() == b""
    assert outputs(tmp_path / "ep/output") == [] and outputs(tmp_path / "ep/failure") == []


def test_a_failure_path_that_cannot_hold_the_error_object_is_named_in_the_notification(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A regular file where the failure folder goes, put there after the request was accepted
    (one there before is refused at once, a 424: tests/unit/test_async_api.py): the last
    attempt notified the error with a null failureLocation and nothing of why; it now says the
    object could not be stored, where, and the storage's error, and so does the worker's log."""
    endpoint = "failure-file"
    notes = Notifications(rabbitmq, endpoint).declare()
    with plane(rabbitmq, endpoint, f"file://{tmp_path}/ep", tmp_path, max_attempts=1) as live:
        response = live.invoke(b"a,b\n", headers={"X-Amzn-SageMaker-Inference-Id": "bad"})
        assert response.status_code == 202, response.text
        failure = tmp_path / "ep/failure"
        if failure.is_dir():  # made by the accept: empty, no request failed yet
            failure.rmdir()
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_bytes(b"a file where the folder goes")
        worker = live.start_worker(model_uri(abalone_model), "w")
        notes.wait_for({"bad"}, "Failed", 60)
    [note] = [n for n in notes.received if n["inferenceId"] == "bad"]
    assert note["failureReason"] == "InvalidInput", note
    assert note["responseParameters"] == {"failureLocation": None}
    said = f"(its error object could not be stored: cannot write file://{tmp_path}/ep/failure/"
    assert said in str(note["failureMessage"]), note
    assert "a file is in the way of its folder" in str(note["failureMessage"]), note
    assert f"cannot write the error object: cannot write file://{tmp_path}/ep/failure/" in (
        worker.log)  # fmt: skip


def test_a_storage_wait_that_would_outlast_the_consumer_timeout_is_not_taken(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A one-hour invocation and a 600 s back-off leave nothing of RabbitMQ's 65-minute consumer
    timeout for a wait on failing storage (here an S3 endpoint that refuses connections): the
    worker spends the request's attempts at once and ends it AttemptsExhausted, rather than
    wait 300 s holding each delivery, which with such an invocation after it the broker would
    take back mid-way and deliver again."""
    endpoint = "hold"
    notes = Notifications(rabbitmq, endpoint).declare()
    refused = free_port()  # nothing listens: every S3 call is refused
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{refused}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "INFERMODES_WORKER_RETRY_BACKOFF_MAX_SECONDS": "600"}  # fmt: skip
    with plane(rabbitmq, endpoint, f"file://{tmp_path}/store", tmp_path, env=env) as live:
        one_hour = {"X-Amzn-SageMaker-InvocationTimeoutSeconds": "3600"}
        answer = live.invoke(headers={LOCATION: "s3://inputs/rows.csv", **one_hour})
        assert answer.status_code == 202, answer.text
        worker = live.start_worker(f"file://{abalone_model.tarball}", "w")
        failure = tmp_path / "store" / "failure" / f"{answer.json()['InferenceId']}.error"
        wait_until(failure.exists, 90, "the request to end without waiting for storage")
        assert json.loads(failure.read_text())["reason"] == "AttemptsExhausted"
        assert metric(worker, "infermodes_async_storage_waits_total") == 0
        notes.wait_for({answer.json()["InferenceId"]}, "Failed", 30)


def close_consumer_connection(broker: Broker, endpoint: str) -> None:
    """Close, as ``rabbitmqctl close_connection`` does, the connection consuming the queue (the
    worker's notifications publish on others, which stay open)."""
    auth = ("guest", "guest")
    api = f"http://127.0.0.1:{broker.management_port}/api"
    queue = queue_name(endpoint)

    def consumer_connection() -> str | None:
        consumers = httpx.get(f"{api}/consumers", auth=auth, timeout=5).json()
        # ``channel_details`` is ``[]`` until the broker has collected its statistics
        names = [c["channel_details"]["connection_name"] for c in consumers
                 if c["queue"]["name"] == queue
                 and isinstance(c["channel_details"], dict)]  # fmt: skip
        return names[0] if names else None

    wait_until(lambda: consumer_connection() is not None, 30, "the worker's consumer")
    name = consumer_connection()
    assert name is not None
    closed = httpx.delete(
        f"{api}/connections/{quote(name, safe='')}",
        auth=auth,
        headers={"X-Reason": "cut by the test"},
        timeout=5,
    )
    assert closed.status_code == 204, closed.text


def test_a_worker_whose_connection_is_cut_mid_work_takes_no_more_than_it_can_work_on(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The broker closes a worker's connection while both its invocation threads are busy
    (held by their input's read): the broker takes both deliveries back. The worker reconnects at
    once but subscribes again only once that work has ended, so it holds no delivery it cannot
    work on (one would wait in its pool, its consumer timeout running, while another worker
    could take it), and its in-flight gauge keeps counting the work still running (the
    operator's scale-in and pod-deletion cost read it). Every request ends in one output."""
    endpoint = "cut"
    with held_by_their_input(rabbitmq, abalone_model, tmp_path, endpoint, 4) as held:
        notes, release, worker, ids = held
        try:
            wait_until(lambda: metric(worker, "infermodes_async_in_flight") == 2, 60,
                       "two requests held by their input")  # fmt: skip
            close_consumer_connection(rabbitmq, endpoint)
            wait_until(lambda: "broker reachable again" in worker.log, 60, "a new connection")
            now = backlog(endpoint, rabbitmq.amqp_url, None)  # exact, not sampled
            assert (now.ready, now.consumers) == (4, 0), now
            assert metric(worker, "infermodes_async_in_flight") == 2  # still working on them
            assert readiness(worker) == 503  # takes no work now
        finally:
            release.set()
        notes.wait_for(ids, "Completed", 120)
        wait_until(lambda: metric(worker, "infermodes_async_in_flight") == 0, 60, "no work left")
        assert readiness(worker) == 200
        assert metric(worker, MESSAGES, outcome="success") == 4
        assert metric(worker, MESSAGES, outcome="duplicate") == 2  # found their outputs
    assert sorted(p.name for p in outputs(tmp_path / "output")) == sorted(f"{i}.out" for i in ids)
    assert set(notes.ids("Completed")) == ids


def test_a_worker_whose_connection_is_cut_mid_work_takes_work_for_the_slots_left(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """One long request of a worker with 3 invocation threads runs on after the broker closed
    its connection: the worker subscribes again at once with a prefetch of 2 (ready, and
    taking work, while it runs), and once it ends takes one more (a second consumer with a
    prefetch of 1: RabbitMQ applies a prefetch only to consumers subscribed after it), so its
    running work never exceeds its threads. Every request ends in one output."""
    endpoint = "slots"
    notes = Notifications(rabbitmq, endpoint).declare()
    long, release = threading.Event(), threading.Event()

    def holds(path: str) -> threading.Event | None:
        return long if path.endswith("/long.csv") else release if "/held/" in path else None

    def queue(ready: int, consumers: int) -> bool:
        now = backlog(endpoint, rabbitmq.amqp_url, None)  # exact, not sampled
        return (now.ready, now.consumers) == (ready, consumers)

    with (
        holding_s3_server(holds) as s3,
        plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, env=s3.env) as live,
    ):
        client: Any = s3.client()
        client.create_bucket(Bucket="inputs")
        row = to_csv(abalone_model.test_rows[:1])
        for key in ("held/long.csv", "held/rows.csv"):
            client.put_object(Bucket="inputs", Key=key, Body=row)
        worker = live.start_worker(model_uri(abalone_model), "w", concurrency=3)
        ids = {live.invoke(headers={LOCATION: "s3://inputs/held/long.csv"}).json()["InferenceId"]}
        try:
            wait_until(lambda: metric(worker, "infermodes_async_in_flight") == 1, 60,
                       "the long request held")  # fmt: skip
            close_consumer_connection(rabbitmq, endpoint)
            # at once, with the long one still held: its lost work, and its redelivery (held
            # by the same input) on a second thread
            wait_until(lambda: queue(0, 1), 60, "the worker to subscribe again at once")
            wait_until(lambda: metric(worker, "infermodes_async_in_flight") == 2, 60, "2 running")
            assert readiness(worker) == 200
            ids |= {live.invoke(headers={LOCATION: HELD_INPUT}).json()["InferenceId"]
                    for _ in range(4)}  # fmt: skip
            wait_until(lambda: queue(3, 1), 60, "one more request taken, on the third thread")
            wait_until(lambda: metric(worker, "infermodes_async_in_flight") == 3, 60, "3 running")
            long.set()  # the lost work ends (one more slot), and the redelivery is acked
            wait_until(
                lambda: queue(1, 2) and metric(worker, "infermodes_async_in_flight") == 3,
                60,
                "three requests held on the new connection, one left in the queue",
            )
        finally:
            long.set()
            release.set()
        notes.wait_for(ids, "Completed", 120)
        wait_until(lambda: metric(worker, "infermodes_async_in_flight") == 0, 60, "no work left")
        assert readiness(worker) == 200
        # the long one twice: its lost work and its redelivery (which may find the output)
        ended = metric(worker, MESSAGES, outcome="success")
        assert ended + metric(worker, MESSAGES, outcome="duplicate") == 6
        assert "1 request(s) taken before the connection was lost still running: consuming 2 " \
            "at a time" in worker.log  # fmt: skip
    assert sorted(p.name for p in outputs(tmp_path / "output")) == sorted(f"{i}.out" for i in ids)


def test_sigterm_during_a_webhook_back_off_sends_the_job_back_to_the_outbox_and_exits(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A worker told to stop while a webhook that refuses connections waits out its back-off
    (10 tries: 248 s of back-off left after the fifth) stops waiting and exits: its grace
    period is sized for the invocation timeout. The request was acked once its webhook job was
    in the outbox; the job goes back there with its tries unspent, for a worker that runs on
    (or the next to start), rather than spent at once on a receiver down for a moment."""
    endpoint = "backoff"
    notes = Notifications(rabbitmq, endpoint).declare()
    refused = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    env = {"INFERMODES_WORKER_WEBHOOK_ATTEMPTS": "10"}
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, env=env) as live:
        worker = live.start_worker(
            model_uri(abalone_model), "w", concurrency=1, extra=("--success-webhook-url", refused)
        )
        response = live.invoke(to_csv(abalone_model.test_rows[:1]))
        inference = response.json()["InferenceId"]
        wait_until(lambda: worker.log.count("failed: ") >= 5, 60, "five tries of the webhook")
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(60) == 0, worker.log[-2000:]
        assert 5 <= worker.log.count("failed: ") < 10, worker.log[-2000:]
        assert "giving up" not in worker.log
        assert "its job goes back to the outbox" in worker.log
        # the two consumers' stops, each in its own words (the job may be back in the outbox
        # before its consumer's loop sees the stop: 0 or 1 in flight)
        assert worker.log.count("request(s) in flight") == 1, worker.log[-2000:]
        assert worker.log.count(" webhook job(s) in flight") == 1, worker.log[-2000:]
        notes.wait_for({inference}, "Completed", 30)  # the topic's notification went out
        now = backlog(endpoint, rabbitmq.amqp_url, None)
        assert (now.ready, now.consumers) == (0, 0)  # the request: acked, not redelivered
        assert waiting_webhooks(endpoint, rabbitmq.amqp_url, None) == 1  # its webhook job
        # put back as a new message: the return is no delivery towards the outbox's limit
        assert deliveries_before(rabbitmq.amqp_url, outbox_name(endpoint)) == 0
    assert [p.name for p in outputs(tmp_path / "output")] == [f"{inference}.out"]


def deliveries_before(amqp_url: str, queue: str) -> int:
    """The delivery count of the queue's next message (taken, and back once the connection
    closes)."""
    connection = connect(amqp_url)
    try:
        method, properties, _ = connection.channel().basic_get(queue, auto_ack=False)
        assert method is not None, f"nothing in {queue}"
        return delivery_count(properties.headers)
    finally:
        connection.close()
