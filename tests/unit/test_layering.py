"""Layering rules, checked on the source: each package imports only the packages below it, the
shared packages (``predict``, ``endpoints``, ``queueing``) nothing above them, only the operator
imports kopf, only ``operator/kube.py`` uses the Kubernetes client (the gateway talks to the API
through ``gateway/kube.py``'s own few REST calls, without it), and no two packages import each
other (directly or through others)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "infermodes"

# Shared at the bottom: anything may import these, and they import only each other.
BOTTOM = {
    "errors", "logs", "metrics", "storage", "settings", "http", "destinations", "jsonpath", "media"
}  # fmt: skip
# What each package may import from infermodes besides the bottom modules.
ALLOWED: dict[str, set[str]] = {
    **{name: set() for name in BOTTOM},
    "predict": set(),
    "endpoints": set(),
    "queueing": set(),
    "server": {"predict"},
    "workers": {"predict", "queueing"},
    "platform": {"endpoints"},
    "gateway": {"predict", "queueing", "endpoints", "platform"},
    "operator": {"endpoints", "queueing"},
    "local": {"endpoints", "predict", "queueing", "gateway", "server", "workers", "platform"},
    "cli": {
        "server",
        "workers",
        "gateway",
        "operator",
        "endpoints",
        "predict",
        "queueing",
        "local",
        "platform",
    },
}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "infermodes":  # from infermodes import codecs
                names.update(f"infermodes.{alias.name}" for alias in node.names)
    return names


def unit_of(path: Path) -> str:
    """The package (or bottom module) a source file belongs to."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def sources() -> list[Path]:
    return sorted(
        p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE
    )


def internal_units(path: Path) -> set[str]:
    return {
        name.split(".")[1]
        for name in imports_of(path)
        if name.startswith("infermodes.") and len(name.split(".")) > 1
    } - {unit_of(path)}


def test_every_package_has_a_rule() -> None:
    assert {unit_of(path) for path in sources()} <= set(ALLOWED)


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_what_its_layer_allows(path: Path) -> None:
    unit = unit_of(path)
    allowed = ALLOWED[unit] | (BOTTOM if unit not in BOTTOM else BOTTOM - {unit})
    assert internal_units(path) - allowed == set()


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_operator_uses_kopf_and_only_kube_py_the_kubernetes_client(path: Path) -> None:
    roots = {name.split(".")[0] for name in imports_of(path)}
    if "kopf" in roots:
        assert unit_of(path) == "operator"
    if "kubernetes" in roots:
        assert path == PACKAGE / "operator" / "kube.py"


@pytest.mark.parametrize(
    "path", sorted((PACKAGE / "operator" / "modes").glob("*.py")), ids=lambda p: p.name
)
def test_mode_modules_are_pure(path: Path) -> None:
    impure = {n for n in imports_of(path) if n.split(".")[0] in ("kopf", "kubernetes", "httpx")}
    assert impure == set()
    assert "infermodes.operator.kube" not in imports_of(path)


def test_no_import_loop_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for path in sources():
        graph.setdefault(unit_of(path), set()).update(internal_units(path))
    done: set[str] = set()

    def visit(unit: str, trail: list[str]) -> None:
        if unit in trail:
            raise AssertionError("import loop: " + " -> ".join([*trail, unit]))
        if unit in done:
            return
        for target in sorted(graph.get(unit, ())):
            visit(target, [*trail, unit])
        done.add(unit)

    for unit in sorted(graph):
        visit(unit, [])


def test_the_rules_catch_an_upward_import(tmp_path: Path) -> None:
    """The checks above would fail on a shared package that imports the operator."""
    bad = tmp_path / "bad.py"
    bad.write_text("from infermodes.operator.kube import KubeDoor\nimport infermodes.gateway\n")
    assert {n.split(".")[1] for n in imports_of(bad) if n.startswith("infermodes.")} - ALLOWED[
        "predict"
    ] - BOTTOM == {"operator", "gateway"}
