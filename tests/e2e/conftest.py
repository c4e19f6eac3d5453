"""What every e2e module shares: the chart (operator and gateway) installed once per module,
and the example model where pods can read it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.harness import Cluster
from tests.conftest import AbaloneModel
from tests.e2e.operator_support import Tools, installed_chart, model_copy


@pytest.fixture(scope="module")
def tools(k8s_cluster: Cluster) -> Iterator[Tools]:
    with installed_chart(k8s_cluster) as tools:
        yield tools


@pytest.fixture(scope="module")
def model_uri(abalone_model: AbaloneModel, tmp_path_factory: pytest.TempPathFactory) -> str:
    return model_copy(abalone_model.tarball, tmp_path_factory.mktemp("models") / "abalone")
