"""A small JSON client for the Kubernetes API over httpx.

The process kubelet works on plain dicts (the same shape as the YAML), and tests need to speak as
other identities (a node, a service-account token); this stays closer to the wire than the
generated client.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> {status}: {body[:500]}")
        self.status = status


class KubeApi:
    """JSON requests against one API server as one identity (client certificate or token)."""

    def __init__(
        self,
        server: str,
        ca_file: Path,
        *,
        cert: tuple[Path, Path] | None = None,
        token: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        context = ssl.create_default_context(cafile=str(ca_file))
        if cert:
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server = server
        self.ca_file = ca_file
        self._context = context
        self._headers = headers
        self._client = httpx.Client(
            base_url=server, verify=context, headers=headers, timeout=timeout_s
        )

    @classmethod
    def from_kubeconfig(cls, path: Path) -> KubeApi:
        """Build from a kubeconfig as written by controlplane.write_kubeconfig (files, not data)."""
        config = yaml.safe_load(path.read_text())
        context_name = config["current-context"]
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        cert = (
            (Path(user["client-certificate"]), Path(user["client-key"]))
            if "client-certificate" in user
            else None
        )
        return cls(
            cluster["server"],
            Path(cluster["certificate-authority"]),
            cert=cert,
            token=user.get("token"),
        )

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """Send one request; return the decoded JSON body, or raise ApiError."""
        content = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if content is not None else {}
        response = self._client.request(
            method, path, content=content, params=params, headers=headers
        )
        if response.status_code >= 300:
            raise ApiError(method, path, response.status_code, response.text)
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body, content_type=MERGE_PATCH)

    def delete(self, path: str, body: Any = None) -> Any:
        return self.request("DELETE", path, body)

    def watch(
        self, path: str, resource_version: str, idle_timeout_s: float, **params: Any
    ) -> Iterator[dict[str, Any]]:
        """Yield watch events from `resource_version` until the server ends the stream or it
        stays idle for `idle_timeout_s` (so a caller can check for shutdown and resume)."""
        query = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            **params,
        }
        timeout = httpx.Timeout(10.0, read=idle_timeout_s)
        with (
            httpx.Client(
                base_url=self.server, verify=self._context, headers=self._headers, timeout=timeout
            ) as client,
            client.stream("GET", path, params=query) as response,
        ):
            if response.status_code >= 300:
                raise ApiError(
                    "WATCH", path, response.status_code, response.read().decode(errors="replace")
                )
            try:
                for line in response.iter_lines():
                    if line:
                        yield json.loads(line)
            except httpx.ReadTimeout:
                return
