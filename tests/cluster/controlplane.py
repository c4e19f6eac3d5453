"""The test control plane: etcd, kube-apiserver, kube-controller-manager and kube-scheduler.

Binaries come from the cache that build.sh fills; every process listens on 127.0.0.1 only, runs
in its own process group, and is stopped by that group's id.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.cluster.pki import CertPair, Pki
from tests.support.processes import free_port, wait_until

HERE = Path(__file__).resolve().parent
SERVICE_CIDR = (
    "127.1.0.0/24"  # ClusterIPs do not route (no kube-proxy); keep even them on loopback.
)
STOP_GRACE_S = 10.0


def _pinned(go_mod: Path, module: str) -> str:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", go_mod.read_text(), re.M)
    if not match:
        raise RuntimeError(f"{go_mod} does not require {module}")
    return match.group(1)


@dataclass(frozen=True)
class Binaries:
    """Paths of the cached binaries for the versions pinned beside this file."""

    k8s_version: str
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path  # the same release as the server, so kubectl's version skew is zero
    etcd: Path
    helm: Path

    @classmethod
    def from_cache(cls) -> Binaries:
        """Locate the binaries where build.sh puts them (same cache rules as the script)."""
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(os.environ.get("INFERMODES_K8S_CACHE") or Path(xdg) / "infermodes" / "k8s")
        k8s = _pinned(HERE / "k8sbuild" / "go.mod", "k8s.io/kubernetes")
        etcd = _pinned(HERE / "etcdbuild" / "go.mod", "go.etcd.io/etcd/server/v3")
        helm_pkg = re.search(
            r'^helm_npm_package="[^"]+@([^"@]+)"', (HERE / "build.sh").read_text(), re.M
        )
        if not helm_pkg:
            raise RuntimeError("build.sh does not pin helm_npm_package")
        found = cls(
            k8s_version=k8s,
            kube_apiserver=root / k8s / "kube-apiserver",
            kube_controller_manager=root / k8s / "kube-controller-manager",
            kube_scheduler=root / k8s / "kube-scheduler",
            kubectl=root / k8s / "kubectl",
            etcd=root / f"etcd-{etcd}" / "etcd",
            helm=root / f"helm-{helm_pkg.group(1)}" / "helm",
        )
        missing = [str(p) for p in found.all() if not os.access(p, os.X_OK)]
        if missing:
            raise FileNotFoundError(
                f"run tests/cluster/setup.sh first; missing: {', '.join(missing)}"
            )
        return found

    def all(self) -> list[Path]:
        return [
            self.kube_apiserver,
            self.kube_controller_manager,
            self.kube_scheduler,
            self.kubectl,
            self.etcd,
            self.helm,
        ]


def write_kubeconfig(
    path: Path,
    server: str,
    ca: Path,
    user: dict[str, str],
    name: str = "infermodes-test",
    namespace: str = "default",
) -> Path:
    """Write a one-context kubeconfig; `user` is the kubeconfig user entry (certs or token)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": name, "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": name, "user": user}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}
        ],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def cert_user(pair: CertPair) -> dict[str, str]:
    return {"client-certificate": str(pair.cert), "client-key": str(pair.key)}


class ControlPlane:
    """Starts the four control-plane processes in `state_dir`, and stops exactly those."""

    def __init__(self, state_dir: Path, binaries: Binaries) -> None:
        self.state_dir = state_dir
        self.binaries = binaries
        self.log_dir = state_dir / "logs"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.api_port = free_port()
        self.server = f"https://127.0.0.1:{self.api_port}"
        self.kubeconfig = state_dir / "admin.kubeconfig"
        self.pki: Pki

    def start(self) -> None:
        """Start everything and return once the API server is ready and the controllers healthy."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        pki = self.pki = Pki(self.state_dir / "pki")
        serving = pki.issue(
            "apiserver",
            "/CN=kube-apiserver",
            server_sans="IP:127.0.0.1,IP:127.1.0.1,DNS:localhost,DNS:kubernetes,"
            "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local",
        )
        sa = pki.service_account_keys()
        admin = pki.issue("admin", "/O=system:masters/CN=infermodes-admin")
        write_kubeconfig(self.kubeconfig, self.server, pki.ca.cert, cert_user(admin))
        cm_kc = write_kubeconfig(
            self.state_dir / "controller-manager.kubeconfig", self.server, pki.ca.cert,
            cert_user(pki.issue("controller-manager", "/CN=system:kube-controller-manager")),
        )  # fmt: skip
        sched_kc = write_kubeconfig(
            self.state_dir / "scheduler.kubeconfig", self.server, pki.ca.cert,
            cert_user(pki.issue("scheduler", "/CN=system:kube-scheduler")),
        )  # fmt: skip

        etcd_port, etcd_peer = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn("etcd", [
            str(self.binaries.etcd), "--name=default", f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level=warn",
        ])  # fmt: skip
        self._wait_http("etcd", f"{etcd_url}/health", 30)

        self._spawn("kube-apiserver", [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.api_port}",
            f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={pki.ca.cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa.cert}", f"--service-account-signing-key-file={sa.key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--profiling=false",
        ])  # fmt: skip
        self._wait_http("kube-apiserver", f"{self.server}/readyz", 60, client=admin)

        cm_port, sched_port = free_port(), free_port()
        self._spawn("kube-controller-manager", [
            str(self.binaries.kube_controller_manager),
            f"--kubeconfig={cm_kc}", f"--authentication-kubeconfig={cm_kc}",
            f"--authorization-kubeconfig={cm_kc}",
            "--bind-address=127.0.0.1", f"--secure-port={cm_port}",
            f"--cert-dir={self.state_dir / 'controller-manager-certs'}",
            "--leader-elect=false", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={sa.key}", f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            "--profiling=false",
        ])  # fmt: skip
        self._spawn("kube-scheduler", [
            str(self.binaries.kube_scheduler),
            f"--kubeconfig={sched_kc}", f"--authentication-kubeconfig={sched_kc}",
            f"--authorization-kubeconfig={sched_kc}",
            "--bind-address=127.0.0.1", f"--secure-port={sched_port}",
            f"--cert-dir={self.state_dir / 'scheduler-certs'}",
            "--leader-elect=false", "--profiling=false",
        ])  # fmt: skip
        self._wait_http("kube-controller-manager", f"https://127.0.0.1:{cm_port}/healthz", 60)
        self._wait_http("kube-scheduler", f"https://127.0.0.1:{sched_port}/healthz", 60)

    def node_credentials(self, node_name: str) -> Path:
        """A kubeconfig for a kubelet, as the system:node:<name> the Node authorizer expects."""
        pair = self.pki.issue(f"node-{node_name}", f"/O=system:nodes/CN=system:node:{node_name}")
        return write_kubeconfig(
            self.state_dir / f"node-{node_name}.kubeconfig",
            self.server,
            self.pki.ca.cert,
            cert_user(pair),
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        """Start one process in its own group, to die with this process."""
        log = (self.log_dir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            killed_with_parent(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def _wait_http(
        self, name: str, url: str, timeout_s: float, client: CertPair | None = None
    ) -> None:
        """Wait for `url` to answer 200; fail early, with the log's tail, if the process exited."""
        context = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        if client is None:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the component's self-signed serving cert
        else:
            context.load_cert_chain(str(client.cert), str(client.key))

        def ready() -> bool:
            if self.processes[name].poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {self.processes[name].returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:
                    return response.status == 200
            except (OSError, urllib.error.URLError):
                return False

        wait_until(ready, timeout_s, f"{name} at {url}", interval=0.2)

    def stop(self) -> None:
        """SIGTERM each process group (reverse start order), SIGKILL what outlives the grace."""
        for name, proc in reversed(list(self.processes.items())):
            stop_process_group(proc, STOP_GRACE_S)
            del self.processes[name]


def killed_with_parent(argv: list[str]) -> list[str]:
    """Wrap argv so the kernel SIGKILLs the process when the thread that started it dies.

    This covers a test run that is itself killed (no teardown runs then). Keep the starting
    thread alive as long as the process should run.
    """
    if shutil.which("setpriv"):
        return ["setpriv", "--pdeathsig", "KILL", "--", *argv]
    return argv


def stop_process_group(proc: subprocess.Popen[bytes], grace_s: float) -> int:
    """Stop the process group led by `proc` (started with start_new_session): SIGTERM, the
    grace, SIGKILL.

    The leader is reaped only after the final SIGKILL to its group, so the group id cannot have
    been reused by an unrelated process when that signal is sent.
    """
    if proc.returncode is None:
        _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while not _exited(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_group(proc.pid, signal.SIGKILL)  # also children that outlived their leader
    return proc.wait()


def _exited(pid: int) -> bool:
    """True once `pid` is a zombie (exited, not yet reaped) or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
