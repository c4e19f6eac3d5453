"""The chart checks its values (values.schema.json) where helm reads them: the defaults, and
every value set the repository documents, render; a value the templates or the processes cannot
use, or an unknown key, fails `helm template` (as install, upgrade and lint) naming it, where it
rendered and failed later (at the API server, or at the operator's or the gateway's start), or
was silently ignored. Renders only: no cluster."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import subprocess

import pytest
import yaml

from tests.cluster.controlplane import Binaries
from tests.e2e.operator_support import CHART, REPO

SCHEMA_REFUSAL = "values don't meet the specifications of the schema"


def helm_template(
    *args: str, release: str = "infermodes", namespace: str = "ops"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Binaries.from_cache().helm), "template", release, str(CHART),
                           "--namespace", namespace, *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)  # fmt: skip


HELM_COMMAND = re.compile(r"^\s*helm (?:install|upgrade)\b.*?(?<!\\)$", re.M | re.S)
VALUE_FLAGS = {"--set", "--set-json", "--set-string", "--set-file", "-f", "--values"}


def documented_values() -> list[list[str]]:
    """The value flags of each `helm install` / `helm upgrade` command README.md and docs/ show."""
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for command in HELM_COMMAND.findall(path.read_text()):
            words = shlex.split(command.replace("\\\n", " "), comments=True)
            found.append([arg for flag, value in itertools.pairwise(words)
                          if flag in VALUE_FLAGS for arg in (flag, value)])  # fmt: skip
    return found


SCRAPER = json.dumps([{
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}])  # fmt: skip
ACCEPTED = {
    "defaults": [],
    # values.yaml's and the README's example of networkPolicy.metricsFrom
    "a prometheus scraper": ["--set-json", f"networkPolicy.metricsFrom={SCRAPER}"],
    # what tests/e2e installs with (operator_support.install_operator, test_async)
    "the e2e install": ["--set", "operator.resyncSeconds=2", "--set", "gateway.namespaces={*}",
                        "--set", "gateway.drainDelaySeconds=0", "--set", "operator.logLevel=debug",
                        "--set", "rabbitmq.secretRef.name=infermodes-rabbitmq", "--set-json",
                        'gateway.asyncStoragePrefixes=["file:///tmp/x/", "file:///a/{namespace}/",'
                        ' "s3://", "s3://async/{namespace}/"]'],
    "listed namespaces and images": [
        "--set", "operator.watchNamespaces={team-a,team-b}", "--set", "gateway.namespaces={team-a}",
        "--set", "gateway.platform.namespace=platform",
        "--set-json", 'operator.allowedImages=["registry.example/team/*", "r.example:5000/x:1"]',
        "--set-json", 'operator.allowedSecretNames=["*", "s3", "team-*"]'],
    "no gateway, no metrics, an own service account": [
        "--set", "gateway.enabled=false", "--set", "operator.metricsPort=0",
        "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=ops",
        "--set", "image.repository=localhost:5000/infermodes", "--set", "image.tag=dev-1.2"],
    "kubernetes objects as kubernetes takes them": [
        "--set", "nodeSelector.disktype=ssd", "--set-json",
        'tolerations=[{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]',
        "--set", "gateway.resources=null", "--set", "operator.resources.limits.cpu=1"],
    "as a subchart (helm's global values)": ["--set", "global.imageRegistry=r.example"],
    **{f"documented {n}": values for n, values in enumerate(documented_values())},
}  # fmt: skip


@pytest.mark.parametrize("values", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_the_default_and_documented_values_render(values: list[str]) -> None:
    result = helm_template(*values)
    assert result.returncode == 0, result.stderr


def test_the_docs_helm_commands_are_found() -> None:
    """docs/platform.md's install command, at least: the table above reads the docs."""
    assert ["--set", "gateway.platform.storageSecretName=s3"] in [
        values[i : i + 2] for values in documented_values() for i in range(0, len(values), 2)
    ]


# each: helm arguments, and what the refusal must say (the value's path, or the unknown key)
REFUSED = {
    "a resync of words": (["--set", "operator.resyncSeconds=abc"],
                          "'/operator/resyncSeconds': got string, want integer"),
    "no resync": (["--set", "operator.resyncSeconds=0"], "'/operator/resyncSeconds': minimum"),
    "negative gateway replicas": (["--set", "gateway.replicas=-1"], "'/gateway/replicas'"),
    "no gateway replicas": (["--set", "gateway.replicas=0"], "'/gateway/replicas'"),
    "a typo'd key": (["--set", "networkPolicy.enable=false"], "'enable' not allowed"),
    "a typo'd top-level key": (["--set", "gatway.replicas=2"], "'gatway' not allowed"),
    "a typo'd nested key": (["--set", "gateway.serviceAccount.nmae=x"], "'nmae' not allowed"),
    "an unknown operator log level": (["--set", "operator.logLevel=verbose"],
                                      "'/operator/logLevel'"),
    "an unknown gateway log level": (["--set", "gateway.logLevel=trace"], "'/gateway/logLevel'"),
    "a service port out of range": (["--set", "gateway.service.port=70000"],
                                    "'/gateway/service/port'"),
    "a metrics port out of range": (["--set", "operator.metricsPort=70000"],
                                    "'/operator/metricsPort'"),
    "a negative metrics port": (["--set", "operator.metricsPort=-1"], "'/operator/metricsPort'"),
    "the gateway's metrics on its own port": (["--set", "gateway.metricsPort=8080"],
                                              "'/gateway/metricsPort'"),
    "a timeout of words": (["--set", "gateway.invocationTimeoutSeconds=abc"],
                           "'/gateway/invocationTimeoutSeconds'"),
    "a timeout over the gateway's limit": (["--set", "gateway.invocationTimeoutSeconds=3601"],
                                           "'/gateway/invocationTimeoutSeconds'"),
    "a fractional timeout": (["--set-json", "gateway.invocationTimeoutSeconds=0.5"],
                             "'/gateway/invocationTimeoutSeconds'"),
    "a negative drain delay": (["--set", "gateway.drainDelaySeconds=-5"],
                               "'/gateway/drainDelaySeconds'"),
    "an unknown pull policy": (["--set", "image.pullPolicy=Sometimes"], "'/image/pullPolicy'"),
    "a tag in the repository": (["--set", "image.repository=ghcr.io/x/y:1.0"],
                                "'/image/repository'"),
    "a digest as the tag": (["--set", "image.tag=sha256:0123"], "'/image/tag'"),
    "a number as the tag": (["--set", "image.tag=2"], "'/image/tag'"),
    "a word for a switch": (["--set", "networkPolicy.enabled=yes"], "'/networkPolicy/enabled'"),
    "pickles by word": (["--set", "operator.allowPickle=on"], "'/operator/allowPickle'"),
    "a namespace that cannot be": (["--set", "gateway.namespaces={Team_A}"],
                                   "'/gateway/namespaces/0'"),
    "a watched namespace that cannot be": (["--set", "operator.watchNamespaces={Team A}"],
                                           "'/operator/watchNamespaces/0'"),
    "a platform namespace that cannot be": (["--set", "gateway.platform.namespace=Ops"],
                                            "'/gateway/platform/namespace'"),
    "an empty scraper (every pod)": (["--set-json", "networkPolicy.metricsFrom=[{}]"],
                                     "'/networkPolicy/metricsFrom/0'"),
    "a typo'd scraper": (["--set-json", 'networkPolicy.metricsFrom=[{"podSelecter": {}}]'],
                         "'podSelecter' not allowed"),
    "an empty caller (every pod)": (["--set-json", "networkPolicy.servingFrom=[{}]"],
                                    "'/networkPolicy/servingFrom/0'"),
    "a storage prefix of another scheme": (["--set", "gateway.asyncStoragePrefixes={http://x/}"],
                                           "'/gateway/asyncStoragePrefixes/0'"),
    "a relative file prefix": (["--set", "gateway.asyncStoragePrefixes={file://data/}"],
                               "'/gateway/asyncStoragePrefixes/0'"),
    "an input prefix of another scheme": (["--set", "gateway.allowedInputPrefixes={http://x/}"],
                                          "'/gateway/allowedInputPrefixes/0'"),
    "an unknown service type": (["--set", "gateway.service.type=ExternalName"],
                                "'/gateway/service/type'"),
    "no key of the access keys' Secret": (["--set", "gateway.auth.secretRef.key="],
                                          "'/gateway/auth/secretRef/key'"),
    "a Secret name that cannot be": (["--set", "rabbitmq.secretRef.name=RabbitMQ"],
                                     "'/rabbitmq/secretRef/name'"),
    "a Secret pattern that matches none": (["--set", "operator.allowedSecretNames={Infermodes-*}"],
                                           "'/operator/allowedSecretNames/0'"),
    "a node label of another type": (["--set", "nodeSelector.gpu=true"], "'/nodeSelector/gpu'"),
    "resources of words": (["--set", "operator.resources=big"], "'/operator/resources'"),
    "a value the templates read, removed": (["--set", "gateway.logLevel=null"],
                                            "missing property 'logLevel'"),
}  # fmt: skip


@pytest.mark.parametrize(("values", "named"), REFUSED.values(), ids=REFUSED.keys())
def test_a_value_the_chart_cannot_use_is_refused_naming_it(values: list[str], named: str) -> None:
    result = helm_template(*values)
    assert result.returncode != 0, f"rendered: {values}"
    assert SCHEMA_REFUSAL in result.stderr, result.stderr
    assert named in result.stderr, result.stderr


def test_lint_checks_the_values_too() -> None:
    """`helm lint` (CI's check of the chart) refuses them as install does."""
    result = subprocess.run([str(Binaries.from_cache().helm), "lint", str(CHART), "--strict",
                             "--set", "operator.logLevel=verbose"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode != 0
    assert "'/operator/logLevel'" in result.stdout + result.stderr


# Values the chart writes into manifests as names, keys and namespaces, each one that YAML would
# read as another type were it written bare (a number, a boolean, null)
LOOK_ALIKES = {
    "serviceAccount.name": "123", "gateway.serviceAccount.name": "456",
    "rabbitmq.secretRef.name": "789", "rabbitmq.secretRef.urlKey": "true",
    "rabbitmq.secretRef.managementUrlKey": "null", "gateway.storageSecretRef.name": "2024",
    "gateway.auth.secretRef.name": "0", "gateway.auth.secretRef.key": "false",
    "gateway.platform.namespace": "11", "operator.watchNamespaces": ["true", "11"],
    "gateway.namespaces": ["true"],  # one the operator watches
}  # fmt: skip


def leaf_types(prefix: str) -> dict[str, str]:
    """The type of every leaf the chart renders (by its place) with LOOK_ALIKES, the release's
    name and its namespace, each preceded by ``prefix``."""
    args = ["--set", "serviceAccount.create=false"]
    for key, value in LOOK_ALIKES.items():
        args += (["--set-string", f"{key}={prefix}{value}"] if isinstance(value, str) else
                 ["--set-json", f"{key}={json.dumps([prefix + v for v in value])}"])  # fmt: skip
    result = helm_template(*args, release=f"{prefix}7", namespace=f"{prefix}8")
    assert result.returncode == 0, result.stderr
    found: dict[str, str] = {}

    def walk(node: object, place: str) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, f"{place}.{key}")
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, f"{place}[{index}]")
        else:
            found[place] = type(node).__name__

    for number, document in enumerate(yaml.safe_load_all(result.stdout)):
        walk(document, str(number))
    return found


def test_a_name_yaml_would_read_as_a_number_renders_as_the_string_it_is() -> None:
    """A Secret `789`, a key `true`, a namespace `11` or a release `7` were written bare: the
    manifests held numbers, booleans and nulls where Kubernetes takes strings, and the API
    server refused the install, far from the value."""
    bare, prefixed = leaf_types(""), leaf_types("n")
    assert {place: kind for place, kind in bare.items() if kind != prefixed[place]} == {}


@pytest.mark.parametrize("served", ["gateway.auth.secretRef.name=keys",
                                    "gateway.platform.allowAnonymous=true"])  # fmt: skip
def test_a_platform_namespace_the_operator_does_not_watch_is_refused_naming_both(
    served: str,
) -> None:
    """The platform API's endpoints (in the release's namespace by default) were created where
    the operator of listed namespaces never looked: they stayed without a status, forever."""
    unwatched = helm_template("--set", served, "--set", "operator.watchNamespaces={team-a}",
                              "--set", "gateway.namespaces={team-a}")  # fmt: skip
    assert unwatched.returncode != 0, "rendered"
    assert '"ops", which operator.watchNamespaces does not list' in unwatched.stderr
    assert "gateway.platform.namespace" in unwatched.stderr
    for watched in (["operator.watchNamespaces={team-a,ops}"],
                    ["operator.watchNamespaces={team-a}", "gateway.platform.namespace=team-a",
                     "gateway.namespaces={team-a}"],
                    ["operator.watchNamespaces={team-a}", "gateway.enabled=false"]):  # fmt: skip
        result = helm_template(*[arg for value in (served, *watched) for arg in ("--set", value)])
        assert result.returncode == 0, result.stderr
    # without the platform API nothing is created there: any namespace will do, once the
    # gateway serves a watched one (test_the_release_namespace_the_gateway_serves_...)
    assert helm_template("--set", "operator.watchNamespaces={team-a}",
                         "--set", "gateway.namespaces={team-a}").returncode == 0  # fmt: skip


def test_the_release_namespace_the_gateway_serves_by_default_must_be_watched_too() -> None:
    """With gateway.namespaces empty the gateway serves the release's namespace: one the
    operator does not watch was accepted (the gateway then served only endpoints never
    reconciled), though the same namespace listed in gateway.namespaces was refused."""
    unwatched = helm_template("--set", "operator.watchNamespaces={team-a}")
    assert unwatched.returncode != 0, "rendered"
    assert ("gateway.namespaces: it is empty, so the gateway serves the release's namespace "
            '"ops", which operator.watchNamespaces does not list') in unwatched.stderr, (
        unwatched.stderr
    )  # fmt: skip
    for watched in (["operator.watchNamespaces={team-a,ops}"],
                    ["operator.watchNamespaces={team-a}", "gateway.namespaces={team-a}"],
                    ["operator.watchNamespaces={team-a}", "gateway.enabled=false"]):  # fmt: skip
        result = helm_template(*[arg for value in watched for arg in ("--set", value)])
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("served", "named"), [
    ("{team-a,team-b}", 'the gateway serves "team-b", which operator.watchNamespaces does not'),
    ("{*}", '"*" serves every namespace, but operator.watchNamespaces lists some'),
])  # fmt: skip
def test_gateway_namespaces_the_operator_does_not_watch_are_refused_naming_them(
    served: str, named: str
) -> None:
    """The gateway served endpoints there that the operator of listed namespaces never
    reconciled: without a status or pods, forever, and nothing said why."""
    unwatched = helm_template("--set", f"gateway.namespaces={served}",
                              "--set", "operator.watchNamespaces={team-a}")  # fmt: skip
    assert unwatched.returncode != 0, "rendered"
    assert f"gateway.namespaces: {named}" in unwatched.stderr, unwatched.stderr
    accepted = [[], ["operator.watchNamespaces={team-a}", "gateway.enabled=false"]]  # all watched
    if served != "{*}":  # every namespace is more than any list
        accepted.append(["operator.watchNamespaces={team-a,team-b}"])
    for values in accepted:
        result = helm_template(*[arg for value in (f"gateway.namespaces={served}", *values)
                                 for arg in ("--set", value)])  # fmt: skip
        assert result.returncode == 0, result.stderr
