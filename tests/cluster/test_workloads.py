"""Deployments, Services and Jobs on the harness: real controllers, pods as processes."""

from __future__ import annotations

import re

import httpx

from tests.cluster import helpers as h
from tests.cluster.harness import Cluster
from tests.cluster.kubelet import JOB_INDEX_ANNOTATION, pid_alive
from tests.cluster.plugin import require_process_kubelet
from tests.support.processes import wait_until


def start_web(cluster: Cluster, namespace: str, replicas: int) -> None:
    cluster.api.post(h.deployment_path(namespace), h.http_server_deployment("web", replicas))
    cluster.api.post(f"/api/v1/namespaces/{namespace}/services", h.service("web"))
    h.wait_ready_replicas(cluster.api, namespace, "web", replicas)


def test_deployment_becomes_ready_and_endpointslice_lists_answering_pods(
    k8s_cluster: Cluster, k8s_namespace: str
):
    api = k8s_cluster.api
    start_web(k8s_cluster, k8s_namespace, 2)
    pod_ips = h.ready_pod_ips(api, k8s_namespace, "app=web")
    assert len(pod_ips) == 2

    wait_until(
        lambda: h.endpoint_ips(api, k8s_namespace, "web") == pod_ips,
        60,
        "EndpointSlice with both pod IPs",
    )
    for ip in h.endpoint_ips(api, k8s_namespace, "web"):
        answer = httpx.get(f"http://{ip}:{h.HTTP_PORT}/", timeout=5)
        assert answer.status_code == 200


def test_scaling_to_zero_stops_processes_and_to_three_starts_three(
    k8s_cluster: Cluster, k8s_namespace: str
):
    require_process_kubelet(k8s_cluster)
    kubelet = k8s_cluster.kubelet
    assert kubelet is not None
    api = k8s_cluster.api
    start_web(k8s_cluster, k8s_namespace, 2)
    before = kubelet.running_pids(k8s_namespace)
    assert len(before) == 2

    api.merge_patch(h.deployment_path(k8s_namespace, "web"), {"spec": {"replicas": 0}})
    wait_until(lambda: not h.pods(api, k8s_namespace), 60, "the pods to be deleted")
    assert not any(pid_alive(pid) for pid in before.values())
    assert kubelet.running_pids(k8s_namespace) == {}

    api.merge_patch(h.deployment_path(k8s_namespace, "web"), {"spec": {"replicas": 3}})
    h.wait_ready_replicas(api, k8s_namespace, "web", 3)
    after = kubelet.running_pids(k8s_namespace)
    assert len(after) == 3
    assert all(pid_alive(pid) for pid in after.values())


def test_deleting_a_deployment_leaves_no_process(k8s_cluster: Cluster, k8s_namespace: str):
    require_process_kubelet(k8s_cluster)
    kubelet = k8s_cluster.kubelet
    assert kubelet is not None
    api = k8s_cluster.api
    start_web(k8s_cluster, k8s_namespace, 2)
    pids = list(kubelet.running_pids(k8s_namespace).values())
    assert len(pids) == 2

    api.delete(h.deployment_path(k8s_namespace, "web"), {"propagationPolicy": "Foreground"})
    wait_until(
        lambda: h.gone(api, h.deployment_path(k8s_namespace, "web")),
        60,
        "the deployment to be gone",
    )
    wait_until(lambda: not h.pods(api, k8s_namespace), 60, "its pods to be gone")
    assert [pid for pid in pids if pid_alive(pid)] == []


def indexed_job(name: str) -> dict:
    script = "import os; print('completion-index=' + os.environ['JOB_COMPLETION_INDEX'])"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completionMode": "Indexed",
            "completions": 3,
            "parallelism": 3,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "work",
                            "image": "python:3.11-slim",
                            "command": ["python3", "-c", script],
                        }
                    ],
                }
            },
        },
    }


def test_indexed_job_runs_each_index_and_completes(k8s_cluster: Cluster, k8s_namespace: str):
    api = k8s_cluster.api
    api.post(h.job_path(k8s_namespace), indexed_job("shards"))
    wait_until(
        lambda: h.job_condition(api, k8s_namespace, "shards", "Complete"),
        120,
        "the job to complete",
    )

    job_pods = h.pods(api, k8s_namespace, "job-name=shards")
    succeeded = [p for p in job_pods if p["status"]["phase"] == "Succeeded"]
    assert len(succeeded) == 3
    seen = set()
    for pod in succeeded:
        index = pod["metadata"]["annotations"][JOB_INDEX_ANNOTATION]
        if k8s_cluster.kubelet is not None:
            printed = re.findall(
                r"completion-index=(\d+)",
                k8s_cluster.pod_log(k8s_namespace, pod["metadata"]["name"]),
            )
            assert printed == [index]
        seen.add(index)
    assert seen == {"0", "1", "2"}


def test_failing_job_reaches_failed_after_backoff_limit(k8s_cluster: Cluster, k8s_namespace: str):
    api = k8s_cluster.api
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "broken"},
        "spec": {
            "backoffLimit": 1,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "work", "image": "busybox", "command": ["sh", "-c", "exit 1"]}
                    ],
                }
            },
        },
    }
    api.post(h.job_path(k8s_namespace), job)
    wait_until(
        lambda: h.job_condition(api, k8s_namespace, "broken", "Failed"), 120, "the job to fail"
    )

    failed = [
        p for p in h.pods(api, k8s_namespace, "job-name=broken") if p["status"]["phase"] == "Failed"
    ]
    assert len(failed) == 2  # the first try and one retry (backoffLimit 1)
    for pod in failed:
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1


def test_a_deleted_job_pod_that_never_started_is_gone(k8s_cluster: Cluster, k8s_namespace: str):
    """A pod waiting on a Secret that does not exist never starts; deleted, it still turns
    terminal, so the Job controller drops its tracking finalizer and the pod (and the node's
    room it held) is gone, as with the real kubelet."""
    api = k8s_cluster.api
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "waiting"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "work", "image": "busybox", "command": ["true"],
                            "envFrom": [{"secretRef": {"name": "no-such-secret"}}]}],
        }}},
    }  # fmt: skip
    api.post(h.job_path(k8s_namespace), job)

    def waiting() -> bool:
        found = h.pods(api, k8s_namespace, "job-name=waiting")
        states = [c["state"] for p in found for c in p["status"].get("containerStatuses", [])]
        reasons = {s.get("waiting", {}).get("reason") for s in states}
        return "CreateContainerConfigError" in reasons

    wait_until(waiting, 60, "the pod to wait on its Secret")
    (pod,) = h.pods(api, k8s_namespace, "job-name=waiting")
    api.delete(f"/api/v1/namespaces/{k8s_namespace}/pods/{pod['metadata']['name']}")
    wait_until(
        lambda: (
            pod["metadata"]["uid"]
            not in {p["metadata"]["uid"] for p in h.pods(api, k8s_namespace, "job-name=waiting")}
        ),
        60,
        "the deleted pod to be gone",
    )
