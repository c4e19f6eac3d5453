"""A process kubelet: one Node whose pods run as local processes, for a cluster without Docker.

What it does, and the rules a pod's command must live by:

- Registers one Node with the machine's CPU and memory as capacity, renews its Lease and the
  Ready condition every few seconds. It speaks as `system:node:<name>`, so the Node authorizer and
  NodeRestriction apply to it as to a real kubelet.
- Each pod bound to the node gets its own loopback IP, 127.<n>.x.y, as `status.podIP`, and the env
  var `POD_IP`. Servers must bind to it (there is no network namespace); nothing routes
  Service ClusterIPs (no kube-proxy), so clients find pods through EndpointSlices.
- The first container's `command` + `args` run as a local process in its own process group (the
  image is ignored; the command must exist here; PATH starts with this Python's bin directory).
  Env: values with `$(VAR)` expansion, `fieldRef`, `secretKeyRef`, `configMapKeyRef`, `envFrom`,
  resolved again at every restart.
- Volumes (`emptyDir`, `configMap`, `secret`, `downwardAPI`, `projected`, `hostPath`) become
  directories under the pod's directory; the files of ConfigMaps and Secrets are written again
  from their objects every few seconds while the container runs (each by a rename), as the real
  kubelet updates them (also under a `subPath` here, which the real one leaves as it was).
  **Path rewrite**: a volumeMount at `/etc/x` is found at
  `$INFERMODES_POD_ROOT/etc/x`; any command word, argument or env value that is a mount path or
  lies under one (also after `--flag=`) is rewritten to that place, so manifests keep their paths.
  The container's terminationMessagePath counts as a mount, as the real kubelet mounts it.
- A pod that mounts a service-account token (the default) also gets `KUBECONFIG` pointing to a
  kubeconfig built from a real TokenRequest token bound to the pod; tokens are refreshed at 80 %
  of their lifetime, like the real kubelet does.
- Readiness probes (httpGet, tcpSocket, exec) set the Ready condition; liveness and startup
  probes are not run.
- restartPolicy: Always restarts (back-off 1 s doubling to 60 s, shorter than the real 10 s..5 min
  so tests stay quick), OnFailure restarts on a non-zero exit, Never ends the pod; a pod that ends
  is Succeeded (exit 0) or Failed.
- Deletion: SIGTERM to the process group, the grace period, SIGKILL, then the pod object is
  deleted with gracePeriodSeconds=0.
- stdout and stderr of each pod go to one log file (see `log_path`); the container status's
  `containerID` is `process://<pid>`.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.cluster.api import ApiError, KubeApi
from tests.cluster.controlplane import killed_with_parent, stop_process_group, write_kubeconfig

log = logging.getLogger("infermodes.kubelet")

HEARTBEAT_S = 5.0
LEASE_DURATION_S = 40
TOKEN_EXPIRATION_S = 3600
VOLUME_SYNC_S = 2.0  # the real kubelet's sync is about a minute; tests want it quicker
MANAGED_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")
JOB_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


class PodConfigError(Exception):
    """The pod cannot start yet or ever (missing secret, unsupported field): reported as the
    container's waiting reason, retried like the real kubelet's CreateContainerConfigError."""


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pod_path(namespace: str, name: str, sub: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}{sub}"


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


class IpPool:
    """Hands out 127.<n>.x.y addresses; <n> is random per kubelet so two harnesses rarely meet.

    <n> starts at 16: 127.0/16 holds the control plane, 127.1.0/24 the Service ClusterIPs.
    """

    def __init__(self) -> None:
        self._second = random.randint(16, 250)
        self._used: set[str] = set()
        self._next = 0
        self._lock = threading.Lock()

    def acquire(self) -> str:
        with self._lock:
            for _ in range(254 * 254):
                self._next = self._next % (254 * 254) + 1
                ip = (
                    f"127.{self._second}.{(self._next - 1) // 254 + 1}.{(self._next - 1) % 254 + 1}"
                )
                if ip not in self._used:
                    self._used.add(ip)
                    return ip
        raise RuntimeError("no free pod IP left")

    def release(self, ip: str) -> None:
        with self._lock:
            self._used.discard(ip)


@dataclass
class Token:
    """A service-account token file kept fresh by the pod worker."""

    path: Path
    audience: str | None
    expiration_s: int
    refresh_at: float = 0.0


@dataclass
class Probe:
    """State of the readiness probe: consecutive results and when to run next."""

    spec: dict[str, Any]
    next_at: float
    successes: int = 0
    failures: int = 0


@dataclass
class ContainerRun:
    """What the status reports about the container."""

    restart_count: int = 0
    started_at: str | None = None
    last_terminated: dict[str, Any] | None = None
    terminated: dict[str, Any] | None = None
    waiting: dict[str, str] | None = None
    ready: bool = False
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)


class ProcessKubelet:
    """Runs the pods bound to one Node as processes; start() returns once the Node is registered."""

    def __init__(
        self, kubeconfig: Path, node_name: str, state_dir: Path, kubelet_version: str
    ) -> None:
        self.kubeconfig = kubeconfig
        self.node_name = node_name
        self.state_dir = state_dir
        self.kubelet_version = kubelet_version
        self.api = KubeApi.from_kubeconfig(kubeconfig)
        self.ips = IpPool()
        self.stopping = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    # -- public -------------------------------------------------------------------------------

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._register()
        for target in (self._heartbeat_loop, self._watch_loop):
            thread = threading.Thread(target=target, name=f"kubelet-{target.__name__}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        """Stop every pod process (pods keep their objects) and the kubelet's own threads."""
        self.stopping.set()
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.wake.set()
        for thread in [*workers, *self.threads]:
            thread.join(timeout=30)
        self.api.close()

    def log_path(self, namespace: str, name: str) -> Path | None:
        """The newest log file of the pod namespace/name, or None if it never ran here."""
        logs = sorted(
            (self.state_dir / "pods").glob(f"{namespace}_{name}_*/container.log"),
            key=lambda p: p.stat().st_mtime,
        )
        return logs[-1] if logs else None

    def running_pids(self, namespace: str | None = None) -> dict[str, int]:
        """`namespace/name` -> PID of each pod process that runs now."""
        with self.lock:
            workers = list(self.workers.values())
        return {
            f"{w.namespace}/{w.name}": w.proc.pid
            for w in workers
            if w.proc is not None
            and w.proc.returncode is None
            and (namespace in (None, w.namespace))
        }

    # -- node -----------------------------------------------------------------------------------

    def _register(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "infermodes.dev/process-kubelet": "true",
                },
            },
        }
        try:
            self.api.post("/api/v1/nodes", node)
        except ApiError as err:
            if err.status != 409:
                raise
        self._update_node_status()
        self._renew_lease()

    def _update_node_status(self) -> None:
        mem_kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
        resources = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{mem_kib}Ki",
            "pods": "110",
            "ephemeral-storage": "50Gi",
        }
        stamp = now()
        conditions = [
            {"type": t, "status": "False", "reason": r, "message": m, "lastHeartbeatTime": stamp}
            for t, r, m in (
                (
                    "MemoryPressure",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            )
        ]
        conditions.append(
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "process kubelet is posting ready status",
                "lastHeartbeatTime": stamp,
            }
        )
        status = {
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "process kubelet (infermodes tests)",
                "containerRuntimeVersion": "process://1",
                "kubeletVersion": self.kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        self.api.request(
            "PATCH",
            f"/api/v1/nodes/{self.node_name}/status",
            {"status": status},
            content_type="application/strategic-merge-patch+json",
        )

    def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        spec = {
            "holderIdentity": self.node_name,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "renewTime": now_micro(),
        }
        try:
            self.api.merge_patch(path, {"spec": spec})
        except ApiError as err:
            if err.status != 404:
                raise
            self.api.post(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.node_name},
                    "spec": spec,
                },
            )

    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(HEARTBEAT_S):
            try:
                self._renew_lease()
                self._update_node_status()
            except (ApiError, httpx.HTTPError) as err:
                log.warning("heartbeat failed: %s", err)

    # -- pods -----------------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        """List, then watch from the list's resourceVersion; relist when the watch expires."""
        selector = f"spec.nodeName={self.node_name}"
        while not self.stopping.is_set():
            try:
                listing = self.api.get("/api/v1/pods", fieldSelector=selector)
                seen = {pod["metadata"]["uid"] for pod in listing["items"]}
                for pod in listing["items"]:
                    self._observe(pod)
                with self.lock:
                    vanished = [w for uid, w in self.workers.items() if uid not in seen]
                for worker in vanished:
                    worker.observe(None)
                version = listing["metadata"]["resourceVersion"]
                while not self.stopping.is_set():
                    version = self._watch_once(selector, version)
            except _Relist:
                continue
            except (ApiError, httpx.HTTPError) as err:
                log.warning("pod watch failed, relisting: %s", err)
                self.stopping.wait(1.0)

    def _watch_once(self, selector: str, version: str) -> str:
        for event in self.api.watch(
            "/api/v1/pods", version, idle_timeout_s=1.0, fieldSelector=selector
        ):
            obj = event["object"]
            if event["type"] == "ERROR":
                raise _Relist
            version = obj["metadata"].get("resourceVersion", version)
            if event["type"] == "BOOKMARK":
                continue
            if event["type"] == "DELETED":
                with self.lock:
                    worker = self.workers.get(obj["metadata"]["uid"])
                if worker:
                    worker.observe(None)
            else:
                self._observe(obj)
            if self.stopping.is_set():
                break
        return version

    def _observe(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if worker is None:
                if uid in self.finished or self.stopping.is_set():
                    return
                worker = PodWorker(self, pod)
                self.workers[uid] = worker
                worker.start()
        worker.observe(pod)

    def forget(self, uid: str) -> None:
        with self.lock:
            self.workers.pop(uid, None)
            self.finished.add(uid)


class _Relist(Exception):
    """The watch reported an error (e.g. 410 Gone): start again from a list."""


class PodWorker(threading.Thread):
    """Owns one pod: its directory, IP, process, probes and status, until the pod is gone."""

    def __init__(self, kubelet: ProcessKubelet, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.kubelet = kubelet
        self.api = kubelet.api
        self.pod = pod
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.container: dict[str, Any] = pod["spec"]["containers"][0]
        self.dir = kubelet.state_dir / "pods" / f"{self.namespace}_{self.name}_{self.uid}"
        self.root = self.dir / "root"
        self.wake = threading.Event()
        self.gone = False
        self.proc: subprocess.Popen[bytes] | None = None
        self.ip: str | None = None
        self.run_state = ContainerRun()
        self.phase = "Pending"
        self.start_time = now()
        self.argv: list[str] = []
        self.env: dict[str, str] = {}
        self.cwd = self.dir
        self.mounts: list[tuple[str, Path]] = []
        self.tokens: list[Token] = []
        self.volumes_synced_at = 0.0
        self.probe: Probe | None = None
        self.backoff_s = 1.0
        self.restart_at = 0.0
        self.last_status: dict[str, Any] | None = None

    def observe(self, pod: dict[str, Any] | None) -> None:
        """Take the newest pod object (None: it was deleted from the API)."""
        if pod is None:
            self.gone = True
        else:
            self.pod = pod
        self.wake.set()

    # -- life cycle -----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod worker %s/%s failed", self.namespace, self.name)
        finally:
            if self.proc is not None and self.proc.returncode is None:
                stop_process_group(self.proc, 5.0)
            if self.ip:
                self.kubelet.ips.release(self.ip)
            self.kubelet.forget(self.uid)

    def _run(self) -> None:
        if self.pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            self.phase = self.pod["status"]["phase"]
            self._idle_until_deleted()
            return
        self.ip = self.kubelet.ips.acquire()
        self.dir.mkdir(parents=True, exist_ok=True)
        while not self._prepared():
            if self._should_leave():
                return
            self.wake.wait(1.0)
            self.wake.clear()
        while not self._should_leave():
            if self.phase == "Running":
                self._tick()
            else:
                self._idle_until_deleted()
                return
            self.wake.wait(0.2)
            self.wake.clear()

    def _should_leave(self) -> bool:
        """Handle deletion, disappearance and kubelet shutdown; True when the worker is done."""
        if self.kubelet.stopping.is_set() or self.gone:
            return True
        if self.pod["metadata"].get("deletionTimestamp"):
            self._terminate(self._grace_s())
            return self._delete_object()
        return False

    def _idle_until_deleted(self) -> None:
        """A finished pod keeps its object (Jobs read it) until someone deletes it."""
        while not (self.kubelet.stopping.is_set() or self.gone):
            if self.pod["metadata"].get("deletionTimestamp") and self._delete_object():
                return
            self._push_status()  # retries a status update that failed
            self.wake.wait(1.0)
            self.wake.clear()

    def _grace_s(self) -> float:
        meta_grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if meta_grace is None:
            meta_grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(meta_grace)

    def _terminate(self, grace_s: float) -> None:
        if self.proc is not None and self.proc.returncode is None:
            code = stop_process_group(self.proc, grace_s)
            self._log_line(f"terminated by the kubelet, exit code {code}")
            self.run_state.terminated = self._terminated_state(
                code, "Completed" if code == 0 else "Error"
            )
            self.run_state.ready = False
            self.phase = "Succeeded" if code == 0 else "Failed"
            self._push_status()
        elif self.phase == "Pending":  # never started (a missing Secret): terminal too, as the
            # real kubelet makes it; a Job's tracking finalizer holds the pod until then
            self.run_state.waiting = None
            self.run_state.terminated = {
                "exitCode": 137,
                "reason": "ContainerStatusUnknown",
                "message": "the pod was deleted before its container started",
                "startedAt": None,
                "finishedAt": now(),
            }
            self.phase = "Failed"
            self._push_status()

    def _delete_object(self) -> bool:
        """Remove the pod object now that its process is gone; False to try again later."""
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}}
        try:
            self.api.delete(pod_path(self.namespace, self.name), body)
        except ApiError as err:
            if err.status not in (404, 409):
                log.warning("deleting %s/%s failed: %s", self.namespace, self.name, err)
                return False
        except httpx.HTTPError as err:
            log.warning("deleting %s/%s failed: %s", self.namespace, self.name, err)
            return False
        return True

    # -- preparing the process ------------------------------------------------------------------

    def _prepared(self) -> bool:
        """Build directories, volumes, env and argv, then start; report a config error instead."""
        try:
            if "command" not in self.container:
                raise PodConfigError("the process kubelet needs an explicit container command")
            self._prepare_volumes()
            self._prepare_env()
        except PodConfigError as err:
            self.run_state.waiting = {"reason": "CreateContainerConfigError", "message": str(err)}
            self._push_status()
            return False
        except ApiError as err:
            if err.status not in (403, 404):
                raise
            self.run_state.waiting = {"reason": "CreateContainerConfigError", "message": str(err)}
            self._push_status()
            return False
        self.run_state.waiting = None
        self.phase = "Running"
        readiness = self.container.get("readinessProbe")
        if readiness:
            self.probe = Probe(readiness, 0.0)
        self._start_process()
        return True

    def _prepare_volumes(self) -> None:
        volumes = {v["name"]: v for v in self.pod["spec"].get("volumes", [])}
        self.tokens = []
        for name, volume in volumes.items():
            self._materialise(name, volume)
        self._refresh_tokens(force=True)
        self.mounts = []
        for mount in self.container.get("volumeMounts", []):
            source = self._volume_dir(volumes[mount["name"]])
            if mount.get("subPath"):
                source = source / mount["subPath"]
            target = self.root / mount["mountPath"].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():
                target.unlink()
            target.symlink_to(source)
            self.mounts.append((mount["mountPath"].rstrip("/") or "/", target))
        # the real kubelet bind-mounts the termination message file at its path: the same here
        message = self.container.get("terminationMessagePath", "/dev/termination-log")
        self.mounts.append((message, self.root / message.lstrip("/")))
        (self.root / message.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        self.mounts.sort(key=lambda m: len(m[0]), reverse=True)

    def _volume_dir(self, volume: dict[str, Any]) -> Path:
        if "hostPath" in volume:
            return Path(volume["hostPath"]["path"])
        return self.dir / "volumes" / volume["name"]

    def _materialise(self, name: str, volume: dict[str, Any]) -> None:
        if "hostPath" in volume:
            return
        target = self._volume_dir(volume)
        target.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume:
            return
        if "configMap" in volume:
            self._write_object_files(target, "configmaps", volume["configMap"])
        elif "secret" in volume:
            spec = dict(volume["secret"], name=volume["secret"]["secretName"])
            self._write_object_files(target, "secrets", spec)
        elif "downwardAPI" in volume:
            self._write_downward(target, volume["downwardAPI"]["items"])
        elif "projected" in volume:
            for source in volume["projected"]["sources"]:
                if "serviceAccountToken" in source:
                    sat = source["serviceAccountToken"]
                    self.tokens.append(
                        Token(
                            target / sat["path"],
                            sat.get("audience"),
                            sat.get("expirationSeconds", TOKEN_EXPIRATION_S),
                        )
                    )
                elif "configMap" in source:
                    self._write_object_files(target, "configmaps", source["configMap"])
                elif "secret" in source:
                    self._write_object_files(target, "secrets", source["secret"])
                elif "downwardAPI" in source:
                    self._write_downward(target, source["downwardAPI"]["items"])
                else:
                    raise PodConfigError(f"projected source {sorted(source)} is not supported here")
        else:
            raise PodConfigError(
                f"volume {name}: the process kubelet supports emptyDir, configMap, secret, "
                "downwardAPI, projected and hostPath"
            )

    def _sync_volumes(self) -> None:
        """Write the ConfigMap and Secret files of the pod's volumes again from their objects:
        an edit reaches a running container through them (an env var keeps its start value).
        An object that cannot be read now leaves the files as they were, as the real kubelet."""
        self.volumes_synced_at = time.monotonic()
        for volume in self.pod["spec"].get("volumes", []):
            target = self._volume_dir(volume)
            sources = volume["projected"]["sources"] if "projected" in volume else [volume]
            try:
                for source in sources:
                    if "configMap" in source:
                        self._write_object_files(target, "configmaps", source["configMap"])
                    elif "secret" in source:
                        spec = dict(source["secret"])
                        spec.setdefault("name", spec.get("secretName"))
                        self._write_object_files(target, "secrets", spec)
            except (PodConfigError, ApiError, httpx.HTTPError) as err:
                log.warning("volume %s of %s/%s not updated: %s", volume["name"], self.namespace,
                            self.name, err)  # fmt: skip

    def _write_object_files(self, target: Path, kind: str, spec: dict[str, Any]) -> None:
        data = self._object_data(kind, spec["name"], optional=spec.get("optional", False))
        items = spec.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            if item["key"] not in data:
                if spec.get("optional"):
                    continue
                raise PodConfigError(f"{kind} {spec['name']} has no key {item['key']}")
            _write_atomic(target / item["path"], data[item["key"]])

    def _object_data(self, kind: str, name: str, *, optional: bool) -> dict[str, bytes]:
        """The data of a ConfigMap or Secret as bytes; {} if it is optional and absent."""
        try:
            obj = self.api.get(f"/api/v1/namespaces/{self.namespace}/{kind}/{name}")
        except ApiError as err:
            if err.status == 404 and optional:
                return {}
            if err.status == 404:
                raise PodConfigError(f"{kind} {name} not found") from err
            raise
        if kind == "secrets":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return data

    def _write_downward(self, target: Path, items: list[dict[str, Any]]) -> None:
        for item in items:
            if "fieldRef" not in item:
                raise PodConfigError("downwardAPI items support fieldRef only")
            _write_atomic(
                target / item["path"], self._field(item["fieldRef"]["fieldPath"]).encode()
            )

    def _field(self, path: str) -> str:
        """Resolve a downward-API fieldPath against the pod."""
        meta = self.pod["metadata"]
        simple = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.kubelet.node_name,
            "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", ""),
            "status.hostIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1",
            "status.podIP": self.ip or "",
            "status.podIPs": self.ip or "",
        }
        if path in simple:
            return simple[path]
        match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if match:
            return (meta.get(match.group(1)) or {}).get(match.group(2), "")
        if path in ("metadata.labels", "metadata.annotations"):
            values = meta.get(path.split(".")[1]) or {}
            return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
        raise PodConfigError(f"fieldRef {path} is not supported")

    def _prepare_env(self) -> None:
        home = self.dir / "home"
        home.mkdir(exist_ok=True)
        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(home),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOSTNAME": self.name,
            "POD_IP": self.ip or "",
            "INFERMODES_POD_ROOT": str(self.root),
            "AWS_EC2_METADATA_DISABLED": "true",  # no metadata address here: loopback only
        }
        if os.environ.get("PYTHONPATH"):  # the checkout under test, as the image would hold it
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        if self.tokens and self.pod["spec"].get("automountServiceAccountToken", True):
            env["KUBECONFIG"] = str(self.dir / "kubeconfig")
        own = dict(env)  # the kubelet's own: real paths of this machine, never rewritten
        for source in self.container.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                ref, kind = source["configMapRef"], "configmaps"
            else:
                ref, kind = source["secretRef"], "secrets"
            for key, value in self._object_data(
                kind, ref["name"], optional=ref.get("optional", False)
            ).items():
                env[prefix + key] = value.decode()
        for var in self.container.get("env", []):
            value = self._env_value(var, env)
            if value is not None:
                env[var["name"]] = value
        # a pod's paths are rewritten to where its mounts live (a mount at /tmp must not move
        # this machine's PATH when the kubelet itself runs from under /tmp)
        self.env = {k: v if own.get(k) == v else self._rewrite(v) for k, v in env.items()}
        self.argv = [
            self._rewrite(_expand(a, env))
            for a in self.container["command"] + self.container.get("args", [])
        ]
        working = self.container.get("workingDir")
        self.cwd = (
            Path(self._rewrite(working))
            if working and Path(self._rewrite(working)).is_dir()
            else self.dir
        )

    def _env_value(self, var: dict[str, Any], env: dict[str, str]) -> str | None:
        if "valueFrom" not in var:
            return _expand(var.get("value", ""), env)
        source = var["valueFrom"]
        if "fieldRef" in source:
            return self._field(source["fieldRef"]["fieldPath"])
        for key, kind in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            if key in source:
                ref = source[key]
                data = self._object_data(kind, ref["name"], optional=ref.get("optional", False))
                if ref["key"] in data:
                    return data[ref["key"]].decode()
                if ref.get("optional"):
                    return None
                raise PodConfigError(f"{kind} {ref['name']} has no key {ref['key']}")
        raise PodConfigError(f"env {var['name']}: {sorted(source)} is not supported here")

    def _rewrite(self, value: str) -> str:
        """Map a path under a volumeMount to where the mount lives for this process."""
        flag, eq, rest = value.partition("=")
        if eq and flag.startswith("-"):
            return f"{flag}={self._rewrite(rest)}"
        for mount_path, target in self.mounts:
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                return str(target) + value[len(mount_path) :]
        return value

    # -- tokens ---------------------------------------------------------------------------------

    def _refresh_tokens(self, *, force: bool = False) -> None:
        """Write each projected token (and the kubeconfig) from a fresh TokenRequest when due."""
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        for token in self.tokens:
            if not force and time.monotonic() < token.refresh_at:
                continue
            spec: dict[str, Any] = {
                "expirationSeconds": token.expiration_s,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.name,
                    "uid": self.uid,
                },
            }
            if token.audience:
                spec["audiences"] = [token.audience]
            answer = self.api.post(
                f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{sa}/token",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
            )
            value = answer["status"]["token"]
            _write_atomic(token.path, value.encode())
            token.refresh_at = time.monotonic() + 0.8 * token.expiration_s
            if token.audience is None:
                write_kubeconfig(
                    self.dir / "kubeconfig",
                    self.api.server,
                    self.api.ca_file,
                    {"token": value},
                    name=f"{self.namespace}-{sa}",
                    namespace=self.namespace,
                )

    # -- running --------------------------------------------------------------------------------

    def _start_process(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._log_line(f"starting: {shlex.join(self.argv)}")
        with (self.dir / "container.log").open("ab") as out:
            try:
                self.proc = subprocess.Popen(
                    killed_with_parent(self.argv),  # this worker thread outlives the process
                    cwd=self.cwd,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as err:
                self._log_line(f"cannot start: {err}")
                self.proc = None
                self._exited(127)
                return
        self.run_state.started_at = now()
        self.run_state.terminated = None
        self.run_state.ready = self.probe is None
        if self.probe:
            delay = self.probe.spec.get("initialDelaySeconds", 0)
            self.probe = Probe(self.probe.spec, time.monotonic() + delay)
        self._push_status()

    def _tick(self) -> None:
        """One step of a running pod: exit handling, restart back-off, probes, tokens."""
        if self.proc is None:
            if time.monotonic() >= self.restart_at:
                self._restart()
            return
        code = self.proc.poll()
        if code is not None:
            self._exited(code)
            return
        if self.probe and time.monotonic() >= self.probe.next_at:
            self._run_probe(self.probe)
        try:
            self._refresh_tokens()
        except (ApiError, httpx.HTTPError) as err:
            log.warning(
                "token refresh of %s/%s failed, will retry: %s", self.namespace, self.name, err
            )
        if time.monotonic() - self.volumes_synced_at >= VOLUME_SYNC_S:
            self._sync_volumes()
        self._push_status()  # retries a status update that failed

    def _restart(self) -> None:
        """Start the container again after its back-off. Like the real kubelet, its env is
        resolved anew (a Secret or ConfigMap changed since reaches the restarted container); one
        that cannot be resolved now waits as CreateContainerConfigError and is tried again."""
        try:
            self._prepare_env()
        except (PodConfigError, ApiError) as err:
            if isinstance(err, ApiError) and err.status not in (403, 404):
                raise
            self.run_state.waiting = {"reason": "CreateContainerConfigError", "message": str(err)}
            self.restart_at = time.monotonic() + self.backoff_s
            self._push_status()
            return
        self.run_state.restart_count += 1
        self.run_state.waiting = None
        self._start_process()

    def _exited(self, code: int) -> None:
        self._log_line(f"exited with code {code}")
        self.run_state.ready = False
        policy = self.pod["spec"].get("restartPolicy", "Always")
        state = self._terminated_state(code, "Completed" if code == 0 else "Error")
        message = self._termination_message(code)
        if message:
            state["message"] = message
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            self.run_state.last_terminated = state
            self.run_state.waiting = {
                "reason": "CrashLoopBackOff",
                # the real kubelet's wording
                "message": f"back-off {self.backoff_s:.0f}s restarting failed "
                f"container={self.container['name']} pod={self.name}_{self.namespace}({self.uid})",
            }
            self.restart_at = time.monotonic() + self.backoff_s
            self.backoff_s = min(self.backoff_s * 2, 60.0)
            self.proc = None
        else:
            self.run_state.terminated = state
            self.phase = "Succeeded" if code == 0 else "Failed"
            if self.ip:
                self.kubelet.ips.release(self.ip)
        self._push_status()

    def _termination_message(self, code: int) -> str:
        """Like the real kubelet: the terminationMessagePath file, or with the policy
        FallbackToLogsOnError and a failed exit, the log's tail (80 lines, 2 KiB at most)."""
        container = self.pod["spec"]["containers"][0]
        path = self.root / container.get("terminationMessagePath", "/dev/termination-log").lstrip(
            "/"
        )
        if path.is_file() and path.stat().st_size:
            return path.read_text(errors="replace")[:4096]
        if code == 0 or container.get("terminationMessagePolicy") != "FallbackToLogsOnError":
            return ""
        log_file = self.dir / "container.log"
        if not log_file.exists():
            return ""
        lines = [
            line
            for line in log_file.read_text(errors="replace").splitlines()
            if not line.startswith("[process-kubelet")
        ]
        return "\n".join(lines[-80:])[-2048:]

    def _terminated_state(self, code: int, reason: str) -> dict[str, Any]:
        return {
            "exitCode": code,
            "reason": reason,
            "startedAt": self.run_state.started_at or now(),
            "finishedAt": now(),
            "containerID": self._container_id(),
        }

    def _container_id(self) -> str:
        return f"process://{self.proc.pid}" if self.proc is not None else ""

    def _run_probe(self, probe: Probe) -> None:
        spec = probe.spec
        try:
            ok = self._probe_once(spec, float(spec.get("timeoutSeconds", 1)))
        except PodConfigError as err:  # e.g. a named port the container does not declare
            self._log_line(f"readiness probe: {err}")
            ok = False
        probe.next_at = time.monotonic() + spec.get("periodSeconds", 10)
        if ok:
            probe.successes, probe.failures = probe.successes + 1, 0
            if not self.run_state.ready and probe.successes >= spec.get("successThreshold", 1):
                self.run_state.ready = True
                self._push_status()
        else:
            probe.successes, probe.failures = 0, probe.failures + 1
            if self.run_state.ready and probe.failures >= spec.get("failureThreshold", 3):
                self.run_state.ready = False
                self._push_status()

    def _probe_once(self, spec: dict[str, Any], timeout_s: float) -> bool:
        if "exec" in spec:
            argv = [self._rewrite(a) for a in spec["exec"]["command"]]
            try:
                done = subprocess.run(
                    argv, cwd=self.cwd, env=self.env, capture_output=True, timeout=timeout_s
                )
            except (OSError, subprocess.TimeoutExpired):
                return False
            return done.returncode == 0
        if "httpGet" in spec:
            get = spec["httpGet"]
            host = get.get("host") or self.ip
            url = f"{get.get('scheme', 'HTTP').lower()}://{host}:{self._port(get['port'])}"
            headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
            try:
                answer = httpx.get(
                    url + get.get("path", "/"), headers=headers, timeout=timeout_s, verify=False
                )
            except httpx.HTTPError:
                return False
            return 200 <= answer.status_code < 400
        if "tcpSocket" in spec:
            try:
                with socket.create_connection(
                    (self.ip, self._port(spec["tcpSocket"]["port"])), timeout=timeout_s
                ):
                    return True
            except OSError:
                return False
        return False

    def _port(self, port: int | str) -> int:
        if isinstance(port, int) or port.isdigit():
            return int(port)
        for declared in self.container.get("ports", []):
            if declared.get("name") == port:
                return int(declared["containerPort"])
        raise PodConfigError(f"no container port named {port}")

    # -- status ---------------------------------------------------------------------------------

    def _push_status(self) -> None:
        status = self._status()
        if status == self.last_status:
            return
        try:
            self.api.merge_patch(pod_path(self.namespace, self.name, "/status"), {"status": status})
            self.last_status = status
        except ApiError as err:
            if err.status == 404:
                self.gone = True
            else:
                log.warning("status update of %s/%s failed: %s", self.namespace, self.name, err)
        except httpx.HTTPError as err:
            log.warning("status update of %s/%s failed: %s", self.namespace, self.name, err)

    def _condition(self, kind: str, ok: bool) -> dict[str, Any]:
        value = "True" if ok else "False"
        previous = self.run_state.transitions.get(kind)
        if previous is None or previous[0] != value:
            self.run_state.transitions[kind] = (value, now())
        return {
            "type": kind,
            "status": value,
            "lastTransitionTime": self.run_state.transitions[kind][1],
        }

    def _status(self) -> dict[str, Any]:
        run = self.run_state
        running = self.proc is not None and run.terminated is None and self.phase == "Running"
        if run.terminated:
            state: dict[str, Any] = {"terminated": run.terminated}
        elif run.waiting or not running:
            state = {"waiting": run.waiting or {"reason": "ContainerCreating"}}
        else:
            state = {"running": {"startedAt": run.started_at}}
        container = {
            "name": self.container["name"],
            "image": self.container.get("image", ""),
            "imageID": "",
            "containerID": self._container_id(),
            "ready": run.ready,
            "started": running,
            "restartCount": run.restart_count,
            "state": state,
        }
        if run.last_terminated:
            container["lastState"] = {"terminated": run.last_terminated}
        kept = [
            c
            for c in self.pod.get("status", {}).get("conditions", [])
            if c["type"] not in MANAGED_CONDITIONS
        ]
        ready = run.ready and self.phase == "Running"
        conditions = [
            *kept,
            self._condition(
                "PodReadyToStartContainers", self.phase != "Pending" or self.ip is not None
            ),
            self._condition("Initialized", True),
            self._condition("ContainersReady", ready),
            self._condition("Ready", ready),
        ]
        status: dict[str, Any] = {
            "phase": self.phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "conditions": conditions,
            "containerStatuses": [container],
        }
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        return status

    def _log_line(self, text: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / "container.log").open("a") as out:
            out.write(f"[process-kubelet {now()}] {text}\n")


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: known names are replaced, $$ escapes, the rest stays."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", replace, value)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
