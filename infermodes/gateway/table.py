"""The routing table: the endpoints the gateway serves, their replicas, and the per-endpoint
accounting (in flight, held, the concurrency cap). Pure state and decisions: sources fill it
(``apply_*``, ``replace_*``), the proxy reads it, nothing here does I/O (but a warning in the
log).

Names: the gateway serves the endpoints of the namespaces it watches (all of them, or a list)
under their bare names. A name found in two of them is refused with 409 naming both namespaces
rather than guessed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from infermodes.endpoints.async_plan import async_endpoint
from infermodes.endpoints.demand import ANNOTATION_PREFIX, STALE_SECONDS, GatewayDemand
from infermodes.endpoints.spec import MODEL_SERVER_MODES, EndpointSpec, Mode, Phase, ServerlessSpec
from infermodes.endpoints.status import FAILED_CREATE, NAME_IN_USE, in_force
from infermodes.errors import EndpointNotFound, InfermodesError, clipped
from infermodes.gateway.errors import ValidationError
from infermodes.metrics import UNKNOWN_ENDPOINT
from infermodes.platform.translate import variant_of
from infermodes.settings import AsyncEndpoint
from infermodes.storage import folder_uri, lies_under, prefix_base

log = logging.getLogger("infermodes.gateway")

SERVING_PHASES = frozenset({Phase.IN_SERVICE, Phase.UPDATING})  # Updating keeps old replicas
SYNCHRONOUS_MODES = frozenset(MODEL_SERVER_MODES)  # invoked through the model servers
MAX_REASON = 64  # a status reason is one CamelCase word; a longer value is cut


@dataclass
class Replica:
    """One model server. ``ready`` once its ``/ping`` answered 200 (or its pod is Ready)."""

    key: str  # the pod name, or the address for static replicas
    host: str
    port: int
    ready: bool = False
    in_flight: int = 0
    removed: bool = False
    handle: Any = None  # the proxy's per-replica state (its connection pool)


@dataclass(frozen=True)
class AsyncSpecView:
    """What the accept route needs of one async endpoint; ``refusal`` says why the gateway
    does not serve it (its storage lies outside the gateway's prefixes)."""

    layout: AsyncEndpoint
    max_attempts: int
    refusal: str | None = None
    workers: int = 0  # the pool's replicas as the operator last wrote them (its status)


class StorageNotAllowed(InfermodesError):
    """An async endpoint whose paths lie outside the gateway's async storage prefixes."""

    status_code = 403


NAMESPACE_PLACEHOLDER = "{namespace}"
# the one a platform user sets first: a derived inputPath (<outputPath>/input) follows it
PATH_FIELDS = (("outputPath", "output_path"), ("failurePath", "failure_path"),
               ("inputPath", "input_path"))  # fmt: skip


def storage_bases(prefixes: Sequence[str], namespace: str) -> list[str]:
    """The prefixes for one namespace's endpoints, spelt as normalised URIs; one with
    ``{namespace}`` is for named namespaces only (an empty name would widen it)."""
    return [
        prefix_base(prefix.replace(NAMESPACE_PLACEHOLDER, namespace))
        for prefix in prefixes
        if namespace or NAMESPACE_PLACEHOLDER not in prefix
    ]


def storage_refusal(prefixes: Sequence[str], namespace: str, name: str, layout: AsyncEndpoint
                    ) -> str | None:  # fmt: skip
    """Why the gateway may not store and sweep under an async endpoint's paths (None: it may),
    as its callers are told. It does so with its own credentials, so every path must lie under
    one of ``prefixes`` (``{namespace}`` is the endpoint's); no prefixes: anywhere."""
    if not prefixes:
        return None
    bases = storage_bases(prefixes, namespace)
    for field_name, attribute in PATH_FIELDS:
        path = getattr(layout, attribute)
        folder = folder_uri(path)
        if folder is None or not any(lies_under(folder, base) for base in bases):
            return (
                f"endpoint {name}: its {field_name} {path} is not under the gateway's async "
                "storage prefixes, where alone it stores and sweeps with its own credentials "
                "(its operator sets them: gateway.asyncStoragePrefixes)"
            )
    return None


@dataclass
class Endpoint:
    """One endpoint as the gateway sees it, and its live accounting."""

    name: str
    namespace: str
    # whether its namespace means something to a caller (a cluster's) and errors name it: not
    # under ``infermodes up``, whose one namespace is its own
    namespaced: bool = True
    mode: Mode | None = None  # None: a spec the gateway cannot read
    phase: Phase | None = None
    # the status's reason (a word): why a phase takes no invocations. Not its message, which
    # may quote a container's log: that is for whoever may read the endpoint, not its callers
    why: str = ""
    serverless: ServerlessSpec | None = None
    async_: AsyncSpecView | None = None
    variant: str | None = None  # the platform API's production variant; None: not the API's
    peers_seen_at: tuple[float, ...] = ()  # when other gateway replicas last wrote demand
    version: int = 0  # the resourceVersion of the object last applied (0: none, or not a number)
    replicas: dict[str, Replica] = field(default_factory=dict)
    active: int = 0  # admitted and not yet answered (held included)
    peak_active: int = 0  # the most ``active`` since the demand was last written
    held: int = 0
    last_request_at: float = 0.0  # wall clock
    pushed_at_zero: bool = False  # async: the push went out since the pool was last at zero
    cold_since: float | None = None  # monotonic: first held request with no ready replica
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    _next: int = 0

    @property
    def in_flight(self) -> int:
        """Forwarded to a replica, not yet answered (the demand annotation's ``inFlight``)."""
        return self.active - self.held

    def concurrency_cap(self, now: float) -> int | None:
        """This gateway's share of ``maxConcurrency`` at wall-clock ``now`` (None: no cap, a
        realtime endpoint). Each gateway replica whose demand entry is fresh takes an equal
        share, at least one."""
        if self.serverless is None:
            return None
        peers = sum(1 for at in self.peers_seen_at if now - at <= STALE_SECONDS)
        return max(1, self.serverless.max_concurrency // (1 + peers))

    @property
    def where(self) -> str:
        """How an error names it: with its namespace where that means something."""
        namespace = f" (namespace {self.namespace})" if self.namespaced else ""
        return f"endpoint {self.name}{namespace}"

    def check_servable(self) -> None:
        """Raise the error that says why this endpoint takes no invocations, if it does not."""
        where = self.where
        if self.mode is None:
            raise ValidationError(f"{where} has a spec the gateway cannot read")
        if self.mode not in SYNCHRONOUS_MODES:
            raise self.other_route()
        if self.phase not in SERVING_PHASES:
            phase = self.phase.value if self.phase else "not reconciled yet"
            why = f" ({self.why})" if self.why else ""
            raise ValidationError(f"{where} is {phase}{why}, not InService")

    def behind(self) -> bool:
        """Whether its refusal may only be the watch's lag: a synchronous endpoint whose phase
        takes no invocations (the API may say InService already). Not a mode's refusal."""
        return self.mode in SYNCHRONOUS_MODES and self.phase not in SERVING_PHASES

    def other_route(self) -> ValidationError:
        """The 400 for a request to a route this endpoint's mode does not take: its route."""
        use = (
            f"/endpoints/{self.name}/async-invocations" if self.mode is Mode.ASYNC
            else f"/endpoints/{self.name}/invocations" if self.mode in SYNCHRONOUS_MODES
            else "its batch job"
        )  # fmt: skip
        article = "an" if self.mode is Mode.ASYNC else "a"
        return ValidationError(f"{self.where} is {article} {self.mode} endpoint: use {use}")

    def may_come(self) -> bool:
        """Whether a replica may still come for held requests: not once the endpoint failed,
        or its spec became one of another mode (or one the gateway cannot read)."""
        return self.phase is not Phase.FAILED and self.mode in SYNCHRONOUS_MODES

    def pods_refused(self) -> bool:
        """Its status says the API refuses its pods (a quota, a Pod Security level): no replica
        comes soon, though one may later. A held request is told at once. Not ``Unschedulable``:
        with a cluster autoscaler that is how a cold start waits for its node."""
        return self.why == FAILED_CREATE

    def choose(self) -> Replica | None:
        """The ready replica with the fewest requests in flight; ties rotate."""
        ready = [r for r in self.replicas.values() if r.ready]
        if not ready:
            return None
        self._next = (self._next + 1) % len(ready)
        best = ready[self._next]
        for replica in ready:
            if replica.in_flight < best.in_flight:
                best = replica
        return best

    def wake(self) -> None:
        """A replica became ready, or the endpoint failed: every held request looks again."""
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def resource_version(meta: Mapping[str, Any]) -> int:
    """An object's resourceVersion as a number (etcd's revision, growing with each write to
    the cluster); 0 when it is not one, which is then never taken for older."""
    value = str(meta.get("resourceVersion") or "")
    return int(value) if value.isdigit() and len(value) < 20 else 0


def status_replicas(status: Any) -> int:
    """``status.replicas`` of an endpoint object; 0 when absent or not a count (a pool the
    operator has not scaled yet has no workers)."""
    value = status.get("replicas") if isinstance(status, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def demand_peers(annotations: Mapping[str, str] | None, own_key: str) -> tuple[float, ...]:
    """When each other gateway replica wrote its demand entry on the endpoint."""
    seen = []
    for key, value in (annotations or {}).items():
        if key.startswith(ANNOTATION_PREFIX) and key != own_key:
            entry = GatewayDemand.from_annotation(value)
            if entry is not None:
                seen.append(entry.at)
    return tuple(seen)


ReplicaHook = Callable[[Endpoint, Replica], None]


class Table:
    """Every endpoint of the watched namespaces, by namespace and name."""

    def __init__(
        self,
        demand_key: str = "",
        on_new_replica: ReplicaHook | None = None,
        on_removed_replica: ReplicaHook | None = None,
        storage_prefixes: Sequence[str] = (),
        namespaced: bool = True,
    ) -> None:
        self.demand_key = demand_key
        self.namespaced = namespaced  # see ``Endpoint.namespaced``
        self.storage_prefixes = storage_prefixes  # see ``storage_refusal``
        self.on_new_replica = on_new_replica
        self.on_removed_replica = on_removed_replica
        # told a name once no entry of it is left (its metrics go: the proxy's, the accept
        # route's): an endpoint deleted, its last requests answered
        self.forgotten: list[Callable[[str], None]] = []
        self.endpoints: dict[tuple[str, str], Endpoint] = {}
        self.known: set[tuple[str, str]] = set()  # endpoints with an object (not only pods)
        self.synced: set[str] = set()  # sources that have listed everything once
        self.removals = 0  # endpoints removed so far (``apply_read``)
        self._by_name: dict[str, list[Endpoint]] = {}
        # the accept route's views, by name, live: a name only while one namespace has an
        # endpoint of that name and it is async (``async_missing`` says why not)
        self.async_layouts: dict[str, AsyncEndpoint] = {}
        self.max_attempts: dict[str, int] = {}
        # every async endpoint, by "namespace/name": the retention sweep's
        self.async_swept: dict[str, AsyncEndpoint] = {}

    # reading
    def _holders(self, name: str) -> list[Endpoint]:
        """The endpoints of ``name``, but for those the operator held back because an older
        one in another namespace holds it (``NameInUse``: an async queue is one per name): a
        newcomer must not take the name off the endpoint that has it."""
        found = self._by_name.get(name, [])
        held = [e for e in found if not (e.phase is Phase.FAILED and e.why == NAME_IN_USE)]
        return held or found

    def lookup(self, name: str) -> Endpoint:
        """The endpoint serving ``name``, or the error naming why there is none."""
        found = self._holders(name)
        if not found:
            raise self.not_found(name)
        if len(found) > 1:
            spaces = " and ".join(sorted(e.namespace for e in found))
            raise ValidationError(
                f"endpoint {name} exists in namespaces {spaces}; the gateway serves a name "
                "from one namespace only (rename one, or give each namespace its own gateway)",
                409,
            )
        return found[0]

    def namespaces_of(self, name: str) -> list[str]:
        """The namespaces with an endpoint of ``name`` (the platform API refuses to make one
        more elsewhere: ``lookup`` would then answer 409 for each)."""
        return sorted(e.namespace for e in self._by_name.get(name, []))

    def behind(self, name: str) -> bool:
        """Whether the refusal of an invocation of ``name`` may only be the watch's lag, so
        that reading it again may change it: no endpoint of that name (its ADDED event may not
        have come yet), or one whose phase takes no invocations (``Endpoint.behind``). Not a
        name in two namespaces: a read changes neither."""
        found = self._holders(name)
        return not found or (len(found) == 1 and found[0].behind())

    @staticmethod
    def not_found(name: str) -> ValidationError:
        return ValidationError(f"endpoint {clipped(name)} not found", 404)

    def serves(self, endpoint: Endpoint) -> bool:
        """Whether ``endpoint`` is still in the table (not deleted since it was looked up)."""
        return (endpoint.namespace, endpoint.name) in self.known

    def async_input_paths(self) -> list[str]:
        """Every async endpoint's input path, served or not (refused, or a name in two
        namespaces): no by-reference input may name the API's own objects in any of them."""
        return [e.async_.layout.input_path for e in self.endpoints.values() if e.async_]

    def async_missing(self, name: str) -> InfermodesError:
        """Why the accept route has no layout for ``name``: a name in several namespaces (409,
        as for synchronous invocations), an endpoint whose storage the gateway may not use
        (403), an endpoint of another mode (400, as the synchronous route answers an async
        one), or no endpoint of that name (404)."""
        try:
            endpoint = self.lookup(name)
        except ValidationError as exc:
            if exc.status_code == 409:
                return exc
        else:
            found = endpoint.async_
            if found is not None and found.refusal is not None:
                return StorageNotAllowed(found.refusal)
            if endpoint.mode is not None and endpoint.mode is not Mode.ASYNC:
                return endpoint.other_route()
        return EndpointNotFound(f"no async endpoint named {clipped(name)!r}")

    def get(self, namespace: str, name: str) -> Endpoint:
        key = (namespace, name)
        endpoint = self.endpoints.get(key)
        if endpoint is None:
            endpoint = self.endpoints[key] = Endpoint(name, namespace, self.namespaced)
        return endpoint

    # endpoint objects
    def apply_endpoint(self, obj: Mapping[str, Any]) -> None:
        """An InferenceEndpoint was added or changed. One whose values cannot be read (the API
        server checks a schema, not every value) takes no invocations, as an unreadable spec:
        raising would stop the watch that serves every other endpoint."""
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        endpoint = self.get(namespace, str(meta.get("name", "")))
        version = resource_version(meta)
        if version and version < endpoint.version:  # a watch event behind what a read applied
            return
        endpoint.version = version
        try:
            self._read(endpoint, obj)
        except Exception as exc:  # whatever it holds
            log.warning("endpoint %s/%s cannot be read (%s: %s); it takes no invocations",
                        namespace, endpoint.name, type(exc).__name__, exc)  # fmt: skip
            endpoint.mode = endpoint.serverless = endpoint.async_ = endpoint.phase = None
            endpoint.peers_seen_at = ()
        if not endpoint.may_come() or endpoint.pods_refused():  # none is coming: look again
            endpoint.wake()
        key = (namespace, endpoint.name)
        view = endpoint.async_
        if view is not None and view.refusal is None:
            self.async_swept[f"{namespace}/{endpoint.name}"] = view.layout
        else:
            self.async_swept.pop(f"{namespace}/{endpoint.name}", None)
        if key not in self.known:
            self.known.add(key)
            self._by_name.setdefault(endpoint.name, []).append(endpoint)
        self._index_async(endpoint.name)

    def apply_read(self, obj: Mapping[str, Any], removals_before: int) -> None:
        """An endpoint read on demand (``RereadingSource.reread``), applied as a watch event
        is, unless an endpoint was removed since the read began (``removals_before``): the
        object read may be one deleted meanwhile, which no later event would remove."""
        if self.removals == removals_before:
            self.apply_endpoint(obj)

    def _read(self, endpoint: Endpoint, obj: Mapping[str, Any]) -> None:
        """The endpoint's mode, blocks, phase and peers, from its object."""
        # an update the operator cannot parse: it keeps actuating the spec its workload was
        # applied from (Updating, InvalidSpec), recorded in the status, and the gateway serves
        # that one; none recorded, the spec read before; none read (mode None): it takes no
        # invocations
        spec = in_force(obj.get("spec") or {}, obj.get("status"))[0]
        if spec is None and endpoint.async_ is not None:
            workers = status_replicas(obj.get("status"))
            endpoint.async_ = replace(endpoint.async_, workers=workers)
        if spec is not None:
            self._read_spec(endpoint, obj, spec)
        if endpoint.async_ is None or endpoint.async_.workers:  # the next time at zero: a push
            endpoint.pushed_at_zero = False
        status = obj.get("status") or {}
        try:
            endpoint.phase = Phase(str(status.get("phase")))
        except ValueError:
            endpoint.phase = None
        endpoint.why = str(status.get("reason") or "")[:MAX_REASON]
        meta = obj.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        endpoint.peers_seen_at = demand_peers(annotations, self.demand_key)
        endpoint.variant = variant_of(annotations)

    def _read_spec(self, endpoint: Endpoint, obj: Mapping[str, Any], spec: EndpointSpec) -> None:
        """The endpoint's mode and blocks, from its spec."""
        endpoint.mode, endpoint.serverless = spec.mode, spec.serverless
        refused_before = endpoint.async_ is not None and endpoint.async_.refusal is not None
        endpoint.async_ = None
        if endpoint.mode is Mode.ASYNC and spec.async_ is not None:
            layout = async_endpoint(spec.async_, endpoint.namespace)
            refusal = storage_refusal(
                self.storage_prefixes, endpoint.namespace, endpoint.name, layout
            )
            workers = status_replicas(obj.get("status"))
            endpoint.async_ = AsyncSpecView(layout, spec.async_.max_attempts, refusal, workers)
            if refusal is not None and not refused_before:  # the detail for the operator only
                log.warning(
                    "namespace %s: %s (prefixes: %s)",
                    endpoint.namespace,
                    refusal,
                    ", ".join(storage_bases(self.storage_prefixes, endpoint.namespace)),
                )

    def _index_async(self, name: str) -> None:
        owners = self._holders(name)
        found = owners[0].async_ if len(owners) == 1 else None
        if found is None or found.refusal is not None:
            self.async_layouts.pop(name, None)
            self.max_attempts.pop(name, None)
        else:
            self.async_layouts[name], self.max_attempts[name] = found.layout, found.max_attempts

    def remove_endpoint(self, namespace: str, name: str) -> None:
        endpoint = self.endpoints.get((namespace, name))
        if endpoint is None or (namespace, name) not in self.known:
            return
        self.known.discard((namespace, name))
        self.removals += 1
        endpoint.async_ = None
        self.async_swept.pop(f"{namespace}/{name}", None)
        self._by_name[name].remove(endpoint)
        if not self._by_name[name]:
            del self._by_name[name]
        self._index_async(name)
        endpoint.mode, endpoint.phase, endpoint.serverless = None, None, None
        # an object created later under this name is a new endpoint: none of this one's demand
        # carries over (its pods may still finish requests: the entry goes once they are gone)
        endpoint.last_request_at, endpoint.peak_active, endpoint.peers_seen_at = 0.0, 0, ()
        endpoint.pushed_at_zero, endpoint.version = False, 0
        endpoint.wake()  # requests held for it get what a new request gets: 404
        self.forget_if_gone(endpoint)

    def forget_if_gone(self, endpoint: Endpoint) -> None:
        """Drop a deleted endpoint's entry once nothing of it is left: its replicas and the
        requests in flight to them outlive the object, and each leaving calls this."""
        key = (endpoint.namespace, endpoint.name)
        gone = key not in self.known and not endpoint.replicas and endpoint.active == 0
        if gone and self.endpoints.get(key) is endpoint:
            del self.endpoints[key]
            if endpoint.name != UNKNOWN_ENDPOINT and not self.has_entry(endpoint.name):
                for listener in self.forgotten:
                    listener(endpoint.name)

    def holds(self, endpoint: Endpoint) -> bool:
        """Whether this endpoint still has its entry (not forgotten since it was looked up)."""
        return self.endpoints.get((endpoint.namespace, endpoint.name)) is endpoint

    def has_entry(self, name: str) -> bool:
        """Whether an endpoint of this name, in any namespace, still has an entry."""
        return any(entry == name for _, entry in self.endpoints)

    def replace_endpoints(self, scope: str | None, objects: Iterable[Mapping[str, Any]]) -> None:
        """A full list of one namespace (``scope``) or of all (None), after a relist: endpoints
        not in it are gone."""
        listed = set()
        for obj in objects:
            self.apply_endpoint(obj)
            meta = obj.get("metadata") or {}
            listed.add((str(meta.get("namespace", "")), str(meta.get("name", ""))))
        for key in list(self.known):
            if scope in (None, key[0]) and key not in listed:
                self.remove_endpoint(*key)

    # replicas
    def set_replica(self, namespace: str, endpoint_name: str, replica: Replica) -> None:
        """Add a replica, or replace one whose address changed. A new one is told to
        ``on_new_replica`` (the proxy's connection pool; a probe unless it is ready) before it
        can be chosen: one ready when first seen (a gateway started beside Ready pods) too."""
        endpoint = self.get(namespace, endpoint_name)
        old = endpoint.replicas.get(replica.key)
        if old is not None and (old.host, old.port) == (replica.host, replica.port):
            if replica.ready and not old.ready:
                self.mark_ready(endpoint, old)
            return
        if old is not None:
            self._remove_replica(endpoint, old.key)
        endpoint.replicas[replica.key] = replica
        if self.on_new_replica is not None:
            self.on_new_replica(endpoint, replica)
        if replica.ready:
            self.mark_ready(endpoint, replica)

    def drop_replica(self, namespace: str, endpoint_name: str, key: str) -> None:
        """The replica leaves the rotation at once; its in-flight requests finish."""
        endpoint = self.endpoints.get((namespace, endpoint_name))
        if endpoint is not None and self._remove_replica(endpoint, key):
            self.forget_if_gone(endpoint)

    def _remove_replica(self, endpoint: Endpoint, key: str) -> bool:
        replica = endpoint.replicas.pop(key, None)
        if replica is None:
            return False
        replica.removed, replica.ready = True, False
        if self.on_removed_replica is not None:
            self.on_removed_replica(endpoint, replica)
        return True

    def replace_replicas(
        self, scope: str | None, replicas: Mapping[tuple[str, str], list[Replica]]
    ) -> None:
        """A full list of replicas by (namespace, endpoint name) of one namespace or all (None),
        after a relist."""
        for (ns, name), endpoint in list(self.endpoints.items()):
            if scope not in (None, ns):
                continue
            keep = {r.key for r in replicas.get((ns, name), [])}
            for key in [k for k in endpoint.replicas if k not in keep]:
                self.drop_replica(ns, name, key)
        for (ns, name), found in replicas.items():
            for replica in found:
                self.set_replica(ns, name, replica)

    def mark_ready(self, endpoint: Endpoint, replica: Replica) -> None:
        if replica.removed:
            return
        replica.ready = True
        endpoint.wake()

    def mark_unready(self, endpoint: Endpoint, replica: Replica) -> None:
        """A replica refused a connection: out of rotation and probed again."""
        if not replica.ready or replica.removed:
            return
        replica.ready = False
        if self.on_new_replica is not None:
            self.on_new_replica(endpoint, replica)


class EndpointSource(Protocol):
    """Where the table's endpoints and replicas come from (Kubernetes watches, a file, the
    local runtime)."""

    async def run(self, table: Table) -> None:
        """Fill the table and keep it current until cancelled; add the source's name to
        ``table.synced`` once everything has been listed."""


@runtime_checkable
class RereadingSource(EndpointSource, Protocol):
    """A source that can read one endpoint again on demand, ahead of its watch
    (``gateway/reread.py`` says when, and how often)."""

    async def reread(self, table: Table, name: str) -> None:
        """Read the endpoints named ``name`` and apply them to ``table``
        (``Table.apply_read``); raise if the read fails."""
