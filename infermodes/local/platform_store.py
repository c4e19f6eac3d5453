"""The managed platform's API state under ``infermodes up``: models and endpoint configs are JSON
files in ``<state dir>/platform/``, endpoints and transform jobs are the supervisor's endpoints
(so ``infermodes get`` lists them and they come back after a restart like any applied
manifest). The supervisor keeps a manifest's name and spec only; the labels and annotations
the API reads back are kept beside the records, one file per endpoint."""

from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path

from infermodes.endpoints.spec import Mode
from infermodes.local.manifests import Manifest, OwnedElsewhere, parse_document
from infermodes.local.supervisor import LocalEndpoint, Supervisor
from infermodes.platform.store import AlreadyExists, JsonObject, NotFound, RecordKind
from infermodes.platform.translate import (
    KIND_LABEL,
    NAME_ANNOTATION,
    VARIANT_ANNOTATION,
    variant_of,
)
from infermodes.storage import write_local

log = logging.getLogger("infermodes.local")

DIRECTORIES = {RecordKind.MODEL: "models", RecordKind.ENDPOINT_CONFIG: "endpoint-configs"}
SAFE_NAME = re.compile(r"[a-z0-9][-a-z0-9]*")  # fullmatch: $ allows a "\n" after
METADATA = "endpoints"  # labels and annotations of the endpoints the API made


def file_name(name: str) -> str:
    """The API checks names against the platform's pattern; this keeps any other caller's out
    of the paths too."""
    if not SAFE_NAME.fullmatch(name):
        raise ValueError(f"not a record name: {name!r}")
    return f"{name}.json"


def read_json(path: Path) -> JsonObject | None:
    """A kept JSON object; None, logged naming the file, when it is not one (damaged by hand
    or by a crash of a version that did not sync): one bad file must not fail every call that
    lists its kind."""
    try:
        found = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        log.error("%s is not a JSON record (%s); ignored: repair or delete it", path, exc)
        return None
    if not isinstance(found, dict):
        log.error("%s is not a JSON object; ignored: repair or delete it", path)
        return None
    return found


class LocalPlatformStore:
    """A ``PlatformStore`` over the state dir and the supervisor. Every method runs on the
    event loop that runs the supervisor, without awaiting in between, so a check and the write
    after it see no other request."""

    def __init__(self, state_dir: Path, supervisor: Supervisor) -> None:
        self.root = state_dir / "platform"
        self.supervisor = supervisor
        for directory in (*DIRECTORIES.values(), METADATA):
            (self.root / directory).mkdir(parents=True, exist_ok=True)
        for name, endpoint in supervisor.endpoints.items():  # those a restart brought back
            self._annotate(name, endpoint)

    def _path(self, kind: RecordKind, name: str) -> Path:
        return self.root / DIRECTORIES[kind] / file_name(name)

    def _metadata_path(self, name: str) -> Path:
        return self.root / METADATA / file_name(name)

    async def create_record(self, kind: RecordKind, name: str, record: JsonObject) -> None:
        path = self._path(kind, name)
        if path.exists():
            raise AlreadyExists(name)
        write_local(path, json.dumps(record).encode())

    async def read_record(self, kind: RecordKind, name: str) -> JsonObject | None:
        path = self._path(kind, name)
        return read_json(path) if path.exists() else None

    async def list_records(self, kind: RecordKind) -> list[JsonObject]:
        found = [read_json(path) for path in self._paths(kind)]
        return [record for record in found if record is not None]

    async def count_records(self, kind: RecordKind) -> int:
        return len(self._paths(kind))

    def _paths(self, kind: RecordKind) -> list[Path]:
        return sorted((self.root / DIRECTORIES[kind]).glob("*.json"))

    async def delete_record(self, kind: RecordKind, name: str) -> None:
        try:
            self._path(kind, name).unlink()
        except FileNotFoundError:
            raise NotFound(name) from None

    def _apply(self, endpoint: JsonObject) -> None:
        name = endpoint["metadata"]["name"]
        document = {key: endpoint[key] for key in ("apiVersion", "kind", "spec")}
        document["metadata"] = {"name": name}
        manifest = parse_document(document, f"the platform API's endpoint {name}")
        metadata = endpoint["metadata"]
        write_local(self._metadata_path(name), json.dumps({
            "labels": metadata.get("labels") or {},
            "annotations": metadata.get("annotations") or {},
            "spec": document["spec"],  # as applied: the manifest keeps it so, in any version
        }).encode())  # fmt: skip
        self.supervisor.apply(manifest)
        self._annotate(name, self.supervisor.endpoints[name])

    def _kept(self, name: str, endpoint: LocalEndpoint) -> JsonObject | None:
        """The labels and annotations the API kept for ``endpoint``, while it runs the spec the
        API applied: an endpoint applied as a manifest, not through the API, has none; nor has
        one applied over the API's, or after it was deleted by name (``infermodes delete``)."""
        path = self._metadata_path(name)
        kept = read_json(path) if path.exists() else None
        # the spec it runs, or (a restart during a rollover) the one it serves until then
        runs = [endpoint.manifest.document.get("spec"), (endpoint.previous or {}).get("spec")]
        if kept is None or ("spec" in kept and kept["spec"] not in runs):  # none: older
            return None
        return {key: kept.get(key) or {} for key in ("labels", "annotations")}

    def refuse_taking_over(self, manifests: list[Manifest], source: str) -> None:
        """A manifest may not replace an endpoint or transform job the API made (while it runs
        the API's spec): DescribeEndpoint would then say it does not exist, and the API's
        caller lose it without a word. ``OwnedElsewhere`` names the first, the API and how to
        proceed; checked for every manifest before any is applied."""
        for manifest in manifests:
            name = manifest.name
            endpoint = self.supervisor.endpoints.get(name)
            kept = self._kept(name, endpoint) if endpoint is not None else None
            if endpoint is None or kept is None:
                continue
            given = kept["annotations"].get(NAME_ANNOTATION) or name
            if endpoint.manifest.spec.mode is Mode.BATCH:  # the API has no DeleteTransformJob
                owner = (
                    f"transform job {given} was made through the platform API "
                    f"(CreateTransformJob): delete it first (infermodes delete {name}) to apply "
                    "this manifest in its place"
                )
            else:
                owner = (
                    f"endpoint {given} was made through the platform API (CreateEndpoint): "
                    f"change it there (UpdateEndpoint), or delete it first (DeleteEndpoint, or "
                    f"infermodes delete {name}) to apply this manifest in its place"
                )
            raise OwnedElsewhere(f"{source} ({name}): {owner}")

    def _annotate(self, name: str, endpoint: LocalEndpoint) -> None:
        """Give the supervisor's endpoint the annotation the gateway reads (its variant) and
        the API's kind label (a transform job's stop is final: it then holds no output)."""
        kept = self._kept(name, endpoint) or {}
        variant = variant_of(kept.get("annotations") or {})
        endpoint.annotations = {VARIANT_ANNOTATION: variant} if variant is not None else {}
        kind = (kept.get("labels") or {}).get(KIND_LABEL)
        endpoint.labels = {KIND_LABEL: kind} if isinstance(kind, str) else {}

    async def create_endpoint(self, endpoint: JsonObject) -> None:
        if endpoint["metadata"]["name"] in self.supervisor.endpoints:
            raise AlreadyExists(endpoint["metadata"]["name"])
        self._apply(endpoint)

    async def replace_endpoint(self, endpoint: JsonObject) -> None:
        if endpoint["metadata"]["name"] not in self.supervisor.endpoints:
            raise NotFound(endpoint["metadata"]["name"])
        self._apply(endpoint)

    async def read_endpoint(self, name: str) -> JsonObject | None:
        await self.supervisor.looked()
        endpoint = self.supervisor.endpoints.get(name)
        if endpoint is None:
            return None
        obj = copy.deepcopy(self.supervisor.object_of(endpoint, with_processes=False))
        kept = self._kept(name, endpoint)
        if kept is not None:
            obj["metadata"] |= kept
        return obj

    async def list_endpoints(self) -> list[JsonObject]:
        found = [await self.read_endpoint(name) for name in sorted(self.supervisor.endpoints)]
        return [obj for obj in found if obj is not None]

    async def delete_endpoint(self, name: str) -> None:
        if not self.supervisor.delete(name):
            raise NotFound(name)
        self._metadata_path(name).unlink(missing_ok=True)
