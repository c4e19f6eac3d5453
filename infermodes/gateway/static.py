"""Endpoints from a JSON file instead of Kubernetes: for tests and for running the gateway in
front of model servers started by hand. The same table, so routing, holding and throttling
behave exactly as on a cluster. The file::

    {"endpoints": [{"name": "abalone", "namespace": "default", "phase": "InService",
                    "spec": {<an InferenceEndpoint spec>},
                    "replicas": ["127.0.0.1:8080", ...]}]}

Replicas are probed like new pods: they take traffic once their ``/ping`` answers 200.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from infermodes.gateway.table import Replica, Table

DEFAULT_NAMESPACE = "default"


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"replica address {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _entries(document: Any) -> list[dict[str, Any]]:
    """The file's endpoint entries, refused naming the shape when it is another."""
    if not isinstance(document, dict):
        raise ValueError(f'expected {{"endpoints": [...]}}, got a {type(document).__name__}')
    entries = document.get("endpoints")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError('"endpoints" must be a list of objects (name, spec, replicas, ...)')
    return entries


def _name(index: int, entry: dict[str, Any]) -> str:
    name = entry.get("name")
    if name is None:
        raise ValueError(f'endpoint {index + 1}: "name" is missing')
    if not isinstance(name, str):
        raise ValueError(f'endpoint {index + 1}: "name" must be a string')
    return name


class StaticSource:
    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def load(self, table: Table) -> None:
        """Fill the table from the file (errors name the file and what is wrong)."""
        try:
            for index, entry in enumerate(_entries(json.loads(self.path.read_text()))):
                name = _name(index, entry)
                where = f"endpoint {index + 1} ({json.dumps(name)})"
                if "spec" not in entry:
                    raise ValueError(f'{where}: "spec" is missing')
                replicas = entry.get("replicas", [])
                if not isinstance(replicas, list) or not all(isinstance(r, str) for r in replicas):
                    raise ValueError(f'{where}: "replicas" must be a list of "HOST:PORT" strings')
                namespace = entry.get("namespace", DEFAULT_NAMESPACE)
                table.apply_endpoint(
                    {
                        "metadata": {"name": name, "namespace": namespace},
                        "spec": entry["spec"],
                        "status": {"phase": entry.get("phase", "InService")},
                    },
                )
                for address in replicas:
                    host, port = parse_address(address)
                    table.set_replica(namespace, name, Replica(address, host, port))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"static endpoints file {self.path}: {exc}") from exc
        table.synced.add("static")

    async def run(self, table: Table) -> None:
        self.load(table)
        await asyncio.Event().wait()  # nothing changes until the gateway stops
