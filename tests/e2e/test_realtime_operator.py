"""The operator end to end on a real control plane: helm install, kubectl apply, real pods."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.cluster.api import ApiError, KubeApi
from tests.cluster.plugin import require_process_kubelet
from tests.conftest import AbaloneModel
from tests.e2e.operator_support import (
    OPERATOR_NAMESPACE,
    RELEASE,
    Tools,
    endpoint_manifest,
    gateway_url,
    get_endpoint,
    install_operator,
    older_crd,
    operator_pods,
    ready_pod_ips,
    to_csv,
    wait_phase,
)
from tests.support.processes import wait_until

CSV = {"content-type": "text/csv"}


def create_in_service(tools: Tools, namespace: str, manifest: dict) -> dict:
    """``kubectl apply`` the manifest and wait for the endpoint to be InService."""
    applied = tools.apply(manifest, namespace)
    assert applied.returncode == 0, applied.stderr
    return wait_phase(tools.cluster.api, namespace, manifest["metadata"]["name"], "InService")


def enforce_restricted_pod_security(api: KubeApi, namespace: str) -> None:
    """Label the namespace so the API server admits only pods that meet the restricted Pod
    Security Standard, and check that it does refuse one that does not."""
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    api.merge_patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": labels}})
    container = {"name": "c", "image": "x", "command": ["true"]}
    plain = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"},
             "spec": {"containers": [container]}}  # fmt: skip
    with pytest.raises(ApiError) as refused:
        api.post(f"/api/v1/namespaces/{namespace}/pods", plain)
    assert refused.value.status == 403 and "restricted" in str(refused.value)


def test_apply_reaches_in_service_under_restricted_pod_security_and_predicts_like_the_booster(
    tools: Tools, k8s_namespace: str, model_uri: str, abalone_model: AbaloneModel
) -> None:
    api = tools.cluster.api
    enforce_restricted_pod_security(api, k8s_namespace)
    applied = tools.apply(endpoint_manifest("abalone", model_uri), k8s_namespace)
    assert applied.returncode == 0, applied.stderr
    endpoint = wait_phase(api, k8s_namespace, "abalone", "InService")
    assert endpoint["status"]["readyReplicas"] == 1
    shown = tools.kubectl("get", "ie", "-n", k8s_namespace)
    assert shown.returncode == 0, shown.stderr
    header, row = shown.stdout.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "MODE", "PHASE", "READY", "DESIRED"]
    assert row.split()[:5] == ["abalone", "realtime", "InService", "1", "1"]

    rows = abalone_model.test_rows
    (ip,) = ready_pod_ips(api, k8s_namespace, "abalone")
    response = httpx.post(f"http://{ip}:8080/invocations", content=to_csv(rows), headers=CSV)
    assert response.status_code == 200, response.text
    got = np.array(response.text.split(), dtype=np.float32)
    np.testing.assert_array_equal(got, abalone_model.booster().inplace_predict(rows))

    events = api.get(f"/api/v1/namespaces/{k8s_namespace}/events")["items"]
    reasons = {
        e["reason"] for e in events if e["involvedObject"].get("kind") == "InferenceEndpoint"
    }
    assert "InService" in reasons

    # a spec change rolls the Deployment: Updating, then InService on the new pods
    before = api.get(f"/apis/apps/v1/namespaces/{k8s_namespace}/deployments/ie-abalone")
    changed = tools.apply(endpoint_manifest("abalone", model_uri, workers=2), k8s_namespace)
    assert changed.returncode == 0, changed.stderr
    wait_phase(api, k8s_namespace, "abalone", "InService", also=lambda e: (
        e["status"].get("observedGeneration") == e["metadata"]["generation"]))  # fmt: skip
    after = api.get(f"/apis/apps/v1/namespaces/{k8s_namespace}/deployments/ie-abalone")
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    env = after["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "INFERMODES_SERVE_WORKERS", "value": "2"} in env
    assert "Updating" in {e["reason"] for e in api.get(
        f"/api/v1/namespaces/{k8s_namespace}/events")["items"]}  # fmt: skip

    # an update whose model cannot load: the old replica keeps serving, the endpoint Updating
    # with the reason (not Failed, which the gateway would refuse), until the spec is fixed
    lost = f"file:///nonexistent/{k8s_namespace}/model.tar.gz"
    assert tools.apply(endpoint_manifest("abalone", lost, workers=2), k8s_namespace).returncode == 0
    failing = wait_phase(api, k8s_namespace, "abalone", "Updating",
                         also=lambda e: e["status"].get("reason") == "ModelLoadFailed")  # fmt: skip
    assert "replica(s) of the previous spec still serve" in failing["status"]["message"]

    def warned() -> bool:  # a problem, though not Failed: a Warning Event
        found = api.get(f"/api/v1/namespaces/{k8s_namespace}/events")["items"]
        return any(e["type"] == "Warning" and e["reason"] == "Updating"
                   and "cannot roll out" in e.get("message", "") for e in found)  # fmt: skip

    wait_until(warned, 30, "a Warning Event of the update that cannot roll out")
    (ip,) = ready_pod_ips(api, k8s_namespace, "abalone")
    response = httpx.post(f"http://{ip}:8080/invocations", content=to_csv(rows), headers=CSV)
    assert response.status_code == 200, response.text
    fixed = tools.apply(endpoint_manifest("abalone", model_uri, workers=2), k8s_namespace)
    assert fixed.returncode == 0, fixed.stderr
    wait_phase(api, k8s_namespace, "abalone", "InService")


def test_operator_runs_under_its_own_least_privilege_account(tools: Tools) -> None:
    api = tools.cluster.api
    (pod,) = [p for p in operator_pods(api) if not p["metadata"].get("deletionTimestamp")]
    account = pod["spec"]["serviceAccountName"]
    assert account == f"{RELEASE}-operator"
    token = api.post(
        f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/serviceaccounts/{account}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 600}},
    )["status"]["token"]  # fmt: skip
    as_operator = httpx.Client(base_url=tools.cluster.server, verify=False,
                               headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    with as_operator:
        allowed = as_operator.get("/apis/apps/v1/deployments")
        assert allowed.status_code == 200
        for method, path in [("GET", "/api/v1/secrets"),
                             ("DELETE", f"/apis/apps/v1/namespaces/{OPERATOR_NAMESPACE}/"
                                        "deployments/x"),
                             ("GET", "/api/v1/nodes")]:  # fmt: skip
            refused = as_operator.request(method, path)
            assert refused.status_code == 403, (method, path, refused.text)


INVALID = [
    ("wrong-mode", {"mode": "sometimes"}, "spec.mode: Unsupported value"),
    ("memory", {"mode": "serverless", "serverless": {"memorySizeInMB": 1000}},
     "spec.serverless.memorySizeInMB: Unsupported value: 1000"),
    ("concurrency-0", {"mode": "serverless", "serverless": {"maxConcurrency": 0}},
     "spec.serverless.maxConcurrency: Invalid value: 0"),
    ("concurrency-201", {"mode": "serverless", "serverless": {"maxConcurrency": 201}},
     "spec.serverless.maxConcurrency: Invalid value: 201"),
    ("timeout", {"mode": "async", "async": {"outputPath": "file:///o",
                                            "invocationTimeoutSeconds": 4000}},
     "spec.async.invocationTimeoutSeconds: Invalid value: 4000"),
    ("output-path", {"mode": "async", "async": {"outputPath": "http://store/out"}},
     "spec.async.outputPath: Invalid value: \"http://store/out\""),
    ("no-model", {"mode": "realtime", "model": None, "realtime": {}}, "spec.model: Required value"),
    ("no-block", {"mode": "realtime", "realtime": None},
     "spec.realtime is required when mode is realtime"),
    ("two-blocks", {"serverless": {}}, "spec.serverless is not allowed when mode is realtime"),
    ("cpu-0", {"realtime": {"resources": {"cpu": 0}}},
     "spec.realtime.resources.cpu: Invalid value: 0"),
    ("memory-negative", {"realtime": {"resources": {"memory": -1}}},
     "spec.realtime.resources.memory: Invalid value: -1"),
    ("replicas", {"realtime": {"minReplicas": 3, "maxReplicas": 2}},
     "minReplicas must not exceed maxReplicas"),
    ("metadata-webhook", {"mode": "async", "async": {"outputPath": "file:///o", "notification": {
        "successWebhook": "http://169.254.169.254/latest/meta-data/"}}},
     "successWebhook must not be a link-local or metadata address"),
    ("webhook-scheme", {"mode": "async", "async": {"outputPath": "file:///o", "notification": {
        "errorWebhook": "gopher://hooks/x"}}},
     "spec.async.notification.errorWebhook: Invalid value: \"gopher://hooks/x\""),
    # what passed the CRD and failed the operator's parsing (a Failed endpoint on an update):
    # white space beyond ASCII's, and refused addresses in spellings the regex rule cannot read
    ("image-space", {"image": "registry.example/x:1\u00a0"}, "spec.image: Invalid value"),
    *[(f"webhook-{name}", {"mode": "async", "async": {"outputPath": "file:///o", "notification": {
        "successWebhook": url}}}, "successWebhook must not be a link-local or metadata address")
      for name, url in [("longhand", "http://[fd00:ec2:0::254]/"),
                        ("nat64", "http://[64:ff9b::a9fe:a9fe]/x"),
                        ("sixtofour", "http://u@[2002:a9fe:a9fe::]:80/"),
                        ("mapped", "http://[0:0:0:0:0:ffff:a9fe:a9fe]/"),
                        ("mapped-zone", "http://[::ffff:169.254.169.254%25eth0]/"),
                        ("dot", "http://169.254.169.254./")]],
    # a number for an IPv4 address, which the worker alone read (as it resolved it)
    *[(f"webhook-number-{name}", {"mode": "async", "async": {"outputPath": "file:///o",
                                                             "notification": {
        "successWebhook": url}}}, "successWebhook must write an IPv4 address as a.b.c.d")
      for name, url in [("decimal", "http://2130706433/"), ("hex", "http://0x7f.1:80/x")]],
    # a host in brackets Python's URL parser refuses (and so the spec's validation)
    *[(f"webhook-{name}", {"mode": "async", "async": {"outputPath": "file:///o", "notification": {
        "errorWebhook": url}}}, "errorWebhook: the host in brackets must be an IPv6 address")
      for name, url in [("not-an-address", "http://[zz]/"), ("ipv4-bracketed", "http://[1.2.3.4]/"),
                        ("empty-zone", "http://[::1%]/")]],
    # a port the C library takes modulo 65536: the POST went to 34463
    *[(f"webhook-port-{port}", {"mode": "async", "async": {"outputPath": "file:///o",
                                                           "notification": {
        "errorWebhook": f"http://hooks.example:{port}/x"}}},
       "errorWebhook: its port must be one of 1 to 65535") for port in ("99999", "0")],
    ("webhook-user-bracket", {"mode": "async", "async": {"outputPath": "file:///o",
                                                         "notification": {
        "errorWebhook": "http://a[b]@hooks.example/"}}},
     "spec.async.notification.errorWebhook: Invalid value"),
    ("webhook-fullwidth", {"mode": "async", "async": {"outputPath": "file:///o", "notification": {
        "errorWebhook": "http://hooks\uff03example/"}}},  # urlsplit refuses it in a host
     "spec.async.notification.errorWebhook: Invalid value"),
    # a batch job's, which made it Failed at its creation: a filter the parser cannot read,
    # processing the instances cannot do
    *[(f"batch-{name}", {"mode": "batch", "batch": {
        "input": {"uri": "file:///i/", "contentType": content}, "output": {"uri": "file:///o/"},
        "dataProcessing": processing}}, message)
      for name, content, processing, message in [
          ("filter", "text/csv", {"outputFilter": "$..a"},
           "spec.batch.dataProcessing.outputFilter: Invalid value"),
          ("libsvm", "text/libsvm", {"inputFilter": "$[1:]"},
           "inputFilter and joinSource need CSV or JSON input, not libsvm"),
          ("join", "application/json", {"joinSource": "Input"},
           "joinSource Input joins like with like")]],
    # an input prefix inside the output, which the operator alone refused
    ("batch-input-inside-output", {"mode": "batch", "batch": {
        "input": {"uri": "s3://data/out/day-1/"}, "output": {"uri": "S3://data/out"}}},
     "the input prefix lies inside output.uri"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "change", "message"), INVALID, ids=[i[0] for i in INVALID])
def test_invalid_specs_are_rejected_by_kubectl_apply(
    tools: Tools, k8s_namespace: str, name: str, change: dict, message: str
) -> None:
    manifest = endpoint_manifest(f"bad-{name}", "file:///m.tar.gz")
    spec = manifest["spec"]
    if change.get("mode") not in (None, "realtime"):
        spec.pop("realtime")
    for key, value in change.items():
        if value is None:
            spec.pop(key)
        else:
            spec[key] = value
    result = tools.apply(manifest, k8s_namespace)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert get_endpoint(tools.cluster.api, k8s_namespace, f"bad-{name}") is None


def test_a_mode_change_to_another_workload_is_refused_by_kubectl_apply(
    tools: Tools, k8s_namespace: str
) -> None:
    """The API server runs the CRD's transition rule: realtime may become serverless (one
    model-server Deployment), not async (workers under another selector, which Kubernetes
    never changes: the operator would retry for ever)."""
    manifest = endpoint_manifest("moves", "file:///m.tar.gz")
    assert tools.apply(manifest, k8s_namespace).returncode == 0
    spec = manifest["spec"]
    del spec["realtime"]
    spec |= {"mode": "async", "async": {"outputPath": "file:///o"}}
    refused = tools.apply(manifest, k8s_namespace)
    assert refused.returncode != 0
    assert "spec.mode can change only between realtime and serverless" in refused.stderr
    kept = get_endpoint(tools.cluster.api, k8s_namespace, "moves")
    assert kept is not None and kept["spec"]["mode"] == "realtime" and "async" not in kept["spec"]
    del spec["async"]
    spec |= {"mode": "serverless", "serverless": {}}
    assert tools.apply(manifest, k8s_namespace).returncode == 0


def test_an_object_of_its_names_that_a_user_owns_is_left_alone(
    tools: Tools, k8s_namespace: str
) -> None:
    """A user's own Service named ``ie-<name>``: the endpoint fails naming it, and the operator
    neither takes it over (a forced apply would) nor deletes it with the endpoint."""
    api = tools.cluster.api
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ie-theirs"},
               "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 8000}]}}  # fmt: skip
    api.post(f"/api/v1/namespaces/{k8s_namespace}/services", service)
    applied = tools.apply(endpoint_manifest("theirs", "file:///m.tar.gz"), k8s_namespace)
    assert applied.returncode == 0, applied.stderr
    endpoint = wait_phase(api, k8s_namespace, "theirs", "Failed")
    assert endpoint["status"]["reason"] == "NameConflict"
    assert "a Service ie-theirs already exists" in endpoint["status"]["message"]
    path = f"/api/v1/namespaces/{k8s_namespace}/services/ie-theirs"
    assert api.get(path)["spec"]["selector"] == {"app": "theirs"}
    deployments = f"/apis/apps/v1/namespaces/{k8s_namespace}/deployments"
    assert api.get(deployments)["items"] == []
    assert tools.kubectl("delete", "ie", "theirs", "-n", k8s_namespace).returncode == 0
    wait_until(lambda: get_endpoint(api, k8s_namespace, "theirs") is None, 60, "the deletion")
    assert api.get(path)["spec"]["selector"] == {"app": "theirs"}


def test_pods_that_cannot_be_created_or_placed_are_named_in_the_status(
    tools: Tools, k8s_namespace: str, model_uri: str
) -> None:
    """A quota of no Deployments: Failed, naming the refusal. A quota of no pods: the endpoint
    waits (not Failed: a quota can grow, capacity can free), as does one whose CPU request no
    node has, the reason and message saying why; once the spec asks for what a node has, it
    comes up."""
    api = tools.cluster.api
    quotas = f"/api/v1/namespaces/{k8s_namespace}/resourcequotas"

    def quota(name: str, hard: dict[str, str]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name},
                "spec": {"hard": hard}}  # fmt: skip

    api.post(quotas, quota("no-deployments", {"count/deployments.apps": "0"}))
    refused = endpoint_manifest("refused", model_uri)
    assert tools.apply(refused, k8s_namespace).returncode == 0
    by = lambda reason: lambda e: e["status"].get("reason") == reason  # noqa: E731
    endpoint = wait_phase(api, k8s_namespace, "refused", "Failed", also=by("ApplyRefused"))
    assert "the API server refused applying Deployment ie-refused" in endpoint["status"]["message"]
    assert "no-deployments" in endpoint["status"]["message"], endpoint["status"]["message"]
    api.post(quotas, quota("no-pods", {"pods": "0"}))
    api.delete(f"{quotas}/no-deployments")  # the next resync's apply goes through
    endpoint = wait_phase(api, k8s_namespace, "refused", "Creating", also=by("FailedCreate"))
    assert "pods cannot be created:" in endpoint["status"]["message"]
    assert "no-pods" in endpoint["status"]["message"], endpoint["status"]["message"]
    assert tools.kubectl("delete", "ie", "refused", "-n", k8s_namespace).returncode == 0
    api.delete(f"{quotas}/no-pods")

    # a bare whole number, as pods take it (the CRD took strings alone): 64 CPUs, placed nowhere
    too_big = endpoint_manifest("too-big", model_uri, resources={"cpu": 64, "memory": "512Mi"})
    assert tools.apply(too_big, k8s_namespace).returncode == 0
    endpoint = wait_phase(api, k8s_namespace, "too-big", "Creating", also=by("Unschedulable"))
    assert "cannot be scheduled: 0/1 nodes are available" in endpoint["status"]["message"]
    assert "Insufficient cpu" in endpoint["status"]["message"]
    fits = endpoint_manifest("too-big", model_uri)
    create_in_service(tools, k8s_namespace, fits)


def test_an_update_an_admission_policy_refuses_keeps_the_old_spec_serving_and_scaling(
    tools: Tools, k8s_namespace: str, model_uri: str
) -> None:
    """A ValidatingAdmissionPolicy freezes pod templates: the update is refused, the endpoint
    stays Updating with the policy's words, and a new minimum still scales the spec it had;
    once the policy goes, the update rolls out."""
    api = tools.cluster.api
    small = {"cpu": "100m", "memory": "256Mi"}  # the rollout's surge fits beside the rest
    create_in_service(tools, k8s_namespace, endpoint_manifest("frozen", model_uri, resources=small))
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": k8s_namespace},
        "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [
            {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["UPDATE"],
             "resources": ["deployments"]}]},
            "validations": [{"expression": "object.spec.template == oldObject.spec.template",
                             "message": "pod templates are frozen here"}]},
    }  # fmt: skip
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": k8s_namespace},
        "spec": {"policyName": k8s_namespace, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {
                     "kubernetes.io/metadata.name": k8s_namespace}}}},
    }  # fmt: skip
    policies = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
    bindings = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
    api.post(policies, policy)
    api.post(bindings, binding)
    deployment = f"/apis/apps/v1/namespaces/{k8s_namespace}/deployments/ie-frozen"

    def enforced() -> bool:  # the API server loads a new policy a moment after it is made
        probe = {"spec": {"template": {"metadata": {"annotations": {"probe": "1"}}}}}
        try:
            api.request("PATCH", deployment, probe, params={"dryRun": "All"},
                        content_type="application/merge-patch+json")  # fmt: skip
        except ApiError as refused:
            return "pod templates are frozen here" in str(refused)
        return False

    try:
        wait_until(enforced, 60, "the policy to be enforced")
        changed = endpoint_manifest("frozen", model_uri, workers=2, minReplicas=2, maxReplicas=3,
                                    resources=small)  # fmt: skip
        assert tools.apply(changed, k8s_namespace).returncode == 0
        refused = wait_phase(api, k8s_namespace, "frozen", "Updating", also=lambda e: (
            e["status"].get("reason") == "ApplyRefused"))  # fmt: skip
        assert "pod templates are frozen here" in refused["status"]["message"]
        wait_until(lambda: api.get(deployment)["spec"]["replicas"] == 2, 60,
                   "the spec it had to scale to the new minimum")  # fmt: skip
        env = api.get(deployment)["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "INFERMODES_SERVE_WORKERS", "value": "2"} not in env
    finally:
        api.delete(f"{bindings}/{k8s_namespace}")
        api.delete(f"{policies}/{k8s_namespace}")
    wait_phase(api, k8s_namespace, "frozen", "InService", also=lambda e: (
        e["status"].get("readyReplicas") == 2))  # fmt: skip
    env = api.get(deployment)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "INFERMODES_SERVE_WORKERS", "value": "2"} in env


def test_an_update_to_an_image_the_operator_refuses_keeps_the_old_spec_serving(
    tools: Tools, k8s_namespace: str, model_uri: str
) -> None:
    """spec.image changed to one the operator does not run (the chart's default: its own
    alone): nothing of it is applied, the endpoint stays Updating (InvalidSpec) on the spec
    its replicas run, which the gateway keeps routing to; reverted, it is InService again."""
    api = tools.cluster.api
    create_in_service(tools, k8s_namespace, endpoint_manifest("kept", model_uri))
    deployment = f"/apis/apps/v1/namespaces/{k8s_namespace}/deployments/ie-kept"
    image = api.get(deployment)["spec"]["template"]["spec"]["containers"][0]["image"]
    refused = endpoint_manifest("kept", model_uri)
    refused["spec"]["image"] = "registry.example/not-listed:1"
    assert tools.apply(refused, k8s_namespace).returncode == 0
    kept = wait_phase(api, k8s_namespace, "kept", "Updating",
                      also=lambda e: e["status"].get("reason") == "InvalidSpec")  # fmt: skip
    assert "is not an image this operator runs" in kept["status"]["message"]
    assert kept["status"]["readyReplicas"] == 1
    assert api.get(deployment)["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert tools.apply(endpoint_manifest("kept", model_uri), k8s_namespace).returncode == 0
    wait_phase(api, k8s_namespace, "kept", "InService")


def test_an_update_the_operator_could_not_parse_is_refused_at_apply_and_the_old_spec_serves(
    tools: Tools, k8s_namespace: str, model_uri: str
) -> None:
    """spec.image with a no-break space passed the CRD (RE2's \\s is ASCII's) and failed the
    operator's parsing: the serving endpoint went Failed with no replicas. The API server now
    refuses the update naming the field, and the spec it had keeps serving, untouched."""
    api = tools.cluster.api
    create_in_service(tools, k8s_namespace, endpoint_manifest("parsed", model_uri))
    before = get_endpoint(api, k8s_namespace, "parsed")
    assert before is not None
    unparsable = endpoint_manifest("parsed", model_uri)
    unparsable["spec"]["image"] = "registry.example/x:1\u00a0"
    refused = tools.apply(unparsable, k8s_namespace)
    assert refused.returncode != 0 and "spec.image: Invalid value" in refused.stderr
    kept = get_endpoint(api, k8s_namespace, "parsed")
    assert kept is not None
    assert kept["metadata"]["generation"] == before["metadata"]["generation"]
    assert (kept["status"]["phase"], kept["status"]["readyReplicas"]) == ("InService", 1)
    (ip,) = ready_pod_ips(api, k8s_namespace, "parsed")
    rows = [[1, 0, 0, 0.455, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15]]
    response = httpx.post(f"http://{ip}:8080/invocations", content=to_csv(rows), headers=CSV)
    assert response.status_code == 200, response.text


def restart_gateway(tools: Tools) -> None:
    """Delete the gateway's pods and wait for a new one, ready (its watches listed)."""
    api = tools.cluster.api
    pods = f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods"
    selector = "app.kubernetes.io/component=gateway"
    old = {p["metadata"]["name"] for p in api.get(pods, labelSelector=selector)["items"]}
    for name in old:
        api.delete(f"{pods}/{name}")

    def new_one_ready() -> bool:
        for pod in api.get(pods, labelSelector=selector)["items"]:
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            if pod["metadata"]["name"] not in old and conditions.get("Ready") == "True":
                return True
        return False

    wait_until(new_one_ready, 120, "a new gateway pod to be ready")


def test_an_update_an_older_crd_took_and_the_operator_cannot_parse_keeps_the_old_spec_serving(
    tools: Tools, k8s_namespace: str, model_uri: str
) -> None:
    """Helm never upgrades a chart's CRDs: an older one (here, the image pattern taken out) takes
    a spec this operator cannot parse. The endpoint went Failed with 0 replicas and the gateway
    refused it; now it stays Updating (InvalidSpec, a Warning Event naming the field), its
    replicas untouched and served through the gateway, and mends once the spec is fixed."""
    api = tools.cluster.api
    create_in_service(tools, k8s_namespace, endpoint_manifest("stale-crd", model_uri))
    deployment = f"/apis/apps/v1/namespaces/{k8s_namespace}/deployments/ie-stale-crd"
    template = api.get(deployment)["spec"]["template"]
    with older_crd(tools, endpoint_manifest("stale-crd", model_uri), k8s_namespace):
        kept = wait_phase(api, k8s_namespace, "stale-crd", "Updating",
                          also=lambda e: e["status"].get("reason") == "InvalidSpec")  # fmt: skip
        assert kept["status"]["message"].startswith("spec.image: ")
        assert kept["status"]["readyReplicas"] == 1
        events = api.get(f"/api/v1/namespaces/{k8s_namespace}/events",
                         fieldSelector="involvedObject.name=stale-crd")["items"]  # fmt: skip
        assert any(e["type"] == "Warning" and e["message"].startswith("spec.image: ")
                   for e in events), events  # fmt: skip
        assert api.get(deployment)["spec"]["template"] == template
        url = gateway_url(tools)
        assert url is not None
        rows = [[1, 0, 0, 0.455, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15]]
        served = httpx.post(f"{url}/endpoints/stale-crd/invocations", content=to_csv(rows),
                            headers=CSV, timeout=60)  # fmt: skip
        assert served.status_code == 200, served.text
        # a gateway started now has no spec of it read before: it serves the applied one
        assert kept["status"]["appliedGeneration"] < kept["metadata"]["generation"]
        restart_gateway(tools)
        url = gateway_url(tools)
        assert url is not None
        served = httpx.post(f"{url}/endpoints/stale-crd/invocations", content=to_csv(rows),
                            headers=CSV, timeout=60)  # fmt: skip
        assert served.status_code == 200, served.text
        applied = tools.apply(endpoint_manifest("stale-crd", model_uri), k8s_namespace)
        assert applied.returncode == 0, applied.stderr
        wait_phase(api, k8s_namespace, "stale-crd", "InService")


def test_missing_model_ends_failed_with_the_reason_and_serves_once_it_arrives(
    tools: Tools, k8s_namespace: str, model_uri: str, tmp_path: Path
) -> None:
    """The common order of mistakes: the endpoint applied before its model is uploaded. Once
    the model is there, the restarted pod loads it and the endpoint serves; it used to stay
    Failed for good (the pod's last run had exited 3), the gateway refusing it."""
    later = tmp_path / "later" / "model.tar.gz"
    manifest = endpoint_manifest("lost", f"file://{later}")
    assert tools.apply(manifest, k8s_namespace).returncode == 0
    endpoint = wait_phase(tools.cluster.api, k8s_namespace, "lost", "Failed")
    assert endpoint["status"]["reason"] == "ModelLoadFailed"
    assert "no such object" in endpoint["status"]["message"]
    later.parent.mkdir()
    shutil.copyfile(model_uri.removeprefix("file://"), later)
    wait_phase(tools.cluster.api, k8s_namespace, "lost", "InService")


def test_load_scales_out_to_max_and_back_to_min(
    tools: Tools, k8s_namespace: str, model_uri: str
) -> None:
    """Bounds: scale-out within 120 s of load, scale-in within 120 s of silence."""
    api = tools.cluster.api
    scaling = {"metric": "InvocationsPerInstance", "target": 60, "scaleInCooldownSeconds": 5}
    small = {"cpu": "250m", "memory": "256Mi"}  # three replicas beside the chart on 2 CPUs
    manifest = endpoint_manifest(
        "busy", model_uri, minReplicas=1, maxReplicas=3, scaling=scaling, resources=small
    )
    create_in_service(tools, k8s_namespace, manifest)
    (ip,) = ready_pod_ips(api, k8s_namespace, "busy")
    stop = threading.Event()
    sent = [0]

    def load() -> None:  # ~20 requests/s (1200/min against a target of 60/min per replica)
        deadline = time.monotonic() + 150
        with httpx.Client() as client:
            while not stop.is_set() and time.monotonic() < deadline and sent[0] < 4000:
                client.post(f"http://{ip}:8080/invocations",
                            content=b"1,0,0,0.5,0.4,0.1,0.5,0.2,0.1,0.15", headers=CSV)  # fmt: skip
                sent[0] += 1
                time.sleep(0.05)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        wait_phase(api, k8s_namespace, "busy", "InService", timeout=120,
                   also=lambda e: e["status"].get("readyReplicas") == 3)  # fmt: skip
    finally:
        stop.set()
        worker.join(10)
    assert sent[0] > 0
    wait_phase(api, k8s_namespace, "busy", "InService", timeout=120,
               also=lambda e: e["status"].get("desiredReplicas") == 1)  # fmt: skip


def gone(api: KubeApi, path: str) -> bool:
    try:
        api.get(path)
    except ApiError as err:
        return err.status == 404
    return False


def test_deleting_the_endpoint_removes_its_objects_and_processes(
    tools: Tools, k8s_namespace: str, model_uri: str
) -> None:
    api = tools.cluster.api
    create_in_service(tools, k8s_namespace, endpoint_manifest("doomed", model_uri))
    # the API server accepted its NetworkPolicy (networkPolicy.enabled, the chart's default),
    # owned by the endpoint; no CNI here enforces it: tests/unit/operator/test_network_policy
    policy_path = f"/apis/networking.k8s.io/v1/namespaces/{k8s_namespace}/networkpolicies/ie-doomed"
    policy = api.get(policy_path)
    endpoint = get_endpoint(api, k8s_namespace, "doomed")
    assert endpoint is not None
    (owner,) = policy["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("InferenceEndpoint", endpoint["metadata"]["uid"])
    assert policy["spec"]["podSelector"]["matchLabels"]["infermodes.dev/endpoint"] == "doomed"
    kubelet = require_process_kubelet(tools.cluster)
    assert kubelet.running_pids(k8s_namespace)
    deleted = tools.kubectl("delete", "ie", "doomed", "-n", k8s_namespace, "--wait=true")
    assert deleted.returncode == 0, deleted.stderr
    base = f"/namespaces/{k8s_namespace}"
    wait_until(lambda: gone(api, f"/apis/apps/v1{base}/deployments/ie-doomed"), 60,
               "Deployment gone")  # fmt: skip
    wait_until(lambda: gone(api, f"/api/v1{base}/services/ie-doomed"), 60, "Service gone")
    wait_until(lambda: gone(api, policy_path), 60, "NetworkPolicy gone")
    wait_until(lambda: not kubelet.running_pids(k8s_namespace), 60, "pod processes gone")


def test_a_lost_only_replica_is_replaced_in_service_not_as_an_update(
    tools: Tools, k8s_namespace: str, model_uri: str
) -> None:
    """Its one pod deleted (a node gone, a user's kubectl delete): the endpoint was Updating
    (RollingOut) with an Event until the new pod was ready, though nothing was updated, and
    the platform's UpdateEndpoint was refused meanwhile as in progress. It stays InService,
    saying replicas are ready 0/1 (requests wait for the new one)."""
    api = tools.cluster.api
    manifest = endpoint_manifest("lone", model_uri, minReplicas=1, maxReplicas=1)
    create_in_service(tools, k8s_namespace, manifest)
    pods_path = f"/api/v1/namespaces/{k8s_namespace}/pods"
    selector = {"labelSelector": "infermodes.dev/endpoint=lone"}
    (old,) = api.get(pods_path, **selector)["items"]
    api.delete(f"{pods_path}/{old['metadata']['name']}")
    seen: set[tuple[str, str]] = set()

    def replaced() -> bool:
        status = get_endpoint(api, k8s_namespace, "lone")["status"]
        seen.add((status["phase"], status.get("reason", "")))
        return any(
            p["metadata"]["uid"] != old["metadata"]["uid"]
            and any(c["type"] == "Ready" and c["status"] == "True"
                    for c in p["status"].get("conditions", []))
            for p in api.get(pods_path, **selector)["items"]
        ) and status.get("readyReplicas") == 1  # fmt: skip

    wait_until(replaced, 120, "the replacement pod ready", interval=0.1)
    assert {phase for phase, _ in seen} == {"InService"}, seen
    assert ("InService", "Scaling") in seen, seen  # it was seen without its replica


def test_restarting_the_operator_changes_nothing_that_was_correct(
    tools: Tools, k8s_namespace: str, model_uri: str
) -> None:
    api = tools.cluster.api
    create_in_service(tools, k8s_namespace, endpoint_manifest("steady", model_uri))
    deployment_path = f"/apis/apps/v1/namespaces/{k8s_namespace}/deployments/ie-steady"
    service_path = f"/api/v1/namespaces/{k8s_namespace}/services/ie-steady"

    def snapshot() -> tuple:
        deployment = api.get(deployment_path)
        service = api.get(service_path)
        pods = api.get(f"/api/v1/namespaces/{k8s_namespace}/pods")["items"]
        return (deployment["metadata"]["generation"], deployment["spec"],
                service["metadata"]["resourceVersion"],
                sorted(p["metadata"]["uid"] for p in pods))  # fmt: skip

    before = snapshot()
    (old,) = [p for p in operator_pods(api) if not p["metadata"].get("deletionTimestamp")]
    api.delete(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods/{old['metadata']['name']}")

    def new_operator_running() -> bool:
        return any(
            p["metadata"]["uid"] != old["metadata"]["uid"] and p["status"].get("phase") == "Running"
            for p in operator_pods(api)
        )

    wait_until(new_operator_running, 120, "a new operator pod")
    (new,) = [p for p in operator_pods(api) if p["metadata"]["uid"] != old["metadata"]["uid"]]
    marker = f"[{k8s_namespace}/steady]"
    wait_until(lambda: marker in tools.cluster.pod_log(OPERATOR_NAMESPACE, new["metadata"]["name"]),
               60, "the new operator to resume the endpoint")  # fmt: skip
    time.sleep(6)  # an observation window of three resync ticks: nothing may change in it
    assert snapshot() == before
    assert get_endpoint(api, k8s_namespace, "steady")["status"]["phase"] == "InService"


def test_turning_network_policies_off_removes_those_made_while_on(
    tools: Tools, k8s_namespace: str, model_uri: str
) -> None:
    """networkPolicy.enabled=false left every endpoint made while it was true fenced by its
    policy: the operator it restarts with deletes each endpoint's own."""
    api = tools.cluster.api
    create_in_service(tools, k8s_namespace, endpoint_manifest("fenced", model_uri))
    base = f"/apis/networking.k8s.io/v1/namespaces/{k8s_namespace}/networkpolicies"
    api.get(f"{base}/ie-fenced")  # made while on, the chart's default
    try:
        install_operator(tools, **{"networkPolicy.enabled": "false"})
        wait_until(lambda: gone(api, f"{base}/ie-fenced"), 120, "the endpoint's policy removed")
        wait_phase(api, k8s_namespace, "fenced", "InService")
    finally:
        install_operator(tools)  # the module's chart as the fixture installed it
