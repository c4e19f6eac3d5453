"""A PlatformStore in memory, for the pure logic of the control plane: the objects get a
creation time and, like an actuator, can be given a status."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from infermodes.platform.store import AlreadyExists, JsonObject, NotFound, RecordKind


class MemoryStore:
    def __init__(self) -> None:
        self.records: dict[tuple[RecordKind, str], JsonObject] = {}
        self.endpoints: dict[str, JsonObject] = {}

    async def create_record(self, kind: RecordKind, name: str, record: JsonObject) -> None:
        if (kind, name) in self.records:
            raise AlreadyExists(name)
        self.records[kind, name] = copy.deepcopy(record)

    async def read_record(self, kind: RecordKind, name: str) -> JsonObject | None:
        return copy.deepcopy(self.records.get((kind, name)))

    async def list_records(self, kind: RecordKind) -> list[JsonObject]:
        return [copy.deepcopy(r) for (k, _), r in self.records.items() if k == kind]

    async def count_records(self, kind: RecordKind) -> int:
        return sum(1 for k, _ in self.records if k == kind)

    async def delete_record(self, kind: RecordKind, name: str) -> None:
        if self.records.pop((kind, name), None) is None:
            raise NotFound(name)

    async def create_endpoint(self, endpoint: JsonObject) -> None:
        name = endpoint["metadata"]["name"]
        if name in self.endpoints:
            raise AlreadyExists(name)
        stored = copy.deepcopy(endpoint)
        stored["metadata"]["generation"] = 1
        stored["metadata"]["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.endpoints[name] = stored

    async def replace_endpoint(self, endpoint: JsonObject) -> None:
        name = endpoint["metadata"]["name"]
        if name not in self.endpoints:
            raise NotFound(name)
        stored = self.endpoints[name]
        stored["spec"] = copy.deepcopy(endpoint["spec"])
        stored["metadata"]["generation"] += 1
        for key in ("labels", "annotations"):
            stored["metadata"][key] = copy.deepcopy(endpoint["metadata"].get(key) or {})

    async def read_endpoint(self, name: str) -> JsonObject | None:
        return copy.deepcopy(self.endpoints.get(name))

    async def list_endpoints(self) -> list[JsonObject]:
        return [copy.deepcopy(e) for e in self.endpoints.values()]

    async def delete_endpoint(self, name: str) -> None:
        if self.endpoints.pop(name, None) is None:
            raise NotFound(name)

    def set_status(self, name: str, phase: str, **more: Any) -> None:
        generation = self.endpoints[name]["metadata"]["generation"]
        self.endpoints[name]["status"] = {"phase": phase, "observedGeneration": generation, **more}
