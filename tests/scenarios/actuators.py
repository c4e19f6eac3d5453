"""The two actuators of one InferenceEndpoint YAML, behind one small interface the scenarios
drive: ``infermodes up`` (a real process, its API and its gateway port) and the operator
installed with helm on the test control plane (kubectl apply, the chart's gateway, the process
kubelet's pods). Manifests are ``tests.support.local.document``'s: the examples with ``file://``
storage, which both can use (the pods are processes on this machine)."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import yaml

from infermodes.metrics import parse_worker_in_flight
from tests.cluster.api import KubeApi
from tests.e2e.operator_support import Tools, gateway_url, get_endpoint
from tests.support.local import Up
from tests.support.processes import INFERMODES

SMALL = {"cpu": "250m", "memory": "256Mi"}
BROKER_SECRET = "infermodes-rabbitmq"  # the example async manifest's brokerSecretRef


class Actuator(Protocol):
    """What a scenario needs from an actuator."""

    name: str  # "local" or "operator", for messages

    @property
    def url(self) -> str:
        """The gateway's base URL."""

    @property
    def metrics_url(self) -> str:
        """Where the gateway's /metrics are: its own port under ``up``, its side port (the
        chart's ``gateway.metricsPort``) on a cluster."""

    def apply(self, manifest: dict[str, Any]) -> None:
        """Create the endpoint (raises when it is refused)."""

    def status(self, name: str) -> dict[str, Any]:
        """The endpoint's status block (empty before the first)."""

    def processes(self, name: str) -> list[int]:
        """PIDs (process groups) of the endpoint's running processes: replicas or workers."""

    def in_flight(self, name: str) -> int:
        """Async requests the endpoint's workers hold right now."""


@dataclass
class LocalActuator:
    """``infermodes up``: manifests go through ``infermodes apply``, status through its API."""

    up: Up
    folder: Path
    name: str = "local"

    @property
    def url(self) -> str:
        return self.up.url

    @property
    def metrics_url(self) -> str:
        return f"{self.up.url}/metrics"

    def apply(self, manifest: dict[str, Any]) -> None:
        path = self.folder / f"{manifest['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(manifest))
        applied = subprocess.run([INFERMODES, "apply", "-f", str(path)], capture_output=True,
                                 text=True, timeout=60, env=self.up.cli_env)  # fmt: skip
        assert applied.returncode == 0, applied.stderr

    def status(self, name: str) -> dict[str, Any]:
        return self.up.status(name)

    def processes(self, name: str) -> list[int]:
        return [int(p["pid"]) for p in self.up.running(name)]

    def in_flight(self, name: str) -> int:
        return int((self.status(name).get("backlog") or {}).get("inFlight") or 0)


@dataclass
class OperatorActuator:
    """The chart's operator and gateway: ``kubectl apply`` into a namespace of the test's own
    (with the broker's Secret), status from the API server, processes from the kubelet."""

    tools: Tools
    namespace: str
    name: str = "operator"

    @property
    def api(self) -> KubeApi:
        return self.tools.cluster.api

    @property
    def url(self) -> str:
        url = gateway_url(self.tools)
        assert url is not None, "the chart's gateway is not ready"
        return url

    @property
    def metrics_url(self) -> str:
        url = gateway_url(self.tools, "metrics")
        assert url is not None, "the chart's gateway is not ready"
        return f"{url}/metrics"

    def apply(self, manifest: dict[str, Any]) -> None:
        """With small resources: the process kubelet's one node has room for a few pods."""
        block = manifest["spec"][manifest["spec"]["mode"]]
        if "resources" in block:
            block["resources"] = SMALL
        applied = self.tools.apply(manifest, self.namespace)
        assert applied.returncode == 0, applied.stderr

    def status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = (get_endpoint(self.api, self.namespace, name) or {}).get(
            "status"
        ) or {}
        return status

    def _pods(self, name: str) -> list[dict[str, Any]]:
        pods: list[dict[str, Any]] = self.api.get(
            f"/api/v1/namespaces/{self.namespace}/pods",
            labelSelector=f"infermodes.dev/endpoint={name}",
        )["items"]
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")]

    def processes(self, name: str) -> list[int]:
        kubelet = self.tools.cluster.kubelet
        assert kubelet is not None, "the scenarios need the process kubelet"
        running = kubelet.running_pids(self.namespace)
        keys = {f"{self.namespace}/{p['metadata']['name']}" for p in self._pods(name)}
        return [pid for key, pid in running.items() if key in keys]

    def in_flight(self, name: str) -> int:
        """From the workers' own metrics (the status's figure is the management API's, which
        samples every 5 s)."""
        total = 0.0
        for pod in self._pods(name):
            address = pod["status"].get("podIP")
            try:
                text = httpx.get(f"http://{address}:9090/metrics", timeout=5).text
            except httpx.HTTPError:
                continue
            total += parse_worker_in_flight(text) or 0.0
        return int(total)


def kill(pid: int) -> None:
    """SIGKILL a process group, as a crash or an OOM kill would end it."""
    os.killpg(pid, signal.SIGKILL)
