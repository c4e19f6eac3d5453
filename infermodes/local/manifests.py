"""InferenceEndpoint manifests for the local runtime: the same YAML files ``kubectl apply``
takes, read and validated with the operator's own models, so a file that runs locally runs on a
cluster and a bad file is refused here as the CRD's schema refuses it there."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import sys
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from infermodes.endpoints.spec import (
    ADMITTED,
    MAX_NAME_LENGTH,
    EndpointSpec,
    is_endpoint_name,
    spec_problems,
)
from infermodes.errors import shown

log = logging.getLogger("infermodes.local")

API_VERSION = "infermodes.dev/v1alpha1"
KIND = "InferenceEndpoint"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN_SOURCE = "standard input"
# one manifest file, on every path (``up -f``, ``apply -f``, the API's body): checked before it
# is parsed, as a real manifest is a few kilobytes and parsing megabytes of YAML takes seconds
MAX_MANIFEST_BYTES = 1024 * 1024
# nodes the aliases of one document may add when expanded (kubectl's YAML library refuses
# "excessive aliasing" too): a real manifest's few aliases add tens, a "billion laughs" of
# nested aliases hundreds of millions, which the JSON a cluster gets would have to spell out
MAX_ALIASED_NODES = 100_000
# up's key for every endpoint in its gateway's table and in /metrics' namespace label: routes
# name an endpoint alone (``up`` keeps one endpoint per name, whatever its namespace)
NAMESPACE = "local"
# an endpoint's namespace when its manifest names none and no endpoint of its name exists, as
# kubectl's current namespace is without a context that sets one
DEFAULT_NAMESPACE = "default"
NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # a DNS-1123 label, as Kubernetes'
MAX_NAMESPACE_LENGTH = 63


class StandardInput:
    """``-f -``: the manifests come on standard input, as ``kubectl`` reads them. Not a
    ``Path``: ``Path("./-") == Path("-")``, and only a bare ``-`` means standard input
    (``./-`` is a file named ``-``, as for ``kubectl``)."""

    def __str__(self) -> str:
        return STDIN_SOURCE


STDIN = StandardInput()
Source = Path | StandardInput  # where ``-f`` reads manifests


def given_source(given: str) -> Source:
    """What ``-f`` names: standard input for a bare ``-`` only, else a file or directory."""
    return STDIN if given == "-" else Path(given)


class ManifestError(ValueError):
    """A manifest that cannot be applied; the message names the file and the field."""


class NameTaken(ManifestError):
    """A manifest in one namespace under the name of an endpoint ``up`` runs in another: ``up``
    keeps one endpoint per name, so it would replace that one."""


class OwnedElsewhere(ManifestError):
    """A manifest under the name of an endpoint another door made (the platform API), which
    it would replace: refused, as ``kubectl apply`` refuses to take over another's object."""


@dataclass(frozen=True)
class Skipped:
    """A Secret in a manifest file: ``up`` has none to give its processes, so it skips it
    rather than refuse the file a cluster takes whole. Only where it is and its name are kept:
    its data must reach no log and no answer."""

    where: str
    name: str

    def message(self) -> str:
        return (
            f"{self.where}: Secret {self.name} skipped: infermodes up has no Secrets (its "
            "processes get AWS_* and other variables from up's own environment: export them "
            "before starting up)"
        )


def is_secret(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and document.get("apiVersion") == "v1"
        and document.get("kind") == "Secret"
    )


def secret_name(document: dict[str, Any]) -> str:
    meta = document.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return repr(name[:60]) if isinstance(name, str) else "(no name)"


@dataclass(frozen=True)
class Manifest:
    """One validated endpoint: its name, its spec, the document as written and where it was
    (the file and document, for errors); ``namespace``: the one it names, "" for none (until
    ``placed``)."""

    name: str
    spec: EndpointSpec
    document: dict[str, Any]
    where: str = field(default="", compare=False)
    namespace: str = ""


def parse_document(
    document: Any, source: str, as_kubectl: bool = False, admitted: bool = False
) -> Manifest:
    """Validate one YAML document; ``source`` names where it came from in errors.
    ``as_kubectl``: a file a user gives, whose values must have the JSON types the CRD's schema
    takes (``"1"`` or ``true`` for an integer is refused there, where pydantic alone would
    coerce it: a file that runs under ``up`` must pass ``kubectl apply``). ``admitted``: a spec
    ``up`` ran before (its state), which a later release's new checks do not refuse
    (``spec.ADMITTED``)."""
    if not isinstance(document, dict):
        raise ManifestError(f"{source}: not a mapping")
    if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
        raise ManifestError(
            f"{source}: apiVersion/kind must be {API_VERSION}/{KIND}, got "
            f"{str(document.get('apiVersion'))[:60]}/{str(document.get('kind'))[:60]}: "
            "infermodes up runs InferenceEndpoints only (it skips Secrets); apply other kinds "
            "to a cluster with kubectl, and leave them out of the files given to up"
        )
    meta = document.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if name is None or name == "":
        raise ManifestError(f"{source}: metadata.name is required")
    if not isinstance(name, str):
        raise ManifestError(
            f"{source}: metadata.name must be a string (a DNS-1035 label), got {name!r:.60}"
        )
    namespace = namespace_of(meta, f"{source} ({name})") if isinstance(meta, dict) else ""
    raw = document.get("spec") or {}
    context = ADMITTED if admitted else None
    sent = as_json(raw) if as_kubectl else raw
    if as_kubectl and (where_not_finite := non_finite_field(sent, "spec")) is not None:
        raise ManifestError(
            f"{source} ({name}): {where_not_finite}: must be a finite number (.nan and .inf "
            "have no JSON form, so kubectl apply refuses them too)"
        )
    try:
        spec = (
            EndpointSpec.model_validate_json(
                json.dumps(sent, allow_nan=False), strict=True, context=context
            )
            if as_kubectl
            else EndpointSpec.model_validate(raw, context=context)
        )
    except ValidationError as exc:
        raise ManifestError(f"{source} ({name}): {spec_problems(exc)}") from None
    secret_held = spec.async_.notification.webhook_secret_refs() if spec.async_ else {}
    field = next(iter(secret_held), None)
    if field is not None:
        raise ManifestError(
            f"{source} ({name}): spec.async.notification.{field}: infermodes up has no "
            f"Kubernetes Secrets to read it from; give the URL in "
            f"{field.removesuffix('SecretRef')} (your file is not shared with a cluster's users)"
        )
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    kept = {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata,
            "spec": document.get("spec")}  # fmt: skip
    return Manifest(name, spec, kept, source, namespace)


def namespace_of(meta: dict[str, Any], source: str) -> str:
    """``metadata.namespace`` as written, "" for none (None or ``""``: ``kubectl``'s current
    namespace); one the API server would refuse (not a DNS-1123 label) is refused naming it."""
    namespace = meta.get("namespace")
    if namespace is None or namespace == "":
        return ""
    if (
        isinstance(namespace, str)
        and len(namespace) <= MAX_NAMESPACE_LENGTH
        and re.fullmatch(NAMESPACE_PATTERN, namespace)
    ):
        return namespace
    raise ManifestError(
        f"{source}: metadata.namespace {shown(namespace)} must be a DNS-1123 label of at most "
        f"{MAX_NAMESPACE_LENGTH} characters (lower-case letters, digits and '-', starting and "
        "ending with a letter or digit), as Kubernetes requires"
    )


def placed(manifest: Manifest, existing: str | None) -> Manifest:
    """``manifest`` in its namespace: the one it names; without one, that of the endpoint of
    its name (``existing``), or ``DEFAULT_NAMESPACE``, as ``kubectl``'s current namespace would
    be. ``up`` keeps one endpoint per name: one named in another namespace than ``existing``'s
    would replace it, and is refused (``NameTaken``)."""
    namespace = manifest.namespace or existing or DEFAULT_NAMESPACE
    if existing is not None and namespace != existing:
        raise NameTaken(
            f"{manifest.where} ({manifest.name}): endpoint {manifest.name} exists in namespace "
            f"{existing!r}, not {namespace!r}: infermodes up keeps one endpoint per name, "
            f"whatever its namespace; delete {manifest.name} first, or give this one another name"
        )
    metadata = {**manifest.document["metadata"], "namespace": namespace}
    document = {**manifest.document, "metadata": metadata}
    return dataclasses.replace(manifest, namespace=namespace, document=document)


def check_name(manifest: Manifest, source: str) -> Manifest:
    """The CRD's rule for ``metadata.name``: a DNS-1035 label of at most ``MAX_NAME_LENGTH``
    characters. A name becomes paths under the state folder and the gateway's routes, so one
    the CRD would refuse (``..``, ``a/b``, upper case) is refused here too. (The platform API's
    endpoints come through ``parse_document`` with names it has checked by its own rule.)"""
    name = manifest.name
    if is_endpoint_name(name):
        return manifest
    shown = repr(name if len(name) <= 60 else name[:57] + "...")
    raise ManifestError(
        f"{source}: metadata.name {shown} must be a DNS-1035 label of at most {MAX_NAME_LENGTH} "
        "characters (lower-case letters, digits and '-', starting with a letter and ending with "
        "a letter or digit), as the CRD requires"
    )


def non_finite_field(value: Any, path: str) -> str | None:
    """The path of the first infinity or NaN in a JSON-shaped value (``spec.x[0].y``), or None:
    JSON has no form for them, and ``json.dumps``' refusal names no field."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        items = [(f"{path}.{key}", item) for key, item in value.items()]
    elif isinstance(value, list):
        items = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    else:
        return None
    return next((f for p, i in items if (f := non_finite_field(i, p)) is not None), None)


def json_key(key: Any) -> str:
    """A mapping's key as JSON has it, as ``kubectl`` converts it: text (``1`` and ``"1"`` are
    one key there; ``true``, ``null`` and ``1.0`` are ``"true"``, ``"null"`` and ``"1"``)."""
    if key is None or isinstance(key, bool):
        return json.dumps(key)
    if isinstance(key, float):
        return str(int(key)) if key.is_integer() else repr(key)
    return str(key)


def as_json(value: Any) -> Any:
    """A YAML value as ``kubectl`` sends it: JSON, where an integral float is an integer (the API
    server takes ``2.0`` for an integer) and what JSON lacks (a date) is its text."""
    if isinstance(value, dict):
        return {json_key(key): as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_json(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's report in one line: its problem and where (its own spans several lines,
    quoting the text with a caret under it)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return f"{exc.context + ': ' if exc.context else ''}{exc.problem}{where}"
    return " ".join(str(exc).split())


class ExcessiveAliasing(ValueError):
    """A document whose aliases expand past ``MAX_ALIASED_NODES``, or into themselves."""


def aliased_nodes(root: yaml.Node) -> int:
    """How many nodes the aliases of a composed document add when expanded, as ``as_json`` and
    the JSON sent to a cluster would spell them out; counted over the node graph (each node's
    expanded size once), so it stops at the bound without ever building the expansion."""
    sizes: dict[int, int] = {}
    pending: set[int] = set()
    added = 0

    def size(node: yaml.Node) -> int:
        nonlocal added
        key = id(node)
        if key in pending:
            raise ExcessiveAliasing("an alias inside its own anchor would expand forever")
        if key in sizes:  # met again: an alias, which repeats all of it
            added += sizes[key]
            if added > MAX_ALIASED_NODES:
                raise ExcessiveAliasing(
                    f"document contains excessive aliasing: its aliases expand to over "
                    f"{MAX_ALIASED_NODES} nodes (write the values out, or alias fewer and "
                    "smaller blocks)"
                )
            return sizes[key]
        pending.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        sizes[key] = 1 + sum(size(child) for child in children)
        pending.discard(key)
        return sizes[key]

    size(root)
    return added


class DuplicateKey(ValueError):
    """A mapping that gives one key twice, which ``kubectl`` refuses (the last would win)."""


MERGE_TAG = "tag:yaml.org,2002:merge"  # ``<<: *base``: its keys may be overridden


SHOWN_KEY_LENGTH = 60  # of a key in a message: a key may be a kilobyte of text


def shown_key(key: Any) -> str:
    """A key in a message: its JSON text, cut short with its length past SHOWN_KEY_LENGTH."""
    text = json_key(key)
    if len(text) <= SHOWN_KEY_LENGTH:
        return f'"{text}"'
    return f'"{text[:SHOWN_KEY_LENGTH]}..." ({len(text)} characters)'


class ManifestLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing a key given twice in one mapping, at any depth,
    with ``kubectl``'s words: a careless merge of two manifests must not change a field
    silently (a key that overrides one merged in with ``<<`` is no duplicate). Keys are
    compared as JSON has them (``json_key``): ``1`` and ``"1"`` are one key in what a cluster
    gets, the last winning."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[str, tuple[Any, int]] = {}  # by JSON key
        built: dict[Any, tuple[Any, int]] = {}  # by the key of the mapping built here
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):  # the base class refuses it, naming it
                continue
            line = key_node.start_mark.line + 1
            # one key in JSON, or in the mapping built here (``1``, ``true`` and ``1.0`` are one
            # Python key: the last would win without a word)
            twin = first.get(json_key(key)) or built.get(key)
            if twin is not None:
                given, given_line = twin
                same = type(given) is type(key) and given == key
                written = "" if same else f", written {given!r:.40} and {key!r:.40}"
                raise DuplicateKey(
                    f"mapping key {shown_key(key)} already defined at line {given_line} (again "
                    f"at line {line}{written}): keep one of them"
                )
            first[json_key(key)] = built[key] = (key, line)
        return super().construct_mapping(node, deep=deep)


def documents_of(text: str, source: str) -> list[Any]:
    """The non-empty documents of a YAML stream, each refused if its aliases would expand past
    ``MAX_ALIASED_NODES`` before it is built (errors name the document as ``parse_text``
    numbers them)."""
    loader = ManifestLoader(text)
    documents: list[Any] = []
    try:
        # check_node reads past the stream's start; get_node is None only at its end
        while loader.check_node() and (node := loader.get_node()) is not None:
            try:
                aliased_nodes(node)
                document = loader.construct_document(node)
            except (ExcessiveAliasing, DuplicateKey) as exc:
                raise ManifestError(f"{source} document {len(documents) + 1}: {exc}") from None
            if document is not None:
                documents.append(document)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: not valid YAML: {yaml_problem(exc)}") from None
    finally:
        loader.dispose()
    return documents


def parse_text(text: str, source: str, skipped: list[Skipped] | None = None) -> list[Manifest]:
    """Every document of one YAML stream (empty documents are skipped, and Secrets: added to
    ``skipped``, or logged as a warning without it)."""
    try:
        return _parsed(text, source, skipped)
    except RecursionError:  # the YAML parser, and every walk of a value, recurse per level
        raise ManifestError(
            f"{source}: nested too deeply to read (a few hundred levels of lists or mappings; "
            "a manifest has a few)"
        ) from None


def _parsed(text: str, source: str, skipped: list[Skipped] | None) -> list[Manifest]:
    documents = documents_of(text, source)
    if not documents:
        raise ManifestError(f"{source}: no InferenceEndpoint in it")
    manifests = []
    for index, document in enumerate(documents):
        where = f"{source} document {index + 1}"
        if is_secret(document):
            secret = Skipped(where, secret_name(document))
            if skipped is None:
                log.warning("%s", secret.message())
            else:
                skipped.append(secret)
            continue
        manifests.append(check_name(parse_document(document, where, as_kubectl=True), where))
    refuse_twins(manifests)
    return manifests


def refuse_twins(manifests: Iterable[Manifest]) -> None:
    """An endpoint defined twice, in one file or across the files given, is refused naming
    both documents, on every path (``up -f``, ``apply -f``, one request to the API): applied
    one after the other, the last would replace the first without a word."""
    seen: dict[str, Manifest] = {}
    for manifest in manifests:
        first = seen.setdefault(manifest.name, manifest)
        if first is not manifest:
            raise ManifestError(
                f"endpoint {manifest.name} is defined twice: in {first.where} and in "
                f"{manifest.where} (give each endpoint one document)"
            )


def parse_bytes(data: bytes, source: str, skipped: list[Skipped] | None = None) -> list[Manifest]:
    """``parse_text`` of a file's bytes, as ``up -f`` and ``infermodes apply`` both read them.
    Bytes that are not UTF-8 are refused naming the first one, as ``kubectl`` refuses them
    (decoded as U+FFFD, a Latin-1 ``é`` in a comment or a value passed the YAML parser), and
    bytes past ``MAX_MANIFEST_BYTES`` unparsed."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise too_large(source, len(data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ManifestError(
            f"{source}: not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} (save it as "
            "UTF-8)"
        ) from None
    return parse_text(text, source, skipped)


def manifest_files(path: Source) -> Sequence[Source]:
    """A file, or the manifests directly in a directory (sorted, so the order is stable); a
    directory with none is an error, as for ``kubectl apply``, not a silent no-op."""
    if isinstance(path, StandardInput) or not path.is_dir():
        return [path]
    try:  # a folder access() calls readable may still refuse its listing (/proc's)
        files = sorted(p for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file())
    except OSError as exc:
        raise ManifestError(f"{path}: cannot list it: {exc.strerror}") from None
    if not files:
        raise ManifestError(
            f"{path}: no .yaml, .yml or .json file in it (folders in it are not read)"
        )
    return files


def source_of(file: Source) -> str:
    """How errors name where a manifest came from."""
    return str(file)


def too_large(source: str, size: int) -> ManifestError:
    """The one refusal of a manifest over ``MAX_MANIFEST_BYTES``, whichever path it came by
    (``size``: its size, or 0 where unknown: standard input is not read to its end)."""
    said = f"{size} bytes" if size > MAX_MANIFEST_BYTES else f"over {MAX_MANIFEST_BYTES} bytes"
    return ManifestError(
        f"{source}: {said}, over the limit of {MAX_MANIFEST_BYTES} bytes (1 MiB) for one "
        "manifest file: split its documents into several files of a folder given to -f, or "
        "remove what is not the manifest (long comments)"
    )


def read_manifest(file: Source) -> bytes:
    """A manifest file's bytes (``STDIN``: standard input), refused past ``MAX_MANIFEST_BYTES``
    having read one byte more at most; one that cannot be read is a ManifestError naming it."""
    try:
        if isinstance(file, StandardInput):
            data, size = sys.stdin.buffer.read(MAX_MANIFEST_BYTES + 1), 0
        else:
            with file.open("rb") as opened:
                data, size = opened.read(MAX_MANIFEST_BYTES + 1), os.fstat(opened.fileno()).st_size
    except OSError as exc:
        raise ManifestError(f"{file}: {exc.strerror}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise too_large(source_of(file), size)
    return data


def load_paths(paths: Sequence[Source]) -> list[Manifest]:
    """Every endpoint of the files and directories given; a name given twice is an error."""
    found = [
        manifest
        for path in paths
        for file in manifest_files(path)
        for manifest in parse_bytes(read_manifest(file), source_of(file))
    ]
    refuse_twins(found)
    return found
