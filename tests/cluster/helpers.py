"""Manifests and waits shared by the harness tests (and usable by later e2e tests)."""

from __future__ import annotations

from typing import Any

from tests.cluster.api import ApiError, KubeApi
from tests.support.processes import wait_until

HTTP_PORT = 8080


def http_server_deployment(name: str, replicas: int) -> dict[str, Any]:
    """A Deployment of `python3 -m http.server` bound to the pod IP, with a readiness probe."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "web",
                            "image": "python:3.11-slim",
                            "command": ["python3", "-m", "http.server", str(HTTP_PORT)],
                            "args": ["--bind", "$(MY_POD_IP)"],
                            "env": [
                                {
                                    "name": "MY_POD_IP",
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                }
                            ],
                            "ports": [{"name": "http", "containerPort": HTTP_PORT}],
                            "readinessProbe": {
                                "httpGet": {"path": "/", "port": "http"},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": HTTP_PORT}],
        },
    }


def deployment_path(namespace: str, name: str = "") -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments" + (f"/{name}" if name else "")


def job_path(namespace: str, name: str = "") -> str:
    return f"/apis/batch/v1/namespaces/{namespace}/jobs" + (f"/{name}" if name else "")


def pods(api: KubeApi, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    params = {"labelSelector": selector} if selector else {}
    return api.get(f"/api/v1/namespaces/{namespace}/pods", **params)["items"]


def ready_pod_ips(api: KubeApi, namespace: str, selector: str) -> set[str]:
    return {
        p["status"]["podIP"]
        for p in pods(api, namespace, selector)
        if not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", [])
        )
    }


def wait_ready_replicas(
    api: KubeApi, namespace: str, name: str, count: int, timeout_s: float = 90
) -> None:
    def ready() -> bool:
        status = api.get(deployment_path(namespace, name)).get("status", {})
        return status.get("readyReplicas", 0) == count and status.get("replicas", 0) == count

    wait_until(
        ready, timeout_s, f"deployment {namespace}/{name} to have {count} ready replicas", 0.2
    )


def endpoint_ips(api: KubeApi, namespace: str, service_name: str) -> set[str]:
    """Ready addresses in the Service's EndpointSlices (written by the endpointslice controller)."""
    slices = api.get(
        f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
        labelSelector=f"kubernetes.io/service-name={service_name}",
    )["items"]
    return {
        address
        for s in slices
        for endpoint in s.get("endpoints") or []
        if endpoint.get("conditions", {}).get("ready")
        for address in endpoint["addresses"]
    }


def job_condition(api: KubeApi, namespace: str, name: str, kind: str) -> bool:
    conditions = api.get(job_path(namespace, name)).get("status", {}).get("conditions") or []
    return any(c["type"] == kind and c["status"] == "True" for c in conditions)


def gone(api: KubeApi, path: str) -> bool:
    try:
        api.get(path)
    except ApiError as err:
        if err.status == 404:
            return True
        raise
    return False
