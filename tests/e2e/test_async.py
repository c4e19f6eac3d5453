"""Async endpoints end to end on the test control plane with a real RabbitMQ: kubectl apply of
the example at zero workers, requests through the gateway, workers from zero and back, exactly
one output per request across a worker deleted and one SIGKILLed, and a broker outage that the
scaler sits out."""

from __future__ import annotations

import copy
import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from infermodes.endpoints.demand import ANNOTATION_PREFIX, GatewayDemand
from infermodes.metrics import parse_sample, parse_worker_in_flight
from infermodes.queueing.connect import RabbitBroker
from infermodes.settings import DEFAULT_MAX_ATTEMPTS
from tests.cluster.api import KubeApi
from tests.cluster.harness import Cluster
from tests.conftest import AbaloneModel
from tests.e2e.operator_support import (
    IE_PATH,
    OPERATOR_NAMESPACE,
    Tools,
    gateway_url,
    get_endpoint,
    installed_chart,
    operator_pods,
    to_csv,
    wait_phase,
)
from tests.e2e.test_gateway_lag import lagging_gateway
from tests.support.async_plane import (
    Notifications,
    WebhookReceiver,
    dead_letter_ids,
    dead_letters,
    folder_request,
    publish,
    put_webhook_job,
)
from tests.support.processes import REPO, wait_until
from tests.support.rabbitmq import Broker, rabbitmq_broker
from tests.support.s3 import S3Endpoint, holding_s3_server

SECRET = "infermodes-rabbitmq"
AGE = "infermodes_async_approximate_age_of_oldest_request_seconds"
BACKLOG = "infermodes_async_approximate_backlog_size"
READ_FAILURES = "infermodes_async_backlog_read_failures_total"
CSV = {"content-type": "text/csv"}


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with rabbitmq_broker() as running:
        yield running


def broker_secret(tools: Tools, namespace: str, broker: Broker) -> None:
    urls = {"url": broker.amqp_url, "managementUrl": broker.management_url}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET},
              "stringData": urls}  # fmt: skip
    tools.cluster.api.post(f"/api/v1/namespaces/{namespace}/secrets", secret)


HELD_INPUT_SECRET = "infermodes-held-input"
HELD_INPUT = "s3://inputs/held/row.csv"


def holding_input(
    tools: Tools, namespace: str, manifest: dict[str, Any], s3: S3Endpoint, row: np.ndarray
) -> dict[str, Any]:
    """``manifest`` with workers that read ``s3://`` from ``s3`` (a ``holding_s3_server``; its
    variables are a Secret's keys named ``spec.storageSecretRef``, whose keys become their
    env), where ``HELD_INPUT`` holds ``row``: a request reading it holds its worker's slot
    until the server lets the read go (minutes, however slow the machine)."""
    client: Any = s3.client()
    client.create_bucket(Bucket="inputs")
    client.put_object(Bucket="inputs", Key="held/row.csv", Body=to_csv([row]))
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": HELD_INPUT_SECRET},
            "stringData": s3.env}  # fmt: skip
    tools.cluster.api.post(f"/api/v1/namespaces/{namespace}/secrets", body)
    manifest["spec"]["storageSecretRef"] = {"name": HELD_INPUT_SECRET}
    return manifest


def send_held(
    broker: Broker, manifest: dict[str, Any], out: Path, inference_id: str, row: np.ndarray
) -> dict[str, np.ndarray]:
    """One request reading ``HELD_INPUT``, put on the endpoint's queue as the gateway would
    (the gateway takes no by-reference input here): inference id -> its row."""
    name = manifest["metadata"]["name"]
    request = folder_request(name, inference_id, out, HELD_INPUT)
    attempts = int(manifest["spec"]["async"].get("maxAttempts", 3))
    publish(broker, name, inference_id, request.to_bytes(), attempts)
    return {inference_id: row}


def serve_async(
    tools: Tools, namespace: str, broker: Broker, manifest: dict[str, Any], ready: int
) -> tuple[dict[str, Any], str]:
    """Apply an async endpoint beside its broker Secret and wait until it is InService with
    ``ready`` ready workers: the endpoint as it is then, and the gateway's URL."""
    broker_secret(tools, namespace, broker)
    assert tools.apply(manifest, namespace).returncode == 0
    name = manifest["metadata"]["name"]
    endpoint = wait_phase(tools.cluster.api, namespace, name, "InService",
                          also=lambda e: e["status"].get("readyReplicas", 0) == ready)  # fmt: skip
    url = gateway_url(tools)
    assert url is not None
    return endpoint, url


@pytest.fixture(scope="module")
def by_namespace() -> Iterator[Path]:
    """A folder outside the tests' own, holding one folder per namespace (see ``tools``)."""
    with tempfile.TemporaryDirectory(prefix="infermodes-async-") as folder:
        yield Path(folder)


@pytest.fixture(scope="module")
def tools(
    k8s_cluster: Cluster, broker: Broker, tmp_path_factory: pytest.TempPathFactory,
    by_namespace: Path,
) -> Iterator[Tools]:  # fmt: skip
    """The chart with the broker's Secret: the operator reads the backlog, the gateway accepts
    async invocations for endpoints under the tests' folder or their namespace's folder."""
    api = k8s_cluster.api
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}
    api.post("/api/v1/namespaces", namespace)
    broker_secret(Tools(k8s_cluster), OPERATOR_NAMESPACE, broker)
    prefixes = [
        f"file://{tmp_path_factory.getbasetemp()}/",
        f"file://{by_namespace}/{{namespace}}/",
    ]
    values = {"rabbitmq.secretRef.name": SECRET, "gateway.asyncStoragePrefixes": prefixes}
    with installed_chart(k8s_cluster, **values) as tools:
        yield tools


def async_manifest(name: str, model_uri: str, out: Path, **fields: Any) -> dict[str, Any]:
    manifest = yaml.safe_load((REPO / "examples/abalone/async.yaml").read_text())
    manifest["metadata"]["name"] = name
    manifest["spec"]["model"]["uri"] = model_uri
    block = manifest["spec"]["async"]
    block["outputPath"] = f"file://{out}/output"
    block.update({"resources": {"cpu": "250m", "memory": "256Mi"}}, **fields)
    return manifest


def worker_pods(tools: Tools, namespace: str, name: str) -> list[dict[str, Any]]:
    path = f"/api/v1/namespaces/{namespace}/pods"
    selector = f"infermodes.dev/endpoint={name},app.kubernetes.io/component=async-worker"
    pods: list[dict[str, Any]] = tools.cluster.api.get(path, labelSelector=selector)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def ready_workers(tools: Tools, namespace: str, name: str) -> int:
    """The endpoint's worker pods whose readiness probe passes."""
    pods = worker_pods(tools, namespace, name)
    conditions = [c for p in pods for c in p.get("status", {}).get("conditions", [])]
    return sum(1 for c in conditions if c["type"] == "Ready" and c["status"] == "True")


def invoke_all(url: str, name: str, rows: np.ndarray, count: int) -> dict[str, np.ndarray]:
    """``count`` async invocations of one row each; inference id -> the row it carries."""
    sent = {}
    with httpx.Client(timeout=60) as client:
        for index in range(count):
            row = rows[index % len(rows)]
            response = client.post(f"{url}/endpoints/{name}/async-invocations",
                                   content=to_csv([row]), headers=CSV)  # fmt: skip
            assert response.status_code == 202, response.text
            sent[response.json()["InferenceId"]] = row
    return sent


def check_outputs(out: Path, sent: dict[str, np.ndarray], booster: Any) -> None:
    """Every request has exactly one output, equal to the booster's prediction."""
    outputs = {p.name for p in (out / "output").glob("*.out")}
    assert outputs == {f"{inference_id}.out" for inference_id in sent}
    rows = np.array(list(sent.values()), dtype=np.float32)
    expected = booster.inplace_predict(rows)
    for (inference_id, _row), want in zip(sent.items(), expected, strict=True):
        got = np.float32((out / "output" / f"{inference_id}.out").read_text().strip())
        assert got == want, inference_id


def test_a_pool_from_zero_serves_every_request_once_and_returns_to_zero(
    tools: Tools, k8s_namespace: str, broker: Broker, model_uri: str, abalone_model: AbaloneModel,
    tmp_path: Path,
) -> None:  # fmt: skip
    api = tools.cluster.api
    manifest = async_manifest("queued", model_uri, tmp_path, scaleInCooldownSeconds=10,
                              targetBacklogPerInstance=50, maxReplicas=2)  # fmt: skip
    notifications = Notifications(broker, "queued").declare()
    endpoint, url = serve_async(tools, k8s_namespace, broker, manifest, ready=0)
    assert endpoint["status"]["replicas"] == 0 and not worker_pods(tools, k8s_namespace, "queued")

    first_sent_at = time.time()
    sent = invoke_all(url, "queued", abalone_model.test_rows, 200)
    wait_until(lambda: bool(worker_pods(tools, k8s_namespace, "queued")), 60, "workers to start")
    # the gateway pushed the requests it accepted while the pool had no worker: its entry on
    # the endpoint, which the operator reconciles on, names a request of this burst
    pushed = [entry.last_request_at for entry in gateway_entries(api, k8s_namespace, "queued")]
    assert pushed and max(pushed) >= first_sent_at, pushed
    notifications.wait_for(set(sent), "Completed", timeout=180)
    # the requests waited for workers to start from zero: the workers measured it
    waited = [worker_sample(p, "infermodes_async_time_in_backlog_seconds_sum")
              for p in worker_pods(tools, k8s_namespace, "queued")]  # fmt: skip
    assert sum(w or 0 for w in waited) > 0, waited
    check_outputs(tmp_path, sent, abalone_model.booster())
    assert all(count == 1 for count in notifications.ids("Completed").values())
    assert dead_letters(broker, "queued") == []
    shown = tools.kubectl("get", "ie", "queued", "-n", k8s_namespace)
    assert "BACKLOG" in shown.stdout.splitlines()[0], shown.stdout

    # the cooldown passes with an empty queue: back to zero workers
    idle = wait_phase(api, k8s_namespace, "queued", "InService", timeout=120,
                      also=lambda e: e["status"].get("replicas") == 0)  # fmt: skip
    assert idle["status"]["backlog"]["oldestAgeSeconds"] == 0  # nothing waits
    labels = {"namespace": k8s_namespace, "endpoint": "queued"}
    assert operator_sample(tools, AGE, labels) == 0
    wait_until(lambda: not worker_pods(tools, k8s_namespace, "queued"), 120, "workers to stop")


def test_a_webhook_job_left_in_the_outbox_wakes_a_pool_at_zero_which_then_returns_to_zero(
    tools: Tools, k8s_namespace: str, broker: Broker, model_uri: str, tmp_path: Path
) -> None:
    """Only workers send an outbox's jobs: a job left there while the pool is at zero (no
    request waiting) makes the operator start a worker, which delivers it; the pool goes back
    to zero after its cooldown."""
    with WebhookReceiver() as webhook:
        notification = {"topic": False, "successWebhook": webhook.url}
        manifest = async_manifest("hooked", model_uri, tmp_path, scaleInCooldownSeconds=5,
                                  notification=notification)  # fmt: skip
        endpoint, _ = serve_async(tools, k8s_namespace, broker, manifest, ready=0)
        assert endpoint["status"]["replicas"] == 0
        put_webhook_job(RabbitBroker(broker.amqp_url, None), "hooked", "left-in-the-outbox")
        wait_until(lambda: webhook.ids() == {"left-in-the-outbox"}, 180, "the job delivered")
        wait_phase(tools.cluster.api, k8s_namespace, "hooked", "InService", timeout=120,
                   also=lambda e: e["status"].get("replicas") == 0)  # fmt: skip
        wait_until(lambda: not worker_pods(tools, k8s_namespace, "hooked"), 120, "workers gone")
    assert webhook.ids() == {"left-in-the-outbox"}


def gateway_entries(api: KubeApi, namespace: str, name: str) -> list[GatewayDemand]:
    """The gateways' entries on an endpoint (``endpoints.demand``)."""
    endpoint = get_endpoint(api, namespace, name) or {}
    annotations = endpoint.get("metadata", {}).get("annotations") or {}
    entries = (GatewayDemand.from_annotation(v) for k, v in annotations.items()
               if k.startswith(ANNOTATION_PREFIX))  # fmt: skip
    return [entry for entry in entries if entry is not None]


def worker_sample(pod: dict[str, Any], name: str) -> float | None:
    """One sample of a worker's /metrics; None when the pod does not answer (stopping)."""
    try:
        text = httpx.get(f"http://{pod['status']['podIP']}:9090/metrics", timeout=5).text
    except (httpx.HTTPError, KeyError):
        return None
    return parse_sample(text, name)


def operator_sample(tools: Tools, name: str, labels: dict[str, str]) -> float | None:
    """One sample of the operator's /metrics, by its labels."""
    (operator,) = operator_pods(tools.cluster.api)
    text = httpx.get(f"http://{operator['status']['podIP']}:9090/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def test_workers_deleted_and_killed_midway_lose_nothing(
    tools: Tools, k8s_namespace: str, broker: Broker, model_uri: str, abalone_model: AbaloneModel,
    tmp_path: Path,
) -> None:  # fmt: skip
    api = tools.cluster.api
    manifest = async_manifest("resilient", model_uri, tmp_path, minReplicas=2, maxReplicas=2,
                              maxConcurrentInvocationsPerInstance=2)  # fmt: skip
    _, url = serve_async(tools, k8s_namespace, broker, manifest, ready=2)
    notifications = Notifications(broker, "resilient").declare()
    sent = invoke_all(url, "resilient", abalone_model.test_rows, 300)
    done = lambda: len(list((tmp_path / "output").glob("*.out")))  # noqa: E731
    wait_until(lambda: done() >= 30, 120, "some outputs")
    first, second = worker_pods(tools, k8s_namespace, "resilient")[:2]
    api.delete(f"/api/v1/namespaces/{k8s_namespace}/pods/{first['metadata']['name']}")
    kubelet = tools.cluster.kubelet
    assert kubelet is not None
    pid = kubelet.running_pids(k8s_namespace)[f"{k8s_namespace}/{second['metadata']['name']}"]
    os.killpg(pid, signal.SIGKILL)
    notifications.wait_for(set(sent), "Completed", timeout=240)
    check_outputs(tmp_path, sent, abalone_model.booster())
    assert dead_letters(broker, "resilient") == []


def test_with_the_broker_down_the_scaler_keeps_its_replicas_and_says_why(
    tools: Tools, k8s_namespace: str, broker: Broker, model_uri: str, abalone_model: AbaloneModel,
    tmp_path: Path,
) -> None:  # fmt: skip
    api = tools.cluster.api
    manifest = async_manifest("outage", model_uri, tmp_path, minReplicas=1, maxReplicas=2)
    _, url = serve_async(tools, k8s_namespace, broker, manifest, ready=1)
    sent = invoke_all(url, "outage", abalone_model.test_rows, 20)
    broker.stop()
    try:
        blind = lambda e: e["status"].get("reason") == "BrokerUnreadable"  # noqa: E731
        endpoint = wait_phase(api, k8s_namespace, "outage", "InService", timeout=60, also=blind)
        assert endpoint["status"]["replicas"] == 1
        assert "backlog" not in endpoint["status"]  # not the figures of before, frozen
        labels = {"namespace": k8s_namespace, "endpoint": "outage"}
        assert operator_sample(tools, BACKLOG, labels) is None  # nor in the metrics
        assert (operator_sample(tools, READ_FAILURES, labels) or 0) >= 1
        events = api.get(f"/api/v1/namespaces/{k8s_namespace}/events")["items"]
        assert any(e["reason"] == "InService" and "broker" in e.get("message", "")
                   for e in events)  # fmt: skip
        wait_until(lambda: ready_workers(tools, k8s_namespace, "outage") == 0, 60,
                   "the worker that cannot consume to be not ready")  # fmt: skip
    finally:
        broker.start()
    wait_until(lambda: ready_workers(tools, k8s_namespace, "outage") == 1, 60,
               "the worker to be ready again")  # fmt: skip
    wait_until(lambda: len(list((tmp_path / "output").glob("*.out"))) == len(sent), 180,
               "every accepted request to complete")  # fmt: skip
    check_outputs(tmp_path, sent, abalone_model.booster())
    assert get_endpoint(api, k8s_namespace, "outage") is not None
    wait_until(lambda: operator_sample(tools, BACKLOG, labels) == 0, 60, "the figures again")
    api.delete(f"{IE_PATH.format(ns=k8s_namespace)}/outage")  # gone: no series left behind
    wait_until(lambda: operator_sample(tools, READ_FAILURES, labels) is None, 60,
               "the endpoint's series to go")  # fmt: skip
    assert operator_sample(tools, BACKLOG, labels) is None


def in_flight(ip: str) -> float | None:
    """A worker's requests in flight; None while its metrics do not answer yet (starting)."""
    try:
        text = httpx.get(f"http://{ip}:9090/metrics", timeout=5).text
    except httpx.TransportError:
        return None
    return parse_worker_in_flight(text) or 0.0


def test_a_scale_in_while_every_worker_is_busy_lets_the_removed_worker_finish(
    tools: Tools, k8s_namespace: str, broker: Broker, model_uri: str, abalone_model: AbaloneModel,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Two workers each hold one request (its input's read does not end until the test says
    so); the pool is cut to one. The worker the ReplicaSet removes stops consuming, finishes
    and acknowledges its request, and exits 0: both requests complete, once each. The
    webhook's URL is in a Secret (``successWebhookSecretRef``): never in the Deployment."""
    release = threading.Event()
    row = abalone_model.test_rows[0]
    with (
        WebhookReceiver() as webhook,
        holding_s3_server(lambda path: release if "/held/" in path else None) as s3,
    ):
        hook = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "infermodes-hook"},
                "stringData": {"success": webhook.url}}  # fmt: skip
        tools.cluster.api.post(f"/api/v1/namespaces/{k8s_namespace}/secrets", hook)
        held = {"name": "infermodes-hook", "key": "success"}
        fields = {"minReplicas": 2, "maxReplicas": 2, "maxConcurrentInvocationsPerInstance": 1,
                  "targetBacklogPerInstance": 1, "scaleInCooldownSeconds": 0,
                  "invocationTimeoutSeconds": 120,
                  "notification": {"topic": True, "successWebhookSecretRef": held}}  # fmt: skip
        manifest = async_manifest("busy", model_uri, tmp_path, **fields)
        holding_input(tools, k8s_namespace, manifest, s3, row)
        serve_async(tools, k8s_namespace, broker, manifest, ready=2)
        workers = tools.cluster.api.get(
            f"/apis/apps/v1/namespaces/{k8s_namespace}/deployments/ie-busy"
        )
        assert webhook.url not in json.dumps(workers)
        notifications = Notifications(broker, "busy").declare()
        sent = {**send_held(broker, manifest, tmp_path, "held-1", row),
                **send_held(broker, manifest, tmp_path, "held-2", row)}  # fmt: skip
        pods = {p["metadata"]["name"]: p["status"]["podIP"]
                for p in worker_pods(tools, k8s_namespace, "busy")}  # fmt: skip
        wait_until(lambda: all(in_flight(ip) == 1 for ip in pods.values()), 60,
                   "both workers to hold a request")  # fmt: skip

        cut = copy.deepcopy(manifest)  # the same spec (its Secret too: no new pod template)
        cut["spec"]["async"].update(minReplicas=1, maxReplicas=1)
        assert tools.apply(cut, k8s_namespace).returncode == 0
        wait_until(lambda: len(worker_pods(tools, k8s_namespace, "busy")) == 1, 60, "a scale-in")
        (kept,) = [p["metadata"]["name"] for p in worker_pods(tools, k8s_namespace, "busy")]
        (removed,) = set(pods) - {kept}
        log = lambda: tools.cluster.pod_log(k8s_namespace, removed)  # noqa: E731
        # its request is held by its input until the worker has said what it holds at stop
        # the request consumer's line (its outbox's consumer says its own, at its own time)
        wait_until(lambda: "request(s) in flight" in log(), 60, "the removed worker's SIGTERM")
        assert "stopped consuming; 1 request(s) in flight" in log(), log()[-2000:]
        release.set()
        notifications.wait_for(set(sent), "Completed", timeout=120)
        wait_until(lambda: webhook.ids() == set(sent), 60, "the webhooks")
    assert notifications.ids("Completed") == {inference_id: 1 for inference_id in sent}
    check_outputs(tmp_path, sent, abalone_model.booster())
    assert dead_letters(broker, "busy") == []
    wait_until(lambda: "exit code" in log(), 150, "the removed worker to exit")
    assert "terminated by the kubelet, exit code 0" in log(), log()[-2000:]


def test_a_model_edit_that_cannot_load_leaves_the_old_workers_serving(
    tools: Tools, k8s_namespace: str, broker: Broker, model_uri: str, abalone_model: AbaloneModel,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A worker is ready once its model is loaded (its metrics port opens then): the rollout
    of a model that cannot load never replaces the worker that serves, which still
    answers every request."""
    manifest = async_manifest("steady", model_uri, tmp_path, minReplicas=1, maxReplicas=1)
    _, url = serve_async(tools, k8s_namespace, broker, manifest, ready=1)
    (serving,) = [p["metadata"]["name"] for p in worker_pods(tools, k8s_namespace, "steady")]
    broken = async_manifest("steady", f"file:///nonexistent/{k8s_namespace}/model.tar.gz",
                            tmp_path, minReplicas=1, maxReplicas=1)  # fmt: skip
    assert tools.apply(broken, k8s_namespace).returncode == 0

    def restarts() -> int:
        pods = worker_pods(tools, k8s_namespace, "steady")
        new = [p for p in pods if p["metadata"]["name"] != serving]
        statuses = [s for p in new for s in p.get("status", {}).get("containerStatuses", [])]
        return sum(s.get("restartCount", 0) for s in statuses)

    wait_until(lambda: restarts() >= 1, 120, "the new worker to fail to load its model")
    names = [p["metadata"]["name"] for p in worker_pods(tools, k8s_namespace, "steady")]
    assert serving in names, names
    sent = invoke_all(url, "steady", abalone_model.test_rows, 10)
    wait_until(lambda: len(list((tmp_path / "output").glob("*.out"))) == len(sent), 60,
               "the old worker to answer every request")  # fmt: skip
    check_outputs(tmp_path, sent, abalone_model.booster())


def test_a_rollout_whose_workers_the_broker_refuses_leaves_the_old_workers_serving(
    tools: Tools, k8s_namespace: str, broker: Broker, model_uri: str, abalone_model: AbaloneModel,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A worker is ready only while it consumes its queue: after the broker Secret is edited
    to a wrong password, the rollout of an edit never replaces the worker that serves (its
    successor loads its model, is refused by the broker, stays not ready, then exits for a
    restart to read the Secret again: the endpoint says ``Updating``, ``BrokerLoginRefused``),
    the password is in no log, and once the Secret is mended the rollout completes by itself."""
    manifest = async_manifest("refused", model_uri, tmp_path, minReplicas=1, maxReplicas=1)
    _, url = serve_async(tools, k8s_namespace, broker, manifest, ready=1)
    (serving,) = [p["metadata"]["name"] for p in worker_pods(tools, k8s_namespace, "refused")]
    password = f"not-the-password-{k8s_namespace}"
    wrong = broker.amqp_url.replace("guest:guest@", f"guest:{password}@")
    assert wrong != broker.amqp_url
    secret = f"/api/v1/namespaces/{k8s_namespace}/secrets/{SECRET}"
    tools.cluster.api.merge_patch(secret, {"stringData": {"url": wrong}})
    edited = async_manifest("refused", model_uri, tmp_path, minReplicas=1, maxReplicas=1,
                            maxConcurrentInvocationsPerInstance=2)  # fmt: skip
    assert tools.apply(edited, k8s_namespace).returncode == 0

    def successor() -> str | None:
        names = [p["metadata"]["name"] for p in worker_pods(tools, k8s_namespace, "refused")]
        return next((name for name in names if name != serving), None)

    wait_until(lambda: "ACCESS_REFUSED" in tools.cluster.pod_log(k8s_namespace,
                                                                 successor() or ""), 120,
               "the new worker to be refused by the broker")  # fmt: skip
    sent = invoke_all(url, "refused", abalone_model.test_rows, 10)
    wait_until(lambda: len(list((tmp_path / "output").glob("*.out"))) == len(sent), 60,
               "the old worker to answer every request")  # fmt: skip
    check_outputs(tmp_path, sent, abalone_model.booster())
    names = [p["metadata"]["name"] for p in worker_pods(tools, k8s_namespace, "refused")]
    assert serving in names, names
    assert ready_workers(tools, k8s_namespace, "refused") == 1  # the old one only
    new = successor()
    assert new is not None
    status = wait_phase(
        tools.cluster.api,
        k8s_namespace,
        "refused",
        "Updating",
        120,
        also=lambda ie: ie["status"].get("reason") == "BrokerLoginRefused",
    )
    assert f"worker {new} " in status["status"]["message"], status["status"]
    assert password not in tools.cluster.pod_log(k8s_namespace, new)
    assert password not in tools.cluster.namespace_logs(k8s_namespace)
    tools.cluster.api.merge_patch(secret, {"stringData": {"url": broker.amqp_url}})
    wait_phase(
        tools.cluster.api,
        k8s_namespace,
        "refused",
        "InService",
        180,
        also=lambda ie: (
            serving
            not in [p["metadata"]["name"] for p in worker_pods(tools, k8s_namespace, "refused")]
        ),
    )
    sent |= invoke_all(url, "refused", abalone_model.test_rows, 10)
    wait_until(lambda: len(list((tmp_path / "output").glob("*.out"))) == len(sent), 60,
               "the restarted worker to answer every request")  # fmt: skip
    check_outputs(tmp_path, sent, abalone_model.booster())


def test_an_async_name_held_in_another_namespace_runs_no_workers_until_it_is_free(
    tools: Tools, k8s_namespace: str, other_k8s_namespace: str, broker: Broker, model_uri: str,
    abalone_model: AbaloneModel, tmp_path: Path,
) -> None:  # fmt: skip
    """One RabbitMQ queue per async name: the later of two same-named endpoints in two
    namespaces would consume the other's requests. It stays at zero workers, Failed with
    NameInUse, and starts its workers once the older endpoint is gone; what the older one
    left in the queue it kept is dead-lettered unread, not processed by the heir."""
    api = tools.cluster.api
    first = async_manifest("twin", model_uri, tmp_path / "a", minReplicas=1, maxReplicas=1)
    serve_async(tools, k8s_namespace, broker, first, ready=1)
    broker_secret(tools, other_k8s_namespace, broker)
    second = async_manifest("twin", model_uri, tmp_path / "b", minReplicas=1, maxReplicas=1)
    assert tools.apply(second, other_k8s_namespace).returncode == 0
    held = lambda e: e["status"].get("reason") == "NameInUse"  # noqa: E731
    wait_phase(api, other_k8s_namespace, "twin", "Failed", timeout=60, also=held)
    assert worker_pods(tools, other_k8s_namespace, "twin") == []
    assert len(worker_pods(tools, k8s_namespace, "twin")) == 1  # the holder serves on
    api.delete(f"{IE_PATH.format(ns=k8s_namespace)}/twin")
    kubelet = tools.cluster.kubelet
    assert kubelet is not None
    wait_until(lambda: not kubelet.running_pids(k8s_namespace), 120, "the older's workers to end")
    # a request the older endpoint accepted and never processed, left in the queue it kept
    row = tmp_path / "a" / "left.csv"
    row.parent.mkdir(parents=True, exist_ok=True)
    row.write_bytes(to_csv(abalone_model.test_rows[:1]))
    left = folder_request("twin", "left-behind", tmp_path / "a", f"file://{row}",
                          namespace=k8s_namespace)  # fmt: skip
    publish(broker, "twin", left.inference_id, left.to_bytes(), DEFAULT_MAX_ATTEMPTS)  # as declared
    wait_phase(api, other_k8s_namespace, "twin", "InService", timeout=120,
               also=lambda e: e["status"].get("readyReplicas", 0) == 1)  # fmt: skip
    # the heir's workers dead-letter it unread: nothing written where the other's results go
    assert dead_letter_ids(broker, "twin", 1, timeout=60) == ["left-behind"]
    assert not (tmp_path / "a" / "output").exists() and not (tmp_path / "a" / "failure").exists()
    # and serve their own
    sent = invoke_all(str(gateway_url(tools)), "twin", abalone_model.test_rows, 3)
    own = lambda: len(list((tmp_path / "b" / "output").glob("*.out")))  # noqa: E731
    wait_until(lambda: own() == len(sent), 60, "the heir's outputs")
    check_outputs(tmp_path / "b", sent, abalone_model.booster())


def test_the_gateway_stores_only_under_its_async_storage_prefixes(
    tools: Tools, k8s_namespace: str, broker: Broker, model_uri: str, abalone_model: AbaloneModel,
    by_namespace: Path,
) -> None:  # fmt: skip
    """The gateway writes inline inputs (and sweeps) with its own credentials: this module's
    chart lets it do so under a folder per namespace (``{namespace}``). An endpoint there is
    served; one that names another namespace's folder gets 403 naming the path, and nothing is
    written there."""
    own = by_namespace / k8s_namespace
    served = async_manifest("inside", model_uri, own, minReplicas=1, maxReplicas=1)
    _, url = serve_async(tools, k8s_namespace, broker, served, ready=1)
    sent = invoke_all(url, "inside", abalone_model.test_rows, 5)
    done = lambda: len(list((own / "output").glob("*.out")))  # noqa: E731
    wait_until(lambda: done() == len(sent), 60, "the outputs")
    check_outputs(own, sent, abalone_model.booster())

    elsewhere = by_namespace / f"not-{k8s_namespace}"
    assert (
        tools.apply(async_manifest("outside", model_uri, elsewhere), k8s_namespace).returncode == 0
    )
    wait_phase(tools.cluster.api, k8s_namespace, "outside", "InService")
    row = to_csv(abalone_model.test_rows[:1])

    def post() -> httpx.Response:
        path = f"{url}/endpoints/outside/async-invocations"
        return httpx.post(path, content=row, headers=CSV, timeout=30)

    wait_until(lambda: post().status_code != 404, 30, "the gateway to see the endpoint")
    refused = post()
    assert refused.status_code == 403, refused.text
    assert "async storage prefixes" in refused.text and f"{elsewhere}/output" in refused.text
    assert not elsewhere.exists()


def chart_connections(broker: Broker, pids: set[int]) -> list[dict[str, Any]]:
    """The broker's connections (its sampled listing) of the chart's gateway and operator."""
    response = httpx.get(f"{broker.management_url}/api/connections", timeout=10)
    response.raise_for_status()
    names = {f"infermodes pid {pid}" for pid in pids}
    return [c for c in response.json()
            if (c.get("client_properties") or {}).get("connection_name") in names]  # fmt: skip


def test_a_rotated_broker_login_reaches_the_gateway_and_the_operator_without_a_restart(
    tools: Tools, k8s_namespace: str, broker: Broker, model_uri: str, abalone_model: AbaloneModel,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The chart mounts its broker Secret: once the Secret names another login, the gateway's
    and the operator's next connections use it (each reads the file again), with no restart,
    and what was accepted meanwhile completes. Their connections are closed here as a broker
    restart would close them; the kubelet rewrites the mounted file meanwhile."""
    manifest = async_manifest("rotated", model_uri, tmp_path, minReplicas=1, maxReplicas=1)
    _, url = serve_async(tools, k8s_namespace, broker, manifest, ready=1)
    before = tools.cluster.kubelet.running_pids(OPERATOR_NAMESPACE)
    pids = set(before.values())
    user, password = "rotated-login", f"rotated-{k8s_namespace}"
    admin = f"http://127.0.0.1:{broker.management_port}/api"
    for path, body in ((f"users/{user}", {"password": password, "tags": "monitoring"}),
                       (f"permissions/%2F/{user}", {"configure": ".*", "write": ".*",
                                                    "read": ".*"})):  # fmt: skip
        httpx.put(f"{admin}/{path}", json=body, auth=("guest", "guest"), timeout=10)
    secret = f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/secrets/{SECRET}"
    rotated = {
        "url": broker.amqp_url.replace("guest:guest@", f"{user}:{password}@"),
        "managementUrl": broker.management_url.replace("guest:guest@", f"{user}:{password}@"),
    }
    original = {"url": broker.amqp_url, "managementUrl": broker.management_url}
    tools.cluster.api.merge_patch(secret, {"stringData": rotated})
    sent: dict[str, np.ndarray] = {}

    def moved() -> bool:
        """Close their connections of the old login; True once all they have are the new's."""
        connections = chart_connections(broker, pids)
        for old in (c for c in connections if c["user"] != user):
            name = quote(old["name"], safe="")
            httpx.delete(f"{admin}/connections/{name}", auth=("guest", "guest"), timeout=10)
        sent.update(invoke_all(url, "rotated", abalone_model.test_rows, 1))  # 202 throughout
        users = {c["user"] for c in connections}
        by = {int(c["client_properties"]["connection_name"].split()[-1]) for c in connections}
        return users == {user} and by == pids

    try:
        wait_until(moved, 120, "the gateway and the operator to connect with the new login",
                   interval=1.0)  # fmt: skip
    finally:
        tools.cluster.api.merge_patch(secret, {"stringData": original})
    assert tools.cluster.kubelet.running_pids(OPERATOR_NAMESPACE) == before  # no restart
    wait_until(lambda: len(list((tmp_path / "output").glob("*.out"))) == len(sent), 60,
               "every accepted request's output")  # fmt: skip
    check_outputs(tmp_path, sent, abalone_model.booster())
    endpoint = get_endpoint(tools.cluster.api, k8s_namespace, "rotated")
    assert endpoint is not None and endpoint["status"]["reason"] != "BrokerUnreadable"


def test_an_async_endpoint_just_created_is_accepted_before_the_gateways_watch_adds_it(
    tools: Tools, k8s_namespace: str, broker: Broker, model_uri: str, abalone_model: AbaloneModel,
    tmp_path: Path,
) -> None:  # fmt: skip
    """A waiter saw it InService; the gateway, whose watch holds back every event of it
    (``test_gateway_lag.py``), reads the name before its 404 and accepts the request."""
    with lagging_gateway(tools, k8s_namespace, lambda _: True, broker.amqp_url) as lagging:
        url, _, running = lagging
        manifest = async_manifest("fresh", model_uri, tmp_path, minReplicas=1, maxReplicas=1)
        serve_async(tools, k8s_namespace, broker, manifest, ready=1)
        assert running.call(lambda: not running.runner.table.namespaces_of("fresh"))
        sent = invoke_all(url, "fresh", abalone_model.test_rows, 1)
        wait_until(lambda: any((tmp_path / "output").glob("*.out")), 120, "its output")
        check_outputs(tmp_path, sent, abalone_model.booster())
