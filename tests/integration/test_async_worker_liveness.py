"""An async worker's liveness (``GET /healthz`` on its metrics port, the pod's liveness probe):
it holds while an invocation, or a webhook POST, runs far longer than the stall bound, since
they run on their consumer's pool and its loop turns on; it fails, naming which, once the
queue's consumer loop or the webhook outbox's stops turning (stopped here by a fault hook, as
a deadlock would), and holds again once it turns."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from infermodes.settings import WORKER_LIVENESS_STALL_LEAST_SECONDS
from tests.conftest import AbaloneModel
from tests.support.async_plane import WebhookReceiver, plane, spawn_worker, wait_consuming
from tests.support.batch import FAULTS
from tests.support.processes import wait_until
from tests.support.rabbitmq import Broker

ROW = b"1,0,0,0.455,0.365,0.095,0.514,0.2245,0.101,0.15"
STALL_SECONDS = WORKER_LIVENESS_STALL_LEAST_SECONDS  # the least a worker takes


def faults_env(stuck: Path, **more: str) -> dict[str, str]:
    """The fault hooks on the worker's path, its consumer loop stuck while ``stuck`` exists,
    and a short stall bound."""
    return {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")])),
        "INFERMODES_TEST_STUCK_CONSUMER": str(stuck),
        "INFERMODES_WORKER_LIVENESS_STALL_SECONDS": str(STALL_SECONDS),
        **more,
    }


def alive_then_stuck(liveness: Callable[[], httpx.Response], stuck: Path) -> str:
    """What the worker's liveness answers, 200 throughout two stall bounds while its work runs
    on a pool, then once ``stuck`` stops a loop: a 503, and the reason it gives."""
    until = time.monotonic() + 2 * STALL_SECONDS
    while time.monotonic() < until:
        answer = liveness()
        assert answer.status_code == 200, answer.text
    stuck.touch()
    wait_until(lambda: liveness().status_code == 503, 30, "liveness to fail")
    return liveness().text


def test_a_busy_worker_is_alive_and_one_whose_consumer_loop_is_stuck_is_not(
    abalone_model: AbaloneModel, rabbitmq: Broker, tmp_path: Path
) -> None:
    hold, stuck = tmp_path / "hold", tmp_path / "stuck"
    faults = faults_env(stuck, INFERMODES_TEST_HELD_PREDICT=str(hold))
    endpoint = "liveness"
    with plane(rabbitmq, endpoint, f"file://{tmp_path}/store", tmp_path) as running:
        worker = spawn_worker(rabbitmq, endpoint, f"file://{abalone_model.tarball}",
                              tmp_path / "worker.log", env=faults)  # fmt: skip
        running.workers.append(worker)  # stopped by the plane
        wait_consuming(worker)

        def liveness() -> httpx.Response:
            return httpx.get(f"{worker.url}/healthz", timeout=10)

        assert liveness().text == "alive\n"
        hold.touch()
        assert running.invoke(ROW).status_code == 202
        wait_until(Path(f"{hold}.started").exists, 30, "the invocation to start")
        # the invocation holds a pool thread through several stall bounds: alive throughout
        assert alive_then_stuck(liveness, stuck).startswith("the consumer loop has not turned")
        stuck.unlink()
        hold.unlink()
        wait_until(lambda: liveness().status_code == 200, 30, "liveness to hold again")


def test_a_held_webhook_post_is_alive_and_a_stuck_webhook_outbox_loop_is_not(
    abalone_model: AbaloneModel, rabbitmq: Broker, tmp_path: Path
) -> None:
    """The outbox is consumed on a thread of its own, by a connection of its own: a POST held
    by its receiver (each try cut at 10 s, 10 tries) runs on the senders' pool, alive through
    several stall bounds; the outbox's loop stopped, the worker is not alive, naming that
    loop and not the queue's, which turns on."""
    stuck, release = tmp_path / "stuck", threading.Event()
    faults = faults_env(
        stuck,
        INFERMODES_TEST_STUCK_THREAD="webhook-outbox",
        INFERMODES_WORKER_WEBHOOK_ATTEMPTS="10",
    )
    endpoint = "outbox-liveness"
    with (
        WebhookReceiver(holds=lambda _: None if release.is_set() else release) as hook,
        plane(rabbitmq, endpoint, f"file://{tmp_path}/store", tmp_path) as running,
    ):
        worker = spawn_worker(rabbitmq, endpoint, f"file://{abalone_model.tarball}",
                              tmp_path / "worker.log", env=faults,
                              extra=("--success-webhook-url", hook.url))  # fmt: skip
        running.workers.append(worker)  # stopped by the plane
        wait_consuming(worker)

        def liveness() -> httpx.Response:
            return httpx.get(f"{worker.url}/healthz", timeout=10)

        try:
            first = running.invoke(ROW).json()["InferenceId"]
            wait_until(lambda: first in hook.ids(), 60, "the webhook POST held")
            reason = alive_then_stuck(liveness, stuck)
            assert reason.startswith("the webhook outbox's consumer loop has not turned for ")
            assert "the consumer loop" not in reason  # the queue's turns on
        finally:
            release.set()
            stuck.unlink(missing_ok=True)
        wait_until(lambda: liveness().status_code == 200, 30, "liveness to hold again")
        second = running.invoke(ROW).json()["InferenceId"]
        wait_until(lambda: {first, second} <= hook.ids(), 60, "both webhooks sent")


def test_a_worker_whose_broker_is_down_is_alive_through_its_reconnect_back_offs(
    abalone_model: AbaloneModel, rabbitmq: Broker, tmp_path: Path
) -> None:
    """An ordinary broker outage: the worker's loops back off 0.5, 1, 2, 4, then 5 s between
    refused connects, and turn while they wait: alive throughout, at the least stall bound the
    worker takes, consuming again once the broker is back."""
    endpoint = "outage-liveness"
    stall = {"INFERMODES_WORKER_LIVENESS_STALL_SECONDS": str(STALL_SECONDS)}
    with plane(rabbitmq, endpoint, f"file://{tmp_path}/store", tmp_path) as running:
        worker = spawn_worker(rabbitmq, endpoint, f"file://{abalone_model.tarball}",
                              tmp_path / "worker.log", env=stall)  # fmt: skip
        running.workers.append(worker)  # stopped by the plane
        wait_consuming(worker)
        rabbitmq.stop()
        try:
            wait_until(lambda: "broker unreachable" in worker.log, 30, "the worker to lose it")
            # refused connects end at once: two stall bounds span the 0.5, 1, 2, 4 and 5 s
            # back-offs (the outage is logged once, so its back-offs are not named in the log)
            until = time.monotonic() + 2 * STALL_SECONDS
            while time.monotonic() < until:
                answer = httpx.get(f"{worker.url}/healthz", timeout=10)
                assert (answer.status_code, answer.text) == (200, "alive\n"), worker.log[-2000:]
            assert "broker reachable again" not in worker.log  # down throughout
        finally:
            rabbitmq.start()
        wait_until(lambda: "broker reachable again" in worker.log, 60, "the worker to reconnect")
        assert worker.proc.poll() is None
