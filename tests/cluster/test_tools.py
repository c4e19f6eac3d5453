"""helm and kubectl work against the harness, and how long the control plane took to start."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cluster.controlplane import Binaries
from tests.cluster.harness import Cluster

CHART = Path(__file__).parent / "chart"


def test_helm_install_of_a_small_chart_succeeds_and_kubectl_shows_its_objects(
    k8s_cluster: Cluster, k8s_namespace: str
):
    binaries = k8s_cluster.binaries or Binaries.from_cache()
    kubectl, helm = str(binaries.kubectl), binaries.helm
    env = {
        "KUBECONFIG": str(k8s_cluster.kubeconfig),
        "HOME": str(k8s_cluster.kubeconfig.parent),
        "PATH": "/usr/bin:/bin",
    }
    install = subprocess.run(
        [
            str(helm),
            "install",
            "demo",
            str(CHART),
            "--namespace",
            k8s_namespace,
            "--wait",
            "--timeout",
            "120s",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    shown = subprocess.run(
        [
            kubectl,
            "get",
            "configmap,deployment,service",
            "--namespace",
            k8s_namespace,
            "-o",
            "name",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    names = set(shown.stdout.split())
    assert {"configmap/demo-settings", "deployment.apps/demo-web", "service/demo-web"} <= names


def test_report_control_plane_ready_time(k8s_cluster: Cluster, capsys: pytest.CaptureFixture[str]):
    if k8s_cluster.startup_seconds is None:
        pytest.skip("no start-up time to report: INFERMODES_TEST_KUBECONFIG gave a running cluster")
    with capsys.disabled():
        print(
            f"\ncontrol plane + process kubelet ready in {k8s_cluster.startup_seconds:.1f} s "
            "(cached binaries: etcd, apiserver, controller-manager, scheduler, schedulable node)"
        )
