"""The process kubelet's Node: real capacity, and a Lease and Ready condition kept fresh."""

from __future__ import annotations

import os
from pathlib import Path

from tests.cluster.harness import NODE_NAME, Cluster
from tests.cluster.plugin import require_process_kubelet
from tests.support.processes import wait_until


def test_node_reports_machine_capacity_and_stays_ready(k8s_cluster: Cluster):
    require_process_kubelet(k8s_cluster)
    api = k8s_cluster.api
    node = api.get(f"/api/v1/nodes/{NODE_NAME}")
    mem_kib = next(
        line.split()[1]
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    assert node["status"]["capacity"]["cpu"] == str(os.cpu_count())
    assert node["status"]["capacity"]["memory"] == f"{mem_kib}Ki"
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"

    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE_NAME}"
    first = api.get(lease_path)["spec"]["renewTime"]
    wait_until(
        lambda: api.get(lease_path)["spec"]["renewTime"] != first,
        30,
        "the node Lease to be renewed",
        0.5,
    )
