"""pytest fixtures for tests that need Kubernetes: `k8s_cluster` and `k8s_namespace`.

Register with `pytest_plugins = ["tests.cluster.plugin"]`. With INFERMODES_TEST_KUBECONFIG set,
tests use that cluster; otherwise one harness (control plane + process kubelet) is started for
the session from the binaries that tests/cluster/setup.sh cached.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.api import ApiError
from tests.cluster.controlplane import Binaries
from tests.cluster.harness import Cluster, Harness, external_cluster
from tests.cluster.kubelet import ProcessKubelet
from tests.support.processes import wait_until

NAMESPACE_GONE_TIMEOUT_S = 60
EXTERNAL_CLUSTER = (
    "needs the process kubelet of the test control plane; INFERMODES_TEST_KUBECONFIG points at "
    "another cluster, where pods are not local processes, so this harness check does not apply"
)


def require_process_kubelet(cluster: Cluster) -> ProcessKubelet:
    """The harness's kubelet; the test skips, saying why, on an external cluster."""
    if cluster.kubelet is None:
        pytest.skip(EXTERNAL_CLUSTER)
    return cluster.kubelet


@pytest.fixture(scope="session")
def k8s_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The session's Kubernetes cluster; the harness is torn down even when tests fail."""
    given = os.environ.get("INFERMODES_TEST_KUBECONFIG")
    if given:
        cluster = external_cluster(Path(given))
        yield cluster
        cluster.api.close()
        return
    with one_harness_at_a_time():
        harness = Harness(tmp_path_factory.mktemp("k8s"), Binaries.from_cache())
        cluster = harness.start()
        try:
            yield cluster
        finally:
            cluster.client.close()
            harness.stop()


@contextlib.contextmanager
def one_harness_at_a_time() -> Iterator[None]:
    """Two harnesses on one machine collide (their process kubelets hand out the same 127.x pod
    IPs): a second test session waits here until the first one's harness is gone."""
    with (Path(tempfile.gettempdir()) / "infermodes-test-harness.lock").open("a") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("another test session runs a control plane here: waiting for it to end")
            fcntl.flock(file, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def fresh_namespace(
    k8s_cluster: Cluster, request: pytest.FixtureRequest, suffix: str = ""
) -> Iterator[str]:
    """A new namespace named after the test, deleted afterwards; waits until its pods'
    processes end. Its pod logs are attached to the report when the test fails."""
    api = k8s_cluster.api
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{suffix}{uuid.uuid4().hex[:6]}"
    api.post(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )

    def has_default_account() -> bool:
        try:
            api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default")
            api.get(f"/api/v1/namespaces/{name}/configmaps/kube-root-ca.crt")
        except ApiError as err:
            if err.status == 404:
                return False
            raise
        return True

    wait_until(has_default_account, 30, f"the default ServiceAccount in {name}")
    yield name
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        request.node.add_report_section("teardown", "pod logs", k8s_cluster.namespace_logs(name))
    try:
        api.delete(f"/api/v1/namespaces/{name}")
    except ApiError as err:
        if err.status != 404:  # the test may have deleted it itself
            raise
    if k8s_cluster.kubelet is not None:
        kubelet = k8s_cluster.kubelet
        wait_until(
            lambda: not kubelet.running_pids(name),
            NAMESPACE_GONE_TIMEOUT_S,
            f"pods of {name} to stop",
        )


@pytest.fixture
def k8s_namespace(k8s_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test (``fresh_namespace``)."""
    with fresh_namespace(k8s_cluster, request) as name:
        yield name


@pytest.fixture
def other_k8s_namespace(k8s_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A second fresh namespace, for a test of two (names are per namespace)."""
    with fresh_namespace(k8s_cluster, request, "b-") as name:
        yield name


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep the call phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
