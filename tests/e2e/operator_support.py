"""Installing the chart and driving InferenceEndpoints the way users do: helm and kubectl."""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.api import ApiError, KubeApi
from tests.cluster.controlplane import Binaries
from tests.cluster.harness import Cluster
from tests.support.processes import REPO, wait_until

CHART = REPO / "charts/infermodes"
OPERATOR_NAMESPACE = "infermodes-system"
RELEASE = "infermodes"
IE_PATH = "/apis/infermodes.dev/v1alpha1/namespaces/{ns}/inferenceendpoints"
CRD_PATH = (
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/inferenceendpoints.infermodes.dev"
)
# a spec.image the CRD refuses (RE2's \s is ASCII's, so it once took it) and the operator
# cannot parse: what an older CRD lets through
UNPARSABLE_IMAGE = "registry.example/x:1\u00a0"


@dataclass
class Tools:
    cluster: Cluster

    @property
    def env(self) -> dict[str, str]:
        home = self.cluster.kubeconfig.parent
        return {"KUBECONFIG": str(self.cluster.kubeconfig), "HOME": str(home),
                "PATH": "/usr/local/bin:/usr/bin:/bin"}  # fmt: skip

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        binary = (self.cluster.binaries or Binaries.from_cache()).kubectl
        return subprocess.run([str(binary), *args], input=stdin, env=self.env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        binary = (self.cluster.binaries or Binaries.from_cache()).helm
        return subprocess.run([str(binary), *args], env=self.env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    def apply(self, manifest: dict[str, Any], namespace: str) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))


def endpoint_manifest(name: str, model_uri: str, **realtime: Any) -> dict[str, Any]:
    """The example manifest with its model URI (and any realtime fields) replaced."""
    manifest = yaml.safe_load((REPO / "examples/abalone/realtime.yaml").read_text())
    manifest["metadata"]["name"] = name
    manifest["spec"]["model"]["uri"] = model_uri
    manifest["spec"]["realtime"].update(realtime)
    return manifest


def get_endpoint(api: KubeApi, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return api.get(f"{IE_PATH.format(ns=namespace)}/{name}")
    except ApiError as err:
        if err.status == 404:
            return None
        raise


def wait_phase(
    api: KubeApi,
    namespace: str,
    name: str,
    phase: str,
    timeout: float = 180,
    also: Callable[[dict[str, Any]], bool] = lambda _: True,
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def reached() -> bool:
        endpoint = get_endpoint(api, namespace, name) or {}
        seen.update(endpoint)
        status = endpoint.get("status") or {}
        return status.get("phase") == phase and also(endpoint)

    try:
        wait_until(reached, timeout, f"{name} to reach {phase}", interval=0.5)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; last status: {json.dumps(seen.get('status'))}") from None
    return seen


def ready_pod_ips(api: KubeApi, namespace: str, endpoint: str) -> list[str]:
    pods = api.get(f"/api/v1/namespaces/{namespace}/pods",
                   labelSelector=f"infermodes.dev/endpoint={endpoint}")["items"]  # fmt: skip
    ips = []
    for pod in pods:
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        if conditions.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
            ips.append(pod["status"]["podIP"])
    return sorted(ips)


def install_operator(tools: Tools, resync_seconds: int = 2, **values: str | list[str]) -> None:
    """helm install the chart; ``values`` are more ``--set`` pairs (lists as JSON)."""
    extra = [
        arg
        for key, value in values.items()
        for arg in (("--set", f"{key}={value}") if isinstance(value, str)
                    else ("--set-json", f"{key}={json.dumps(value)}"))
    ]  # fmt: skip
    result = tools.helm("upgrade", "--install", RELEASE, str(CHART), "--namespace",
                        OPERATOR_NAMESPACE, "--create-namespace",
                        "--set", f"operator.resyncSeconds={resync_seconds}",
                        # each test has its own namespace: the gateway serves them all
                        "--set", "gateway.namespaces={*}", "--set", "gateway.drainDelaySeconds=0",
                        "--set", "operator.logLevel=debug", *extra)  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"helm install failed:\n{result.stdout}\n{result.stderr}")


def operator_pods(api: KubeApi) -> list[dict[str, Any]]:
    return api.get(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods",
                   labelSelector="app.kubernetes.io/component=operator")["items"]  # fmt: skip


def model_copy(tarball: Path, directory: Path) -> str:
    """A file:// URI the pods (local processes) can read."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "model.tar.gz"
    target.write_bytes(tarball.read_bytes())
    return f"file://{target}"


def gateway_url(tools: Tools, port_name: str = "http") -> str | None:
    """The ready gateway pod's address (pods are reached by IP on the process kubelet) on its
    container port ``port_name`` (``metrics``: the side port of its /metrics)."""
    path = f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods"
    pods = tools.cluster.api.get(path, labelSelector="app.kubernetes.io/component=gateway")
    for pod in pods["items"]:
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        if conditions.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
            ports = pod["spec"]["containers"][0]["ports"]
            port = next(p["containerPort"] for p in ports if p["name"] == port_name)
            return f"http://{pod['status']['podIP']}:{port}"
    return None


def to_csv(rows: Any) -> bytes:
    """Rows as the CSV body of an invocation, every float written exactly."""
    return "\n".join(",".join(repr(float(v)) for v in row) for row in rows).encode()


def edit_finalizers(api: KubeApi, path: str, change: Callable[[list[str]], list[str]]) -> None:
    """Set the object's finalizers to ``change`` of those it has now, against its
    resourceVersion: a controller (kopf) adds and removes its own meanwhile, and a list read
    before that would undo its change (or, once the object is being deleted, be refused for
    adding back the one it just removed). Read again and retried when it moved."""
    for _ in range(20):
        metadata = api.get(path)["metadata"]
        finalizers = metadata.get("finalizers") or []
        wanted = change(finalizers)
        if wanted == finalizers:
            return
        patch = {"finalizers": wanted, "resourceVersion": metadata["resourceVersion"]}
        try:
            api.merge_patch(path, {"metadata": patch})
            return
        except ApiError as err:
            if err.status not in (409, 422):  # moved on since the read: read again
                raise
    raise AssertionError(f"the finalizers of {path} kept changing under 20 edits")


def namespace_gone(api: KubeApi, name: str) -> bool:
    try:
        api.get(f"/api/v1/namespaces/{name}")
    except ApiError as err:
        return err.status == 404
    return False


@contextlib.contextmanager
def installed_chart(cluster: Cluster, **values: str | list[str]) -> Iterator[Tools]:
    """The chart installed with helm, its operator running and its gateway ready; uninstalled
    (its pods' processes gone, and its namespace) afterwards."""
    tools = Tools(cluster)
    install_operator(tools, **values)
    api = cluster.api
    wait_until(lambda: any(p["status"].get("phase") == "Running" for p in operator_pods(api)),
               120, "the operator pod to run")  # fmt: skip
    wait_until(lambda: gateway_url(tools) is not None, 120, "the gateway to be ready")
    try:
        yield tools
    finally:
        tools.helm("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait")
        # an endpoint a failed test left would keep the namespace terminating for good: the
        # operator that removes its finalizer is gone now, and so would every later module be
        left = f"/apis/infermodes.dev/v1alpha1/namespaces/{OPERATOR_NAMESPACE}/inferenceendpoints"
        for item in api.get(left)["items"]:
            print(f"left by a test, its finalizers removed: {item['metadata']['name']}")
            with contextlib.suppress(ApiError):  # gone meanwhile (404)
                edit_finalizers(api, f"{left}/{item['metadata']['name']}", lambda _: [])
        api.delete(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}")
        if cluster.kubelet is not None:
            kubelet = cluster.kubelet
            wait_until(lambda: not kubelet.running_pids(OPERATOR_NAMESPACE), 60,
                       "the chart to stop")  # fmt: skip
        # the next module installs the chart again into a namespace of the same name
        wait_until(lambda: namespace_gone(api, OPERATOR_NAMESPACE), 120, "the namespace to go")


def secret(cluster: Cluster, name: str, data: dict[str, str]) -> None:
    """A Secret of ``data`` in the chart's namespace."""
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}
    cluster.api.post(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/secrets", body)


@contextlib.contextmanager
def older_crd(tools: Tools, manifest: dict[str, Any], namespace: str) -> Iterator[None]:
    """``manifest`` applied with ``UNPARSABLE_IMAGE`` through a CRD as an older one (the image
    pattern taken out: helm never upgrades a chart's CRDs), restored afterwards."""
    api = tools.cluster.api
    versions = api.get(CRD_PATH)["spec"]["versions"]
    older = copy.deepcopy(versions)
    del older[0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["image"][
        "pattern"
    ]
    unparsable = copy.deepcopy(manifest)
    unparsable["spec"]["image"] = UNPARSABLE_IMAGE
    api.merge_patch(CRD_PATH, {"spec": {"versions": older}})
    try:
        wait_until(lambda: tools.apply(unparsable, namespace).returncode == 0, 60,
                   "the older CRD to take the spec")  # fmt: skip
        yield
    finally:
        api.merge_patch(CRD_PATH, {"spec": {"versions": versions}})
