"""Webhooks are sent apart from the invocation slot: a worker whose webhook receiver holds
every POST still works through its queue, and a webhook whose sender is killed after the
request was acknowledged still reaches its receiver (a new worker sends it)."""

from __future__ import annotations

import threading
from pathlib import Path

from infermodes.queueing.rabbitmq import backlog
from tests.conftest import AbaloneModel
from tests.integration.test_async_reliability import MESSAGES, metric
from tests.support.async_plane import Notifications, WebhookReceiver, plane, to_csv
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
        live.start_worker(
            f"file://{abalone_model.tarball}",
            "w",
            concurrency=1,
            extra=("--success-webhook-url", hook.url),
        )
        row = to_csv(abalone_model.test_rows[:1])
        first, second = (live.invoke(row).json()["InferenceId"] for _ in range(2))
        try:
            wait_until(lambda: first in hook.ids(), 60, "the first request's POST held")
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
