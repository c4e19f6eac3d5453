"""The chart's own pods, as `helm template` renders them (no cluster): each long-running
container is probed for liveness on a port it declares and its process serves there, with
room for a busy process to answer (``timeoutSeconds``); each has a least-privilege
NetworkPolicy (``networkPolicy.chartPods``) that still lets it reach what it must."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from infermodes.endpoints.plan import BATCH_METRICS_PORT, SERVER_PORT
from infermodes.operator import modes
from infermodes.operator.modes.async_ import METRICS_PORT
from tests.e2e.test_chart_values import helm_template
from tests.unit.operator.test_realtime import REF


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


def policies(*args: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in rendered(*args) if d["kind"] == "NetworkPolicy"}


def pod_labels(documents: list[dict[str, Any]], name: str) -> dict[str, str]:
    deployment = next(d for d in documents if d["kind"] == "Deployment"
                      and d["metadata"]["name"] == name)  # fmt: skip
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def reaches(rules: list[dict[str, Any]], labels: dict[str, str], port: int) -> bool:
    """Whether one of ``rules`` lets a pod of ``labels`` (any namespace) be reached on ``port``."""

    def admits(peer: dict[str, Any]) -> bool:
        selected = peer["podSelector"]["matchLabels"].items() <= labels.items()
        return selected and peer["namespaceSelector"] == {}

    return any(
        any(p["port"] == port for p in rule["ports"]) and any(map(admits, rule["to"]))
        for rule in rules
        if "to" in rule
    )


def test_the_operator_and_the_gateway_get_least_privilege_network_policies() -> None:
    documents = rendered()
    found = {d["metadata"]["name"]: d for d in documents if d["kind"] == "NetworkPolicy"}
    assert set(found) == {"infermodes-operator", "infermodes-gateway"}
    for name, policy in found.items():
        spec = policy["spec"]
        assert spec["podSelector"]["matchLabels"].items() <= pod_labels(documents, name).items()
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        # every rule names its ports: none lets the pod connect anywhere
        assert all(rule["ports"] for rule in spec["egress"]), spec["egress"]
        assert {53, 443, 6443, 5672, 15672} <= {p["port"] for r in spec["egress"]
                                               for p in r["ports"]}  # fmt: skip
    operator, gateway = found["infermodes-operator"]["spec"], found["infermodes-gateway"]["spec"]
    assert operator["ingress"] == []  # its metrics: networkPolicy.metricsFrom, none by default
    assert gateway["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]  # any source
    gateway_port = container(documents, "infermodes-gateway")["ports"][0]["containerPort"]
    assert gateway_port == 8080
    for mode, port in [("realtime", SERVER_PORT), ("async_", METRICS_PORT),
                       ("batch", BATCH_METRICS_PORT)]:  # fmt: skip
        labels = REF.labels(getattr(modes, mode).COMPONENT)
        assert reaches(operator["egress"], labels, port), (mode, port)
    assert reaches(gateway["egress"], REF.labels(modes.realtime.COMPONENT), SERVER_PORT)
    assert not reaches(gateway["egress"], REF.labels(modes.async_.COMPONENT), METRICS_PORT)


def test_the_listed_peers_alone_reach_the_gateway_and_the_operators_metrics() -> None:
    ingress_controller = {"namespaceSelector": {"matchLabels": {"team": "edge"}}}
    scraper = {"podSelector": {"matchLabels": {"app": "prometheus"}}}
    found = policies(
        "--set-json", f"networkPolicy.chartPods.gatewayFrom=[{json.dumps(ingress_controller)}]",
        "--set-json", f"networkPolicy.metricsFrom=[{json.dumps(scraper)}]",
    )  # fmt: skip
    assert found["infermodes-gateway"]["spec"]["ingress"] == [
        {"ports": [{"protocol": "TCP", "port": 8080}], "from": [ingress_controller]},
        {"ports": [{"protocol": "TCP", "port": 9090}], "from": [scraper]},  # its metrics port
    ]
    assert found["infermodes-operator"]["spec"]["ingress"] == [
        {"ports": [{"protocol": "TCP", "port": 9090}], "from": [scraper]}
    ]


def test_the_chart_pods_policies_can_be_turned_off_and_the_gateways_goes_with_it() -> None:
    assert policies("--set", "networkPolicy.chartPods.enabled=false") == {}
    assert set(policies("--set", "gateway.enabled=false")) == {"infermodes-operator"}


def test_an_egress_rule_without_ports_is_refused() -> None:
    """It would let the pods connect anywhere."""
    rule = {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}
    result = helm_template(
        "--set-json", f"networkPolicy.chartPods.egress.storage=[{json.dumps(rule)}]"
    )
    assert result.returncode != 0
    assert "/networkPolicy/chartPods/egress/storage/0" in result.stderr


def test_the_gateway_is_probed_for_liveness_with_room_for_a_busy_event_loop() -> None:
    """Its ``/healthz`` is answered on the event loop that proxies every invocation: with the
    kubelet's default 1 s timeout, a gateway busy under load was restarted, failing every
    invocation it held."""
    found = container(rendered(), "infermodes-gateway")
    probe = found["livenessProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": "http"}
    assert probe["timeoutSeconds"] >= 5
    assert probe["failureThreshold"] >= 3
