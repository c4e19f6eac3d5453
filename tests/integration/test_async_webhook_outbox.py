"""Webhooks are sent apart from the invocation slot: a worker whose webhook receiver holds
every POST still works through its queue, and a webhook whose sender is killed after the
request was acknowledged still reaches its receiver (a new worker sends it); a job waiting in
the outbox of a pool at zero wakes a worker to send it."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from infermodes.operator.signals.backlog import read_backlog, read_ready
from infermodes.queueing import connect as queues
from infermodes.queueing.broker import (
    LAST_ERROR_HEADER,
    OUTBOX_DELIVERY_LIMIT,
    OUTBOX_SENDS,
    REASON_HEADER,
    SENDS_HEADER,
    Delivery,
    Settle,
    outbox_name,
)
from infermodes.queueing.connect import ClosingPublisher, RabbitBroker
from infermodes.queueing.embedded import EmbeddedQueue
from infermodes.queueing.notifications import _iso, webhook_job
from infermodes.queueing.rabbitmq import (
    ChannelPool,
    QueueReader,
    backlog,
    connect,
    waiting_webhooks,
)
from infermodes.settings import WorkerSettings
from infermodes.workers.async_worker import build
from tests.conftest import AbaloneModel
from tests.integration.test_async_reliability import MESSAGES, metric
from tests.support.async_plane import (
    Notifications,
    Process,
    WebhookReceiver,
    plane,
    put_webhook_job,
    to_csv,
)
from tests.support.local import manifest, running_up
from tests.support.processes import wait_until
from tests.support.rabbitmq import Broker


def test_a_held_webhook_does_not_hold_the_next_request(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """One invocation slot, a success webhook whose receiver holds each POST (10 tries: held
    for minutes): the second request's output is written while the first one's POST is still
    held."""
    endpoint = "outbox-slot"
    notes = Notifications(rabbitmq, endpoint).declare()
    release = threading.Event()
    env = {"INFERMODES_WORKER_WEBHOOK_ATTEMPTS": "10"}
    with (
        WebhookReceiver(holds=lambda _: release) as hook,
        plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, env=env) as live,
    ):
        worker = live.start_worker(
            f"file://{abalone_model.tarball}",
            "w",
            concurrency=1,
            extra=("--success-webhook-url", hook.url),
        )
        row = to_csv(abalone_model.test_rows[:1])
        first, second = (live.invoke(row).json()["InferenceId"] for _ in range(2))
        try:
            wait_until(lambda: first in hook.ids(), 60, "the first request's POST held")
            # held: the worker is busy to a scale-in (its deletion cost), apart from requests
            held = "infermodes_async_webhook_jobs_in_flight"
            wait_until(lambda: metric(worker, held) >= 1, 30, "the held job counted")
            wait_until(
                lambda: (tmp_path / "output" / f"{second}.out").exists(),
                60,
                "the second request's output while the first one's POST is held",
            )
            assert not release.is_set()
        finally:
            release.set()
        notes.wait_for({first, second}, "Completed", 60)
        wait_until(lambda: hook.ids() == {first, second}, 60, "both webhooks delivered")


def test_a_webhook_s_token_is_in_no_log_line_of_its_worker(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A webhook URL's path and query carry its token: httpx logged each POST's whole URL at
    INFO in the worker's log, beside our own lines that name it by scheme and host only."""
    endpoint = "webhook-token"
    notes = Notifications(rabbitmq, endpoint).declare()
    with (
        WebhookReceiver(status=lambda _: 500) as hook,
        plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path) as live,
    ):
        worker = live.start_worker(
            f"file://{abalone_model.tarball}",
            "w",
            extra=("--success-webhook-url", f"{hook.url}-path-SECRET?token=SECRET"),
        )
        inference = live.invoke(to_csv(abalone_model.test_rows[:1])).json()["InferenceId"]
        notes.wait_for({inference}, "Completed", 60)
        wait_until(lambda: inference in hook.ids(), 60, "the webhook POSTed")
        # a refused POST is logged by our own line (a WARNING): the log is being written
        wait_until(lambda: "webhook http://127.0.0.1:" in worker.log, 60, "the refusal logged")
        assert [line for line in worker.log.splitlines() if "SECRET" in line] == []


def test_a_webhook_whose_sender_is_killed_after_the_ack_is_sent_by_the_next_worker(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The request is acked once its webhook job is in the outbox: the worker is SIGKILLed
    while its POST is held, and a new worker POSTs it again from the outbox, without the
    request itself being delivered again."""
    endpoint = "outbox-kill"
    notes = Notifications(rabbitmq, endpoint).declare()
    release = threading.Event()
    env = {"INFERMODES_WORKER_WEBHOOK_ATTEMPTS": "10"}
    model = f"file://{abalone_model.tarball}"
    hook_option = ("--success-webhook-url",)
    with (
        WebhookReceiver(holds=lambda _: None if release.is_set() else release) as hook,
        plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, env=env) as live,
    ):
        first = live.start_worker(model, "a", concurrency=1, extra=(*hook_option, hook.url))
        inference = live.invoke(to_csv(abalone_model.test_rows[:1])).json()["InferenceId"]
        try:
            wait_until(lambda: inference in hook.ids(), 60, "the POST held")
            notes.wait_for({inference}, "Completed", 60)
            wait_until(lambda: backlog(endpoint, rabbitmq.amqp_url, None).ready == 0, 30, "taken")
            first.proc.kill()
            first.proc.wait(30)
        finally:
            release.set()
        held = len(hook.received)
        second = live.start_worker(model, "b", concurrency=1, extra=(*hook_option, hook.url))
        wait_until(lambda: len(hook.received) > held, 60, "the POST sent again by the new worker")
        assert {body["inferenceId"] for body in hook.received[held:]} == {inference}
        wait_until(
            lambda: metric(second, "infermodes_async_notifications_total", channel="webhook",
                           result="sent") == 1,
            30,
            "the new worker to count it sent",
        )  # fmt: skip
        # the request was acked before the kill: the new worker never saw it again
        assert metric(second, MESSAGES, outcome="duplicate") == 0
        assert notes.ids("Completed") == {inference: 1}


def test_a_held_webhook_is_sent_again_after_a_broker_restart(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The outbox is durable: a job whose POST is held while the broker restarts is delivered
    again once the worker reconnects, and its webhook reaches the receiver."""
    endpoint = "outbox-restart"
    release = threading.Event()
    env = {"INFERMODES_WORKER_WEBHOOK_ATTEMPTS": "10"}
    with (
        WebhookReceiver(holds=lambda _: None if release.is_set() else release) as hook,
        plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, env=env) as live,
    ):
        worker = live.start_worker(
            f"file://{abalone_model.tarball}",
            "w",
            concurrency=1,
            extra=("--success-webhook-url", hook.url),
        )
        inference = live.invoke(to_csv(abalone_model.test_rows[:1])).json()["InferenceId"]
        try:
            wait_until(lambda: inference in hook.ids(), 60, "the POST held")
            rabbitmq.stop()
            rabbitmq.start()
            wait_until(lambda: "broker reachable again" in worker.log, 60, "the worker back")
        finally:
            release.set()
        wait_until(
            lambda: metric(worker, "infermodes_async_notifications_total", channel="webhook",
                           result="sent") >= 1,
            90,
            "the webhook sent",
        )  # fmt: skip
    assert hook.ids() == {inference}


def test_up_wakes_a_pool_at_zero_for_a_webhook_job_waiting_in_its_outbox(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Only workers send an outbox's jobs: a job left there (its worker gone after the ack,
    the pool scaled to zero) starts a worker of ``infermodes up`` that delivers it, and the
    pool goes back to zero after its cooldown."""
    endpoint = "abalone-async"
    with WebhookReceiver() as hook:
        files = [manifest("async", abalone_model.tarball, tmp_path, minReplicas=0, maxReplicas=2,
                          scaleInCooldownSeconds=2,
                          notification={"topic": False, "successWebhook": hook.url})]  # fmt: skip
        with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
            wait_until(lambda: up.status(endpoint).get("phase") == "InService", 60, "in service")
            assert up.running(endpoint) == []
            queue = EmbeddedQueue(tmp_path / "state" / "queue.db")
            put_webhook_job(queue, endpoint, "left-in-the-outbox")
            wait_until(lambda: hook.ids() == {"left-in-the-outbox"}, 60, "the job delivered")
            assert queue.waiting_webhooks(endpoint) == 0
            wait_until(lambda: up.running(endpoint) == [], 60, "the pool back at zero")
            assert up.status(endpoint)["replicas"] == 0
            assert hook.ids() == {"left-in-the-outbox"}


def test_up_s_status_shows_the_webhook_jobs_waiting_in_the_outbox(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Five jobs, a receiver that holds every POST: the worker's four senders hold four, and
    the status's backlog (what ``infermodes describe`` prints) shows the fifth waiting."""
    endpoint = "abalone-async"
    release = threading.Event()
    with WebhookReceiver(holds=lambda _: None if release.is_set() else release) as hook:
        files = [manifest("async", abalone_model.tarball, tmp_path, minReplicas=1, maxReplicas=1,
                          notification={"topic": False, "successWebhook": hook.url})]  # fmt: skip
        with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
            wait_until(lambda: up.status(endpoint).get("phase") == "InService", 60, "in service")
            queue = EmbeddedQueue(tmp_path / "state" / "queue.db")
            try:
                for n in range(5):
                    put_webhook_job(queue, endpoint, f"job-{n}")
                wait_until(lambda: len(hook.ids()) == 4, 60, "four POSTs held")

                def waiting() -> object:
                    return (up.status(endpoint).get("backlog") or {}).get("waitingWebhookJobs")

                wait_until(lambda: waiting() == 1, 30, "the fifth job shown waiting")
            finally:
                release.set()
            wait_until(lambda: len(hook.ids()) == 5, 60, "every job sent")
            wait_until(lambda: waiting() == 0, 30, "none shown waiting")


def test_up_wakes_a_pool_without_webhooks_to_settle_the_jobs_of_removed_ones(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Jobs published while the endpoint had a webhook, which its spec no longer has: they
    wake a worker of the pool at zero, which acks each (nothing to POST), and the pool goes
    back to zero; they neither wait for ever nor end among the dead letters."""
    endpoint = "abalone-async"
    files = [manifest("async", abalone_model.tarball, tmp_path, minReplicas=0, maxReplicas=2,
                      scaleInCooldownSeconds=2, notification={"topic": True})]  # fmt: skip
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        wait_until(lambda: up.status(endpoint).get("phase") == "InService", 60, "in service")
        queue = EmbeddedQueue(tmp_path / "state" / "queue.db")
        put_webhook_job(queue, endpoint, "its-webhook-removed")
        wait_until(lambda: queue.waiting_webhooks(endpoint) == 0, 60, "the job settled")
        assert queue.dead_letters(outbox_name(endpoint)) == []
        wait_until(lambda: up.running(endpoint) == [], 60, "the pool back at zero")


def test_a_worker_without_webhooks_acks_the_jobs_of_removed_ones(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """On RabbitMQ: a job left by a worker that had a success webhook is acked, named in the
    log and counted by a worker started without it."""
    endpoint = "outbox-removed"
    put_webhook_job(RabbitBroker(rabbitmq.amqp_url, None), endpoint, "its-webhook-removed")
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path) as live:
        worker = live.start_worker(f"file://{abalone_model.tarball}", "w", concurrency=1)
        unsent = "infermodes_async_webhook_jobs_unsent_total"
        wait_until(lambda: metric(worker, unsent, reason="no_webhook") == 1, 60,
                   "the job acked unsent")  # fmt: skip
        assert "webhook job of inference its-webhook-removed" in worker.log
        assert waiting_webhooks(endpoint, rabbitmq.amqp_url, None) == 0
        assert dead_jobs(rabbitmq.amqp_url, endpoint) == []


def test_the_operator_reads_an_outbox_s_waiting_jobs_only_when_asked(rabbitmq: Broker) -> None:
    """The reconcile's and the look's readings on a real RabbitMQ: an endpoint never declared
    reads as empty, not as a broker that cannot be read; the job ready in the outbox is
    counted, and not read at all unless asked for; the work queue's figures are unchanged."""
    endpoint = "outbox-count"
    broker = RabbitBroker(rabbitmq.amqp_url, None)
    reader = QueueReader(rabbitmq.amqp_url, 1)
    try:
        # no outbox declared yet: nothing waits (read on the test's reader, which it closes:
        # a broker's kept reader outlives the test, and the next tests count connections)
        assert waiting_webhooks(endpoint, rabbitmq.amqp_url, reader) == 0
        assert read_ready(endpoint, reader, outbox=True) == (0, 0, 0)
        put_webhook_job(broker, endpoint, "j")
        wait_until(lambda: waiting_webhooks(endpoint, rabbitmq.amqp_url, reader) == 1, 30,
                   "the job counted")  # fmt: skip
        read = read_backlog(endpoint, rabbitmq.amqp_url, None, webhooks=True)
        assert read is not None and (read.ready, read.waiting_webhooks) == (0, 1)
        unread = read_backlog(endpoint, rabbitmq.amqp_url, None)
        assert unread is not None and unread.waiting_webhooks == 0
        assert read_ready(endpoint, reader, outbox=True) == (0, 0, 1)
        assert read_ready(endpoint, reader) == (0, 0, 0)
    finally:
        reader.close()


def lose_deliveries(amqp_url: str, queue: str, times: int) -> None:
    """``times`` deliveries of the queue's one message that end as a killed sender's do: taken,
    never settled, its connection gone (each counts as a delivery)."""
    for _ in range(times):
        lose_delivery(amqp_url, queue)


def lose_delivery(amqp_url: str, queue: str) -> None:
    connection = connect(amqp_url)
    try:
        channel = connection.channel()
        # the message is back once the last connection's loss is seen
        wait_until(
            lambda: channel.basic_get(queue, auto_ack=False)[0] is not None,
            30,
            f"a delivery of {queue}",
        )
    finally:
        connection.close()


def dead_jobs(amqp_url: str, endpoint: str) -> list[tuple[bytes, str]]:
    """The bodies in the endpoint's outbox dead-letter queue (taken), with the reason of each:
    its sender's (``REASON_HEADER``), else the broker's (``x-death``)."""
    found = dead_letters(amqp_url, endpoint)
    deaths = [(headers.get("x-death") or [{}])[0] for _, headers in found]
    return [(body, str(headers.get(REASON_HEADER) or death.get("reason")))
            for (body, headers), death in zip(found, deaths, strict=True)]  # fmt: skip


def dead_letters(amqp_url: str, endpoint: str) -> list[tuple[bytes, dict[str, Any]]]:
    """The bodies in the endpoint's outbox dead-letter queue, with their headers (taken)."""
    found = []
    connection = connect(amqp_url)
    try:
        channel = connection.channel()
        while True:
            method, properties, body = channel.basic_get(
                f"{outbox_name(endpoint)}.dead-letter", auto_ack=True
            )
            if method is None:
                return found
            found.append((body, dict(properties.headers or {})))
    finally:
        connection.close()


def test_a_webhook_job_whose_senders_are_killed_each_time_is_dead_lettered_not_lost(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Two jobs whose senders died on each delivery: the one that reached the queue's limit is
    dead-lettered by the broker (``delivery_limit``), the one at the senders' last delivery by
    the worker that got it (``unsettled``: published to the dead letters, unsent, logged and
    counted); neither is dropped."""
    endpoint = "outbox-dead"
    broker = RabbitBroker(rabbitmq.amqp_url, None)
    outbox = outbox_name(endpoint)
    put_webhook_job(broker, endpoint, "past-the-limit")
    lose_deliveries(rabbitmq.amqp_url, outbox, OUTBOX_DELIVERY_LIMIT + 1)
    dead: list[tuple[bytes, str]] = []

    def dead_lettered(count: int) -> bool:
        dead.extend(dead_jobs(rabbitmq.amqp_url, endpoint))
        return len(dead) >= count

    wait_until(lambda: dead_lettered(1), 30, "the job dead-lettered by the broker")
    assert [(json.loads(body)["notification"]["inferenceId"], why) for body, why in dead] == [
        ("past-the-limit", "delivery_limit")
    ]
    put_webhook_job(broker, endpoint, "at-the-senders-last")
    lose_deliveries(rabbitmq.amqp_url, outbox, OUTBOX_DELIVERY_LIMIT - 1)
    with (
        WebhookReceiver() as hook,
        plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path) as live,
    ):
        worker = live.start_worker(
            f"file://{abalone_model.tarball}",
            "w",
            concurrency=1,
            extra=("--success-webhook-url", hook.url),
        )
        unsent = "infermodes_async_webhook_jobs_unsent_total"
        wait_until(lambda: metric(worker, unsent, reason="dead_lettered") == 1, 60,
                   "the worker to dead-letter the job")  # fmt: skip
        assert "webhook job of inference at-the-senders-last" in worker.log
        wait_until(lambda: dead_lettered(2), 30, "the job in the dead-letter queue")
        assert json.loads(dead[1][0])["notification"]["inferenceId"] == "at-the-senders-last"
        assert dead[1][1] == "unsettled"
        assert hook.ids() == set()
    assert broker.waiting_webhooks(endpoint) == 0


def closed_port_url() -> str:
    """A webhook on loopback that refuses every connection: a port just freed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/hook/t0ken"


def sends_once_dead_lettered(worker: Process) -> tuple[float, float]:
    """Once the worker counted one job dead-lettered: the webhook sends it counted failed, and
    the jobs it put back after a failed send."""
    unsent = "infermodes_async_webhook_jobs_unsent_total"
    wait_until(lambda: metric(worker, unsent, reason="dead_lettered") == 1, 90,
               "the job dead-lettered")  # fmt: skip
    failed = metric(worker, "infermodes_async_notifications_total", channel="webhook",
                    result="failed")  # fmt: skip
    returned = "infermodes_async_webhook_jobs_returned_total"
    return failed, metric(worker, returned, reason="send_failed")


# one try a send, and 1 s before each next send (a test's schedule: the default's 8 waits
# before the last send span 53 min)
ONE_TRY_1_S_APART = {"INFERMODES_WORKER_WEBHOOK_ATTEMPTS": "1",
                     "INFERMODES_WORKER_WEBHOOK_RETRY_DELAYS": "[1]"}  # fmt: skip


def test_a_job_whose_webhook_stays_down_is_dead_lettered_on_an_outbox_without_dead_lettering(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """An outbox declared by a release before dead-lettering (no dead-letter exchange: a job a
    sender nacks is dropped there), a success webhook that refuses every connection: the job
    is sent ``OUTBOX_SENDS`` times, then the worker publishes it to the outbox's dead-letter
    queue itself, with headers saying why, after how many sends and the last failure (no
    token), and only then counts it dead-lettered; nothing is left in the outbox."""
    endpoint = "outbox-old"
    connection = connect(rabbitmq.amqp_url)
    try:  # the outbox as the release before dead-lettering declared it
        old = {"x-queue-type": "quorum", "x-delivery-limit": OUTBOX_DELIVERY_LIMIT}
        connection.channel().queue_declare(outbox_name(endpoint), durable=True, arguments=old)
    finally:
        connection.close()
    url = closed_port_url()
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, env=ONE_TRY_1_S_APART) as live:
        worker = live.start_worker(f"file://{abalone_model.tarball}", "w", concurrency=1,
                                   extra=("--success-webhook-url", url))  # fmt: skip
        assert "was declared with other arguments" in worker.log  # kept as it is
        put_webhook_job(RabbitBroker(rabbitmq.amqp_url, None), endpoint, "never-taken")
        assert sends_once_dead_lettered(worker) == (OUTBOX_SENDS, OUTBOX_SENDS - 1)
    ((body, headers),) = dead_letters(rabbitmq.amqp_url, endpoint)
    where = url.split("/hook")[0] + "/..."
    assert headers[REASON_HEADER] == "sends_exhausted"
    assert headers[SENDS_HEADER] == OUTBOX_SENDS
    assert str(headers[LAST_ERROR_HEADER]).startswith(f"{where} failed: ")
    job = json.loads(body)
    assert (job["notification"]["inferenceId"], job["sends"]) == ("never-taken", OUTBOX_SENDS)
    assert b"t0ken" not in body and "t0ken" not in str(headers)
    assert waiting_webhooks(endpoint, rabbitmq.amqp_url, None) == 0


def young_job(broker: queues.Broker, endpoint: str, inference_id: str) -> None:
    """A success job just published, as a worker with the webhook does during a rollout."""
    publisher = broker.publisher(endpoint, 3, 1)
    try:
        body = {"inferenceId": inference_id, "eventTime": _iso(time.time())}
        publisher.publish("", outbox_name(endpoint), webhook_job(body, True), inference_id, True)
    finally:
        publisher.close()


def test_returns_to_the_outbox_are_no_deliveries_of_the_job(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A worker without the job's webhook (a rollout adding it) puts the job back, again and
    again, more often than the outbox's delivery limit: it is neither dead-lettered nor
    dropped, and the worker with the webhook started next sends it."""
    endpoint = "outbox-returns"
    broker = RabbitBroker(rabbitmq.amqp_url, None)
    returned = "infermodes_async_webhook_jobs_returned_total"
    model = f"file://{abalone_model.tarball}"
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path) as live:
        without = live.start_worker(model, "without", concurrency=1,
                                    extra=("--error-webhook-url", closed_port_url()))  # fmt: skip
        young_job(broker, endpoint, "for-the-new-workers")
        dead: list[tuple[bytes, str]] = []

        def returned_often_or_dead_lettered() -> bool:
            dead.extend(dead_jobs(rabbitmq.amqp_url, endpoint))
            return bool(dead) or metric(without, returned, reason="no_webhook") > (
                OUTBOX_DELIVERY_LIMIT + 1
            )

        wait_until(returned_often_or_dead_lettered, 90, "returns beyond the delivery limit")
        assert dead == []
        without.proc.terminate()
        without.proc.wait(30)
        with WebhookReceiver() as hook:
            live.start_worker(model, "with", concurrency=1, extra=("--success-webhook-url",
                                                                   hook.url))  # fmt: skip
            wait_until(lambda: hook.ids() == {"for-the-new-workers"}, 60, "the job sent")
    assert dead_jobs(rabbitmq.amqp_url, endpoint) == []


def test_up_dead_letters_a_job_whose_webhook_stays_down_with_its_reason(
    abalone_model: AbaloneModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on ``infermodes up``'s embedded queue: ``OUTBOX_SENDS`` failed sends, then the
    job is among the outbox's dead letters with its reason and sends, its last failure in it."""
    for name, value in ONE_TRY_1_S_APART.items():  # up's workers inherit its environment
        monkeypatch.setenv(name, value)
    endpoint = "abalone-async"
    url = closed_port_url()
    files = [manifest("async", abalone_model.tarball, tmp_path, minReplicas=1, maxReplicas=1,
                      notification={"topic": False, "successWebhook": url})]  # fmt: skip
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        wait_until(lambda: up.status(endpoint).get("phase") == "InService", 60, "in service")
        queue = EmbeddedQueue(tmp_path / "state" / "queue.db")
        put_webhook_job(queue, endpoint, "never-taken")
        wait_until(lambda: queue.dead_letters(outbox_name(endpoint)) != [], 120,
                   "the job dead-lettered")  # fmt: skip
        (dead,) = queue.dead_letters(outbox_name(endpoint))
        assert (dead.message_id, dead.reason, dead.deliveries) == (
            "never-taken", "sends_exhausted", OUTBOX_SENDS)  # fmt: skip
        job = json.loads(dead.body)
        assert job["sends"] == OUTBOX_SENDS
        assert job["lastError"].startswith(url.split("/hook")[0] + "/... failed: ")
        assert queue.waiting_webhooks(endpoint) == 0


class FailsFirst:
    """A webhook receiver's ``status``: 503 to the first POST, 204 after; when each POST came
    (before its answer: a send put back after the first one's answer is published later)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, _body: dict[str, object]) -> int:
        self.times.append(time.time())
        return 503 if len(self.times) == 1 else 204


RETRY_DELAY = 3  # seconds: the test's schedule


@contextmanager
def sent_twice(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path, endpoint: str
) -> Iterator[tuple[Process, FailsFirst, WebhookReceiver]]:
    """A worker whose webhook answers 503 once, on a one-delay schedule, and a job of its
    outbox: yields (the worker, the answers, the receiver) once the job was sent twice."""
    env = {"INFERMODES_WORKER_WEBHOOK_ATTEMPTS": "1",
           "INFERMODES_WORKER_WEBHOOK_RETRY_DELAYS": f"[{RETRY_DELAY}]"}  # fmt: skip
    answers = FailsFirst()
    with (
        WebhookReceiver(status=answers) as hook,
        plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path, env=env) as live,
    ):
        worker = live.start_worker(f"file://{abalone_model.tarball}", "w", concurrency=1,
                                   extra=("--success-webhook-url", hook.url))  # fmt: skip
        put_webhook_job(RabbitBroker(rabbitmq.amqp_url, None), endpoint, "sent-twice")
        wait_until(lambda: len(answers.times) == 2, 60, "the job sent again")
        yield worker, answers, hook


def test_a_failed_send_s_job_is_sent_again_after_its_delay_not_before(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A webhook that answers 503 once: the job is put back through the outbox's delay queue
    of its schedule (a quorum queue whose messages expire into the outbox), and sent again
    after that delay, not before; then it is acked, nothing left waiting anywhere."""
    endpoint = "outbox-delay"
    with sent_twice(rabbitmq, abalone_model, tmp_path, endpoint) as (worker, answers, hook):
        assert answers.times[1] >= answers.times[0] + RETRY_DELAY  # not before its delay
        sent = "infermodes_async_notifications_total"
        wait_until(lambda: metric(worker, sent, channel="webhook", result="sent") == 1, 30,
                   "the second send counted")  # fmt: skip
        returned = "infermodes_async_webhook_jobs_returned_total"
        assert metric(worker, returned, reason="send_failed") == 1
        assert f"send 1 of {OUTBOX_SENDS} failed" in worker.log
        assert f"for the next send in {RETRY_DELAY} s" in worker.log
    assert hook.ids() == {"sent-twice"}
    connection = connect(rabbitmq.amqp_url)
    try:  # the delay queue is there, empty, its job moved to the outbox and sent
        delayed = f"{outbox_name(endpoint)}.retry.{RETRY_DELAY}s"
        declared = connection.channel().queue_declare(delayed, passive=True)
        assert declared.method.message_count == 0
    finally:
        connection.close()
    assert waiting_webhooks(endpoint, rabbitmq.amqp_url, None) == 0
    assert dead_jobs(rabbitmq.amqp_url, endpoint) == []


def test_a_delay_queue_the_broker_refuses_puts_the_job_back_at_once_not_as_an_outage(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A delay queue that exists with other arguments (a later release's, an admin's import)
    or that the broker user may not configure: its declare is refused (406, 403). Taken for an
    outage, the job was requeued, sent again at once up to 9 times and dead-lettered as
    ``unsettled``; now it is put back without a delay (as before delays existed), said so in
    one line, and sent again."""
    endpoint = "outbox-delay-refused"
    connection = connect(rabbitmq.amqp_url)
    try:  # the delay queue, declared classic, without the worker's arguments
        connection.channel().queue_declare(
            f"{outbox_name(endpoint)}.retry.{RETRY_DELAY}s", durable=True
        )
    finally:
        connection.close()
    with sent_twice(rabbitmq, abalone_model, tmp_path, endpoint) as (worker, _, hook):
        returned = "infermodes_async_webhook_jobs_returned_total"
        wait_until(lambda: metric(worker, returned, reason="send_failed") == 1, 30,
                   "the put-back counted")  # fmt: skip
        assert "put back without a delay" in worker.log
        assert "PRECONDITION_FAILED" in worker.log or "406" in worker.log
        assert "unreachable" not in worker.log
    assert hook.ids() == {"sent-twice"}
    assert dead_jobs(rabbitmq.amqp_url, endpoint) == []


def test_a_refused_webhook_s_job_is_dead_lettered_after_one_send(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A webhook at a link-local address (a worker's own setting; the spec refuses one) can
    never be sent to: its job is dead-lettered after its first send, reason ``refused``, the
    refusal its last error, never put back, and nothing is POSTed."""
    endpoint = "outbox-refused"
    url = "http://169.254.169.254/hook/t0ken"
    with plane(rabbitmq, endpoint, f"file://{tmp_path}", tmp_path) as live:
        worker = live.start_worker(f"file://{abalone_model.tarball}", "w", concurrency=1,
                                   extra=("--success-webhook-url", url))  # fmt: skip
        put_webhook_job(RabbitBroker(rabbitmq.amqp_url, None), endpoint, "refused")
        assert sends_once_dead_lettered(worker) == (1, 0)
    ((body, headers),) = dead_letters(rabbitmq.amqp_url, endpoint)
    assert (headers[REASON_HEADER], headers[SENDS_HEADER]) == ("refused", 1)
    assert str(headers[LAST_ERROR_HEADER]).startswith("http://169.254.169.254/... refused: ")
    assert "link-local or metadata" in str(headers[LAST_ERROR_HEADER])
    assert json.loads(body)["notification"]["inferenceId"] == "refused"
    assert b"t0ken" not in body and "t0ken" not in str(headers)
    assert waiting_webhooks(endpoint, rabbitmq.amqp_url, None) == 0


def test_up_sends_a_failed_send_s_job_again_after_its_delay_not_before(
    abalone_model: AbaloneModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same delay on ``infermodes up``'s embedded queue: a job put back after a 503 is not
    delivered before its delay, and is after it."""
    monkeypatch.setenv("INFERMODES_WORKER_WEBHOOK_ATTEMPTS", "1")
    monkeypatch.setenv("INFERMODES_WORKER_WEBHOOK_RETRY_DELAYS", f"[{RETRY_DELAY}]")
    endpoint = "abalone-async"
    answers = FailsFirst()
    with WebhookReceiver(status=answers) as hook:
        files = [manifest("async", abalone_model.tarball, tmp_path, minReplicas=1,
                          maxReplicas=1, notification={"topic": False,
                                                       "successWebhook": hook.url})]  # fmt: skip
        with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
            wait_until(lambda: up.status(endpoint).get("phase") == "InService", 60, "in service")
            queue = EmbeddedQueue(tmp_path / "state" / "queue.db")
            put_webhook_job(queue, endpoint, "sent-twice")
            wait_until(lambda: len(answers.times) == 2, 60, "the job sent again")
            assert answers.times[1] >= answers.times[0] + RETRY_DELAY  # not before its delay
            wait_until(lambda: queue.backlog(outbox_name(endpoint)).total == 0, 30, "acked")
            assert queue.dead_letters(outbox_name(endpoint)) == []
    assert hook.ids() == {"sent-twice"}


def test_a_put_back_goes_through_while_every_notification_channel_is_held(
    rabbitmq: Broker, abalone_model: AbaloneModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker of concurrency 2 whose two notification channels are both busy (requests
    waiting for their confirms): a failed send's job is put back to the outbox all the same,
    over the senders' own channel, and is back in the outbox after its delay."""
    endpoint = "outbox-own-channel"
    made: list[tuple[int, ClosingPublisher]] = []
    publisher = RabbitBroker.publisher

    def recorded(
        broker: RabbitBroker, name: str, attempts: int, connections: int, *rest: str
    ) -> ClosingPublisher:
        made.append((connections, publisher(broker, name, attempts, connections, *rest)))
        return made[-1][1]

    monkeypatch.setattr(RabbitBroker, "publisher", recorded)
    settings = WorkerSettings(
        endpoint=endpoint,
        model_uri=f"file://{abalone_model.tarball}",
        broker_url=rabbitmq.amqp_url,
        metrics_port=0,
        max_concurrent_invocations=2,
        success_webhook_urls=[closed_port_url()],
        webhook_attempts=1,
        webhook_retry_delays=[RETRY_DELAY],
    )
    worker = build(settings, CollectorRegistry())
    (notifications,) = [pool for connections, pool in made if connections == 2]
    assert isinstance(notifications, ChannelPool)
    held, release = threading.Semaphore(0), threading.Event()

    def hold(_channel: object) -> None:
        held.release()
        release.wait(60)

    holders = [threading.Thread(target=notifications.run, args=(hold,)) for _ in range(2)]
    settled: list[Settle] = []
    job = webhook_job({"inferenceId": "put-back", "eventTime": _iso(time.time())}, True)
    sender = threading.Thread(target=lambda: settled.append(worker.outbox[1](Delivery(job, 0))))
    try:
        for holder in holders:
            holder.start()
        assert held.acquire(timeout=30) and held.acquire(timeout=30)  # both channels held
        sender.start()
        sender.join(30)
        assert settled == [Settle.ACK]  # put back, confirmed, while they are held
    finally:
        release.set()
        for thread in (*holders, sender):
            if thread.ident is not None:  # started
                thread.join(60)
        for _, pool in made:
            pool.close()
    wait_until(lambda: waiting_webhooks(endpoint, rabbitmq.amqp_url, None) == 1, 30,
               "the job back in the outbox after its delay")  # fmt: skip


def test_up_s_pool_goes_to_zero_while_a_job_waits_for_its_delay_and_wakes_when_it_is_due(
    abalone_model: AbaloneModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job put back after a 503 waits for its delay on ``infermodes up``'s embedded queue,
    held by no worker: the pool at ``minReplicas`` 0 goes to zero meanwhile (as on RabbitMQ,
    where it waits in a delay queue), and once it is due a worker is started that sends it."""
    delay = 8  # seconds: the pool's cooldown (1 s) and its worker's stop fit well within it
    monkeypatch.setenv("INFERMODES_WORKER_WEBHOOK_ATTEMPTS", "1")
    monkeypatch.setenv("INFERMODES_WORKER_WEBHOOK_RETRY_DELAYS", f"[{delay}]")
    endpoint = "abalone-async"
    answers = FailsFirst()
    with WebhookReceiver(status=answers) as hook:
        notification = {"topic": False, "successWebhook": hook.url}
        files = [manifest("async", abalone_model.tarball, tmp_path, minReplicas=0, maxReplicas=1,
                          scaleInCooldownSeconds=1, notification=notification)]  # fmt: skip
        with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
            wait_until(lambda: up.status(endpoint).get("phase") == "InService", 60, "in service")
            queue = EmbeddedQueue(tmp_path / "state" / "queue.db")
            put_webhook_job(queue, endpoint, "sent-when-due")
            wait_until(lambda: len(answers.times) == 1, 60, "the first send")
            wait_until(lambda: up.running(endpoint) == [], 30, "the pool at zero")
            assert len(answers.times) == 1  # at zero while the job waited for its delay
            wait_until(lambda: len(answers.times) == 2, 60, "the job sent again once due")
            assert answers.times[1] >= answers.times[0] + delay
            wait_until(lambda: queue.backlog(outbox_name(endpoint)).total == 0, 30, "acked")
    assert hook.ids() == {"sent-when-due"}
