"""Control-plane latencies on the test cluster: `kubectl apply` -> InService for a realtime
endpoint, a serverless cold start (first request at zero replicas -> response), and an async
pool's reaction from zero (first request -> a worker decided, started, the first output), and a
running async pool's reaction to a burst that outgrows it (-> more workers decided, one more
started), each with where the time goes; and one request's latency, async at a warm pool vs
sync. The operator resyncs at the chart's default (10 s; ``--resync-seconds``).

Runs the project's own test control plane (tests/cluster) and the chart, like the e2e tests, and
polls the API every 10 ms to timestamp each step (bounded: every wait has a deadline). Prints a
table and writes JSON with --json.

    .venv/bin/python bench/gateway/control_plane.py [--runs 5] [--json out.json]
        [--resync-seconds 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from infermodes.metrics import parse_worker_in_flight  # noqa: E402
from tests.cluster.api import ApiError  # noqa: E402
from tests.cluster.controlplane import Binaries  # noqa: E402
from tests.cluster.harness import Harness  # noqa: E402
from tests.e2e.operator_support import (  # noqa: E402
    IE_PATH,
    OPERATOR_NAMESPACE,
    Tools,
    gateway_url,
    get_endpoint,
    install_operator,
    model_copy,
    operator_pods,
)
from tests.e2e.test_async import holding_input, send_held  # noqa: E402
from tests.support.abalone import train_abalone  # noqa: E402
from tests.support.processes import wait_until  # noqa: E402
from tests.support.rabbitmq import rabbitmq_broker  # noqa: E402
from tests.support.s3 import holding_s3_server  # noqa: E402

POLL_SECONDS = 0.01
SECRET = "infermodes-rabbitmq"
DEADLINE_SECONDS = 120.0


def first_time(condition: Callable[[], bool], started: float, what: str) -> float:
    """Seconds from ``started`` until ``condition`` first holds (polled every 10 ms)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic() - started
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"{what} did not happen within {DEADLINE_SECONDS} s")


class Steps:
    """Timestamps (seconds after ``started``) of the steps an endpoint goes through."""

    def __init__(self, tools: Tools, namespace: str, name: str) -> None:
        self.api = tools.cluster.api
        self.namespace = namespace
        self.name = name

    def pods(self) -> list[dict[str, Any]]:
        selector = f"infermodes.dev/endpoint={self.name}"
        path = f"/api/v1/namespaces/{self.namespace}/pods"
        pods: list[dict[str, Any]] = self.api.get(path, labelSelector=selector)["items"]
        return pods

    def pod_with(self, test: Callable[[dict[str, Any]], bool]) -> bool:
        return any(test(pod) for pod in self.pods())

    def phase(self) -> str | None:
        endpoint = get_endpoint(self.api, self.namespace, self.name) or {}
        return (endpoint.get("status") or {}).get("phase")

    def ready_replicas(self) -> int:
        endpoint = get_endpoint(self.api, self.namespace, self.name) or {}
        return int((endpoint.get("status") or {}).get("readyReplicas") or 0)


def ready(pod: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
    return conditions.get("Ready") == "True"


def realtime_apply(tools: Tools, namespace: str, model_uri: str, index: int) -> dict[str, float]:
    name = f"rt-{index}"
    manifest = yaml.safe_load((REPO / "examples/abalone/realtime.yaml").read_text())
    manifest["metadata"]["name"] = name
    manifest["spec"]["model"]["uri"] = model_uri
    steps = Steps(tools, namespace, name)
    started = time.monotonic()
    applied = tools.apply(manifest, namespace)
    if applied.returncode != 0:
        raise RuntimeError(applied.stderr)
    marks = {"kubectl apply returned": time.monotonic() - started}
    marks["pod created"] = first_time(lambda: bool(steps.pods()), started, "a pod")
    marks["pod has an IP (process started)"] = first_time(
        lambda: steps.pod_with(lambda p: bool(p["status"].get("podIP"))), started, "pod IP"
    )
    marks["pod Ready"] = first_time(lambda: steps.pod_with(ready), started, "pod ready")
    marks["endpoint InService"] = first_time(
        lambda: steps.phase() == "InService", started, "InService"
    )
    tools.kubectl("delete", "ie", name, "-n", namespace, "--wait=true")
    wait_until(lambda: not steps.pods(), DEADLINE_SECONDS, "the pods to go")  # free the node
    return marks


def usable(api: Any, namespace: str) -> bool:
    """The namespace's default ServiceAccount exists and the CRD's storage answers."""
    try:
        api.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
        api.get(IE_PATH.format(ns=namespace))
    except ApiError:
        return False
    return True


def serverless_cold_start(
    tools: Tools, namespace: str, name: str, gateway: str, row: bytes
) -> dict[str, float]:
    """One request at zero replicas through the gateway, with the steps seen meanwhile."""
    steps = Steps(tools, namespace, name)
    deployment = f"/apis/apps/v1/namespaces/{namespace}/deployments/ie-{name}"
    marks: dict[str, float] = {}
    done = threading.Event()
    started = time.monotonic()

    def watch() -> None:
        probes: dict[str, Callable[[], bool]] = {
            "activated (Deployment replicas 1)": lambda: int(
                tools.cluster.api.get(deployment)["spec"]["replicas"]
            ) > 0,
            "pod created": lambda: bool(steps.pods()),
            "pod has an IP (process started)": lambda: steps.pod_with(
                lambda p: bool(p["status"].get("podIP"))
            ),
        }  # fmt: skip
        deadline = started + DEADLINE_SECONDS
        while probes and not done.is_set() and time.monotonic() < deadline:
            for step, probe in list(probes.items()):
                if probe():
                    marks[step] = time.monotonic() - started
                    del probes[step]
            time.sleep(POLL_SECONDS)

    watcher = threading.Thread(target=watch)
    watcher.start()
    url = f"{gateway}/endpoints/{name}/invocations"
    csv = {"content-type": "text/csv"}
    response = httpx.post(url, content=row, headers=csv, timeout=DEADLINE_SECONDS)
    marks["response (cold start)"] = time.monotonic() - started
    done.set()
    watcher.join()
    if response.status_code != 200:
        raise RuntimeError(f"cold start answered {response.status_code}: {response.text}")
    warm = time.monotonic()
    httpx.post(url, content=row, headers=csv, timeout=DEADLINE_SECONDS)
    marks["warm request after it"] = time.monotonic() - warm
    return dict(sorted(marks.items(), key=lambda item: item[1]))


def async_from_zero(
    tools: Tools, namespace: str, name: str, gateway: str, row: bytes, out: Path
) -> dict[str, float]:
    """One request to an async pool at zero workers: when the operator decided a worker (the
    Deployment's replicas), when the worker's process started, and when the output appeared."""
    steps = Steps(tools, namespace, name)
    deployment = f"/apis/apps/v1/namespaces/{namespace}/deployments/ie-{name}"
    started = time.monotonic()
    response = httpx.post(f"{gateway}/endpoints/{name}/async-invocations", content=row,
                          headers={"content-type": "text/csv"}, timeout=60)  # fmt: skip
    if response.status_code != 202:
        raise RuntimeError(f"async invocation answered {response.status_code}: {response.text}")
    accepted = time.monotonic() - started
    output = out / f"{response.json()['InferenceId']}.out"
    marks = {"accepted (202)": accepted}
    marks["reaction (Deployment replicas 1)"] = first_time(
        lambda: int(tools.cluster.api.get(deployment)["spec"]["replicas"]) > 0, started, "scale"
    )
    marks["worker process started"] = first_time(
        lambda: steps.pod_with(lambda p: bool(p["status"].get("podIP"))), started, "worker"
    )
    marks["first output"] = first_time(output.exists, started, "the output")
    return marks


def accept(gateway: str, name: str, row: bytes) -> str:
    """One async invocation through the gateway: its inference id."""
    response = httpx.post(f"{gateway}/endpoints/{name}/async-invocations", content=row,
                          headers={"content-type": "text/csv"}, timeout=60)  # fmt: skip
    if response.status_code != 202:
        raise RuntimeError(f"async invocation answered {response.status_code}: {response.text}")
    return str(response.json()["InferenceId"])


def worker_in_flight(pod: dict[str, Any]) -> float:
    """A worker's requests in flight, from its metrics port (0 while it does not answer)."""
    try:
        text = httpx.get(f"http://{pod['status']['podIP']}:9090/metrics", timeout=5).text
    except (httpx.HTTPError, KeyError):
        return 0.0
    return parse_worker_in_flight(text) or 0.0


def async_scale_out(
    tools: Tools, namespace: str, name: str, gateway: str, row: bytes, out: Path,
    hold: threading.Event, held: Callable[[], str],
) -> dict[str, float]:  # fmt: skip
    """A pool of one worker taking one request at a time (``targetBacklogPerInstance`` 1) holds
    a request (``held`` queues it: its input's read ends only once ``hold`` is set; a webhook
    no longer holds its request); four more arrive. From
    the second one's 202, when the backlog first asks for two workers: when the operator
    decided more (the Deployment's replicas), and when a second worker's process started. Then
    the hold ends and every output is waited for."""
    steps = Steps(tools, namespace, name)
    deployment = f"/apis/apps/v1/namespaces/{namespace}/deployments/ie-{name}"
    hold.clear()
    ids = [held()]
    (pod,) = steps.pods()
    first_time(lambda: worker_in_flight(pod) == 1, time.monotonic(), "the held request")
    ids.append(accept(gateway, name, row))
    started = time.monotonic()
    ids += [accept(gateway, name, row) for _ in range(3)]
    marks = {"reaction (Deployment replicas > 1)": first_time(
        lambda: int(tools.cluster.api.get(deployment)["spec"]["replicas"]) > 1, started, "scale"
    )}  # fmt: skip
    marks["second worker process started"] = first_time(
        lambda: sum(1 for p in steps.pods() if p["status"].get("podIP")) > 1, started, "worker"
    )
    hold.set()
    for inference_id in ids:
        first_time((out / f"{inference_id}.out").exists, started, "the outputs")
    return marks


def async_warm(gateway: str, name: str, row: bytes, out: Path, runs: int) -> list[float]:
    """Seconds from POST to the output's appearance, one request at a time, pool warm."""
    seconds = []
    for _ in range(runs):
        started = time.monotonic()
        response = httpx.post(f"{gateway}/endpoints/{name}/async-invocations", content=row,
                              headers={"content-type": "text/csv"}, timeout=60)  # fmt: skip
        output = out / f"{response.json()['InferenceId']}.out"
        seconds.append(first_time(output.exists, started, "the output"))
    return seconds


def report(title: str, runs: list[dict[str, float]]) -> dict[str, Any]:
    print(f"\n{title} (median of {len(runs)}; seconds after the start)")
    summary = {}
    for step in runs[0]:
        values = [run[step] for run in runs]
        summary[step] = {"median": statistics.median(values), "all": values}
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {step:<40} {statistics.median(values):6.2f}   ({shown})")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--resync-seconds", type=int, default=10,
                        help="the operator's resync (the chart's default: 10)")  # fmt: skip
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-control-plane-"))
    train_abalone(work / "model")
    model_uri = model_copy(work / "model" / "model.tar.gz", work / "models")
    harness = Harness(work / "k8s", Binaries.from_cache())
    cluster = harness.start()
    results: dict[str, Any] = {}
    stack = contextlib.ExitStack()
    broker = stack.enter_context(rabbitmq_broker())
    try:
        tools = Tools(cluster)
        operators = {"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": OPERATOR_NAMESPACE}}  # fmt: skip
        cluster.api.post("/api/v1/namespaces", operators)
        urls = {"url": broker.amqp_url, "managementUrl": broker.management_url}
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET},
                  "stringData": urls}  # fmt: skip
        cluster.api.post(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/secrets", secret)
        install_operator(tools, resync_seconds=args.resync_seconds,
                         **{"rabbitmq.secretRef.name": SECRET})  # fmt: skip
        running = lambda: any(p["status"].get("phase") == "Running"  # noqa: E731
                              for p in operator_pods(cluster.api))  # fmt: skip
        wait_until(running, 120, "the operator")
        namespace = "bench"
        cluster.api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": namespace}})  # fmt: skip
        wait_until(lambda: usable(cluster.api, namespace), 60, "the namespace and the CRD")
        realtime_apply(tools, namespace, model_uri, 0)  # warm-up: imports, page cache
        runs = [realtime_apply(tools, namespace, model_uri, i) for i in range(1, args.runs + 1)]
        results["realtime_apply_to_in_service"] = report(
            "kubectl apply (realtime) -> InService", runs
        )
        wait_until(lambda: gateway_url(tools) is not None, 120, "the gateway")
        gateway = gateway_url(tools)
        assert gateway is not None
        manifest = yaml.safe_load((REPO / "examples/abalone/serverless.yaml").read_text())
        manifest["spec"]["model"]["uri"] = model_uri
        manifest["spec"]["serverless"]["idleTimeoutSeconds"] = 10
        name = manifest["metadata"]["name"]
        applied = tools.apply(manifest, namespace)
        if applied.returncode != 0:
            raise RuntimeError(applied.stderr)
        row = b"1,0,0,0.455,0.365,0.095,0.514,0.2245,0.101,0.15"
        steps = Steps(tools, namespace, name)
        cold = []
        for _ in range(args.runs + 1):  # the first is a warm-up (page cache, imports)
            wait_until(lambda: steps.phase() == "InService" and not steps.pods(),
                       DEADLINE_SECONDS, "zero replicas")  # fmt: skip
            cold.append(serverless_cold_start(tools, namespace, name, gateway, row))
        results["serverless_cold_start"] = report(
            "serverless: first request at zero replicas -> response", cold[1:]
        )
        warm_sync = [run["warm request after it"] for run in cold[1:]]
        results["serverless_warm_sync_seconds"] = warm_sync

        cluster.api.post(f"/api/v1/namespaces/{namespace}/secrets", secret)
        manifest = yaml.safe_load((REPO / "examples/abalone/async.yaml").read_text())
        manifest["spec"]["model"]["uri"] = model_uri
        manifest["spec"]["async"].update(outputPath=f"file://{work}/async/output",
                                         scaleInCooldownSeconds=3,
                                         resources={"cpu": "250m", "memory": "256Mi"})  # fmt: skip
        name = manifest["metadata"]["name"]
        if (applied := tools.apply(manifest, namespace)).returncode != 0:
            raise RuntimeError(applied.stderr)
        steps = Steps(tools, namespace, name)
        reactions = []
        for _ in range(args.runs + 1):  # the first is a warm-up
            wait_until(lambda: steps.phase() == "InService" and not steps.pods(),
                       DEADLINE_SECONDS, "zero workers")  # fmt: skip
            reactions.append(async_from_zero(tools, namespace, name, gateway, row,
                                             work / "async/output"))  # fmt: skip
        results["async_from_zero"] = report(
            "async: first request at zero workers (through the gateway)", reactions[1:]
        )
        warm = async_warm(gateway, name, row, work / "async/output", 20)
        results["async_warm_seconds"] = warm
        print(
            f"\nasync, warm pool, POST -> output (median of 20): {statistics.median(warm):.3f} s; "
            f"sync through the gateway, warm: {statistics.median(warm_sync):.3f} s"
        )

        manifest["metadata"]["name"] = name = "abalone-burst"
        hold = threading.Event()
        # the held request's input is read from an S3 server that waits for the hold (each of
        # boto3's tries): it keeps its worker busy while the burst arrives
        with holding_s3_server(lambda path: hold if "/held/" in path else None) as s3:
            manifest["spec"]["async"].update(
                minReplicas=1, maxReplicas=3, maxConcurrentInvocationsPerInstance=1,
                targetBacklogPerInstance=1, outputPath=f"file://{work}/burst/output",
                notification={"topic": True},
            )  # fmt: skip
            values = np.array(row.decode().split(","), dtype=np.float32)
            holding_input(tools, namespace, manifest, s3, values)
            if (applied := tools.apply(manifest, namespace)).returncode != 0:
                raise RuntimeError(applied.stderr)
            steps = Steps(tools, namespace, name)

            def held() -> str:
                inference_id = f"held-{uuid.uuid4()}"
                send_held(broker, manifest, work / "burst", inference_id, values)
                return inference_id

            bursts = []
            for _ in range(args.runs + 1):  # the first is a warm-up
                wait_until(lambda: steps.phase() == "InService" and steps.ready_replicas() == 1
                           and len(steps.pods()) == 1, DEADLINE_SECONDS, "one worker")  # fmt: skip
                bursts.append(async_scale_out(tools, namespace, name, gateway, row,
                                              work / "burst/output", hold, held))  # fmt: skip
            hold.set()
        results["async_scale_out"] = report(
            "async: a burst beyond a pool of one worker (through the gateway)", bursts[1:]
        )
        results["resync_seconds"] = args.resync_seconds
        print(f"\nthe operator's resync timer was {args.resync_seconds} s")
    finally:
        cluster.client.close()
        harness.stop()
        stack.close()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
