"""Every pod template the operator and the chart can produce passes the ``restricted`` Pod
Security Standard, as the API server's own admission judges it: each is sent as a Pod (a
server-side dry run, nothing runs) to a namespace that enforces the standard. The realtime
lifecycle test runs a realtime endpoint there; this covers the rest: every mode, with every
Secret a spec can name, and the chart's operator and gateway with every option that adds a
volume or a port."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from infermodes.endpoints import spec as s
from infermodes.operator.modes import mode_for
from infermodes.operator.objects import Ingress
from tests.cluster.api import ApiError, KubeApi
from tests.cluster.controlplane import Binaries
from tests.cluster.harness import Cluster
from tests.e2e.operator_support import CHART
from tests.e2e.test_realtime_operator import enforce_restricted_pod_security
from tests.unit.operator.test_realtime import REF

SECRET = {"name": "infermodes-s3"}
HOOK = {"name": "infermodes-hooks", "key": "url"}
SPECS: dict[str, dict[str, Any]] = {
    "realtime": {"realtime": {"minReplicas": 2, "workers": 2}},
    "serverless": {"serverless": {"memorySizeInMB": 2048}},
    "async": {"async": {"outputPath": "s3://o/out/", "brokerSecretRef": {"name": "infermodes-mq"},
                        "notification": {"successWebhookSecretRef": HOOK,
                                         "errorWebhookSecretRef": HOOK}}},
    "batch": {"batch": {"input": {"uri": "s3://d/in/"}, "output": {"uri": "s3://d/out/"},
                        "instanceCount": 2}},
}  # fmt: skip
CHART_VALUES = [
    [],
    ["rabbitmq.secretRef.name=infermodes-rabbitmq", "gateway.auth.secretRef.name=keys",
     "gateway.storageSecretRef.name=store", "operator.metricsPort=0"],
]  # fmt: skip
EVERYONE = Ingress(serving=({"podSelector": {}},), metrics=({"podSelector": {}},))


def endpoint_templates() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for mode, block in SPECS.items():
        model = {"uri": "s3://models/m.tar.gz"}
        spec = s.EndpointSpec.model_validate(
            {"mode": mode, "model": model, "storageSecretRef": SECRET, **block}
        )
        for obj in mode_for(spec.mode).desired_objects(REF, spec, 2, "img:1", EVERYONE):
            if obj["kind"] in ("Deployment", "Job"):
                found.append((f"{mode}-{obj['kind'].lower()}", obj["spec"]["template"]))
    return found


def chart_templates() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for number, values in enumerate(CHART_VALUES):
        args = [arg for value in values for arg in ("--set", value)]
        result = subprocess.run([str(Binaries.from_cache().helm), "template", "infermodes",
                                 str(CHART), "--namespace", "ops", *args],
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert result.returncode == 0, result.stderr
        for doc in yaml.safe_load_all(result.stdout):
            if doc and doc["kind"] == "Deployment":
                found.append((f"{doc['metadata']['name']}-{number}", doc["spec"]["template"]))
    return found


def admitted(api: KubeApi, namespace: str, name: str, template: dict[str, Any]) -> str | None:
    """None when the API server would create ``template`` as a Pod in ``namespace``, else its
    refusal."""
    spec = {k: v for k, v in template["spec"].items() if k != "serviceAccountName"}  # none here
    metadata = {"name": name, "labels": template["metadata"]["labels"]}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    try:
        api.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod, params={"dryRun": "All"})
    except ApiError as refused:
        return str(refused)
    return None


def test_every_pod_template_passes_the_restricted_standard(
    k8s_cluster: Cluster, k8s_namespace: str
) -> None:
    api = k8s_cluster.api
    enforce_restricted_pod_security(api, k8s_namespace)  # and checks that it refuses a plain pod
    templates = endpoint_templates() + chart_templates()
    assert {name.split("-")[0] for name, _ in templates} >= {*SPECS, "infermodes"}
    refusals = {name: why for name, template in templates
                if (why := admitted(api, k8s_namespace, name, template)) is not None}  # fmt: skip
    assert refusals == {}


@pytest.mark.parametrize("broken", [
    {"hostNetwork": True},
    {"volumes": [{"name": "tmp", "hostPath": {"path": "/tmp"}}]},
])  # fmt: skip
def test_the_check_refuses_what_the_standard_forbids(
    k8s_cluster: Cluster, k8s_namespace: str, broken: dict[str, Any]
) -> None:
    """The dry run is the admission's verdict, not a formality: a template of ours with what
    the standard forbids is refused."""
    api = k8s_cluster.api
    enforce_restricted_pod_security(api, k8s_namespace)
    name, template = endpoint_templates()[0]
    spoiled = {**template, "spec": {**template["spec"], **broken}}
    assert "restricted" in (admitted(api, k8s_namespace, name, spoiled) or "")


def test_the_charts_own_network_policies_are_accepted(
    k8s_cluster: Cluster, k8s_namespace: str
) -> None:
    """``networkPolicy.chartPods`` renders what the API server takes (a server-side dry run),
    with peers and narrowed egress rules too."""
    peer = '[{"namespaceSelector": {"matchLabels": {"team": "edge"}}}]'
    narrowed = '[{"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [{"port": 6443}]}]'
    refusals = {}
    for values in ([], ["networkPolicy.chartPods.gatewayFrom=" + peer,
                        "networkPolicy.metricsFrom=" + peer,
                        "networkPolicy.chartPods.egress.apiServer=" + narrowed]):  # fmt: skip
        args = [arg for value in values for arg in ("--set-json", value)]
        result = subprocess.run([str(Binaries.from_cache().helm), "template", "infermodes",
                                 str(CHART), "--namespace", k8s_namespace, *args],
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert result.returncode == 0, result.stderr
        policies = [d for d in yaml.safe_load_all(result.stdout)
                    if d and d["kind"] == "NetworkPolicy"]  # fmt: skip
        assert len(policies) == 2
        for policy in policies:
            path = f"/apis/networking.k8s.io/v1/namespaces/{k8s_namespace}/networkpolicies"
            try:
                k8s_cluster.api.request("POST", path, policy, params={"dryRun": "All"})
            except ApiError as refused:
                refusals[policy["metadata"]["name"]] = str(refused)
    assert refusals == {}
