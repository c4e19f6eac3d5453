"""Layering rules, checked on the source: the data plane never reaches into the control plane,
and only ``operator/kube.py`` talks to the Kubernetes API."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "infermodes"


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("path", modules("serving"), ids=lambda p: p.name)
def test_serving_never_imports_the_operator_or_kopf(path: Path) -> None:
    bad = {
        n for n in imports_of(path) if n.startswith(("infermodes.operator", "kopf", "kubernetes"))
    }
    assert bad == set()


@pytest.mark.parametrize("path", modules("operator"), ids=lambda p: p.name)
def test_only_kube_module_imports_the_kubernetes_client(path: Path) -> None:
    uses_client = {n for n in imports_of(path) if n.split(".")[0] == "kubernetes"}
    assert not uses_client or path.name == "kube.py"


@pytest.mark.parametrize("path", modules("operator/modes"), ids=lambda p: p.name)
def test_mode_modules_are_pure(path: Path) -> None:
    impure = {n for n in imports_of(path) if n.split(".")[0] in ("kopf", "kubernetes", "httpx")}
    assert impure == set()
    assert "infermodes.operator.kube" not in imports_of(path)
