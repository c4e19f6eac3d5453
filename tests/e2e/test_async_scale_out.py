"""An async pool with workers scales out on the operator's one-second look at its queue, not on
the resync: this module's chart resyncs once an hour, so nothing but the look can decide while
the pool's only worker holds a request and more wait, or wake a pool at zero for a job in its
outbox."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infermodes.queueing.connect import RabbitBroker
from tests.cluster.harness import Cluster
from tests.conftest import AbaloneModel
from tests.e2e.operator_support import (
    OPERATOR_NAMESPACE,
    Tools,
    get_endpoint,
    installed_chart,
)
from tests.e2e.test_async import (
    SECRET,
    async_manifest,
    broker_secret,
    check_outputs,
    holding_input,
    in_flight,
    invoke_all,
    send_held,
    serve_async,
    worker_pods,
)
from tests.support.async_plane import Notifications, dead_letters, put_webhook_job
from tests.support.processes import wait_until
from tests.support.rabbitmq import Broker, rabbitmq_broker
from tests.support.s3 import holding_s3_server


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with rabbitmq_broker() as running:
        yield running


@pytest.fixture(scope="module")
def tools(
    k8s_cluster: Cluster, broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tools]:
    """The chart with the broker's Secret, resyncing once an hour."""
    api = k8s_cluster.api
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}
    api.post("/api/v1/namespaces", namespace)
    broker_secret(Tools(k8s_cluster), OPERATOR_NAMESPACE, broker)
    values: dict[str, str | list[str]] = {
        "rabbitmq.secretRef.name": SECRET,
        "gateway.asyncStoragePrefixes": [f"file://{tmp_path_factory.getbasetemp()}/"],
        "operator.resyncSeconds": "3600",  # after the tests' own 2 s: it wins
    }
    with installed_chart(k8s_cluster, **values) as tools:
        yield tools


def deployment_replicas(tools: Tools, namespace: str, name: str) -> int:
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/ie-{name}"
    return int(tools.cluster.api.get(path)["spec"]["replicas"])


def deployment_settled(tools: Tools, namespace: str, name: str) -> bool:
    """The Deployment controller has written the status of its last change."""
    found = tools.cluster.api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/ie-{name}")
    return bool(found["status"].get("observedGeneration") == found["metadata"]["generation"])


def endpoint_status(tools: Tools, namespace: str, name: str) -> dict[str, Any]:
    return dict((get_endpoint(tools.cluster.api, namespace, name) or {}).get("status") or {})


def test_a_burst_beyond_the_pool_scales_it_out_between_resyncs(
    tools: Tools, k8s_namespace: str, broker: Broker, model_uri: str, abalone_model: AbaloneModel,
    tmp_path: Path,
) -> None:  # fmt: skip
    """One worker, one request at a time, holding its first request (its input's read does
    not end until the test says so); four more wait in the queue. The look at the queue
    sees five requests for one worker and the pool goes to maxReplicas (3) while that request
    is still held: no pod or Deployment changed meanwhile, and the resync is an hour away.
    Then every request completes once."""
    release = threading.Event()
    rows = abalone_model.test_rows
    with holding_s3_server(lambda path: release if "/held/" in path else None) as s3:
        fields = {"minReplicas": 1, "maxReplicas": 3, "maxConcurrentInvocationsPerInstance": 1,
                  "targetBacklogPerInstance": 1, "invocationTimeoutSeconds": 120,
                  "notification": {"topic": True}}  # fmt: skip
        manifest = holding_input(
            tools, k8s_namespace, async_manifest("burst", model_uri, tmp_path, **fields), s3,
            rows[0],
        )  # fmt: skip
        endpoint, url = serve_async(tools, k8s_namespace, broker, manifest, ready=1)
        assert endpoint["status"]["replicas"] == 1
        notifications = Notifications(broker, "burst").declare()
        sent = send_held(broker, manifest, tmp_path, "held-1", rows[0])
        (pod,) = worker_pods(tools, k8s_namespace, "burst")
        pod_ip = pod["status"]["podIP"]
        wait_until(lambda: in_flight(pod_ip) == 1, 60, "the worker to hold the first request")
        sent |= invoke_all(url, "burst", rows[1:], 4)

        try:
            wait_until(lambda: deployment_replicas(tools, k8s_namespace, "burst") == 3, 60,
                       "the look at the queue to scale the pool out")  # fmt: skip
            # the status is written just after the Deployment is scaled, in the same reconcile
            wait_until(lambda: endpoint_status(tools, k8s_namespace, "burst").get(
                "desiredReplicas") == 3, 30, "the status to say the pool scaled out")  # fmt: skip
            assert in_flight(pod_ip) == 1  # decided while the first request was still held
            assert endpoint_status(tools, k8s_namespace, "burst")["lastScaleTime"]
        finally:  # a held request would keep its worker, and the namespace, for two minutes
            release.set()
        notifications.wait_for(set(sent), "Completed", timeout=120)
    assert notifications.ids("Completed") == {inference_id: 1 for inference_id in sent}
    check_outputs(tmp_path, sent, abalone_model.booster())
    assert dead_letters(broker, "burst") == []


def test_a_job_of_a_removed_webhook_wakes_a_pool_at_zero_between_resyncs(
    tools: Tools, k8s_namespace: str, broker: Broker, model_uri: str, tmp_path: Path
) -> None:
    """An endpoint without webhooks, at zero, whose outbox holds a job left while it had one:
    the look (the resync an hour away) starts a worker, which settles the job unsent."""
    manifest = async_manifest("orphans", model_uri, tmp_path, notification={"topic": True})
    endpoint, _ = serve_async(tools, k8s_namespace, broker, manifest, ready=0)
    assert endpoint["status"]["replicas"] == 0
    # the reconciles a new endpoint starts (its Deployment's events, the resync's first tick
    # 1 s in) each read the outbox: over before the job is put, the look alone can see it
    wait_until(lambda: deployment_settled(tools, k8s_namespace, "orphans"), 60,
               "the Deployment's status written")  # fmt: skip
    time.sleep(5)
    queues = RabbitBroker(broker.amqp_url, None)
    put_webhook_job(queues, "orphans", "its-webhook-removed")
    wait_until(lambda: deployment_replicas(tools, k8s_namespace, "orphans") == 1, 60,
               "the look to wake the pool for the job")  # fmt: skip
    wait_until(lambda: queues.waiting_webhooks("orphans") == 0, 120, "the job settled")
