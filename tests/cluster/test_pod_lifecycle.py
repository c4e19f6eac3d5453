"""The process kubelet's own rules: restarts, and SIGKILL after the grace period."""

from __future__ import annotations

from tests.cluster import helpers as h
from tests.cluster.api import KubeApi
from tests.cluster.harness import Cluster
from tests.cluster.kubelet import pid_alive
from tests.cluster.plugin import require_process_kubelet
from tests.support.processes import wait_until

# Fails on the first run, succeeds on the second: the emptyDir outlives a restart.
FAIL_ONCE = (
    "import os, sys; m = sys.argv[1] + '/tried'; tried = os.path.exists(m); "
    "open(m, 'w').close(); sys.exit(0 if tried else 3)"
)
IGNORE_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ignoring' + '-sigterm', flush=True); time.sleep(600)"
)


def pod(name: str, policy: str, script: str, args: list[str], **spec: object) -> dict:
    return {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": policy,
            "containers": [
                {
                    "name": "main",
                    "image": "python:3.11-slim",
                    "command": ["python3", "-c", script],
                    "args": args,
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                }
            ],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            **spec,
        },
    }


def phase(api: KubeApi, namespace: str, name: str) -> str:
    return api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")["status"].get("phase", "")


def test_on_failure_restarts_until_the_command_succeeds(k8s_cluster: Cluster, k8s_namespace: str):
    require_process_kubelet(k8s_cluster)
    api = k8s_cluster.api
    api.post(
        f"/api/v1/namespaces/{k8s_namespace}/pods",
        pod("flaky", "OnFailure", FAIL_ONCE, ["/scratch"]),
    )
    wait_until(lambda: phase(api, k8s_namespace, "flaky") == "Succeeded", 60, "the pod to succeed")
    status = h.pods(api, k8s_namespace)[0]["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 3


def test_a_restarted_container_reads_its_secret_env_anew(k8s_cluster: Cluster, k8s_namespace: str):
    """As the real kubelet does: env is resolved at every container start, so a Secret mended
    after a crash reaches the restarted container."""
    require_process_kubelet(k8s_cluster)
    api = k8s_cluster.api
    secrets = f"/api/v1/namespaces/{k8s_namespace}/secrets"
    api.post(secrets, {"metadata": {"name": "word"}, "stringData": {"word": "wrong"}})
    script = "import os, sys; print('word=' + os.environ['WORD'], flush=True); sys.exit(" \
        "0 if os.environ['WORD'] == 'right' else 3)"  # fmt: skip
    spec = pod("reads", "OnFailure", script, [])
    spec["spec"]["containers"][0]["env"] = [
        {"name": "WORD", "valueFrom": {"secretKeyRef": {"name": "word", "key": "word"}}}
    ]
    api.post(f"/api/v1/namespaces/{k8s_namespace}/pods", spec)

    def exited_once() -> bool:
        statuses = h.pods(api, k8s_namespace)[0]["status"].get("containerStatuses") or [{}]
        return "terminated" in statuses[0].get("lastState", {})

    wait_until(exited_once, 60, "the container to exit with the wrong word")
    api.merge_patch(f"{secrets}/word", {"stringData": {"word": "right"}})
    wait_until(lambda: phase(api, k8s_namespace, "reads") == "Succeeded", 60, "the pod to succeed")


# Prints the file it is given whenever its content changes, for at most 5 minutes.
FOLLOW_FILE = """import pathlib, sys, time
path, seen = pathlib.Path(sys.argv[1]), None
for _ in range(3000):
    word = path.read_text()
    if word != seen:
        print("word=" + word, flush=True)
        seen = word
    time.sleep(0.1)
"""


def test_a_running_container_sees_its_mounted_secret_edited(
    k8s_cluster: Cluster, k8s_namespace: str
):
    """As the real kubelet does (within about a minute there): a mounted Secret's files follow
    the object, so a process that reads them again takes a rotated credential without a
    restart (an env var keeps the value it started with)."""
    require_process_kubelet(k8s_cluster)
    api = k8s_cluster.api
    secrets = f"/api/v1/namespaces/{k8s_namespace}/secrets"
    api.post(secrets, {"metadata": {"name": "word"}, "stringData": {"word": "before"}})
    spec = pod("follows", "Always", FOLLOW_FILE, ["/etc/word/current"])
    spec["spec"]["containers"][0]["volumeMounts"].append(
        {"name": "word", "mountPath": "/etc/word", "readOnly": True}
    )
    items = [{"key": "word", "path": "current"}]
    spec["spec"]["volumes"].append({"name": "word", "secret": {"secretName": "word",
                                                               "items": items}})  # fmt: skip
    api.post(f"/api/v1/namespaces/{k8s_namespace}/pods", spec)
    wait_until(lambda: "word=before" in k8s_cluster.pod_log(k8s_namespace, "follows"), 60,
               "the container to read the mounted Secret")  # fmt: skip
    api.merge_patch(f"{secrets}/word", {"stringData": {"word": "after"}})
    wait_until(lambda: "word=after" in k8s_cluster.pod_log(k8s_namespace, "follows"), 30,
               "the mounted file to follow the Secret")  # fmt: skip
    status = h.pods(api, k8s_namespace)[0]["status"]["containerStatuses"][0]
    assert status["restartCount"] == 0


def test_never_ends_failed_with_the_exit_code(k8s_cluster: Cluster, k8s_namespace: str):
    api = k8s_cluster.api
    api.post(
        f"/api/v1/namespaces/{k8s_namespace}/pods", pod("once", "Never", FAIL_ONCE, ["/scratch"])
    )
    wait_until(lambda: phase(api, k8s_namespace, "once") == "Failed", 60, "the pod to fail")
    status = h.pods(api, k8s_namespace)[0]["status"]["containerStatuses"][0]
    assert status["state"]["terminated"]["exitCode"] == 3
    assert status["restartCount"] == 0


def test_deletion_kills_a_process_that_ignores_sigterm_after_the_grace_period(
    k8s_cluster: Cluster, k8s_namespace: str
):
    require_process_kubelet(k8s_cluster)
    kubelet = k8s_cluster.kubelet
    api = k8s_cluster.api
    api.post(
        f"/api/v1/namespaces/{k8s_namespace}/pods",
        pod("stubborn", "Always", IGNORE_SIGTERM, [], terminationGracePeriodSeconds=2),
    )
    # The marker is assembled at run time, so the logged command line cannot match it.
    wait_until(
        lambda: "ignoring-sigterm" in k8s_cluster.pod_log(k8s_namespace, "stubborn"),
        60,
        "the process to ignore SIGTERM",
    )
    pid = kubelet.running_pids(k8s_namespace)[f"{k8s_namespace}/stubborn"]

    api.delete(f"/api/v1/namespaces/{k8s_namespace}/pods/stubborn")
    wait_until(
        lambda: h.gone(api, f"/api/v1/namespaces/{k8s_namespace}/pods/stubborn"),
        60,
        "the pod object to go",
    )
    assert not pid_alive(pid)
    assert "exit code -9" in k8s_cluster.pod_log(k8s_namespace, "stubborn")
