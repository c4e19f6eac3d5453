"""Endpoint pods accept connections only from the gateway (model servers) and the metrics'
readers (every pod's port: the operator reads load, in-flight counts and progress there):
a NetworkPolicy per endpoint, owned by it, so that a pod of the cluster cannot call a model
server's Service directly, past the gateway's authentication. Whether a CNI enforces it is the
cluster's: these tests check the objects, the e2e tier that the API server accepts them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from infermodes.endpoints import spec as s
from infermodes.endpoints.scaling import ScalerMemory
from infermodes.operator.modes import mode_for
from infermodes.operator.objects import Ingress
from infermodes.operator.reconcile import Deps, reconcile
from infermodes.settings import OperatorSettings
from tests.unit.operator.test_pinned_env import MODEL, SPECS
from tests.unit.operator.test_realtime import REF, FakeKube, body, check_golden

GATEWAY = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway"}},
}
OPERATOR = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}},
}
SCRAPER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
INGRESS = Ingress(serving=(GATEWAY,), metrics=(OPERATOR, SCRAPER))


def objects_of(mode: str, ingress: Ingress | None) -> list[dict[str, Any]]:
    spec = s.EndpointSpec.model_validate({"mode": mode, "model": MODEL, **SPECS[mode]})
    return mode_for(spec.mode).desired_objects(REF, spec, 1, "img:1", ingress)


def pod_template(objects: list[dict[str, Any]]) -> dict[str, Any]:
    workload = next(o for o in objects if o["kind"] in ("Deployment", "Job"))
    template: dict[str, Any] = workload["spec"]["template"]
    return template


def test_every_modes_policy_reaches_the_objects() -> None:
    policies = [objects_of(mode, INGRESS)[0] for mode in sorted(SPECS)]
    check_golden("network-policies.yaml", policies)


@pytest.mark.parametrize("mode", sorted(SPECS))
def test_each_modes_pods_accept_only_the_peers_on_their_one_port(mode: str) -> None:
    objects = objects_of(mode, INGRESS)
    policy = objects[0]  # first: applied before the pods it guards exist
    assert policy["kind"] == "NetworkPolicy"
    template = pod_template(objects)
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    (container,) = template["spec"]["containers"]
    # the liveness port is the kubelet's alone, whose probes NetworkPolicies do not filter
    ports = [port["containerPort"] for port in container["ports"] if port["name"] != "liveness"]
    assert rule["ports"] == [{"protocol": "TCP", "port": port} for port in ports]
    serving = mode in ("realtime", "serverless")
    expected = [GATEWAY, OPERATOR, SCRAPER] if serving else [OPERATOR, SCRAPER]
    assert rule["from"] == expected
    (owner,) = policy["metadata"]["ownerReferences"]  # deleting the endpoint deletes it
    assert (owner["kind"], owner["uid"], owner["controller"]) == (s.KIND, REF.uid, True)


def test_without_peers_no_one_gets_in_rather_than_everyone() -> None:
    """A rule without ``from`` admits every source: no peers is no rule at all."""
    (policy, *_) = objects_of("async", Ingress(serving=(GATEWAY,), metrics=()))
    assert policy["spec"]["ingress"] == []


@pytest.mark.parametrize("mode", sorted(SPECS))
def test_off_there_is_no_policy(mode: str) -> None:
    assert all(o["kind"] != "NetworkPolicy" for o in objects_of(mode, None))


def test_the_operator_applies_the_policy_its_settings_give() -> None:
    kube = FakeKube()
    settings = OperatorSettings(
        network_policy=True, serving_from=[GATEWAY], metrics_from=[OPERATOR, SCRAPER]
    )
    dependencies = Deps(kube, settings, lambda _ip, _port: None)
    reconcile(body({"mode": "realtime", "model": MODEL, "realtime": {}}), ScalerMemory(),
              dependencies)  # fmt: skip
    kinds = [o["kind"] for o in kube.applied]
    assert kinds == ["NetworkPolicy", "Deployment", "Service"]
    assert kube.applied[0]["spec"]["ingress"][0]["from"] == [GATEWAY, OPERATOR, SCRAPER]


def test_once_the_workload_exists_it_is_applied_first() -> None:
    """Each pass applies every object: with the policy first, a serverless endpoint's scale from
    zero waited for the policy's apply. First only at creation, before the pods it guards."""

    def applied_kinds(kube: FakeKube) -> list[str]:
        reconciled_with(kube, network_policy=True)
        return [o["kind"] for o in kube.applied]

    creating = FakeKube()
    assert applied_kinds(creating) == ["NetworkPolicy", "Deployment", "Service"]
    made = next(o for o in creating.applied if o["kind"] == "Deployment")
    assert applied_kinds(FakeKube(deployment=made)) == ["Deployment", "NetworkPolicy", "Service"]


@pytest.mark.parametrize("peer", [{}, {"namespaceselector": {}}, {"podSelector": {}, "ports": []}])
def test_a_peer_that_is_not_one_stops_the_operator_at_start_naming_it(
    peer: dict[str, Any],
) -> None:
    """An empty peer selects every pod of the namespace; a misspelt key would be dropped by the
    API server and leave one."""
    with pytest.raises(ValidationError, match="a NetworkPolicy peer has ipBlock, namespaceSel"):
        OperatorSettings(network_policy=True, metrics_from=[peer])


def reconciled_with(kube: FakeKube, network_policy: bool) -> None:
    """One realtime reconcile by an operator whose NetworkPolicy setting is ``network_policy``."""
    settings = OperatorSettings(
        network_policy=network_policy, serving_from=[GATEWAY], metrics_from=[OPERATOR]
    )
    dependencies = Deps(kube, settings, lambda _ip, _port: None)
    reconcile(body({"mode": "realtime", "model": MODEL, "realtime": {}}), ScalerMemory(),
              dependencies)  # fmt: skip


def test_turned_off_the_policy_made_while_on_is_deleted() -> None:
    """An endpoint made while NetworkPolicies were on kept its policy once they were turned
    off (networkPolicy.enabled: false), its pods fenced by a feature the user turned off."""
    made_on = FakeKube()
    reconciled_with(made_on, network_policy=True)
    policy = made_on.others[("NetworkPolicy", "ie-abalone")]
    kube = FakeKube(others=[policy])
    reconciled_with(kube, network_policy=False)
    assert kube.deleted == [("NetworkPolicy", "ie-abalone")]
    assert all(o["kind"] != "NetworkPolicy" for o in kube.applied)
    reconciled_with(kube, network_policy=False)  # gone: nothing more to delete
    assert kube.deleted == [("NetworkPolicy", "ie-abalone")]


def test_turned_off_a_policy_of_that_name_not_the_endpoints_is_left_alone() -> None:
    """Only the endpoint's own (its owner reference): one someone else made is theirs."""
    theirs = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "ie-abalone", "namespace": "models"}}  # fmt: skip
    kube = FakeKube(others=[theirs])
    reconciled_with(kube, network_policy=False)
    assert kube.deleted == []


def test_on_nothing_is_deleted() -> None:
    kube = FakeKube()
    reconciled_with(kube, network_policy=True)
    reconciled_with(kube, network_policy=True)
    assert kube.deleted == []


@pytest.mark.parametrize(
    "change",
    [
        {"realtime": {"minReplicas": 3, "maxReplicas": 2}},  # a spec the operator cannot parse
        {"image": "elsewhere.example/x:1"},  # an image operator.allowedImages does not list
    ],
    ids=["unparsable", "refused"],
)
def test_turned_off_the_policy_of_an_endpoint_whose_spec_is_refused_is_deleted(
    change: dict[str, Any],
) -> None:
    """An endpoint that ended Failed on its spec returned before the policy was looked at: its
    policy stayed for as long as its spec did, fencing its pods (the previous spec's still
    serve an update) by a feature turned off."""
    made_on = FakeKube()
    reconciled_with(made_on, network_policy=True)
    kube = FakeKube(others=[made_on.others[("NetworkPolicy", "ie-abalone")]])
    spec = {"mode": "realtime", "model": MODEL, "realtime": {}, **change}
    reconciled = reconcile(body(spec), ScalerMemory(), Deps(kube, OperatorSettings(),
                                                            lambda _ip, _port: None))  # fmt: skip
    assert (reconciled.status.phase, reconciled.status.reason) == (s.Phase.FAILED, "InvalidSpec")
    assert kube.deleted == [("NetworkPolicy", "ie-abalone")]


def test_policies_without_a_reader_of_the_pods_stop_the_operator_at_start_naming_it() -> None:
    """No metrics_from: each pod's policy admitted nobody to its port, the operator's own
    readings included (async workers and batch instances got ``ingress: []``), so it scaled
    and reported blind while every pod looked healthy."""
    with pytest.raises(ValidationError, match="network_policy is on but metrics_from lists no"):
        OperatorSettings(network_policy=True, serving_from=[GATEWAY])
    # no serving_from is no direct caller: the readers alone reach model servers
    settings = OperatorSettings(network_policy=True, metrics_from=[OPERATOR])
    (policy, *_) = objects_of("realtime", Ingress.from_settings(settings))
    assert policy["spec"]["ingress"][0]["from"] == [OPERATOR]
    assert Ingress.from_settings(OperatorSettings()) is None  # off: no peers needed
