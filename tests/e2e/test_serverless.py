"""Serverless end to end on the test control plane: helm install (operator and gateway),
kubectl apply of the example, scale-down with requests in flight, bad inputs through the
gateway. Cold start from zero, back to zero and throttling are scenarios run on both actuators
(``tests/scenarios/test_modes.py``)."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import yaml

from tests.e2e.operator_support import (
    Tools,
    gateway_url,
    get_endpoint,
    older_crd,
    wait_phase,
)
from tests.support.processes import REPO, wait_until

CSV = {"content-type": "text/csv"}


def serverless_manifest(name: str, model_uri: str, **serverless: Any) -> dict[str, Any]:
    manifest = yaml.safe_load((REPO / "examples/abalone/serverless.yaml").read_text())
    manifest["metadata"]["name"] = name
    manifest["spec"]["model"]["uri"] = model_uri
    manifest["spec"]["serverless"].update(serverless)
    return manifest


def replicas_of(tools: Tools, namespace: str, name: str) -> int:
    deployment = tools.cluster.api.get(
        f"/apis/apps/v1/namespaces/{namespace}/deployments/ie-{name}"
    )
    return int(deployment["spec"]["replicas"])


def test_scale_down_with_requests_in_flight_loses_none(
    tools: Tools, k8s_namespace: str, model_uri: str
) -> None:
    """Four clients bring four replicas (one invocation each); three stop, and the operator
    scales in while the last client keeps calling: every request gets its prediction."""
    manifest = serverless_manifest("scaledown", model_uri, maxConcurrency=4,
                                   concurrencyPerReplica=1, idleTimeoutSeconds=600)  # fmt: skip
    assert tools.apply(manifest, k8s_namespace).returncode == 0
    wait_phase(tools.cluster.api, k8s_namespace, "scaledown", "InService")
    url = gateway_url(tools)
    assert url is not None
    body = b"\n".join([b"1,0,0,0.455,0.365,0.095,0.514,0.2245,0.101,0.15"] * 500)
    stop_all = threading.Event()
    stop_three = threading.Event()
    codes: list[int] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        deadline = time.monotonic() + 240
        while not stop_all.is_set() and time.monotonic() < deadline:
            if index and stop_three.is_set():
                return
            try:
                response = httpx.post(f"{url}/endpoints/scaledown/invocations", content=body,
                                      headers=CSV, timeout=90)  # fmt: skip
                code = response.status_code
            except httpx.HTTPError:
                code = -1
            with lock:
                codes.append(code)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: replicas_of(tools, k8s_namespace, "scaledown") >= 3, 120,
                   "scale-out to follow four clients")  # fmt: skip
        stop_three.set()
        wait_until(lambda: replicas_of(tools, k8s_namespace, "scaledown") == 1, 150,
                   "scale-in while one client keeps calling")  # fmt: skip
        scaled_in_at = len(codes)
        wait_until(lambda: len(codes) > scaled_in_at + 20, 60, "more requests after scale-in")
    finally:
        stop_all.set()
        for thread in threads:
            thread.join(timeout=120)
    assert codes and set(codes) == {200}, {c: codes.count(c) for c in set(codes)}


def test_bad_inputs_through_the_gateway_get_documented_4xx(
    tools: Tools, k8s_namespace: str, model_uri: str
) -> None:
    manifest = serverless_manifest("badinput", model_uri)
    assert tools.apply(manifest, k8s_namespace).returncode == 0
    wait_phase(tools.cluster.api, k8s_namespace, "badinput", "InService")
    url = gateway_url(tools)
    assert url is not None
    invoke = f"{url}/endpoints/badinput/invocations"
    cases = {
        "unknown endpoint": httpx.post(f"{url}/endpoints/nope/invocations", content=b"1",
                                       headers=CSV, timeout=90),
        "4 MB + 1 byte": httpx.post(invoke, content=b"1" * (4 * 1024 * 1024 + 1), headers=CSV,
                                    timeout=90),
        "malformed CSV": httpx.post(invoke, content=b"1,0,0,x,0.3,0.09,0.5,0.2,0.1,0.1",
                                    headers=CSV, timeout=90),
        "unsupported type": httpx.post(invoke, content=b"1", headers={"content-type": "image/png"},
                                       timeout=90),
    }  # fmt: skip
    for case, response in cases.items():
        assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
        assert set(response.json()) >= {"error", "message"}, case
    assert cases["unknown endpoint"].status_code == 404
    assert "nope" in cases["unknown endpoint"].json()["message"]
    assert cases["4 MB + 1 byte"].status_code == 413
    assert "column 4" in cases["malformed CSV"].json()["message"]
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200  # the gateway stays up
    assert get_endpoint(tools.cluster.api, k8s_namespace, "badinput") is not None


def test_a_cold_start_a_quota_refuses_is_answered_at_once_and_serves_once_it_is_gone(
    tools: Tools, k8s_namespace: str, model_uri: str
) -> None:
    """A quota of no pods, set once the endpoint is InService at zero (its model loaded); a
    request holds for a cold start whose pod the API refuses. The status says FailedCreate,
    and the request gets a 503 naming it, well before the gateway's 60 s hold ends. The quota
    gone, a request serves."""
    api = tools.cluster.api
    quotas = f"/api/v1/namespaces/{k8s_namespace}/resourcequotas"
    no_pods = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
               "spec": {"hard": {"pods": "0"}}}  # fmt: skip
    assert tools.apply(serverless_manifest("quota", model_uri), k8s_namespace).returncode == 0
    wait_phase(api, k8s_namespace, "quota", "InService")
    wait_until(lambda: replicas_of(tools, k8s_namespace, "quota") == 0, 90, "zero replicas")
    api.post(quotas, no_pods)
    url = gateway_url(tools)
    assert url is not None
    row = b"1,0,0,0.455,0.365,0.095,0.514,0.2245,0.101,0.15"
    invoke = f"{url}/endpoints/quota/invocations"
    refused = httpx.post(invoke, content=row, headers=CSV, timeout=90)
    assert refused.status_code == 503, refused.text  # not the hold's end: "within 60 s"
    assert "pods cannot be created (FailedCreate)" in refused.json()["message"]
    status = (get_endpoint(api, k8s_namespace, "quota") or {})["status"]
    assert status["reason"] == "FailedCreate" and "no-pods" in status["message"], status
    api.delete(f"{quotas}/no-pods")
    codes: list[int] = []

    def served() -> bool:  # a client that retries a 503, as the message says to
        codes.append(httpx.post(invoke, content=row, headers=CSV, timeout=90).status_code)
        return codes[-1] == 200

    wait_until(served, 180, "a request to be served once the quota is gone", interval=1)
    assert set(codes) <= {200, 503}, codes


def test_a_request_held_for_pods_no_node_takes_is_told_why_when_the_hold_ends(
    tools: Tools, k8s_namespace: str, model_uri: str
) -> None:
    """The node cordoned (drained for maintenance) once the endpoint is at zero: the cold
    start's pod waits for a node (the uncordon, or one a cluster autoscaler adds), the endpoint
    says Unschedulable, and the request is held to the gateway's 60 s. Its 503 said only that
    no replica became ready; it names the reason."""
    api = tools.cluster.api
    assert tools.apply(serverless_manifest("no-room", model_uri), k8s_namespace).returncode == 0
    wait_phase(api, k8s_namespace, "no-room", "InService")
    wait_until(lambda: replicas_of(tools, k8s_namespace, "no-room") == 0, 90, "zero replicas")
    (node,) = [n["metadata"]["name"] for n in api.get("/api/v1/nodes")["items"]]
    url = gateway_url(tools)
    assert url is not None
    assert tools.kubectl("cordon", node).returncode == 0
    try:
        held = httpx.post(f"{url}/endpoints/no-room/invocations", headers=CSV, timeout=120,
                          content=b"1,0,0,0.455,0.365,0.095,0.514,0.2245,0.101,0.15")  # fmt: skip
    finally:
        assert tools.kubectl("uncordon", node).returncode == 0
    assert held.status_code == 503, held.text
    assert held.json()["message"] == (
        "no replica of endpoint no-room became ready within 60 s (its status: Unschedulable)"
    )
    assert tools.kubectl("delete", "ie", "no-room", "-n", k8s_namespace).returncode == 0


def test_an_update_an_older_crd_took_still_wakes_the_endpoint_from_zero(
    tools: Tools, k8s_namespace: str, model_uri: str
) -> None:
    """A serverless endpoint at zero whose update an older CRD took and the operator cannot
    parse: it stayed Updating (InvalidSpec) on the spec it had, but nothing actuated that spec,
    so a request held at the gateway woke no replica and failed after the invocation timeout.
    The spec the workload was applied from (status.appliedSpec) now wakes it, as ever."""
    api = tools.cluster.api
    manifest = serverless_manifest("stale-zero", model_uri, idleTimeoutSeconds=600)
    assert tools.apply(manifest, k8s_namespace).returncode == 0
    wait_phase(api, k8s_namespace, "stale-zero", "InService")
    # never requested: its loading replica goes at once, not after idleTimeoutSeconds
    wait_until(lambda: replicas_of(tools, k8s_namespace, "stale-zero") == 0, 90, "zero replicas")
    with older_crd(tools, manifest, k8s_namespace):
        wait_phase(api, k8s_namespace, "stale-zero", "Updating",
                   also=lambda e: e["status"].get("reason") == "InvalidSpec")  # fmt: skip
        url = gateway_url(tools)
        assert url is not None
        row = b"1,0,0,0.455,0.365,0.095,0.514,0.2245,0.101,0.15"
        served = httpx.post(f"{url}/endpoints/stale-zero/invocations", content=row,
                            headers=CSV, timeout=90)  # fmt: skip
        assert served.status_code == 200, served.text
        assert replicas_of(tools, k8s_namespace, "stale-zero") == 1
        kept = get_endpoint(api, k8s_namespace, "stale-zero")
        assert kept is not None and kept["status"]["reason"] == "InvalidSpec"
