"""What every e2e module shares: the chart (operator and gateway) installed once per module
with helm and uninstalled afterwards, and the example model where pods can read it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.api import ApiError, KubeApi
from tests.cluster.harness import Cluster
from tests.conftest import AbaloneModel
from tests.e2e.operator_support import (
    OPERATOR_NAMESPACE,
    RELEASE,
    Tools,
    gateway_url,
    install_operator,
    model_copy,
    operator_pods,
)
from tests.support.processes import wait_until


@pytest.fixture(scope="module")
def tools(k8s_cluster: Cluster) -> Iterator[Tools]:
    """The chart installed with helm, its operator running and its gateway ready; uninstalled
    (and its pods' processes gone) afterwards."""
    tools = Tools(k8s_cluster)
    install_operator(tools)
    api = k8s_cluster.api
    wait_until(lambda: any(p["status"].get("phase") == "Running" for p in operator_pods(api)),
               120, "the operator pod to run")  # fmt: skip
    wait_until(lambda: gateway_url(tools) is not None, 120, "the gateway to be ready")
    yield tools
    tools.helm("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait")
    api.delete(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}")
    if k8s_cluster.kubelet is not None:
        kubelet = k8s_cluster.kubelet
        wait_until(lambda: not kubelet.running_pids(OPERATOR_NAMESPACE), 60, "the chart to stop")
    # the next module installs the chart again into a namespace of the same name
    wait_until(lambda: namespace_gone(api, OPERATOR_NAMESPACE), 120, "the namespace to go")


def namespace_gone(api: KubeApi, name: str) -> bool:
    try:
        api.get(f"/api/v1/namespaces/{name}")
    except ApiError as err:
        return err.status == 404
    return False


@pytest.fixture(scope="module")
def model_uri(abalone_model: AbaloneModel, tmp_path_factory: pytest.TempPathFactory) -> str:
    return model_copy(abalone_model.tarball, tmp_path_factory.mktemp("models") / "abalone")
