"""The managed platform API's state on Kubernetes (``platform/store.py``'s interface): models and
endpoint configs are ``InferenceModel`` and ``InferenceEndpointConfig`` objects whose spec is the
accepted record, endpoints and transform jobs are ``InferenceEndpoint`` objects the operator
reconciles as any other. All live in one namespace per gateway, so ``kubectl get
inferencemodels,inferenceendpointconfigs,inferenceendpoints`` there shows everything the API
holds and nothing lives only in the gateway's memory.

Platform names may carry upper case; each object is named ``endpoints.spec.object_name`` of it
(the record keeps the name as it was given), whoever calls the store. The CRDs come from
``operator/crd.py`` (``RECORD_CRDS``), which the gateway may not import: the plurals here must
match its."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from infermodes.endpoints.spec import GROUP, VERSION, object_name
from infermodes.gateway.kube import ENDPOINTS_PATH, KubeApi, KubeApiError, scoped
from infermodes.gateway.table import Table
from infermodes.platform.store import (
    AlreadyExists,
    JsonObject,
    LimitExceeded,
    NotFound,
    RecordKind,
    Refused,
    ServedElsewhere,
    Throttled,
    Unavailable,
)

RECORD_RESOURCES = {
    RecordKind.MODEL: ("InferenceModel", "inferencemodels"),
    RecordKind.ENDPOINT_CONFIG: ("InferenceEndpointConfig", "inferenceendpointconfigs"),
}
REPLACE_ATTEMPTS = 5  # a replace that meets another writer's change reads and tries again
REFUSALS = (400, 403, 422)  # a policy, a quota or the schema: the cluster's answer, not a failure
OWN_ACCOUNT_REFUSED = re.compile(r'User "[^"]*" cannot [a-z]+ resource')  # RBAC's words
THROTTLED = 429  # the API server's "too many requests", and a new CRD's storage starting
UNAVAILABLE = (502, 503, 504)  # the API server (or what is in front of it) for a moment


def refusal(exc: KubeApiError, action: str) -> Exception:
    """The store's error for the cluster's refusal of a write: what it said, as ``Refused``
    (``LimitExceeded`` for a quota); any other answer is the API's failure, as it was, and so
    is a refusal of the gateway's own account (its RBAC: the operator's to mend, not the
    caller's)."""
    if exc.status not in REFUSALS or OWN_ACCOUNT_REFUSED.search(exc.message):
        return exc
    said = f"the cluster refused to {action}: {exc.message}"
    return LimitExceeded(said) if "exceeded quota" in exc.message else Refused(said)


@contextlib.contextmanager
def transients() -> Iterator[None]:
    """Raise a transient failure of the API server as ``transient`` names it, any other as it
    was."""
    try:
        yield
    except (KubeApiError, httpx.TransportError) as exc:
        failure = transient(exc)
        if failure is None:
            raise
        raise failure from exc


def transient(exc: KubeApiError | httpx.TransportError) -> Unavailable | None:
    """The store's ``Throttled`` or ``Unavailable`` for an answer that may be another in a
    moment (or no answer: the API server unreachable or timing out); None for any other."""
    if isinstance(exc, httpx.TransportError):
        return Unavailable(f"the cluster's API server did not answer: {type(exc).__name__}")
    if exc.status == THROTTLED:
        return Throttled(f"the cluster's API server is throttling requests: {exc.message}")
    if exc.status in UNAVAILABLE:
        return Unavailable(f"the cluster's API server is unavailable ({exc.status}): "
                           f"{exc.message}")  # fmt: skip
    return None


class KubePlatformStore:
    """``PlatformStore`` over the gateway's REST client, in ``namespace``; ``table``: the
    gateway's, whose names in other namespaces a new endpoint may not take."""

    def __init__(self, api: KubeApi, namespace: str, table: Table | None = None) -> None:
        self.api = api
        self.namespace = namespace
        self.endpoints = scoped(namespace, ENDPOINTS_PATH)
        self.table = table

    async def _get(self, path: str) -> dict[str, Any]:
        with transients():
            return await self.api.get(path, {})

    async def _send(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> None:
        with transients():
            await self.api.send(method, path, body)

    def _records(self, kind: RecordKind) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{RECORD_RESOURCES[kind][1]}"

    async def _create(self, path: str, obj: JsonObject, what: str) -> None:
        try:
            await self._send("POST", path, obj)
        except KubeApiError as exc:
            if exc.status == 409:
                raise AlreadyExists(f"{what} {obj['metadata']['name']!r} exists") from None
            raise refusal(exc, f"create {what} {obj['metadata']['name']!r}") from None

    async def _read(self, path: str) -> JsonObject | None:
        try:
            return await self._get(path)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def _delete(self, path: str, what: str) -> None:
        try:
            await self._send("DELETE", path)
        except KubeApiError as exc:
            if exc.status == 404:
                raise NotFound(f"{what} {path.rsplit('/', 1)[-1]!r} does not exist") from None
            raise refusal(exc, f"delete {what} {path.rsplit('/', 1)[-1]!r}") from None

    async def create_record(self, kind: RecordKind, name: str, record: JsonObject) -> None:
        resource_kind, _ = RECORD_RESOURCES[kind]
        obj = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": resource_kind,
            "metadata": {"name": object_name(name), "namespace": self.namespace},
            "spec": record,
        }
        await self._create(self._records(kind), obj, resource_kind)

    async def read_record(self, kind: RecordKind, name: str) -> JsonObject | None:
        found = await self._read(f"{self._records(kind)}/{object_name(name)}")
        return None if found is None else dict(found.get("spec") or {})

    async def list_records(self, kind: RecordKind) -> list[JsonObject]:
        listed = await self._get(self._records(kind))
        return [dict(item.get("spec") or {}) for item in listed.get("items") or []]

    async def count_records(self, kind: RecordKind) -> int:
        return len(await self.list_records(kind))  # one list: the API server counts no cheaper

    async def delete_record(self, kind: RecordKind, name: str) -> None:
        path = f"{self._records(kind)}/{object_name(name)}"
        await self._delete(path, RECORD_RESOURCES[kind][0])

    async def create_endpoint(self, endpoint: JsonObject) -> None:
        meta = {**endpoint.get("metadata", {}), "namespace": self.namespace}
        meta["name"] = name = object_name(str(meta["name"]))
        served = self.table.namespaces_of(name) if self.table is not None else []
        elsewhere = [namespace for namespace in served if namespace != self.namespace]
        if elsewhere:
            raise ServedElsewhere(
                f"the name {name} is taken by an endpoint this gateway serves from "
                f"{'namespaces' if len(elsewhere) > 1 else 'namespace'} {' and '.join(elsewhere)} "
                "(it serves a name from one namespace only)"
            )
        await self._create(self.endpoints, {**endpoint, "metadata": meta}, "InferenceEndpoint")

    async def replace_endpoint(self, endpoint: JsonObject) -> None:
        """The spec as given, the labels and annotations given set over the object's (the
        others are the operator's and the gateways': its handling state, the demand). Read,
        change, put with the read's resourceVersion; a conflict reads again."""
        meta = endpoint.get("metadata") or {}
        name = object_name(str(meta["name"]))
        path = f"{self.endpoints}/{name}"
        for _ in range(REPLACE_ATTEMPTS):
            current = await self._read(path)
            if current is None:
                raise NotFound(f"InferenceEndpoint {name!r} does not exist")
            for field in ("labels", "annotations"):
                current["metadata"][field] = {
                    **(current["metadata"].get(field) or {}),
                    **(meta.get(field) or {}),
                }
            current["spec"] = endpoint["spec"]
            try:
                await self._send("PUT", path, current)
                return
            except KubeApiError as exc:
                if exc.status == 404:
                    raise NotFound(f"InferenceEndpoint {name!r} does not exist") from None
                if exc.status != 409:
                    raise refusal(exc, f"replace InferenceEndpoint {name!r}") from None
        raise Refused(
            f"InferenceEndpoint {name!r} kept changing while it was replaced "
            f"({REPLACE_ATTEMPTS} attempts); try again"
        )

    async def read_endpoint(self, name: str) -> JsonObject | None:
        return await self._read(f"{self.endpoints}/{object_name(name)}")

    async def list_endpoints(self) -> list[JsonObject]:
        listed: dict[str, Any] = await self._get(self.endpoints)
        return list(listed.get("items") or [])

    async def delete_endpoint(self, name: str) -> None:
        await self._delete(f"{self.endpoints}/{object_name(name)}", "InferenceEndpoint")
