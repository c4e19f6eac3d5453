"""The gateway's view of Kubernetes, over the REST API with httpx (the ``kubernetes`` client is
the operator's alone): list + watch of InferenceEndpoints and model-server Pods in each watched
namespace, the demand annotation as a merge patch, and the platform API's creates, replaces and
deletes (``platform_store.py``).

Watches resume from the last resourceVersion (bookmarks keep it fresh), relist on 410 Gone and
reconnect with a bounded back-off. Credentials: the pod's service account when running
in-cluster, else the kubeconfig file named by ``KUBECONFIG`` (token or client certificate).
Tokens are read from disk on every request (the kubelet rotates them) and never logged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from infermodes.endpoints.demand import GatewayDemand, annotation_key
from infermodes.endpoints.plan import SERVER_PORT
from infermodes.endpoints.spec import GROUP, PLURAL, VERSION
from infermodes.gateway.table import Replica, Table

log = logging.getLogger("infermodes.gateway")

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# The labels the operator puts on every model-server pod (operator/objects.py, which the
# gateway may not import)
ENDPOINT_LABEL = "infermodes.dev/endpoint"
MODEL_SERVER_SELECTOR = "app.kubernetes.io/component=model-server"
WATCH_SECONDS = 300  # the server ends each watch after this; it is resumed at once
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0
MERGE_PATCH = "application/merge-patch+json"
ENDPOINTS_PATH = f"/apis/{GROUP}/{VERSION}/{PLURAL}"
PODS_PATH = "/api/v1/pods"
ALL_NAMESPACES = "*"  # in the namespaces setting: watch every namespace


class KubeApiError(Exception):
    """The Kubernetes API answered ``status``; ``message`` is its Status's message when it sent
    one (what a quota or an admission policy says), else the start of its answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message

    @classmethod
    def of(cls, response: httpx.Response) -> KubeApiError:
        try:
            message = str(response.json()["message"])
        except (ValueError, KeyError, TypeError):
            message = response.text
        return cls(response.status_code, message[:500])


class Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


@dataclass(frozen=True)
class Credentials:
    server: str
    verify: ssl.SSLContext | bool
    token: Callable[[], str | None]  # read on every request: tokens rotate
    cert: tuple[str, str] | None = None  # client certificate and key files
    # ... or their PEM text (kubeconfig data): a private key, never in a repr
    cert_data: tuple[bytes, bytes] | None = field(default=None, repr=False)
    namespace: str = "default"

    @classmethod
    def discover(cls) -> Credentials:
        """In-cluster credentials when the service account is mounted, else ``KUBECONFIG``."""
        host, port = (
            os.environ.get("KUBERNETES_SERVICE_HOST"),
            os.environ.get("KUBERNETES_SERVICE_PORT"),
        )
        if host and port and (SERVICE_ACCOUNT / "token").exists():
            return cls.in_cluster(host, port)
        path = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        return cls.from_kubeconfig(Path(path.split(os.pathsep)[0]))

    @classmethod
    def in_cluster(cls, host: str, port: str) -> Credentials:
        token_file = SERVICE_ACCOUNT / "token"
        host = f"[{host}]" if ":" in host else host
        return cls(
            server=f"https://{host}:{port}",
            verify=ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt")),
            token=lambda: token_file.read_text().strip(),
            namespace=(SERVICE_ACCOUNT / "namespace").read_text().strip(),
        )

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Credentials:
        """The current context of a kubeconfig file (yaml is imported only here)."""
        import yaml

        try:
            config = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:  # its message quotes the file, which holds secrets
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise ValueError(f"kubeconfig {path} is not valid YAML{where}") from None
        current = config.get("current-context")
        context = next(c["context"] for c in config["contexts"] if c["name"] == current)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user: dict[str, Any] = next(
            (u["user"] for u in config.get("users", []) if u["name"] == context.get("user")), {}
        )
        base = path.parent
        verify: ssl.SSLContext | bool = True
        if cluster.get("insecure-skip-tls-verify"):
            verify = False
        elif "certificate-authority-data" in cluster:
            ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
            verify = ssl.create_default_context(cadata=ca)
        elif "certificate-authority" in cluster:
            verify = ssl.create_default_context(cafile=str(base / cluster["certificate-authority"]))
        token = user.get("token")
        token_file = user.get("tokenFile")
        cert = cert_data = None
        if "client-certificate-data" in user:
            cert_data = (base64.b64decode(user["client-certificate-data"]),
                         base64.b64decode(user["client-key-data"]))  # fmt: skip
        elif "client-certificate" in user:
            cert = (str(base / user["client-certificate"]), str(base / user["client-key"]))
        return cls(
            server=cluster["server"],
            verify=verify,
            token=(lambda: Path(base / token_file).read_text().strip()) if token_file
            else (lambda: token),
            cert=cert,
            cert_data=cert_data,
            namespace=context.get("namespace", "default"),
        )  # fmt: skip


def load_client_cert(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """Load a client certificate and key given as PEM text: ssl loads only files, so they are
    written to private files that are gone again once loaded (the key must not stay on disk)."""
    with tempfile.TemporaryDirectory(prefix="infermodes-gateway-") as directory:
        paths = []
        for name, data in (("client.crt", cert), ("client.key", key)):
            path = os.path.join(directory, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            paths.append(path)
        context.load_cert_chain(paths[0], paths[1])


class KubeApi:
    """The few API calls the gateway makes."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        verify = credentials.verify
        if credentials.cert is not None or credentials.cert_data is not None:
            context = verify if isinstance(verify, ssl.SSLContext) else ssl.create_default_context()
            if verify is False:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if credentials.cert_data is not None:
                load_client_cert(context, *credentials.cert_data)
            elif credentials.cert is not None:
                context.load_cert_chain(*credentials.cert)
            verify = context
        self.client = httpx.AsyncClient(
            base_url=credentials.server,
            verify=verify,
            timeout=httpx.Timeout(30.0),
            limits=httpx.Limits(max_connections=None),  # a long-lived stream per watch
        )

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        token = self.credentials.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def get(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        response = await self.client.get(path, params=params, headers=self._headers())
        if response.status_code != 200:
            raise KubeApiError.of(response)
        result: dict[str, Any] = response.json()
        return result

    async def send(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """One create (POST), replace (PUT) or delete (DELETE); its answer's JSON. Any status
        but 200/201/202 is a ``KubeApiError`` (409 a name taken or a stale resourceVersion, 404
        nothing there)."""
        content = None if body is None else json.dumps(body)
        headers = self._headers({"Content-Type": "application/json"} if content else None)
        response = await self.client.request(method, path, content=content, headers=headers)
        if response.status_code not in (200, 201, 202):
            raise KubeApiError.of(response)
        return response.json()

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> None:
        response = await self.client.patch(
            path, content=json.dumps(patch), headers=self._headers({"Content-Type": MERGE_PATCH})
        )
        if response.status_code not in (200, 201):
            raise KubeApiError.of(response)

    async def watch(
        self, path: str, params: Mapping[str, str], version: str
    ) -> AsyncIterator[dict[str, Any]]:
        """Events of one watch request, from ``version`` on; ends when the server ends it."""
        query = {
            **params,
            "watch": "1",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        timeout = httpx.Timeout(30.0, read=WATCH_SECONDS + 30.0)
        async with self.client.stream(
            "GET", path, params=query, headers=self._headers(), timeout=timeout
        ) as response:
            if response.status_code == 410:
                raise Gone()
            if response.status_code != 200:
                await response.aread()
                raise KubeApiError.of(response)
            async for line in response.aiter_lines():
                if line.strip():
                    event: dict[str, Any] = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        if status.get("code") == 410:
                            raise Gone()
                        raise KubeApiError(int(status.get("code", 500)), str(status.get("message")))
                    yield event


class Watched:
    """One resource kind of one namespace, kept in the table by list + watch."""

    def __init__(
        self,
        api: KubeApi,
        path: str,
        params: Mapping[str, str],
        replace: Callable[[list[dict[str, Any]]], None],
        apply: Callable[[str, dict[str, Any]], None],
        on_synced: Callable[[], None],
    ) -> None:
        self.api, self.path, self.params = api, path, params
        self.replace, self.apply, self.on_synced = replace, apply, on_synced

    async def run(self) -> None:
        """List, then watch from the list's version; on 410 list again; on any failure wait
        (0.1 s doubling to 5 s) and resume. Ends only when cancelled."""
        version: str | None = None
        backoff = BACKOFF_FIRST
        while True:
            try:
                if version is None:
                    listed = await self.api.get(self.path, self.params)
                    version = str(listed["metadata"]["resourceVersion"])
                    self.replace(listed.get("items") or [])
                    self.on_synced()
                async for event in self.api.watch(self.path, self.params, version):
                    obj = event.get("object") or {}
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if event["type"] != "BOOKMARK":
                        self.apply(event["type"], obj)
                    backoff = BACKOFF_FIRST
            except Gone:
                version = None
            except (httpx.HTTPError, KubeApiError, ValueError, KeyError) as exc:
                log.warning("watch of %s failed (%s); again in %.1f s", self.path, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)


def pod_replica(pod: Mapping[str, Any]) -> tuple[str, str, Replica] | None:
    """(namespace, endpoint name, replica) of a model-server pod that can take traffic: it has
    an IP, is running and is not being deleted. Ready when the kubelet says so; otherwise
    probed."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    endpoint = (meta.get("labels") or {}).get(ENDPOINT_LABEL)
    ip = status.get("podIP")
    if not endpoint or not ip or meta.get("deletionTimestamp") or status.get("phase") != "Running":
        return None
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    ready = conditions.get("Ready") == "True"
    replica = Replica(str(meta["name"]), ip, SERVER_PORT, ready=ready)
    return str(meta.get("namespace", "")), endpoint, replica


def apply_pod(table: Table, kind: str, pod: Mapping[str, Any]) -> None:
    """A pod event: it joins (probed if not yet Ready) or leaves the rotation at once."""
    meta = pod.get("metadata") or {}
    endpoint = (meta.get("labels") or {}).get(ENDPOINT_LABEL)
    if not endpoint:
        return
    found = None if kind == "DELETED" else pod_replica(pod)
    if found is None:
        table.drop_replica(str(meta.get("namespace", "")), endpoint, str(meta.get("name")))
    else:
        table.set_replica(*found)


def replace_pods(table: Table, scope: str | None, pods: list[dict[str, Any]]) -> None:
    replicas: dict[tuple[str, str], list[Replica]] = {}
    for pod in pods:
        found = pod_replica(pod)
        if found is not None:
            replicas.setdefault(found[:2], []).append(found[2])
    table.replace_replicas(scope, replicas)


def apply_endpoint(table: Table, kind: str, obj: Mapping[str, Any]) -> None:
    if kind == "DELETED":
        meta = obj.get("metadata") or {}
        table.remove_endpoint(str(meta.get("namespace", "")), str(meta.get("name")))
    else:
        table.apply_endpoint(obj)


def scoped(namespace: str | None, plural_path: str) -> str:
    """A collection's path in one namespace, or across all (None)."""
    if namespace is None:
        return plural_path
    head, _, tail = plural_path.rpartition("/")
    return f"{head}/namespaces/{namespace}/{tail}"


class KubeSource:
    """Endpoints and replicas of the watched namespaces: the gateway's own by default, a list,
    or every namespace (``*``)."""

    def __init__(self, api: KubeApi, namespaces: list[str]) -> None:
        self.api = api
        chosen = namespaces or [api.credentials.namespace]
        self.scopes: list[str | None] = [None] if ALL_NAMESPACES in chosen else list(chosen)

    async def run(self, table: Table) -> None:
        watches: list[Watched] = []
        pending = {(scope, kind) for scope in self.scopes for kind in ("endpoints", "pods")}

        def synced(key: tuple[str | None, str]) -> Callable[[], None]:
            def done() -> None:
                pending.discard(key)
                if not pending:
                    table.synced.add("kubernetes")

            return done

        for scope in self.scopes:
            watches.append(Watched(
                self.api, scoped(scope, ENDPOINTS_PATH), {},
                partial(table.replace_endpoints, scope), partial(apply_endpoint, table),
                synced((scope, "endpoints")),
            ))  # fmt: skip
            watches.append(Watched(
                self.api, scoped(scope, PODS_PATH), {"labelSelector": MODEL_SERVER_SELECTOR},
                partial(replace_pods, table, scope), partial(apply_pod, table),
                synced((scope, "pods")),
            ))  # fmt: skip
        await asyncio.gather(*(w.run() for w in watches))

    async def reread(self, table: Table, name: str) -> None:
        """The endpoints named ``name`` in the watched namespaces, read now and applied (the
        watch may not have brought their last change yet). A list selecting that one name, in
        each namespace or across all: the list the watch's role grants, no ``get`` besides.
        Any failure raises."""
        removals = table.removals
        selected = {"fieldSelector": f"metadata.name={name}"}
        found: list[dict[str, Any]] = []
        for scope in self.scopes:
            listed = await self.api.get(scoped(scope, ENDPOINTS_PATH), selected)
            found += listed.get("items") or []
        for obj in found:
            table.apply_read(obj, removals)


class KubeDemandSink:
    """Demand as this gateway's annotation on the InferenceEndpoint (a merge patch touches
    only that key). A missing endpoint is not an error: it was deleted."""

    def __init__(self, api: KubeApi, gateway_id: str) -> None:
        self.api = api
        self.key = annotation_key(gateway_id)

    async def write(self, namespace: str, name: str, demand: GatewayDemand) -> None:
        patch = {"metadata": {"annotations": {self.key: demand.to_annotation()}}}
        try:
            await self.api.merge_patch(f"{scoped(namespace, ENDPOINTS_PATH)}/{name}", patch)
        except KubeApiError as exc:
            if exc.status != 404:
                raise
