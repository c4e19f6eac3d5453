"""InferenceEndpoint manifests for the local runtime: the same YAML files ``kubectl apply``
takes, read and validated with the operator's own models, so a file that runs locally runs on a
cluster and a bad file is refused here as the CRD's schema refuses it there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from infermodes.endpoints.spec import EndpointSpec

API_VERSION = "infermodes.dev/v1alpha1"
KIND = "InferenceEndpoint"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A manifest that cannot be applied; the message names the file and the field."""


@dataclass(frozen=True)
class Manifest:
    """One validated endpoint: its name, its spec and the document as written."""

    name: str
    spec: EndpointSpec
    document: dict[str, Any]


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(['spec', *(str(part) for part in error['loc'])])}: {error['msg']}"
        for error in exc.errors()
    )


def parse_document(document: Any, source: str) -> Manifest:
    """Validate one YAML document; ``source`` names where it came from in errors."""
    if not isinstance(document, dict):
        raise ManifestError(f"{source}: not a mapping")
    if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
        raise ManifestError(
            f"{source}: apiVersion/kind must be {API_VERSION}/{KIND}, got "
            f"{document.get('apiVersion')}/{document.get('kind')}"
        )
    meta = document.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{source}: metadata.name is required")
    try:
        spec = EndpointSpec.model_validate(document.get("spec") or {})
    except ValidationError as exc:
        raise ManifestError(f"{source} ({name}): {_problems(exc)}") from None
    kept = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name},
            "spec": document.get("spec")}  # fmt: skip
    return Manifest(name, spec, kept)


def parse_text(text: str, source: str) -> list[Manifest]:
    """Every document of one YAML stream (empty documents are skipped)."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: not valid YAML: {exc}") from None
    if not documents:
        raise ManifestError(f"{source}: no InferenceEndpoint in it")
    return [parse_document(d, f"{source} document {i + 1}") for i, d in enumerate(documents)]


def manifest_files(path: Path) -> list[Path]:
    """A file, or the manifests directly in a directory (sorted, so the order is stable)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES)
    return [path]


def load_paths(paths: list[Path]) -> list[Manifest]:
    """Every endpoint of the files and directories given; a name given twice is an error."""
    found: dict[str, Manifest] = {}
    for path in paths:
        for file in manifest_files(path):
            try:
                text = file.read_text()
            except OSError as exc:
                raise ManifestError(f"{file}: {exc.strerror}") from None
            for manifest in parse_text(text, str(file)):
                if manifest.name in found:
                    raise ManifestError(f"{file}: endpoint {manifest.name} is defined twice")
                found[manifest.name] = manifest
    return list(found.values())
