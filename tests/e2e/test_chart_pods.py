"""The chart's own pods, as `helm template` renders them (no cluster): each long-running
container is probed for liveness on a port it declares and its process serves there, with
room for a busy process to answer (``timeoutSeconds``)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.e2e.test_chart_values import helm_template


def rendered(*args: str) -> list[dict[str, Any]]:
    result = helm_template(*args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def container(documents: list[dict[str, Any]], name: str) -> dict[str, Any]:
    deployment = next(d for d in documents if d["kind"] == "Deployment"
                      and d["metadata"]["name"] == name)  # fmt: skip
    (found,) = deployment["spec"]["template"]["spec"]["containers"]
    return found


def env_of(found: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in found["env"]}


@pytest.mark.parametrize("metrics", ["9090", "0"])
def test_the_operator_is_probed_on_kopfs_liveness_endpoint(metrics: str) -> None:
    found = container(rendered("--set", f"operator.metricsPort={metrics}"), "infermodes-operator")
    probe = found["livenessProbe"]
    port = next(p for p in found["ports"] if p["name"] == probe["httpGet"]["port"])
    assert probe["httpGet"]["path"] == "/healthz"
    assert env_of(found)["INFERMODES_OPERATOR_LIVENESS_PORT"] == str(port["containerPort"])
    assert probe["timeoutSeconds"] >= 5


def test_the_operators_metrics_cannot_take_the_liveness_port() -> None:
    result = helm_template("--set", "operator.metricsPort=8081")
    assert result.returncode != 0
    assert "/operator/metricsPort" in result.stderr
