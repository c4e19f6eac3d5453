"""The Helm chart lints, renders, and grants exactly the verbs the operator and the gateway use;
the gateway's access keys come from a Secret, never from values."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from infermodes.endpoints.scaling import ScalerMemory
from infermodes.operator.objects import Ingress
from infermodes.operator.reconcile import Deps, reconcile
from infermodes.settings import GatewaySettings, OperatorSettings
from tests.cluster.controlplane import Binaries
from tests.e2e.operator_support import CHART
from tests.unit.operator.test_pinned_env import MODEL, SPECS
from tests.unit.operator.test_realtime import FakeKube, body, deployment_of, ready_pod


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Binaries.from_cache().helm), *args], capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_helm_lint_passes() -> None:
    result = helm("lint", str(CHART), "--strict")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_rbac_is_least_privilege_and_the_operator_holds_no_secrets() -> None:
    result = helm("template", "infermodes", str(CHART), "--namespace", "ops")
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    roles = [d for d in documents if d["kind"] == "ClusterRole"]
    granted = {(group, resource, verb) for role in roles for rule in role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]
               for verb in rule["verbs"]}  # fmt: skip
    assert not any(verb in ("*", "delete", "deletecollection", "escalate", "bind", "impersonate")
                   for _, _, verb in granted)  # fmt: skip
    assert not any(resource in ("secrets", "*") for _, resource, _ in granted)
    assert ("infermodes.dev", "inferenceendpoints/status", "patch") in granted
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["infermodes", "operator"]
    assert "envFrom" not in container  # it reads no storage and no broker: no credentials
    assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in container["env"])
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "infermodes-operator"


def gateway_documents(*sets: str) -> list[dict[str, Any]]:
    args = [arg for value in sets for arg in ("--set", value)]
    result = helm("template", "infermodes", str(CHART), "--namespace", "ops", *args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def gateway_env(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    deployment = next(d for d in documents if d["kind"] == "Deployment"
                      and d["metadata"]["name"] == "infermodes-gateway")  # fmt: skip
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_chart_s_pods_get_no_variables_of_the_namespace_s_services() -> None:
    """The Service infermodes-gateway gave every pod of the namespace
    INFERMODES_GATEWAY_SERVICE_HOST and its kin, under the gateway's settings' prefix: named as
    unknown at every start."""
    deployments = [d for d in gateway_documents() if d["kind"] == "Deployment"]
    assert len(deployments) == 2  # the operator's and the gateway's
    assert all(d["spec"]["template"]["spec"]["enableServiceLinks"] is False for d in deployments)


def test_the_gateways_access_keys_come_from_a_secret_and_without_one_none_are_set() -> None:
    """Mounted as a file, which the gateway follows (a rotated key needs no restart), beside
    the broker's; never a value in the Deployment."""
    documents = gateway_documents("gateway.auth.secretRef.name=platform-keys",
                                  "rabbitmq.secretRef.name=infermodes-rabbitmq")  # fmt: skip
    env = gateway_env(documents)
    keys = env["INFERMODES_GATEWAY_ACCESS_KEYS_FILE"]
    assert keys == {"name": keys["name"], "value": "/etc/infermodes/access-keys/keys"}
    assert "INFERMODES_GATEWAY_ACCESS_KEYS" not in env
    gateway = next(d for d in documents if d["kind"] == "Deployment"
                   and d["metadata"]["name"] == "infermodes-gateway")  # fmt: skip
    pod = gateway["spec"]["template"]["spec"]
    volumes = {v["name"]: v["secret"] for v in pod["volumes"]}
    assert volumes["access-keys"] == {"secretName": "platform-keys",
                                      "items": [{"key": "accessKeys", "path": "keys"}]}  # fmt: skip
    assert volumes["broker"]["secretName"] == "infermodes-rabbitmq"
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["access-keys"] == {"name": "access-keys", "readOnly": True,
                                     "mountPath": "/etc/infermodes/access-keys"}  # fmt: skip
    bare = gateway_env(gateway_documents())
    assert "INFERMODES_GATEWAY_ACCESS_KEYS" not in bare
    assert "INFERMODES_GATEWAY_ACCESS_KEYS_FILE" not in bare


def test_the_allowed_input_prefixes_a_refusal_names_reach_the_gateway_from_the_chart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An async InputLocation refusal said INFERMODES_GATEWAY_ALLOWED_INPUT_PREFIXES adds more,
    which no chart value set: gateway.allowedInputPrefixes sets it, as the gateway reads it."""
    prefixes = ["s3://inputs/", "file:///data/in/"]
    env = gateway_env(gateway_documents(f"gateway.allowedInputPrefixes={{{','.join(prefixes)}}}"))
    monkeypatch.setenv(name := "INFERMODES_GATEWAY_ALLOWED_INPUT_PREFIXES", env[name]["value"])
    assert GatewaySettings().allowed_input_prefixes == prefixes
    assert name not in gateway_env(gateway_documents())  # the default: the gateway's own


def test_the_platform_api_may_only_create_read_replace_and_delete_its_objects_in_its_namespace(
) -> None:  # fmt: skip
    documents = gateway_documents("gateway.platform.namespace=platform",
                                  "gateway.platform.storageSecretName=s3",
                                  "gateway.platform.brokerSecretName=amqp",
                                  "gateway.auth.secretRef.name=platform-keys")  # fmt: skip
    env = gateway_env(documents)
    assert env["INFERMODES_GATEWAY_PLATFORM_NAMESPACE"]["value"] == "platform"
    # it serves the endpoints the API makes there, besides the release's
    assert env["INFERMODES_GATEWAY_NAMESPACES"]["value"] == '["ops","platform"]'
    served = {d["metadata"]["namespace"] for d in documents if d["kind"] == "Role"
              and d["metadata"]["name"] == "infermodes-gateway"}  # fmt: skip
    assert served == {"ops", "platform"}
    everywhere = gateway_env(gateway_documents("gateway.platform.namespace=platform",
                                               "gateway.namespaces={*}"))  # fmt: skip
    assert everywhere["INFERMODES_GATEWAY_NAMESPACES"]["value"] == '["*"]'
    assert env["INFERMODES_GATEWAY_PLATFORM_STORAGE_SECRET"]["value"] == "s3"
    assert env["INFERMODES_GATEWAY_PLATFORM_BROKER_SECRET"]["value"] == "amqp"
    role = next(d for d in documents if d["metadata"]["name"] == "infermodes-gateway-platform"
                and d["kind"] == "Role")  # fmt: skip
    assert role["metadata"]["namespace"] == "platform"
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}  # fmt: skip
    group = "infermodes.dev"
    assert granted == (
        {(group, "inferenceendpoints", verb)
         for verb in ("create", "get", "list", "update", "delete")}
        | {(group, resource, verb) for resource in ("inferencemodels", "inferenceendpointconfigs")
           for verb in ("create", "get", "list", "delete")}
    )  # fmt: skip
    binding = next(d for d in documents if d["metadata"]["name"] == "infermodes-gateway-platform"
                   and d["kind"] == "RoleBinding")  # fmt: skip
    assert binding["metadata"]["namespace"] == "platform"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "infermodes-gateway",
                                    "namespace": "ops"}]  # fmt: skip
    # the gateway holds no grant on Secrets anywhere: its keys are a mounted file
    gateway_rules = [rule for d in documents if d["kind"] in ("Role", "ClusterRole")
                     and d["metadata"]["name"].startswith("infermodes-gateway")
                     for rule in d["rules"]]  # fmt: skip
    assert not any(r in ("secrets", "*") for rule in gateway_rules for r in rule["resources"])


def test_an_operator_without_a_metrics_port_renders_a_valid_container() -> None:
    """``operator.metricsPort: 0`` (documented: no metrics) rendered a port without a number,
    which the API server refuses, so the install failed."""
    documents = gateway_documents("operator.metricsPort=0")
    operator = next(d for d in documents if d["kind"] == "Deployment"
                    and d["metadata"]["name"] == "infermodes-operator")  # fmt: skip
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert [p["name"] for p in container["ports"]] == ["liveness"]  # no metrics port
    assert {"name": "INFERMODES_OPERATOR_METRICS_PORT", "value": "0"} in container["env"]


def test_an_operator_of_listed_namespaces_may_change_workloads_in_those_alone() -> None:
    """With operator.watchNamespaces it could still create deployments and services and patch
    pods in every namespace, kube-system included."""
    documents = gateway_documents(
        "operator.watchNamespaces={team-a,team-b}", "gateway.namespaces={team-a}"
    )
    bindings = [d for d in documents if d["kind"] in ("ClusterRoleBinding", "RoleBinding")
                and d["subjects"][0]["name"] == "infermodes-operator"]  # fmt: skip
    cluster = {d["roleRef"]["name"] for d in bindings if d["kind"] == "ClusterRoleBinding"}
    assert cluster == {"infermodes-operator-cluster"}
    assert sorted(d["metadata"]["namespace"] for d in bindings if d["kind"] == "RoleBinding") == [
        "team-a",
        "team-b",
    ]
    wide = next(d for d in documents if d["kind"] == "ClusterRole"
                and d["metadata"]["name"] == "infermodes-operator-cluster")  # fmt: skip
    verbs = {verb for rule in wide["rules"] for verb in rule["verbs"]}
    assert verbs == {"list", "watch"}  # across the cluster it only reads
    everywhere = gateway_documents()  # no list: the workload role is bound cluster-wide
    assert {d["roleRef"]["name"] for d in everywhere if d["kind"] == "ClusterRoleBinding"
            and d["subjects"][0]["name"] == "infermodes-operator"} == {
        "infermodes-operator", "infermodes-operator-cluster"}  # fmt: skip


def test_a_watched_namespace_pattern_is_refused_at_install_naming_it() -> None:
    """Namespaces are granted one by one: a pattern would render a RoleBinding nowhere."""
    result = helm(
        "template", "infermodes", str(CHART), "--set", "operator.watchNamespaces={team-*}"
    )
    assert result.returncode != 0
    assert '"team-*" is a pattern; list namespaces by name' in result.stderr


def test_without_access_keys_the_gateway_holds_no_grant_to_make_platform_objects() -> None:
    """Its platform API is off without keys (unless gateway.platform.allowAnonymous): the Role
    that lets it create endpoints is not rendered either."""

    def platform_roles(*sets: str) -> list[str]:
        return [d["kind"] for d in gateway_documents(*sets)
                if d["metadata"]["name"] == "infermodes-gateway-platform"]  # fmt: skip

    assert platform_roles() == []
    assert sorted(platform_roles("gateway.platform.allowAnonymous=true")) == ["Role", "RoleBinding"]


def test_the_operator_gives_endpoints_the_secrets_listed_and_the_platform_apis_alone() -> None:
    """Endpoints could name any Secret of their namespace; the operator now takes the list
    (convention ``infermodes-*``) and the platform API's own two Secrets, which the endpoints
    it creates name."""
    from infermodes.settings import OperatorSettings

    def allowed(*values: str) -> list[str]:
        result = helm("template", "infermodes", str(CHART), *values)
        assert result.returncode == 0, result.stderr
        deployment = next(d for d in yaml.safe_load_all(result.stdout)
                          if d and d["kind"] == "Deployment"
                          and d["spec"]["template"]["spec"]["containers"][0]["command"]
                          == ["infermodes", "operator"])  # fmt: skip
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        values_of = {e["name"]: e["value"] for e in env if "value" in e}
        names = yaml.safe_load(values_of["INFERMODES_OPERATOR_ALLOWED_SECRET_NAMES"])
        parsed = OperatorSettings.model_validate({"allowed_secret_names": names})
        return parsed.allowed_secret_names

    assert allowed() == ["infermodes-*"]
    assert allowed("--set", "gateway.platform.storageSecretName=s3",
                   "--set", "gateway.platform.brokerSecretName=amqp",
                   "--set-json", 'operator.allowedSecretNames=["team-*"]') == [
        "team-*", "s3", "amqp"]  # fmt: skip


def install_notes(*sets: str) -> str:
    """What `helm install` prints after the release (NOTES.txt), rendered without a cluster."""
    args = [arg for value in sets for arg in ("--set", value)]
    result = helm("install", "infermodes", str(CHART), "--namespace", "ops",
                  "--dry-run=client", *args)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.partition("NOTES:")[2]


def test_the_notes_call_the_gateway_as_it_answers() -> None:
    """With access keys the gateway refuses an unsigned request (403), and the notes' curl
    was unsigned: it now signs, as curl can (SigV4, service sagemaker)."""
    signed = install_notes("gateway.auth.secretRef.name=platform-keys")
    assert '--aws-sigv4 "aws:amz:us-east-1:sagemaker"' in signed
    assert "--user ACCESS_KEY_ID:SECRET_ACCESS_KEY" in signed
    assert "--aws-sigv4" not in install_notes()  # open: a plain curl


def operator_env(documents: list[dict[str, Any]]) -> dict[str, str]:
    operator = next(d for d in documents if d["kind"] == "Deployment"
                    and d["metadata"]["name"] == "infermodes-operator")  # fmt: skip
    container = operator["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def pod_labels(documents: list[dict[str, Any]], name: str) -> dict[str, str]:
    workload = next(d for d in documents if d["kind"] == "Deployment"
                    and d["metadata"]["name"] == name)  # fmt: skip
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def chart_ingress(
    monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[list[dict[str, Any]], Ingress]:
    """The chart rendered with ``args``, and the NetworkPolicy peers its operator reads from
    the variables the chart gives it."""
    result = helm("template", "infermodes", str(CHART), "-n", "ops", *args)
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    for name, value in operator_env(documents).items():
        monkeypatch.setenv(name, value)
    ingress = Ingress.from_settings(OperatorSettings())
    assert ingress is not None
    return documents, ingress


def test_endpoint_pods_admit_the_gateway_and_the_operator_and_the_scrapers_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """By default each endpoint gets a NetworkPolicy whose peers are the release's gateway
    pods (model servers) and operator pods (every endpoint pod: it reads their metrics), as
    the operator reads them from the chart's variables; the operator may make such policies,
    and nothing more to them, only then."""
    scraper = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
    scrapers = f"networkPolicy.metricsFrom=[{json.dumps(scraper)}]"
    documents, ingress = chart_ingress(monkeypatch, "--set-json", scrapers)
    in_ops = {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}
    (gateway,) = ingress.serving
    assert gateway["namespaceSelector"] == in_ops
    assert gateway["podSelector"]["matchLabels"].items() <= pod_labels(
        documents, "infermodes-gateway").items()  # fmt: skip
    operator, scrapes = ingress.metrics
    assert operator["namespaceSelector"] == in_ops
    assert operator["podSelector"]["matchLabels"].items() <= pod_labels(
        documents, "infermodes-operator").items()  # fmt: skip
    assert not operator["podSelector"]["matchLabels"].items() <= pod_labels(
        documents, "infermodes-gateway").items()  # fmt: skip
    assert scrapes == scraper
    assert policy_grants(documents) == {"get", "create", "patch"}

    off = gateway_documents("networkPolicy.enabled=false")
    assert operator_env(off)["INFERMODES_OPERATOR_NETWORK_POLICY"] == "false"
    assert policy_grants(off) == {"get", "delete"}  # the ones made while it was on


def test_model_servers_admit_the_callers_named_too_and_none_without_a_gateway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """networkPolicy.servingFrom adds peers that may call model servers directly; with the
    gateway off they are the only ones, and the install notes say that none are named (every
    caller is then shut out on a CNI that enforces the policies)."""
    caller = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "apps"}}}
    callers = f"networkPolicy.servingFrom=[{json.dumps(caller)}]"

    def serving(*sets: str) -> list[dict[str, Any]]:
        args = [arg for value in sets for arg in ("--set", value)]
        return list(chart_ingress(monkeypatch, "--set-json", callers, *args)[1].serving)

    gateway, named = serving()
    assert gateway["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    assert named == caller
    assert serving("gateway.enabled=false") == [caller]
    assert "lets no pod call that port" in install_notes("gateway.enabled=false")
    assert "lets only the gateway's pods call" in install_notes()


def policy_grants(documents: list[dict[str, Any]]) -> set[str]:
    return {verb for d in documents if d["kind"] == "ClusterRole" for rule in d["rules"]
            if "networkpolicies" in rule["resources"] for verb in rule["verbs"]}  # fmt: skip


class Recording(FakeKube):
    """The unit tests' API door, noting each call as the (group, resource, verb) RBAC checks."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.calls: set[tuple[str, str, str]] = set()

    def note(self, api_version: str, kind: str, *verbs: str) -> None:
        group = api_version.rpartition("/")[0]
        plural = kind.lower()[:-1] + "ies" if kind.endswith("y") else kind.lower() + "s"
        self.calls |= {(group, plural, verb) for verb in verbs}

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Any:
        self.note(api_version, kind, "get")
        return super().get(api_version, kind, namespace, name)

    def list(self, api_version: str, kind: str, namespace: str, selector: Any,
             fields: Any = None) -> Any:  # fmt: skip
        self.note(api_version, kind, "list")
        return super().list(api_version, kind, namespace, selector, fields)

    def apply(self, obj: dict[str, Any]) -> Any:
        self.note(obj["apiVersion"], obj["kind"], "create", "patch")  # server-side apply
        return super().apply(obj)

    def annotate(self, api_version: str, kind: str, namespace: str, name: str,
                 annotations: dict[str, str]) -> None:  # fmt: skip
        self.note(api_version, kind, "patch")
        super().annotate(api_version, kind, namespace, name, annotations)

    def delete(self, api_version: str, kind: str, namespace: str, name: str,
               uid: str | None = None) -> None:  # fmt: skip
        self.note(api_version, kind, "delete")
        super().delete(api_version, kind, namespace, name, uid)


ENDPOINTS = "infermodes.dev"
# calls the reconciles below do not make, each made elsewhere in the operator
MADE_ELSEWHERE = {
    (ENDPOINTS, "inferenceendpoints", "get"),  # handlers: an endpoint read again to reconcile
    (ENDPOINTS, "inferenceendpoints/status", "patch"),  # handlers.patch_status, and kopf's
    ("", "pods", "patch"),  # async pod_annotations before a scale-in (pod-deletion-cost)
    # kopf: watches the endpoints and the children it has handlers for, patches its progress
    # annotations on endpoints, posts Events (core v1), discovers CRDs and namespaces
    *{(group, resource, verb) for group, resource in
      [(ENDPOINTS, "inferenceendpoints"), ("apps", "deployments"), ("batch", "jobs"),
       ("", "pods"), ("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces")]
      for verb in ("list", "watch")},
    (ENDPOINTS, "inferenceendpoints", "patch"),
    ("", "events", "create"),
}  # fmt: skip


def operator_grants(documents: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    roles = [d for d in documents if d["kind"] == "ClusterRole"
             and d["metadata"]["name"].startswith("infermodes-operator")]  # fmt: skip
    return {(group, resource, verb) for role in roles for rule in role["rules"]
            for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"]}  # fmt: skip


def test_the_operators_roles_grant_what_its_code_calls_and_nothing_more() -> None:
    """Every mode's reconcile (created, then again over its live workload) under the chart's
    settings, recorded, plus the calls made elsewhere: exactly the chart's operator roles."""
    kube = Recording()
    settings = OperatorSettings(network_policy=True, metrics_from=[{"podSelector": {}}],
                                allowed_secret_names=["*"])  # fmt: skip
    dependencies = Deps(kube, settings, lambda _ip, _port: None)
    for mode, block in SPECS.items():
        endpoint = body({"mode": mode, "model": MODEL, **block})
        reconcile(endpoint, ScalerMemory(), dependencies)
    dependencies.kube = live = Recording(deployment_of(1), [ready_pod("ie-abalone-1", "127.0.5.1")])
    reconcile(body(), ScalerMemory(), dependencies)
    # the names of every namespace's async endpoints (signals.names), across the cluster
    live.note(f"{ENDPOINTS}/v1alpha1", "InferenceEndpoint", "list")
    called = kube.calls | live.calls | MADE_ELSEWHERE

    granted = operator_grants(gateway_documents())
    assert called - granted == set(), "called, not granted"
    assert granted - called == set(), "granted, never called"


def test_the_notes_name_every_namespace_the_gateway_serves() -> None:
    """The platform API's namespace is served besides gateway.namespaces (a Role there): the
    notes left it out."""
    assert "for endpoints in ops, platform:" in install_notes("gateway.platform.namespace=platform")
    assert "for endpoints in a, b, platform:" in install_notes(
        "gateway.namespaces={a,b}", "gateway.platform.namespace=platform")  # fmt: skip
    assert "for endpoints in every namespace:" in install_notes("gateway.namespaces={*}")


def test_with_policies_off_the_roles_grant_what_removing_an_old_one_calls() -> None:
    """networkPolicy.enabled=false: the operator deletes each endpoint's own made while it was
    on (get, then delete), and may do nothing else to NetworkPolicies."""
    made = Recording()
    on = OperatorSettings(network_policy=True, metrics_from=[{"podSelector": {}}])
    reconcile(body(), ScalerMemory(), Deps(made, on, lambda _ip, _port: None))
    policy = made.others[("NetworkPolicy", "ie-abalone")]
    kube = Recording(None, [], [policy])
    reconcile(body(), ScalerMemory(), Deps(kube, OperatorSettings(), lambda _ip, _port: None))
    assert kube.deleted == [("NetworkPolicy", "ie-abalone")]
    policies = {verb for group, resource, verb in kube.calls if resource == "networkpolicies"}
    granted = operator_grants(gateway_documents("networkPolicy.enabled=false"))
    assert {verb for _, resource, verb in granted if resource == "networkpolicies"} == policies


def test_the_gateways_metrics_are_on_a_side_port_only_its_scrapers_reach() -> None:
    """The gateway's /metrics (every endpoint's name and traffic) were on its Service's port,
    unsigned, to anyone who reached it. They are on ``gateway.metricsPort``, which no Service
    exposes and, with policies on, only the ``networkPolicy.metricsFrom`` peers may reach."""
    scraper = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
    documents = gateway_documents()  # the scraper's rule is added below, with --set-json
    result = helm("template", "infermodes", str(CHART), "--namespace", "ops", "--set-json",
                  f"networkPolicy.metricsFrom=[{json.dumps(scraper)}]")  # fmt: skip
    assert result.returncode == 0, result.stderr
    scraped = [d for d in yaml.safe_load_all(result.stdout) if d]

    def gateway_objects(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {d["kind"]: d for d in documents if d["metadata"]["name"] == "infermodes-gateway"}

    env = gateway_env(documents)
    assert env["INFERMODES_GATEWAY_METRICS_PORT"]["value"] == "9090"
    objects = gateway_objects(documents)
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 9090} in container["ports"]
    assert [port["targetPort"] for port in objects["Service"]["spec"]["ports"]] == ["http"]
    # without scrapers named, nobody: a rule with no peers would admit every source
    gateway_port = {"ports": [{"protocol": "TCP", "port": 8080}]}
    assert objects["NetworkPolicy"]["spec"]["ingress"] == [gateway_port]
    assert gateway_objects(scraped)["NetworkPolicy"]["spec"]["ingress"] == [
        gateway_port,
        {"ports": [{"protocol": "TCP", "port": 9090}], "from": [scraper]},
    ]
    on_its_port = gateway_objects(gateway_documents("gateway.metricsPort=0"))
    assert "INFERMODES_GATEWAY_METRICS_PORT" not in gateway_env(list(on_its_port.values()))
    assert on_its_port["NetworkPolicy"]["spec"]["ingress"] == [gateway_port]


def test_the_chart_renders_one_object_of_each_kind_and_name() -> None:
    """Two templates each rendered a NetworkPolicy named after the gateway (its pods' policy
    and its metrics port's): the install failed on the second."""
    scraper = {"podSelector": {"matchLabels": {"app": "prometheus"}}}
    result = helm("template", "infermodes", str(CHART), "--namespace", "ops", "--set-json",
                  f"networkPolicy.metricsFrom=[{json.dumps(scraper)}]")  # fmt: skip
    assert result.returncode == 0, result.stderr
    keys = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(result.stdout) if d]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
