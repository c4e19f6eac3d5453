"""Start ``infermodes gateway`` with a static endpoints file, and read its metrics."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import (
    INFERMODES,
    ServerProcess,
    free_port,
    stop_process,
    wait_until,
)


def scraped(url: str, name: str, **labels: str) -> float:
    """A sample's value from ``url``'s ``/metrics`` (0 when the series does not exist yet)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):  # fmt: skip
                return float(sample.value)
    return 0.0


def static_endpoint(
    name: str,
    mode: str,
    replicas: list[str],
    phase: str = "InService",
    namespace: str = "default",
    **block: Any,
) -> dict[str, Any]:
    spec = {"mode": mode, "model": {"uri": "file:///not-read-by-the-gateway"}, mode: block}
    return {"name": name, "namespace": namespace, "phase": phase, "spec": spec,
            "replicas": replicas}  # fmt: skip


class GatewayProcess(ServerProcess):
    """A running ``infermodes gateway`` (ready on ``/readyz``, not ``/ping``)."""

    def invoke(
        self,
        name: str,
        body: bytes,
        content_type: str = "text/csv",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return httpx.post(
            f"{self.url}/endpoints/{name}/invocations",
            content=body,
            headers={"content-type": content_type, **(headers or {})},
            timeout=90,
        )

    def metric(self, name: str, **labels: str) -> float:
        return scraped(self.url, name, **labels)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


@contextlib.contextmanager
def running_gateway(
    endpoints: list[dict[str, Any]],
    directory: Path,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    program: Sequence[str] = (INFERMODES,),
) -> Iterator[GatewayProcess]:
    """A gateway over ``endpoints`` (``static_endpoint`` entries), ready; stopped after.
    ``env``: more environment variables; ``program``: the command before ``gateway``."""
    config = directory / "endpoints.json"
    config.write_text(json.dumps({"endpoints": endpoints}))
    port = free_port()
    log_path = directory / "gateway.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*program, "gateway", "--static-endpoints", str(config), "--port", str(port),
             "--invocation-timeout-seconds", "30", *(args or [])],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=True,
        )  # fmt: skip
    gateway = GatewayProcess(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_until(lambda: proc.poll() is not None or gateway.ready(), 30, "the gateway")
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{gateway.log}")
        yield gateway
    finally:
        stop_process(proc)


def answer_head(conn: socket.socket) -> bytes:
    """The first response head on ``conn`` (a 100 Continue is one)."""
    head = b""
    for _ in range(100):  # bounded: a head is a few hundred bytes
        chunk = conn.recv(4096)
        head += chunk
        if not chunk or b"\r\n\r\n" in head:
            break
    return head
