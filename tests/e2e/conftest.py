"""What every e2e module shares: the chart (operator and gateway) installed once per module,
the example model where pods can read it, and an S3 server for the modules that use one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.harness import Cluster
from tests.conftest import AbaloneModel
from tests.e2e.operator_support import Tools, installed_chart, model_copy
from tests.support.s3 import S3Endpoint
from tests.support.seaweedfs import seaweedfs_server


@pytest.fixture(scope="module")
def tools(k8s_cluster: Cluster) -> Iterator[Tools]:
    with installed_chart(k8s_cluster) as tools:
        yield tools


@pytest.fixture(scope="module")
def model_uri(abalone_model: AbaloneModel, tmp_path_factory: pytest.TempPathFactory) -> str:
    return model_copy(abalone_model.tarball, tmp_path_factory.mktemp("models") / "abalone")


@pytest.fixture(scope="module")
def store() -> Iterator[S3Endpoint]:
    with seaweedfs_server() as endpoint:
        yield endpoint
