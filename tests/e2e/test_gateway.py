"""The gateway end to end on a real control plane: installed by the chart under its own
least-privilege account, it learns endpoints and pods by watching and routes to new pods."""

from __future__ import annotations

import subprocess
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from infermodes.metrics import parse_server_load
from tests.cluster.controlplane import Binaries
from tests.conftest import AbaloneModel
from tests.e2e.operator_support import (
    CHART,
    OPERATOR_NAMESPACE,
    RELEASE,
    Tools,
    endpoint_manifest,
    gateway_url,
    ready_pod_ips,
    to_csv,
    wait_phase,
)
from tests.support.processes import wait_until

CSV = {"content-type": "text/csv"}
GATEWAY_ACCOUNT = f"{RELEASE}-gateway"


def invocations_of(ip: str) -> float:
    return parse_server_load(
        httpx.get(f"http://{ip}:8080/metrics", timeout=10).text
    ).invocations_total


def test_realtime_predictions_through_the_gateway_and_a_new_pod_joins_the_rotation(
    tools: Tools, k8s_namespace: str, model_uri: str, abalone_model: AbaloneModel
) -> None:
    api = tools.cluster.api
    assert tools.apply(endpoint_manifest("abalone", model_uri), k8s_namespace).returncode == 0
    wait_phase(api, k8s_namespace, "abalone", "InService")
    url = gateway_url(tools)
    assert url is not None
    rows = abalone_model.test_rows
    expected = abalone_model.booster().inplace_predict(rows)

    def through_gateway() -> httpx.Response:
        return httpx.post(f"{url}/endpoints/abalone/invocations", content=to_csv(rows),
                          headers=CSV, timeout=90)  # fmt: skip

    wait_until(lambda: through_gateway().status_code == 200, 60, "the gateway to route abalone")
    response = through_gateway()
    np.testing.assert_array_equal(np.array(response.text.split(), dtype=np.float32), expected)
    (first,) = ready_pod_ips(api, k8s_namespace, "abalone")

    changed = endpoint_manifest("abalone", model_uri, minReplicas=2, maxReplicas=2)
    assert tools.apply(changed, k8s_namespace).returncode == 0
    wait_until(lambda: len(ready_pod_ips(api, k8s_namespace, "abalone")) == 2, 120,
               "a second pod")  # fmt: skip
    (second,) = set(ready_pod_ips(api, k8s_namespace, "abalone")) - {first}

    def new_pod_served() -> bool:
        for _ in range(10):
            answer = through_gateway()
            assert answer.status_code == 200, answer.text
            np.testing.assert_array_equal(np.array(answer.text.split(), dtype=np.float32),
                                          expected)  # fmt: skip
        return invocations_of(second) > 0

    wait_until(new_pod_served, 60, "the gateway to send traffic to the new pod", interval=0.2)


def test_an_unknown_endpoint_is_a_404_naming_it(tools: Tools) -> None:
    url = gateway_url(tools)
    assert url is not None
    missing = httpx.post(f"{url}/endpoints/nowhere/invocations", content=b"1", headers=CSV)
    assert missing.status_code == 404
    assert missing.headers["x-amzn-errortype"] == "ValidationError"
    assert "nowhere" in missing.json()["message"]
    assert httpx.get(f"{url}/readyz").status_code == 200


def test_without_access_keys_the_platform_api_is_off_and_says_how_to_turn_it_on(
    tools: Tools,
) -> None:
    """It creates workloads in the platform namespace and names Secrets for them: an open
    gateway (the chart's default, no gateway.auth.secretRef) served it to anyone."""
    url = gateway_url(tools)
    assert url is not None
    headers = {"X-Amz-Target": "SageMaker.ListModels",
               "Content-Type": "application/x-amz-json-1.1"}  # fmt: skip
    refused = httpx.post(f"{url}/", content=b"{}", headers=headers)
    assert refused.status_code == 403, refused.text
    assert refused.json()["__type"] == "MissingAuthenticationTokenException"
    assert "gateway.platform.allowAnonymous" in refused.json()["message"]


def test_the_gateway_runs_under_its_own_least_privilege_account(
    tools: Tools, k8s_namespace: str
) -> None:
    api = tools.cluster.api
    (pod,) = [p for p in api.get(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods",
                                 labelSelector="app.kubernetes.io/component=gateway")["items"]
              if not p["metadata"].get("deletionTimestamp")]  # fmt: skip
    assert pod["spec"]["serviceAccountName"] == GATEWAY_ACCOUNT
    token = api.post(
        f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/serviceaccounts/{GATEWAY_ACCOUNT}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 600}},
    )["status"]["token"]  # fmt: skip
    endpoints = f"/apis/infermodes.dev/v1alpha1/namespaces/{k8s_namespace}/inferenceendpoints"
    as_gateway = httpx.Client(base_url=tools.cluster.server, verify=False,
                              headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    with as_gateway:
        assert as_gateway.get(endpoints).status_code == 200
        assert as_gateway.get(f"/api/v1/namespaces/{k8s_namespace}/pods").status_code == 200
        for method, path in [("GET", f"/api/v1/namespaces/{k8s_namespace}/secrets"),
                             ("DELETE", f"{endpoints}/x"),
                             ("PATCH", f"{endpoints}/x/status"),
                             ("GET", f"/apis/apps/v1/namespaces/{k8s_namespace}/deployments"),
                             ("GET", "/api/v1/nodes")]:  # fmt: skip
            refused = as_gateway.request(method, path, headers={
                "content-type": "application/merge-patch+json"}, content=b"{}")  # fmt: skip
            assert refused.status_code == 403, (method, path, refused.text)


def render(*values: str) -> list[dict[str, Any]]:
    args = [str(Binaries.from_cache().helm), "template", RELEASE, str(CHART), "--namespace", "ops"]
    for value in values:
        args += ["--set", value]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_the_chart_grants_the_gateway_reads_and_demand_patches_in_its_namespaces_only() -> None:
    def gateway_grants(documents: list[dict[str, Any]]) -> dict[str, set[tuple[str, str, str]]]:
        found: dict[str, set[tuple[str, str, str]]] = {}
        for doc in documents:
            if doc["kind"] in ("Role", "ClusterRole") and doc["metadata"]["name"].endswith(
                "gateway"
            ):
                where = doc["metadata"].get("namespace", "*")
                found[where] = {(g, r, v) for rule in doc["rules"] for g in rule["apiGroups"]
                                for r in rule["resources"] for v in rule["verbs"]}  # fmt: skip
        return found

    # what gateway/kube.py calls: list + watch of both, the demand annotation's merge patch
    expected = {("infermodes.dev", "inferenceendpoints", v) for v in ("list", "watch", "patch")}
    expected |= {("", "pods", v) for v in ("list", "watch")}
    assert gateway_grants(render()) == {"ops": expected}
    # the platform API's namespace (the release's unless set) is served too: it invokes its own
    both = {"a": expected, "b": expected}
    assert gateway_grants(render("gateway.namespaces={a,b}")) == {**both, "ops": expected}
    in_a = render("gateway.namespaces={a,b}", "gateway.platform.namespace=a")
    assert gateway_grants(in_a) == both
    assert gateway_grants(render("gateway.namespaces={*}")) == {"*": expected}
    documents = render()
    deployment = next(d for d in documents if d["kind"] == "Deployment"
                      and d["metadata"]["name"] == GATEWAY_ACCOUNT)  # fmt: skip
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["command"] == ["infermodes", "gateway"]
    assert spec["serviceAccountName"] == GATEWAY_ACCOUNT
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert spec["terminationGracePeriodSeconds"] > 60  # the invocation timeout fits in it
    assert not any("secretKeyRef" in str(e) for e in container["env"])
    assert render("gateway.enabled=false") and not gateway_grants(render("gateway.enabled=false"))


def test_every_variable_the_chart_gives_the_gateway_is_a_setting_it_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from infermodes.settings import GatewaySettings

    deployment = next(d for d in render("gateway.namespaces={a,b}") if d["kind"] == "Deployment"
                      and d["metadata"]["name"] == GATEWAY_ACCOUNT)  # fmt: skip
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    prefix = GatewaySettings.model_config["env_prefix"]
    names = {e["name"].removeprefix(prefix).lower() for e in env}
    assert all(e["name"].startswith(prefix) for e in env)
    assert names <= set(GatewaySettings.model_fields)
    for variable in env:  # as the pod gets them (the downward API's values are not literal)
        monkeypatch.setenv(variable["name"], variable.get("value", "from-the-downward-api"))
    settings = GatewaySettings()
    assert settings.namespaces == ["a", "b", "ops"]  # the platform API's namespace too
    assert not settings.open_platform_api
    opened = next(d for d in render("gateway.platform.allowAnonymous=true")
                  if d["kind"] == "Deployment"
                  and d["metadata"]["name"] == GATEWAY_ACCOUNT)  # fmt: skip
    opened_env = opened["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": f"{prefix}OPEN_PLATFORM_API", "value": "true"} in opened_env
    assert settings.drain_timeout_seconds > settings.invocation_timeout_seconds
