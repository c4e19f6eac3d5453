"""RBAC is enforced, and pods get their service account's credentials, config and secrets."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.cluster import helpers as h
from tests.cluster.api import ApiError, KubeApi
from tests.cluster.controlplane import Binaries
from tests.cluster.harness import Cluster
from tests.cluster.plugin import require_process_kubelet
from tests.support.processes import wait_until


def grant_get_pods(api: KubeApi, namespace: str, account: str) -> None:
    """A ServiceAccount bound to a Role that allows only `get pods`."""
    base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    api.post(f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": account}})
    api.post(
        f"{base}/roles",
        {
            "metadata": {"name": "get-pods"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        },
    )
    api.post(
        f"{base}/rolebindings",
        {
            "metadata": {"name": f"{account}-get-pods"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "get-pods",
            },
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    )


def test_service_account_allowed_get_pods_is_refused_listing_secrets(
    k8s_cluster: Cluster, k8s_namespace: str
):
    api = k8s_cluster.api
    grant_get_pods(api, k8s_namespace, "reader")
    answer = api.post(
        f"/api/v1/namespaces/{k8s_namespace}/serviceaccounts/reader/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600},
        },
    )
    reader = KubeApi(api.server, api.ca_file, token=answer["status"]["token"])
    try:
        with pytest.raises(ApiError) as refused:
            reader.get(f"/api/v1/namespaces/{k8s_namespace}/secrets")
        assert refused.value.status == 403
        with pytest.raises(ApiError) as missing:  # allowed to ask, and the pod does not exist
            reader.get(f"/api/v1/namespaces/{k8s_namespace}/pods/nothing-here")
        assert missing.value.status == 404
    finally:
        reader.close()


def run_pod(
    api: KubeApi, namespace: str, spec: dict[str, Any], timeout_s: float = 60
) -> dict[str, Any]:
    """Create a restartPolicy=Never pod and return it once it has ended."""
    api.post(f"/api/v1/namespaces/{namespace}/pods", {"metadata": {"name": "probe"}, "spec": spec})
    path = f"/api/v1/namespaces/{namespace}/pods/probe"
    wait_until(
        lambda: api.get(path)["status"].get("phase") in ("Succeeded", "Failed"),
        timeout_s,
        "the pod to finish",
        0.2,
    )
    return api.get(path)


def test_pod_runs_under_its_service_account_kubeconfig(k8s_cluster: Cluster, k8s_namespace: str):
    require_process_kubelet(k8s_cluster)
    grant_get_pods(k8s_cluster.api, k8s_namespace, "reader")
    kubectl = (k8s_cluster.binaries or Binaries.from_cache()).kubectl
    script = (
        f'{kubectl} get pod "$HOSTNAME" -o name && ! {kubectl} get secrets '
        '&& cat "$TOKEN_FILE" | wc -c'
    )
    pod = run_pod(
        k8s_cluster.api,
        k8s_namespace,
        {
            "serviceAccountName": "reader",
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "bitnami/kubectl",
                    "command": ["sh", "-c", script],
                    "env": [
                        {
                            "name": "TOKEN_FILE",
                            "value": "/var/run/secrets/kubernetes.io/serviceaccount/token",
                        }
                    ],
                }
            ],
        },
    )
    log = k8s_cluster.pod_log(k8s_namespace, "probe")
    assert pod["status"]["phase"] == "Succeeded", log
    assert "pod/probe" in log
    assert "Forbidden" in log


def test_pod_sees_env_and_volumes_from_configmaps_secrets_and_downward_api(
    k8s_cluster: Cluster, k8s_namespace: str
):
    require_process_kubelet(k8s_cluster)
    api = k8s_cluster.api
    ns = k8s_namespace
    api.post(
        f"/api/v1/namespaces/{ns}/configmaps",
        {"metadata": {"name": "settings"}, "data": {"mode": "async"}},
    )
    secret = base64.b64encode(b"s3cret").decode()
    api.post(
        f"/api/v1/namespaces/{ns}/secrets",
        {"metadata": {"name": "creds"}, "data": {"password": secret}},
    )
    script = (
        "import json, os, sys; "
        "files = {p: open(p).read() for p in sys.argv[1:-1]}; "
        "open(sys.argv[-1] + '/out', 'w').write('x'); "
        "keys = ('MODE', 'PASSWORD', 'NS', 'POD_IP', 'GREETING'); "
        "print(json.dumps({'env': {k: os.environ[k] for k in keys}, 'files': files}))"
    )
    pod = run_pod(
        api,
        ns,
        {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "python:3.11-slim",
                    "command": ["python3", "-c", script],
                    "args": [
                        "/etc/settings/mode",
                        "/etc/creds/password",
                        "/etc/info/name",
                        "/scratch",
                    ],
                    "env": [
                        {
                            "name": "MODE",
                            "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}},
                        },
                        {
                            "name": "PASSWORD",
                            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
                        },
                        {
                            "name": "NS",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                        },
                        {"name": "GREETING", "value": "hello from $(NS)"},
                    ],
                    "volumeMounts": [
                        {"name": "settings", "mountPath": "/etc/settings"},
                        {"name": "creds", "mountPath": "/etc/creds"},
                        {"name": "info", "mountPath": "/etc/info"},
                        {"name": "scratch", "mountPath": "/scratch"},
                    ],
                }
            ],
            "volumes": [
                {"name": "settings", "configMap": {"name": "settings"}},
                {"name": "creds", "secret": {"secretName": "creds"}},
                {
                    "name": "info",
                    "downwardAPI": {
                        "items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]
                    },
                },
                {"name": "scratch", "emptyDir": {}},
            ],
        },
    )
    log = k8s_cluster.pod_log(ns, "probe")
    assert pod["status"]["phase"] == "Succeeded", log
    seen = json.loads(next(line for line in log.splitlines() if line.startswith("{")))
    assert seen["env"]["MODE"] == "async"
    assert seen["env"]["PASSWORD"] == "s3cret"
    assert seen["env"]["NS"] == ns
    assert seen["env"]["GREETING"] == f"hello from {ns}"
    assert seen["env"]["POD_IP"] == pod["status"]["podIP"]
    assert pod["status"]["podIP"].startswith("127.")
    assert sorted(seen["files"].values()) == sorted(["async", "s3cret", "probe"])
    assert h.pods(api, ns)[0]["status"]["containerStatuses"][0]["containerID"].startswith(
        "process://"
    )
