"""The Helm chart lints, renders, and grants exactly the verbs the operator uses."""

from __future__ import annotations

import subprocess

import yaml

from tests.cluster.controlplane import Binaries
from tests.e2e.operator_support import CHART


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
    role = next(d for d in documents if d["kind"] == "ClusterRole")
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}  # fmt: skip
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
