"""The ``actuator`` fixture: every scenario runs once on ``infermodes up`` and once on the
operator (helm-installed with its gateway, on the test control plane, with a real RabbitMQ for
async). Each side is started once per module; ``-k local`` runs the local side alone."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster
from tests.e2e.operator_support import OPERATOR_NAMESPACE, Tools, installed_chart
from tests.scenarios.actuators import BROKER_SECRET, Actuator, LocalActuator, OperatorActuator
from tests.support.local import Up, running_up
from tests.support.rabbitmq import Broker, rabbitmq_broker


def broker_secret(tools: Tools, namespace: str, broker: Broker) -> None:
    """The Secret the async example's workers (and the chart's gateway) read the broker from."""
    urls = {"url": broker.amqp_url, "managementUrl": broker.management_url}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": BROKER_SECRET},
              "stringData": urls}  # fmt: skip
    tools.cluster.api.post(f"/api/v1/namespaces/{namespace}/secrets", secret)


@contextlib.contextmanager
def operator_plane(cluster: Cluster) -> Iterator[tuple[Tools, Broker]]:
    with rabbitmq_broker() as broker:
        namespace = {"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": OPERATOR_NAMESPACE}}  # fmt: skip
        cluster.api.post("/api/v1/namespaces", namespace)
        broker_secret(Tools(cluster), OPERATOR_NAMESPACE, broker)
        with installed_chart(cluster, **{"rabbitmq.secretRef.name": BROKER_SECRET}) as tools:
            yield tools, broker


@pytest.fixture(scope="module", params=["local", "operator"])
def plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Up | tuple[Tools, Broker]]:
    if request.param == "local":
        folder = tmp_path_factory.mktemp("up")
        with running_up(folder / "state", [], folder / "up.log") as up:
            yield up
        return
    with operator_plane(request.getfixturevalue("k8s_cluster")) as running:
        yield running


@pytest.fixture
def actuator(
    plane: Up | tuple[Tools, Broker], request: pytest.FixtureRequest, tmp_path: Path
) -> Actuator:
    """The module's actuator for one scenario; on the operator, in a namespace of its own."""
    if isinstance(plane, Up):
        return LocalActuator(plane, tmp_path)
    tools, broker = plane
    namespace: str = request.getfixturevalue("k8s_namespace")
    broker_secret(tools, namespace, broker)
    return OperatorActuator(tools, namespace)
