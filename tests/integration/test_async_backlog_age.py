"""How long requests wait, read from real parts: RabbitMQ's figures for our quorum queue, a real
worker's time in backlog and the acceptance time of what it took last, the operator's estimate
of the oldest waiting request's age made from them; and ``infermodes up`` on its embedded
queue, whose status and /metrics carry the exact age."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from infermodes.endpoints.status import oldest_age_from_dequeues
from infermodes.metrics import parse_sample, parse_worker_dequeued_accepted_at
from infermodes.queueing.rabbitmq import backlog
from tests.conftest import AbaloneModel
from tests.support.async_plane import Notifications, plane, to_csv
from tests.support.local import manifest, running_up
from tests.support.processes import wait_until
from tests.support.rabbitmq import Broker

WAIT = 60.0
AGE_GAUGE = "infermodes_async_approximate_age_of_oldest_request_seconds"


def test_a_quorum_queue_has_no_head_age_and_the_workers_bound_it(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    endpoint = "aging"
    notes = Notifications(rabbitmq, endpoint).declare()
    one_row = to_csv(abalone_model.test_rows[:1])
    read = lambda: backlog(endpoint, rabbitmq.amqp_url, rabbitmq.management_url)  # noqa: E731
    with plane(rabbitmq, endpoint, f"file://{tmp_path}/store", tmp_path) as live:
        worker = live.start_worker(f"file://{abalone_model.tarball}", "w", concurrency=1)
        assert (read().ready, read().oldest_age) == (0, 0.0)  # nothing waits
        before_first = time.time()
        first = live.invoke(one_row)
        assert first.status_code == 202, first.text
        notes.wait_for({first.json()["InferenceId"]}, "Completed", WAIT)
        text = httpx.get(f"{worker.url}/metrics", timeout=10).text
        taken = parse_worker_dequeued_accepted_at(text)
        assert taken is not None and before_first <= taken <= time.time()
        assert parse_sample(text, "infermodes_async_time_in_backlog_seconds_count") == 1
        total = "infermodes_async_total_processing_time_seconds_count"
        assert parse_sample(text, total) == 1

        worker.proc.send_signal(signal.SIGSTOP)  # it takes nothing more: requests wait
        try:
            ids = []
            for _ in range(3):
                response = live.invoke(one_row)
                assert response.status_code == 202, response.text
                ids.append(response.json()["InferenceId"])
            last_accepted = time.time()
            # the stopped worker's one prefetch slot may hold one of them
            wait_until(lambda: read().ready >= 2, WAIT, "requests waiting")
            found = read()
            assert found.oldest_age is None  # RabbitMQ gives no head timestamp for a quorum queue
            now = time.time()
            estimate = oldest_age_from_dequeues(found.ready, [taken], now)
            # what waits was accepted after what the worker took, and before the last 202
            assert estimate is not None
            assert now - last_accepted <= estimate <= now - before_first
        finally:
            worker.proc.send_signal(signal.SIGCONT)
        notes.wait_for(set(ids), "Completed", WAIT)
    assert read().oldest_age == 0.0


def gauge(text: str, name: str, endpoint: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("endpoint") == endpoint:
                return sample.value
    return None


def idle(backlog: dict[str, object]) -> bool:
    """A status's backlog with nothing waiting and nothing in flight."""
    return backlog["oldestAgeSeconds"] == 0 and backlog["total"] == 0


def test_up_shows_the_exact_age_while_requests_wait_and_publishes_it(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """On the embedded queue the age is exact; a pool starting from zero leaves requests
    waiting for a worker process to start, which the status shows (``up`` reads the queue
    every 0.25 s)."""
    files = [manifest("async", abalone_model.tarball, tmp_path, maxReplicas=1)]
    rows = abalone_model.test_rows
    output = tmp_path / "async" / "output"
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        ages: list[float] = []

        def waited() -> bool:
            age = (up.status("abalone-async").get("backlog") or {}).get("oldestAgeSeconds")
            if isinstance(age, int | float):
                ages.append(age)
            return any(a > 0 for a in ages)

        for index in range(20):
            answer = up.invoke("abalone-async", to_csv(rows[index : index + 1]),
                               "async-invocations")  # fmt: skip
            assert answer.status_code == 202, answer.text
            # Requests wait only until the worker has started, which on a slow disk can be
            # before the last of them is accepted: look while sending, not only after.
            waited()
        wait_until(waited, WAIT, "the status to show a request waiting")
        wait_until(lambda: len(list(output.glob("*.out"))) == 20, WAIT * 2, "every output")
        # an output is stored before its request is acknowledged: the last may be in flight
        # still when every output is there, so wait until nothing waits and nothing is held
        wait_until(
            lambda: idle(up.status("abalone-async")["backlog"]), WAIT,
            "nothing waiting or in flight",
        )  # fmt: skip
        metrics = httpx.get(f"{up.url}/metrics", timeout=10).text
        assert gauge(metrics, AGE_GAUGE, "abalone-async") == 0
        assert gauge(metrics, "infermodes_async_approximate_backlog_size", "abalone-async") == 0
