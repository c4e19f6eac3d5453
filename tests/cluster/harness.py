"""The whole test cluster in one object: control plane plus process kubelet.

Used by the pytest fixtures (tests/cluster/plugin.py) and by a human from the command line:

    .venv/bin/python -m tests.cluster.harness [--state-dir DIR]

runs the cluster in the foreground until Ctrl-C (or SIGTERM) and prints how to point kubectl at
it. See docs/dev-cluster.md.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from kubernetes import client, config

from tests.cluster.api import KubeApi
from tests.cluster.controlplane import Binaries, ControlPlane
from tests.cluster.kubelet import ProcessKubelet
from tests.support.processes import wait_until

NODE_NAME = "process-node"


@dataclass
class Cluster:
    """What tests get: how to reach the cluster, and (for the harness) its process kubelet."""

    kubeconfig: Path
    server: str
    api: KubeApi
    client: client.ApiClient
    kubelet: ProcessKubelet | None
    binaries: Binaries | None
    startup_seconds: float | None

    def pod_log(self, namespace: str, name: str) -> str:
        """The pod's stdout+stderr as the process kubelet kept it ("" if it has none)."""
        if self.kubelet is None:
            return ""
        path = self.kubelet.log_path(namespace, name)
        return path.read_text(errors="replace") if path else ""

    def namespace_logs(self, namespace: str) -> str:
        """Every pod log of a namespace, for a failing test's report."""
        if self.kubelet is None:
            return ""
        parts = []
        for path in sorted((self.kubelet.state_dir / "pods").glob(f"{namespace}_*/container.log")):
            parts.append(f"--- {path.parent.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)


class Harness:
    """Starts the control plane and the process kubelet in `state_dir`; stop() ends both."""

    def __init__(self, state_dir: Path, binaries: Binaries) -> None:
        self.state_dir = state_dir
        self.binaries = binaries
        self.control_plane = ControlPlane(state_dir, binaries)
        self.kubelet: ProcessKubelet | None = None
        self.api: KubeApi | None = None

    def start(self) -> Cluster:
        began = time.monotonic()
        try:
            self.control_plane.start()
            self.kubelet = ProcessKubelet(
                self.control_plane.node_credentials(NODE_NAME),
                NODE_NAME,
                self.state_dir / "kubelet",
                self.binaries.k8s_version,
            )
            self.kubelet.start()
            self.api = KubeApi.from_kubeconfig(self.control_plane.kubeconfig)
            wait_for_schedulable(self.api, 60)
        except BaseException:
            self.stop()
            raise
        return Cluster(
            kubeconfig=self.control_plane.kubeconfig,
            server=self.control_plane.server,
            api=self.api,
            client=config.new_client_from_config(str(self.control_plane.kubeconfig)),
            kubelet=self.kubelet,
            binaries=self.binaries,
            startup_seconds=time.monotonic() - began,
        )

    def stop(self) -> None:
        if self.kubelet is not None:
            self.kubelet.stop()
        if self.api is not None:
            self.api.close()
        self.control_plane.stop()


def wait_for_schedulable(api: KubeApi, timeout_s: float) -> None:
    """Ready means pods can run: a Ready node without taints, and the default ServiceAccount."""

    def ready() -> bool:
        nodes = api.get("/api/v1/nodes")["items"]
        usable = [
            n
            for n in nodes
            if not n["spec"].get("taints")
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n["status"].get("conditions", [])
            )
        ]
        accounts = api.get("/api/v1/namespaces/default/serviceaccounts")["items"]
        return bool(usable) and any(a["metadata"]["name"] == "default" for a in accounts)

    wait_until(ready, timeout_s, "a schedulable node and the default ServiceAccount", interval=0.2)


def external_cluster(kubeconfig: Path) -> Cluster:
    """A cluster someone else runs (INFERMODES_TEST_KUBECONFIG); no process kubelet to inspect."""
    api = KubeApi.from_kubeconfig(kubeconfig)
    return Cluster(
        kubeconfig=kubeconfig,
        server=api.server,
        api=api,
        client=config.new_client_from_config(str(kubeconfig)),
        kubelet=None,
        binaries=None,
        startup_seconds=None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the infermodes test cluster until Ctrl-C.")
    parser.add_argument("--state-dir", type=Path, help="where certs, etcd data and pod logs go")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="infermodes-cluster-"))
    if state_dir.exists() and any(state_dir.iterdir()):
        sys.exit(f"{state_dir} is not empty: give a new --state-dir")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(
        signal.SIGINT, on_term
    )  # also when started in the background, where it is ignored
    harness = Harness(state_dir, Binaries.from_cache())
    try:
        cluster = harness.start()
        print(f"control plane ready in {cluster.startup_seconds:.1f} s; state in {state_dir}")
        print(f"  export KUBECONFIG={cluster.kubeconfig}")
        print(f"  export INFERMODES_TEST_KUBECONFIG={cluster.kubeconfig}")
        print(f"  kubectl: {harness.binaries.kubectl}")
        print(f"  helm: {harness.binaries.helm}")
        print("Ctrl-C stops everything.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        harness.stop()
        print(f"stopped; logs remain in {state_dir / 'logs'} (remove with: rm -rf {state_dir})")


if __name__ == "__main__":
    main()
