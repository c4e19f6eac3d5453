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


class StaticSource:
    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def load(self, table: Table) -> None:
        """Fill the table from the file (errors name the file and what is wrong)."""
        try:
            entries: list[dict[str, Any]] = json.loads(self.path.read_text())["endpoints"]
            for entry in entries:
                namespace = entry.get("namespace", DEFAULT_NAMESPACE)
                table.apply_endpoint(
                    {
                        "metadata": {"name": entry["name"], "namespace": namespace},
                        "spec": entry["spec"],
                        "status": {"phase": entry.get("phase", "InService")},
                    },
                )
                for address in entry.get("replicas", []):
                    host, port = parse_address(address)
                    table.set_replica(namespace, entry["name"], Replica(address, host, port))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"static endpoints file {self.path}: {exc}") from exc
        table.synced.add("static")

    async def run(self, table: Table) -> None:
        self.load(table)
        await asyncio.Event().wait()  # nothing changes until the gateway stops
