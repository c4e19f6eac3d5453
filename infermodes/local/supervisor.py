"""The local actuator: endpoints as child processes, sized by the same decisions the operator
uses (``endpoints/scaling.py``) and started from the same process plans (``endpoints/plan.py``,
``endpoints/async_plan.py``). The gateway's table is fed from here (``source.LocalSource``),
and its demand comes back here (``source.LocalDemandSink``) to size serverless endpoints.

Endpoints are kept under ``<state dir>/endpoints/`` as the manifests that were applied, so they
come back after a restart (with the spec a rollover is replacing, which comes back first and
serves until the new spec rolls over from it again: an update that cannot roll out keeps its
previous spec serving across a restart, as its old pods keep serving on a cluster); logs go to
``<state dir>/logs/``; batch summaries to ``<state dir>/batch/<name>/``."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import dataclasses
import functools
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx

from infermodes.endpoints import async_plan, plan
from infermodes.endpoints.demand import Demand, GatewayDemand
from infermodes.endpoints.scaling import (
    ScalerMemory,
    backlog_replicas,
    pool_in_flight,
    realtime_replicas,
    serverless_replicas,
    workers_to_remove,
)
from infermodes.endpoints.spec import EndpointSpec, Mode, Phase
from infermodes.endpoints.status import (
    ACTUATION_FAILED,
    COMPLETED,
    CONTAINER_CRASHING,
    CRASH_RESTARTS,
    MODEL_LOAD_FAILED,
    OUTPUT_IN_USE,
    ROLLING_OUT,
    BatchOutput,
    QueueFigures,
    Status,
    add_progress,
    batch_failure_reason,
    batch_output_released,
    describe_failures,
    ended_progress,
    load_error,
    loaded_template,
    made_by_api,
    output_held_by,
    output_in_use,
    pool_standing,
    pool_starting,
    record_queue,
    replicas_phase,
    rfc3339,
    serverless_phase,
    still_served,
    units_progress,
    update_blocked,
    with_estimated_age,
)
from infermodes.errors import EXIT_MODEL_LOAD_FAILED
from infermodes.gateway.table import SERVING_PHASES, Replica, Table
from infermodes.local.children import STOP_GRACE_SECONDS, Child, Registry
from infermodes.local.manifests import (
    DEFAULT_NAMESPACE,
    NAMESPACE,
    Manifest,
    parse_document,
    placed,
)
from infermodes.local.zygote import Zygote, reap_adopted
from infermodes.metrics import (
    OperatorMetrics,
    ServerLoad,
    fetch_metrics_text,
    parse_batch_units,
    parse_server_load,
    parse_worker_busy,
    parse_worker_dequeued_accepted_at,
    parse_worker_in_flight,
    probe_ready,
    read_all,
    worker_reading,
)
from infermodes.queueing.connect import Broker
from infermodes.settings import AsyncEndpoint, BatchSettings, ServeSettings, WorkerSettings
from infermodes.storage import write_local

log = logging.getLogger("infermodes.local")
T = TypeVar("T")  # what one read of a process's port gives
# the running async workers' metrics texts by key (None: unreadable), read once when first asked
MetricsTexts = Callable[[], Mapping[str, str | None]]

TICK_SECONDS = 0.25  # how often children are checked and decisions taken
LOAD_INTERVAL_SECONDS = 2.0  # realtime replicas' /metrics are read this often
PROGRESS_INTERVAL_SECONDS = 2.0  # ... and running batch instances'
# a model server that stops answering (hung, SIGSTOPped) leaves the rotation after this many
# /pings in a row it left unanswered (asked this often, once it had time to bind its port)
SERVER_PROBE_SECONDS = 5.0
SERVER_START_GRACE_SECONDS = 10.0
UNANSWERED_PINGS_UNREADY = 2
EVENTS_KEPT = 20
LOG_TAIL_BYTES = 4096  # read for the reason of a model that cannot be loaded
SCRAPE_TIMEOUT_SECONDS = 1.0
LOOPBACK = "127.0.0.1"
REASON_SHOWN = 1000  # characters of an unforeseen error in the status
# an endpoint whose model cannot load starts again after this, doubling up to the maximum, as
# the kubelet restarts such a pod (CrashLoopBackOff: 10 s doubling up to 5 minutes)
LOAD_RETRY_FIRST_SECONDS = 5.0
LOAD_RETRY_MAX_SECONDS = 300.0


def read_ports(
    ports: Mapping[str, int], read: Callable[[str, int, float], T | None]
) -> dict[str, T | None]:
    """``read(host, port, timeout)`` of each local process's port, by key, all at once
    (None: it cannot be read, e.g. while a worker loads its model)."""
    found = read_all(lambda port: read(LOOPBACK, port, SCRAPE_TIMEOUT_SECONDS), ports.values())
    return {key: found.get(port) for key, port in ports.items()}


def worker_readings(
    texts: Mapping[str, str | None], parse: Callable[[str], float | None]
) -> dict[str, float | None]:
    """One figure of each worker's text, by key (None: it cannot say)."""
    return {key: worker_reading(text, parse) for key, text in texts.items()}


def probed_readiness(was_ready: bool, misses: int, answered: bool) -> tuple[bool, int]:
    """A worker's readiness after one more ``/readyz`` probe, and its failures in a row, as
    the kubelet counts them: a 200 makes it ready; one that was ready stays ready until
    ``WORKER_READY_FAILURE_THRESHOLD`` failures in a row (one slow answer on a loaded machine
    must not rank a busy worker first for a scale-in); one never yet ready stays unready."""
    if answered:
        return True, 0
    misses += 1
    return was_ready and misses < async_plan.WORKER_READY_FAILURE_THRESHOLD, misses


def ping_status(host: str, port: int, timeout: float) -> int | None:
    """A model server's ``/ping`` status; None when it gives no answer in time."""
    try:
        return httpx.get(f"http://{host}:{port}/ping", timeout=timeout).status_code
    except httpx.HTTPError:
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path) -> str:
    try:
        with path.open("rb") as file:
            file.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
            return file.read().decode(errors="replace")
    except OSError:
        return ""


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StateDirGone(RuntimeError):
    """The state dir was removed or replaced while ``up`` ran (its message says so)."""


@dataclass
class LocalEndpoint:
    """One endpoint, its children and what the last decision saw."""

    manifest: Manifest
    created: str
    memory: ScalerMemory = field(default_factory=ScalerMemory)
    children: dict[str, Child] = field(default_factory=dict)  # the replicas, by key
    # the previous spec's model servers: they serve until as many of this spec's are ready
    outgoing: dict[str, Child] = field(default_factory=dict)
    # what a restart brings back first: the spec the newest outgoing servers run (for the
    # endpoint a restart brought back so, its own, until the spec after it is applied again)
    previous: dict[str, Any] | None = None
    # a realtime rollover: the old spec's replicas, where the first decision starts from
    carried: int | None = None
    ports: dict[str, int] = field(default_factory=dict)  # model servers', by key
    # async workers' and batch instances' (their progress while they run), by key
    metrics_ports: dict[str, int] = field(default_factory=dict)
    silent: tuple[str, ...] = ()  # async workers that could not say what they hold
    # batch instances' metrics as last read (every PROGRESS_INTERVAL_SECONDS), by key
    progress_texts: dict[str, str | None] = field(default_factory=dict)
    progress_read_at: float = -math.inf
    sequence: int = 0
    desired: int = 0
    # an async pool that replaced one in service (a new spec, a restart of ``up``: all its
    # workers start again) had every worker it wanted ready once, as a Deployment's rollout
    # ends; until then it is Updating (``_pool_phase``)
    rolled_out: bool = False
    initialized: bool = False
    served: bool = False  # a realtime endpoint is Creating until the replicas it wants are ready
    # ... or Updating, its requests held, when the spec it replaced was in service
    replaced_in_service: bool = False
    # (reason, message): Failed until applied again (by hand, or by a model load's retry)
    failure: tuple[str, str] | None = None
    # the model load that failed before a retry applied it again: still the status while no
    # process of it runs (a serverless endpoint at zero starts none until a request comes)
    load_failure: tuple[str, str] | None = None
    reported: dict[str, Any] | None = None  # the last status shown: its Ready transition time
    # what ``<state>/endpoints/<name>.json`` says of its status (``kept_facts``), as last saved
    kept: tuple[bool, list[str] | None] = (False, None)
    # the platform API's annotations the gateway reads (the variant name) and its labels (a
    # stopped transform job's hold on its output), while it is the API's endpoint
    # (``local/platform_store.py`` sets them)
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    scraped_at: float = -float("inf")
    consuming: frozenset[tuple[str, float]] = frozenset()  # (key, started_at): ready by /readyz
    # workers' /readyz probes failed in a row, by (key, start)
    ready_misses: dict[tuple[str, float], int] = field(default_factory=dict)
    probed_at: float = -float("inf")
    pinged_at: float = -float("inf")
    # model servers' /pings left unanswered in a row, by (key, start)
    unanswered: dict[tuple[str, float], int] = field(default_factory=dict)
    status: Status = field(default_factory=lambda: Status(Phase.CREATING, "Starting"))
    events: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=EVENTS_KEPT)
    )

    @property
    def name(self) -> str:
        return self.manifest.name

    def kept_facts(self) -> tuple[bool, list[str] | None]:
        """What a restart must know to say what is true before its processes run again:
        whether it served (a realtime endpoint is then Updating, not Creating, until a replica
        is ready) and the model load that failed (a serverless one is Failed, not InService
        at zero, until a server shows the model loads)."""
        failure = self.load_failure or self.failure
        failed = list(failure) if failure and failure[0] == MODEL_LOAD_FAILED else None
        return self.served or self.replaced_in_service, failed

    def event(self, text: str) -> None:
        self.events.append(f"{now_iso()} {text}")
        log.info("%s: %s", self.name, text)


def reap_or_leave(child: Child, grace: float) -> None:
    """``child.reap``, but a child that outlives its SIGKILL (in uninterruptible I/O: a hung
    mount, say) is logged and left to the kernel, not raised out of ``up``'s loop or its stop
    (the other children would be left unreaped); ``reap_adopted`` collects it when it ends."""
    try:
        child.reap(grace)
    except subprocess.TimeoutExpired:
        log.warning("%s (pid %s) outlived its SIGKILL; it ends once its I/O does, and is "
                    "reaped then", child.key, child.pid)  # fmt: skip


def rolls_over(old: LocalEndpoint, new: Manifest) -> bool:
    """Whether a changed spec keeps the old model servers serving until a new one is ready:
    between model-server modes, unless the old spec had failed with nothing left serving (a
    failed update whose previous spec's servers still serve rolls over from those)."""
    servers = (Mode.REALTIME, Mode.SERVERLESS)
    return (
        old.manifest.spec.mode in servers
        and new.spec.mode in servers
        and (old.failure is None or bool(old.outgoing))
        and bool(old.children or old.outgoing)
    )


def process_plan(name: str, spec: EndpointSpec) -> plan.ProcessPlan:
    """What each replica of a realtime, serverless or async endpoint runs (a batch instance's
    plan is its job's: ``_run_batch``)."""
    if spec.mode is Mode.ASYNC:
        return async_plan.worker(name, spec)
    if spec.mode is Mode.SERVERLESS:
        return plan.serverless_server(spec)
    return plan.model_server(spec, spec.realtime_block().workers)


def runs_as_before(old: LocalEndpoint, new: Manifest) -> bool:
    """Whether a changed spec leaves every process as it is (its scaling, ``maxConcurrency``,
    labels: what a cluster's pod template does not hold): its processes are kept, as a
    Deployment whose template did not change rolls nothing out. Not for a batch job (a new
    spec is a new job), an endpoint that failed (applied again, it tries again) or one whose
    rollover is still under way."""
    spec = old.manifest.spec
    return (
        spec.mode is new.spec.mode
        and spec.mode is not Mode.BATCH
        and old.failure is None
        and old.load_failure is None
        and not old.outgoing
        and old.previous is None
        and process_plan(old.name, spec) == process_plan(new.name, new.spec)
    )


def restored(
    endpoint: LocalEndpoint, saved: Mapping[str, Any], *, spec_saved: bool = True
) -> LocalEndpoint:
    """An endpoint a restart brought back, with what its saved file says of its status
    (``LocalEndpoint.kept_facts``): none of its processes runs yet, nor has it been tried.
    The model load that failed is the saved spec's: not ``spec_saved`` (the previous spec,
    brought back to serve until that one rolls over from it), the endpoint has none."""
    endpoint.replaced_in_service = saved.get("served") is True
    failed = saved.get("loadFailure") if spec_saved else None
    if isinstance(failed, list) and len(failed) == 2 and all(isinstance(f, str) for f in failed):
        endpoint.load_failure = (failed[0], failed[1])
    endpoint.kept = endpoint.kept_facts()
    return endpoint


def with_backlog(status: Status, figures: QueueFigures) -> Status:
    """The status with the queue's figures; none when the queue could not be read."""
    unread = figures.ready is None
    return dataclasses.replace(status, backlog=None if unread else figures, backlog_unread=unread)


class Supervisor:
    """Every local endpoint. ``tick`` takes one round of decisions; ``run`` repeats it."""

    def __init__(self, state_dir: Path, broker: Broker, broker_url: str, port: int) -> None:
        self.state_dir = state_dir
        self.broker = broker
        self.broker_url = broker_url
        self.port = port
        self.endpoints: dict[str, LocalEndpoint] = {}
        self.demand: dict[str, GatewayDemand] = {}
        self.async_layouts: dict[str, AsyncEndpoint] = {}  # read live by the accept route
        self.max_attempts: dict[str, int] = {}
        self.table: Table | None = None
        self.retiring: list[tuple[Child, float]] = []  # stopping children, with a kill deadline
        # specs a restart found mid-rollover: applied again once their previous spec serves
        self.resumed: dict[str, Manifest] = {}
        # endpoints whose model could not load: (attempts so far, when to start them again)
        self.load_retries: dict[str, tuple[int, float]] = {}
        self.wake = asyncio.Event()
        # set once the first round has looked at every endpoint: until then a status is a guess
        self.first_round = asyncio.Event()
        self.metrics: OperatorMetrics | None = None  # set by up: the async queues' gauges
        self.lock_id: tuple[int, int] | None = None  # set by up: (device, inode) of its lock
        self.registry = Registry(state_dir / "children.json")
        self.zygote = Zygote()  # forks serverless model servers: a cold start skips the imports
        for directory in ("endpoints", "logs", "batch"):
            (state_dir / directory).mkdir(parents=True, exist_ok=True)

    # the endpoints
    def load_state(self) -> None:
        """The endpoints applied before, as they were; a previous run's orphans are killed."""
        for key in self.registry.kill_orphans():
            log.warning("killed %s, left running by a previous infermodes up", key)
        for path in sorted((self.state_dir / "endpoints").glob("*.json")):
            try:
                saved = json.loads(path.read_text())
                # one saved before namespaces were kept names none: it takes the namespace of
                # the first apply of its name (``placed``; until then it shows as default), so
                # an unchanged file that says ``namespace: local``, which that release told its
                # users to write, is the same endpoint, not a name taken in another namespace
                manifest = parse_document(saved["document"], str(path), admitted=True)
            except (OSError, ValueError, KeyError, TypeError) as exc:  # ManifestError included
                log.error("%s is not loaded (a spec this version refuses, or a damaged "
                          "file): %s; apply it again, or delete the file", path, exc)  # fmt: skip
                continue
            try:
                previous = parse_document(saved["previous"], str(path), admitted=True)
            except (KeyError, ValueError, TypeError):  # none, or one this version refuses
                restored(self._add(manifest, saved["created"]), saved)
                continue
            back = restored(self._add(previous, saved["created"]), saved, spec_saved=False)
            back.previous = previous.document
            self.resumed[manifest.name] = manifest
            log.info("%s: the previous spec serves until the one applied last rolls over "
                     "from it", manifest.name)  # fmt: skip

    def _add(
        self, manifest: Manifest, created: str, kept: LocalEndpoint | None = None
    ) -> LocalEndpoint:
        """The endpoint of ``manifest``: a new one, or ``kept`` (its processes, its scaler's
        memory, its status) under the new spec, which is not the platform API's until its
        store says so (``annotations``, ``labels``)."""
        endpoint = kept or LocalEndpoint(manifest, created)
        endpoint.manifest, endpoint.annotations, endpoint.labels = manifest, {}, {}
        self.endpoints[manifest.name] = endpoint
        if manifest.spec.mode is Mode.ASYNC:
            block = async_plan.async_block(manifest.spec)
            self.async_layouts[manifest.name] = async_plan.async_endpoint(block)
            self.max_attempts[manifest.name] = block.max_attempts
        return endpoint

    def placed(self, manifest: Manifest) -> Manifest:
        """``manifests.placed`` against the endpoint of its name, if any (raises ``NameTaken``
        for one of its name in another namespace): checked for every manifest of an apply
        before any is applied."""
        existing = self.endpoints.get(manifest.name)
        return placed(manifest, existing.manifest.namespace or None if existing else None)

    def apply(self, manifest: Manifest, starting: bool = False) -> str:
        """Create or replace an endpoint; a changed spec replaces its processes unless they
        would run as before (``runs_as_before``), as does the same spec of an endpoint that
        failed (a model that could not load may be there now: applied again, it tries at once,
        not after its back-off). The model
        servers of a realtime or serverless endpoint are replaced as a rollout replaces pods:
        the old ones serve (the endpoint ``Updating``), one going for each of the new spec's
        that is ready; a realtime endpoint keeps the replicas it had (within the new bounds).
        ``starting``: an ``-f`` file of ``up``'s start, which lets a spec a restart found rolling
        out wait for its previous spec to serve."""
        manifest = self.placed(manifest)
        resuming = self.resumed.pop(manifest.name, None)
        if starting and resuming is not None and resuming.document == manifest.document:
            self.resumed[manifest.name] = resuming  # up -f of it: still after its previous spec
            return "unchanged"  # (applied later, by hand: at once, whatever the previous does)
        old = self.endpoints.get(manifest.name)
        if old is not None and old.manifest.document != manifest.document:
            self.load_retries.pop(manifest.name, None)  # a new spec: its own back-off
        if old is not None and old.manifest.document == manifest.document and old.failure is None:
            if old.previous == old.manifest.document:  # a restart's previous spec, applied
                old.previous = None  # again (a revert): it is the spec now
                self._save(old)
            return "unchanged"  # the same spec again: unless it failed, when it tries again
        if old is not None and manifest.name not in self.resumed and runs_as_before(old, manifest):
            self._remove(old, stop=False)
            self._add(manifest, old.created, old)
            self._save(old)
            old.event("applied: its processes run as before (scaling or metadata changed)")
            self.wake.set()
            return "configured"
        created = old.created if old is not None else now_iso()
        outgoing: dict[str, Child] = {}
        previous = None
        serving_before = 0  # after a failed update: the servers of the spec before it
        if old is not None:
            if rolls_over(old, manifest):
                serving_before = len(old.outgoing)
                outgoing = {**old.outgoing, **old.children}
                old.outgoing, old.children = {}, {}
                # what the newest of them run: the old spec, unless its own update had failed
                previous = old.manifest.document if old.failure is None else old.previous
            self._remove(old, why="its endpoint's spec changed")
        run_id = self._same_job(old, manifest)
        if run_id is None:  # a stop or resume keeps what each instance said (its summary)
            shutil.rmtree(self._batch_dir(manifest.name), ignore_errors=True)
        if run_id is not None:  # stopped or resumed: the same job, which skips what it wrote
            self._save_run_id(manifest.name, run_id)
        endpoint = self._add(manifest, created)
        endpoint.previous = previous
        if old is not None:
            endpoint.replaced_in_service = old.status.phase in SERVING_PHASES
        if old is not None and old.manifest.spec.mode is manifest.spec.mode is Mode.ASYNC:
            # the name's one queue: as last read, until the new pool's first decision reads it
            endpoint.status = dataclasses.replace(
                endpoint.status,
                backlog=old.status.backlog,
                backlog_unread=old.status.backlog_unread,
            )
        self._save(endpoint)
        if old is not None and not outgoing and manifest.spec.mode is not Mode.BATCH:
            # nothing of the old spec serves (a serverless one at zero, an async pool, whose
            # workers all start again): said at once, not at the first decision (Creating, as
            # a new endpoint): Updating if the old one served, so a request is held, and a
            # waiter for InService after an update is not told so by the old status
            self._set_status(endpoint)
        if old is not None and outgoing:
            # until its first decision, what the old spec's servers report: they serve on
            endpoint.status = dataclasses.replace(
                endpoint.status, phase=Phase.UPDATING, reason=ROLLING_OUT,
                ready_replicas=old.status.ready_replicas,
                desired_replicas=old.status.desired_replicas,
            )  # fmt: skip
            endpoint.outgoing = outgoing
            endpoint.ports = {key: old.ports[key] for key in outgoing if key in old.ports}
            endpoint.sequence = old.sequence  # the new replicas' keys follow the old ones'
            if old.initialized and old.manifest.spec.mode is manifest.spec.mode is Mode.REALTIME:
                # capacity kept: what was wanted, or after a failed update what still serves
                # (also while its model's retry runs: its one server is not capacity)
                endpoint.memory = old.memory
                failing = old.failure is not None or old.load_failure is not None
                endpoint.carried = serving_before if failing else old.desired
        if self.table is not None and (NAMESPACE, endpoint.name) not in self.table.known:
            # the gateway's at once, not from the next round on: a request sent right after
            # its apply (CreateEndpoint's answer) is told it is Creating, not that it does not
            # exist (one changed is there already: the round tells the table its new spec)
            self._show(endpoint)
        endpoint.event("applied")
        self.wake.set()
        return "configured" if old is not None else "created"

    def _save(self, endpoint: LocalEndpoint) -> None:
        """Its manifest, the spec its outgoing servers run while a rollover lasts, and what
        its status must say after a restart (``kept_facts``)."""
        endpoint.kept = endpoint.kept_facts()
        saved: dict[str, Any] = {"document": endpoint.manifest.document,
                                 "created": endpoint.created}  # fmt: skip
        if endpoint.previous is not None:
            saved["previous"] = endpoint.previous
        served, failed = endpoint.kept
        if served:
            saved["served"] = True
        if failed is not None:
            saved["loadFailure"] = failed
        path = self.state_dir / "endpoints" / f"{endpoint.name}.json"
        write_local(path, json.dumps(saved).encode())

    def _resume(self) -> None:
        """A spec a restart found mid-rollover is applied again once its previous spec serves
        (or has failed): the rollover then starts over from those servers."""
        for name, manifest in list(self.resumed.items()):
            endpoint = self.endpoints.get(name)
            if endpoint is None:
                del self.resumed[name]
            elif endpoint.status.phase in (Phase.IN_SERVICE, Phase.FAILED):
                del self.resumed[name]
                endpoint.event("applying again the spec a restart found rolling out")
                self.apply(manifest)

    def _rolled_over(self, endpoint: LocalEndpoint) -> None:
        """Once no outgoing server is left, a restart has no previous spec to bring back."""
        if (
            endpoint.previous is not None
            and not endpoint.outgoing
            and endpoint.name not in self.resumed
        ):
            endpoint.previous = None
            self._save(endpoint)

    def waiting(self, name: str) -> int | None:
        """Requests waiting in an async endpoint's queue (0 for another mode); None when the
        queue cannot be read. Deleting the endpoint keeps them (as on a cluster), so whoever
        deletes it must hear of them."""
        endpoint = self.endpoints.get(name)
        if endpoint is None or endpoint.manifest.spec.mode is not Mode.ASYNC:
            return 0
        try:
            return self.broker.backlog(name).ready
        except Exception as exc:  # BrokerUnreadable, a broker that is down: not known
            log.warning("%s: cannot read the queue: %s", name, exc)
            return None

    def delete(self, name: str) -> bool:
        self.resumed.pop(name, None)
        self.load_retries.pop(name, None)
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            return False
        self._remove(endpoint, why="its endpoint was deleted")
        (self.state_dir / "endpoints" / f"{name}.json").unlink(missing_ok=True)
        shutil.rmtree(self._batch_dir(name), ignore_errors=True)
        self.demand.pop(name, None)
        if self.table is not None:
            self.table.remove_endpoint(NAMESPACE, name)
        if self.metrics is not None:
            self.metrics.forget((NAMESPACE, name), deleted=True)
        log.info("%s: deleted", name)  # as "applied": what the log says happened
        return True

    def _remove(self, endpoint: LocalEndpoint, stop: bool = True, why: str = "") -> None:
        """Forget its spec; ``stop``: and stop its processes now (a drain in the background,
        by the next ticks), up's log saying ``why`` of each."""
        if stop:
            for key in [*endpoint.children, *endpoint.outgoing]:
                log.info("%s stopping: %s", key, why)
            for key in list(endpoint.children):
                self._stop_child(endpoint, key, self._grace(endpoint))
            self._retire_outgoing(endpoint)
        self.endpoints.pop(endpoint.name, None)
        self.async_layouts.pop(endpoint.name, None)
        self.max_attempts.pop(endpoint.name, None)

    # the processes
    def _batch_dir(self, name: str) -> Path:
        return self.state_dir / "batch" / name

    def _log_path(self, endpoint: LocalEndpoint, key: str) -> Path:
        return self.state_dir / "logs" / endpoint.name / f"{key.replace('/', '-')}.log"

    def _new_child(self, endpoint: LocalEndpoint) -> Child:
        """A worker or a model server (whose port ``_start`` picks, a new one each start)."""
        spec, name = endpoint.manifest.spec, endpoint.name
        number = endpoint.sequence
        endpoint.sequence += 1
        child_plan = process_plan(name, spec)
        if spec.mode is Mode.ASYNC:
            key = f"{name}/worker-{number}"
            endpoint.metrics_ports[key] = 0
            return Child(key, child_plan, self._log_path(endpoint, key))
        key = f"{name}/server-{number}"
        endpoint.ports[key] = 0
        zygote = self.zygote if spec.mode is Mode.SERVERLESS else None
        return Child(key, child_plan, self._log_path(endpoint, key), zygote=zygote)

    def _start(self, endpoint: LocalEndpoint, child: Child, now: float) -> None:
        if child.zygote is not None and child.zygote.importing():
            return  # sooner forked from it than started beside it: it wakes us when ready
        if child.key in endpoint.metrics_ports:  # a worker: its metrics say what it holds
            port = endpoint.metrics_ports[child.key] = free_port()
            child.extra_env = plan.settings_env(
                WorkerSettings, broker_url=self.broker_url, metrics_port=port
            )
            child.start(now)
            return
        if child.key not in endpoint.ports:
            child.start(now)
            return
        port = endpoint.ports[child.key] = free_port()  # the bind address is the actuator's
        child.extra_env = plan.settings_env(ServeSettings, port=port)
        child.start(now)
        if self.table is not None:
            self.table.set_replica(NAMESPACE, endpoint.name, Replica(child.key, "127.0.0.1", port))

    def _stop_child(
        self, endpoint: LocalEndpoint, key: str, grace: float = STOP_GRACE_SECONDS
    ) -> None:
        self._retire(endpoint, endpoint.children.pop(key), grace)

    def _retire(self, endpoint: LocalEndpoint, child: Child, grace: float) -> None:
        """Out of the gateway's table, SIGTERM, and killed if it outlives ``grace``."""
        if self.table is not None:
            self.table.drop_replica(NAMESPACE, endpoint.name, child.key)
        endpoint.ports.pop(child.key, None)
        endpoint.metrics_ports.pop(child.key, None)
        child.stop()
        self.retiring.append((child, time.monotonic() + grace))

    def _retire_outgoing(self, endpoint: LocalEndpoint, keep: int = 0) -> None:
        """Stop the previous spec's model servers but ``keep`` (by default all: the endpoint
        is deleted, or the new spec failed, and a Failed endpoint is not served either way)."""
        for key in list(endpoint.outgoing)[: max(0, len(endpoint.outgoing) - keep)]:
            self._retire(endpoint, endpoint.outgoing.pop(key), plan.SERVER_STOP_GRACE_SECONDS)

    def _reap(self) -> None:
        """Forget stopped children; SIGKILL the groups of those past their grace."""
        kept = []
        for child, deadline in self.retiring:
            if child.running() and time.monotonic() < deadline:
                kept.append((child, deadline))
                continue
            reap_or_leave(child, 0.0)  # gone: at once; past its grace: SIGKILL
        self.retiring = kept
        known = {child.pid for child in self.all_children() if child.pid is not None}
        reap_adopted(known | {self.zygote.pid})

    def all_children(self) -> list[Child]:
        running = [
            child
            for endpoint in self.endpoints.values()
            for child in (*endpoint.children.values(), *endpoint.outgoing.values())
        ]
        return running + [child for child, _ in self.retiring]

    def kill_all(self) -> None:
        """SIGKILL every child's group now (a signal while ``stop_all`` waits): what they held
        is the queue's again, or was cut off with the gateway."""
        for child in self.all_children():
            child.signal(signal.SIGKILL)

    def stop_all(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM every child, wait for each (SIGKILL after ``grace``): nothing outlives us."""
        running = sum(child.proc is not None for child in self.all_children())
        if running:
            log.info("stopping %d process(es): each finishes what it holds, killed after %g s "
                     "(a signal now kills them at once)", running, grace)  # fmt: skip
        for endpoint in self.endpoints.values():
            for key in list(endpoint.children):
                self._stop_child(endpoint, key, grace)
            self._retire_outgoing(endpoint)
        for child in self.all_children():
            reap_or_leave(child, grace)
        self.registry.save([])
        self.zygote.stop()

    # the decisions
    def _loads(self, endpoint: LocalEndpoint) -> Callable[[], Mapping[str, ServerLoad]]:
        def read() -> Mapping[str, ServerLoad]:
            table = self.table
            replica = table.endpoints.get((NAMESPACE, endpoint.name)) if table else None
            if replica is None:
                return {}
            ready = {
                key: port
                for key, port in list(endpoint.ports.items())
                if key in endpoint.children  # not the old spec's, in a rollover
                and replica.replicas.get(key, Replica(key, "", 0)).ready
            }
            texts = read_ports(ready, fetch_metrics_text)
            return {key: parse_server_load(text) for key, text in texts.items() if text is not None}

        return read

    async def _decide(self, endpoint: LocalEndpoint, now: float, metrics: MetricsTexts) -> int:
        """The replicas the endpoint's mode asks for (``metrics``: an async pool's workers'
        metrics, read at most once a tick)."""
        spec = endpoint.manifest.spec
        current = len(endpoint.children)
        if spec.mode is Mode.REALTIME:
            if endpoint.initialized and now - endpoint.scraped_at < LOAD_INTERVAL_SECONDS:
                return endpoint.desired
            endpoint.scraped_at = now
            previous = current if endpoint.initialized else endpoint.carried
            endpoint.initialized = True
            return await asyncio.to_thread(
                realtime_replicas,
                spec.realtime_block(),
                previous,
                self._loads(endpoint),
                endpoint.memory,
                now,
                True,
            )
        if spec.mode is Mode.SERVERLESS:
            seen = self.demand.get(endpoint.name)
            demand = Demand(seen.in_flight, seen.held, seen.last_request_at) if seen else Demand()
            # a model that could not be loaded: one server tries it again (no request starts
            # one: the gateway refuses a Failed endpoint's); once it is ready, demand decides
            load_failed = endpoint.load_failure is not None
            return serverless_replicas(spec.serverless_block(), current, demand, endpoint.memory,
                                       now, time.time(), load_failed,
                                       self._template_loaded(endpoint))  # fmt: skip
        block = async_plan.async_block(spec)
        figures = await self._queue_figures(endpoint, metrics)
        started = current if endpoint.initialized else None  # a new pool: its initialReplicas
        endpoint.initialized = True
        decision = backlog_replicas(
            block, started, figures.ready, figures.in_flight, endpoint.memory, now,
            figures.consumers, figures.waiting_webhooks,
        )  # fmt: skip
        endpoint.status = with_backlog(endpoint.status, figures)  # its status: _pool_phase
        return decision.replicas

    async def _queue_figures(self, endpoint: LocalEndpoint, metrics: MetricsTexts) -> QueueFigures:
        """An async endpoint's queue as the operator reads it: ready, in flight (the larger
        of the queue's and its workers' counts, from ``metrics``), the oldest waiting request's
        age, and the jobs waiting in its outbox."""
        block = async_plan.async_block(endpoint.manifest.spec)
        figures = QueueFigures(None, None)
        exact = False
        try:
            backlog = await asyncio.to_thread(self.broker.backlog, endpoint.name)
            # with webhooks or not: jobs of webhooks since removed wait for a worker too
            waiting = await asyncio.to_thread(self.broker.waiting_webhooks, endpoint.name)
            figures = QueueFigures(
                backlog.ready, backlog.unacked, backlog.oldest_age, backlog.consumers, waiting
            )
            exact = backlog.unacked_exact
        except Exception as exc:  # an unreadable queue keeps the workers (BrokerUnreadable)
            log.warning("%s: cannot read the queue: %s", endpoint.name, exc)
        running = self._running_workers(endpoint)

        def in_flight() -> dict[str, float | None]:
            # the embedded queue counts leases exactly: nothing to check against the workers
            return {} if exact else worker_readings(metrics(), parse_worker_in_flight)

        held = await asyncio.to_thread(
            pool_in_flight, block, figures.ready, figures.in_flight,
            max(len(endpoint.children), len(running)), in_flight,
        )  # fmt: skip
        figures = dataclasses.replace(figures, in_flight=held.count)
        endpoint.silent = held.silent
        figures = await asyncio.to_thread(
            with_estimated_age,
            figures,
            lambda: worker_readings(metrics(), parse_worker_dequeued_accepted_at).values(),
            time.time(),
        )
        return figures

    async def _actuate(self, endpoint: LocalEndpoint, now: float) -> None:
        """Bring the running children to the decision, restart crashed ones, set the status."""
        if endpoint.manifest.spec.mode is Mode.BATCH and endpoint.failure is None:
            await self._run_batch(endpoint, now)
            return
        for key, child in endpoint.children.items():
            if child.check(now):
                if self.table is not None:
                    self.table.drop_replica(NAMESPACE, endpoint.name, key)
                if child.last_exit == EXIT_MODEL_LOAD_FAILED and not child.stopping:
                    reason = load_error(log_tail(child.log_path))
                    if endpoint.failure is None:
                        retry = self._retry_load_later(endpoint.name, now)
                        endpoint.event(f"{key} exited with {child.last_exit}: the model cannot "
                                       f"be loaded; trying again in {retry:.0f} s")  # fmt: skip
                    endpoint.failure = (MODEL_LOAD_FAILED, f"model cannot be loaded: {reason}")
                else:
                    endpoint.event(f"{key} exited with {child.last_exit}; restarting after "
                                   "back-off")  # fmt: skip
        if endpoint.failure is not None:  # its processes stop (a model load: until its retry)
            for key in list(endpoint.children):
                self._stop_child(endpoint, key)
            endpoint.desired = 0
            status = self._failed_status(endpoint, endpoint.failure, now)
            if endpoint.manifest.spec.mode is Mode.ASYNC:
                # its queue still takes requests, which wait for a mended spec: shown, as the
                # operator shows them (HasBacklogWithoutCapacity included)
                figures = await self._queue_figures(endpoint, self._metrics_once(endpoint))
                if self.endpoints.get(endpoint.name) is not endpoint:
                    return  # deleted or replaced meanwhile
                status = with_backlog(status, figures)
            endpoint.status = status
            if self.metrics is not None:
                record_queue(self.metrics, (NAMESPACE, endpoint.name), endpoint.status)
            return
        if endpoint.manifest.spec.mode is Mode.ASYNC:
            # before the decision: from the status the decision sets to the metrics that
            # publish it, nothing may wait (the API would show one beside the other's old value)
            await self._probe_workers(endpoint, now)
        else:
            await self._ping_servers(endpoint, now)
        metrics = self._metrics_once(endpoint)  # the decision's and the scale-in's one read
        wanted = await self._decide(endpoint, now, metrics)
        if self.endpoints.get(endpoint.name) is not endpoint:
            return  # deleted or replaced meanwhile: its children were stopped with it
        if wanted != endpoint.desired:
            endpoint.event(f"replicas {endpoint.desired} -> {wanted}")
        endpoint.desired = wanted
        while len(endpoint.children) < wanted:
            child = self._new_child(endpoint)
            endpoint.children[child.key] = child
        removed = await self._to_remove(endpoint, wanted, metrics)
        if self.endpoints.get(endpoint.name) is not endpoint:
            return  # deleted or replaced meanwhile: its children were stopped with it
        for key in removed:
            self._stop_child(endpoint, key, self._grace(endpoint))
        for child in endpoint.children.values():
            if not child.running() and now >= child.not_before:
                self._start(endpoint, child, now)
        self._retire_crashed_outgoing(endpoint, now)
        # one old server goes for each new one ready, so the rollover keeps the capacity
        self._retire_outgoing(endpoint, keep=wanted - self._ready(endpoint))
        self._set_status(endpoint)

    async def _to_remove(
        self, endpoint: LocalEndpoint, wanted: int, metrics: MetricsTexts
    ) -> list[str]:
        """The children a scale-in to ``wanted`` stops. An async pool's: the workers not ready
        first, then by what each holds (from ``metrics``; ``scaling.workers_to_remove``), as a
        ReplicaSet ranks a cluster's pods (unready first, then by the operator's deletion
        costs), so a busy worker does not go while an idle one stays, nor a consuming one
        while one that cannot consume stays. Model servers: the newest, as a ReplicaSet
        removes a realtime endpoint's (the operator gives them no cost): the gateway stops
        sending to one at once, and its requests end within seconds, not an hour."""
        keys = list(endpoint.children)
        if len(keys) <= wanted:
            return []
        if endpoint.manifest.spec.mode is not Mode.ASYNC:
            return keys[wanted:][::-1]
        readings = worker_readings(await asyncio.to_thread(metrics), parse_worker_busy)
        # a worker not running holds nothing (the broker has its deliveries back): 0; one
        # running that cannot be read (None) counts as busy
        held = {key: readings.get(key, 0.0) for key in keys}
        ready = {key for key, child in endpoint.children.items() if self._is_ready(endpoint, child)}
        return workers_to_remove(held, ready, wanted)

    def _failed_status(
        self, endpoint: LocalEndpoint, failure: tuple[str, str], now: float
    ) -> Status:
        """Failed, unless the previous spec's model servers still serve: then the update
        failed, not the endpoint, which stays ``Updating`` on them, as the operator keeps an
        endpoint whose new spec cannot roll out (a crashed old server is not restarted)."""
        self._retire_crashed_outgoing(endpoint, now)
        reason, detail = failure
        serving = sum(1 for child in endpoint.outgoing.values() if self._is_ready(endpoint, child))
        if not serving:
            self._retire_outgoing(endpoint)
            return Status(Phase.FAILED, reason, detail)
        message = update_blocked(detail, serving)
        return Status(Phase.UPDATING, reason, message, len(endpoint.outgoing), serving, serving)

    def _retire_crashed_outgoing(self, endpoint: LocalEndpoint, now: float) -> None:
        """An old server that crashed is not restarted: out."""
        for key, child in list(endpoint.outgoing.items()):
            if child.check(now):
                self._retire(endpoint, endpoint.outgoing.pop(key), STOP_GRACE_SECONDS)

    @classmethod
    def _metrics_once(cls, endpoint: LocalEndpoint) -> MetricsTexts:
        """Each running async worker's metrics text, read at the first call and kept: one
        read a tick serves the decision (in flight, the oldest age) and the scale-in."""
        running = cls._running_workers(endpoint)
        return functools.cache(lambda: read_ports(running, fetch_metrics_text))

    @staticmethod
    def _running_workers(endpoint: LocalEndpoint) -> dict[str, int]:
        """The metrics port of each running async worker or batch instance, by key."""
        return {
            key: endpoint.metrics_ports[key]
            for key, child in endpoint.children.items()
            if child.running() and key in endpoint.metrics_ports
        }

    async def _probe_workers(self, endpoint: LocalEndpoint, now: float) -> None:
        """Which running workers consume, by their ``/readyz`` (at most once a second): a
        worker the broker refuses, or one between connections, is running but not ready, as
        the kubelet's probe says of a worker pod, with its failure threshold
        (``probed_readiness``)."""
        if now - endpoint.probed_at < async_plan.WORKER_READY_PERIOD_SECONDS:
            return
        endpoint.probed_at = now
        ports = self._running_workers(endpoint)
        starts = {key: endpoint.children[key].started_at for key in ports}  # one start each
        answers = await asyncio.to_thread(read_ports, ports, probe_ready)
        consuming, misses = set(), {}
        for key, ok in answers.items():
            start = (key, starts[key])
            ready, missed = probed_readiness(
                start in endpoint.consuming, endpoint.ready_misses.get(start, 0), bool(ok)
            )
            if ready:
                consuming.add(start)
            if missed:
                misses[start] = missed
        endpoint.consuming, endpoint.ready_misses = frozenset(consuming), misses

    async def _ping_servers(self, endpoint: LocalEndpoint, now: float) -> None:
        """Ask each model server's ``/ping`` every few seconds, as the kubelet's readiness
        probe asks a pod's: one that gives no answer at all twice in a row (hung, SIGSTOPped;
        a 503 while its model loads is an answer) leaves the rotation, and comes back when it
        answers 200. Not killed: the operator's pods have a liveness probe (``/healthz`` on a
        port of its own), which ``up`` does not give its model servers."""
        if now - endpoint.pinged_at < SERVER_PROBE_SECONDS or self.table is None:
            return
        endpoint.pinged_at = now
        ports = {key: endpoint.ports[key] for key, child in endpoint.children.items()
                 if child.running() and endpoint.ports.get(key)
                 and now - child.started_at >= SERVER_START_GRACE_SECONDS}  # fmt: skip
        starts = {key: endpoint.children[key].started_at for key in ports}  # a count per start
        answers = await asyncio.to_thread(read_ports, ports, ping_status)
        found = self.table.endpoints.get((NAMESPACE, endpoint.name))
        unanswered = {}
        for key, status in answers.items():
            replica = found.replicas.get(key) if found else None
            if status is not None:
                if status == 200 and found and replica and not replica.ready:
                    self.table.mark_ready(found, replica)
                continue
            missed = unanswered[key, starts[key]] = (
                endpoint.unanswered.get((key, starts[key]), 0) + 1
            )
            if missed >= UNANSWERED_PINGS_UNREADY and found and replica and replica.ready:
                endpoint.event(f"{key} answered no /ping {missed} times in a row: out of the "
                               "rotation until it answers")  # fmt: skip
                self.table.mark_unready(found, replica)
        endpoint.unanswered = unanswered

    def _grace(self, endpoint: LocalEndpoint) -> float:
        spec = endpoint.manifest.spec
        if spec.mode is Mode.ASYNC:  # a draining worker finishes what it holds
            return async_plan.WORKER_STOP_GRACE_SECONDS
        if spec.mode is Mode.BATCH:
            return STOP_GRACE_SECONDS
        return plan.SERVER_STOP_GRACE_SECONDS  # a model server finishes what it serves

    def _is_ready(self, endpoint: LocalEndpoint, child: Child) -> bool:
        """A worker whose ``/readyz`` said so (a restarted one is asked again), or a model
        server the gateway's prober marked ready."""
        if endpoint.manifest.spec.mode is Mode.ASYNC:
            return child.running() and (child.key, child.started_at) in endpoint.consuming
        found = self.table.endpoints.get((NAMESPACE, endpoint.name)) if self.table else None
        replica = found.replicas.get(child.key) if found else None
        return replica is not None and replica.ready

    def _ready(self, endpoint: LocalEndpoint) -> int:
        return sum(1 for child in endpoint.children.values() if self._is_ready(endpoint, child))

    def _set_status(self, endpoint: LocalEndpoint) -> None:
        mode = endpoint.manifest.spec.mode
        ready = self._ready(endpoint)
        running = sum(1 for c in endpoint.children.values() if c.running())
        restarts = sum(c.exits for c in endpoint.children.values())
        # served once every replica it starts with is ready, as the operator's Creating lasts
        # until every wanted replica is (the platform's, until its initial instances are up)
        endpoint.served = endpoint.served or 0 < endpoint.desired <= ready
        notes = [f"{restarts} restart(s) of crashed processes"] if restarts else []
        old_serving = sum(1 for c in endpoint.outgoing.values() if self._is_ready(endpoint, c))
        # served: its replicas were, the spec it replaced was, or that spec's servers still are
        served = endpoint.served or endpoint.replaced_in_service or old_serving > 0
        if mode is Mode.SERVERLESS:  # as the operator says it (previous spec's servers: served)
            phase, reason, said = serverless_phase(
                self._template_loaded(endpoint, ready), served, endpoint.desired, ready,
                bool(endpoint.outgoing),
            )  # fmt: skip
            notes.insert(0, said)
        elif mode is Mode.REALTIME and (served or endpoint.outgoing):
            # a new spec rolls out while the previous spec's servers serve on, or over none of
            # them (from serverless at zero, say) until its own are all ready, as the operator
            # says of a Deployment's rollout (its old pods counted ready)
            rolling_out = bool(endpoint.outgoing) or not endpoint.served
            phase, reason, said = replicas_phase(
                True, endpoint.desired, ready + old_serving, rolling_out
            )
            notes.insert(0, said)
        elif mode is Mode.REALTIME:
            phase, reason = Phase.CREATING, "Creating" if ready else "NoReplicaReady"
            if ready:
                notes.insert(0, f"{ready}/{endpoint.desired} replicas ready")
        else:
            phase, reason, said = self._pool_phase(endpoint, ready)
            notes.insert(0, said)
        message = "; ".join(notes)
        # the previous spec's servers: Updating. A retry's server, not ready yet, has not shown
        # the model loads: Failed until it does (a waiter would pass on it), or, while the
        # previous spec's servers serve, the update that cannot roll out, as between its tries
        # (the API takes another update then), as the operator's status stays while a
        # restarted pod's last exit says the model could not load
        crashing = None if ready else self._crashing(endpoint)
        retried = None if ready else endpoint.load_failure
        blocked = retried or crashing
        if blocked is not None and old_serving:  # as the operator's update that cannot roll out
            reason, message = blocked[0], update_blocked(blocked[1], old_serving)
        elif retried is not None:
            phase, reason = Phase.FAILED, retried[0]
            when = "now" if running else "when one of its processes starts"
            message = f"{retried[1]}; tried again {when}"
        elif crashing is not None:
            phase, (reason, message) = Phase.FAILED, crashing
        elif ready > 0:
            endpoint.load_failure = None
        # the previous spec's servers serve too while a rollover lasts, as a Deployment's old
        # pods count in its readyReplicas (DescribeEndpoint's CurrentInstanceCount)
        serving = ready + old_serving
        endpoint.served = still_served(endpoint.served, phase)
        endpoint.replaced_in_service = still_served(endpoint.replaced_in_service, phase)
        endpoint.status = dataclasses.replace(
            endpoint.status, phase=phase, reason=reason, message=message, replicas=running,
            ready_replicas=serving, desired_replicas=endpoint.desired,
        )  # fmt: skip
        if self.metrics is not None:
            record_queue(self.metrics, (NAMESPACE, endpoint.name), endpoint.status)

    def _template_loaded(self, endpoint: LocalEndpoint, ready: int | None = None) -> bool:
        """Whether a server of a serverless endpoint's template has loaded its model: one of
        its servers is ready (``ready``: how many are, when counted already), or was before."""
        template = plan.replica_template(endpoint.manifest.spec)
        ready = self._ready(endpoint) if ready is None else ready
        memory = endpoint.memory  # kept by a spec change that runs as before; not saved
        memory.loaded_template = loaded_template(memory.loaded_template, template, ready > 0)
        return memory.loaded_template == template

    @staticmethod
    def _pool_phase(endpoint: LocalEndpoint, ready: int) -> tuple[Phase, str, str]:
        """An async pool's status, as the operator says it: ``Creating`` while a pool that has
        not served starts (``pool_starting``; served: the status shown last, or the one of the
        endpoint it replaced), then how it stands (``pool_standing``), ``Updating`` while one
        that replaced a pool in service, whose workers ``up`` all starts again, has not had
        every worker it wants ready, as the operator says while a Deployment's rollout lasts.
        Before its queue was first read (an update before the replaced pool's first decision),
        a rollout says so, else the reason shown before stays."""
        status = endpoint.status
        served = endpoint.replaced_in_service or status.phase in SERVING_PHASES
        first = async_plan.async_block(endpoint.manifest.spec).first_replicas()
        # before its first decision, the pool wants the workers it starts with
        wanted = endpoint.desired if endpoint.initialized else first
        starting = pool_starting(first, wanted, ready, served)
        endpoint.rolled_out = endpoint.rolled_out or ready >= wanted
        if starting is not None:
            return starting
        rolling_out = endpoint.replaced_in_service and not endpoint.rolled_out
        workers = f"{ready}/{wanted} workers"
        if status.backlog is None and not status.backlog_unread and rolling_out:  # not read yet
            return Phase.UPDATING, ROLLING_OUT, workers
        if status.backlog is None and not status.backlog_unread:
            return Phase.IN_SERVICE, status.reason, workers
        return pool_standing(status.backlog, wanted, rolling_out, endpoint.silent, workers)

    @staticmethod
    def _crashing(endpoint: LocalEndpoint) -> tuple[str, str] | None:
        """(reason, message) when one of its model servers or async workers has crashed
        ``CRASH_RESTARTS`` times and none is ready, as the operator says of a pod that keeps
        crashing: no replica is coming, so the gateway answers held requests at once, not at
        the timeout, and a pool's start does not wait for workers for ever. It goes on
        restarting under its back-off, and a ready one ends it."""
        for key, child in endpoint.children.items():
            ours = key in endpoint.ports or key in endpoint.metrics_ports
            if ours and child.exits >= CRASH_RESTARTS:
                return CONTAINER_CRASHING, (
                    f"process {key} keeps crashing: exited with {child.last_exit} "
                    f"(its log: {child.log_path})"
                )
        return None

    # batch
    def _summary_path(self, name: str, index: int) -> Path:
        return self._batch_dir(name) / f"summary-{index}.json"

    def _run_id(self, name: str) -> str:
        """The job's identity, as the operator's is its InferenceEndpoint's UID: made when the
        job is (its folder is new at each apply of a changed spec, but for ``stop``), kept
        across restarts."""
        return self._saved_run_id(name) or self._save_run_id(name, uuid.uuid4().hex)

    def _saved_run_id(self, name: str) -> str | None:
        with contextlib.suppress(FileNotFoundError):
            return (self._batch_dir(name) / "run-id").read_text().strip() or None
        return None

    def _save_run_id(self, name: str, run_id: str) -> str:
        self._batch_dir(name).mkdir(parents=True, exist_ok=True)
        path = self._batch_dir(name) / "run-id"
        write_local(path, run_id.encode())  # whole or not at all: empty would mean no run id
        return run_id

    def _same_job(self, old: LocalEndpoint | None, new: Manifest) -> str | None:
        """The run id of a batch job that ``new`` only stops or resumes (as a CR's UID stays
        through ``spec.batch.stop``); None for a new job."""
        if old is None or old.manifest.spec.batch is None or new.spec.batch is None:
            return None
        before, after = old.manifest.spec, new.spec
        stop = {"batch": before.batch_block().model_copy(update={"stop": after.batch_block().stop})}
        return self._saved_run_id(new.name) if before.model_copy(update=stop) == after else None

    def _summaries(self, name: str, count: int) -> dict[int, dict[str, Any]]:
        """The summary each instance left, by index; one that cannot be read is a failure."""
        left = {}
        for index in range(count):
            path = self._summary_path(name, index)
            if not path.exists():
                continue
            try:
                summary = json.loads(path.read_text())
                if not isinstance(summary, dict):
                    raise ValueError("not an object")
            except (OSError, ValueError):
                unread = f"instance {index} left a summary that cannot be read"
                summary = {"index": index, "state": "Failed", "error": unread}
            left[index] = summary
        return left

    def _batch_ended(self, endpoint: LocalEndpoint | None) -> bool:
        """Whether ``endpoint`` is a batch job that ended (Completed or Failed: every instance
        left its summary), as a Job's Complete or Failed condition outlasts a stop."""
        if endpoint is None or endpoint.manifest.spec.batch is None:
            return False
        count = endpoint.manifest.spec.batch_block().instance_count
        return all(self._summary_says_ended(endpoint.name, i) for i in range(count))

    def _ran_to_end(self, name: str, index: int) -> bool:
        """Whether an instance ran to its end: it left a summary, and not one of an instance
        stopped by ``up`` stopping (the job was not: that summary is removed, and the instance
        runs again, skipping what the job wrote)."""
        ended = self._summary_says_ended(name, index)
        if ended is False:
            self._summary_path(name, index).unlink()
        return bool(ended)

    def _summary_says_ended(self, name: str, index: int) -> bool | None:
        """True when the instance left a summary of its end, False of its being stopped
        (``Stopped``), None when it left none."""
        try:
            summary = json.loads(self._summary_path(name, index).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # a summary cut short: ended, as a failure (the status)
            return True
        return not (isinstance(summary, dict) and summary.get("state") == "Stopped")

    def _batch_output_held_by(self, endpoint: LocalEndpoint) -> str | None:
        """The older batch endpoint, not ended, whose output prefix overlaps this one's
        (``status.output_held_by``, as the operator decides), while this job has started no
        instance (one that started runs on)."""
        if endpoint.children or any(self._batch_dir(endpoint.name).glob("summary-*")):
            return None
        exiting = {child.key.partition("/")[0] for child, _ in self.retiring if child.running()}
        jobs = [
            BatchOutput(other.name, other.created, other.manifest.spec.batch_block().output.uri,
                        # a stopped instance may still write its summary there as it exits
                        batch_output_released(other.status.phase, other.labels)
                        and other.name not in exiting)
            for other in self.endpoints.values()
            if other.manifest.spec.mode is Mode.BATCH
        ]  # fmt: skip
        uri = endpoint.manifest.spec.batch_block().output.uri
        return output_held_by(BatchOutput(endpoint.name, endpoint.created, uri, False), jobs)

    async def _run_batch(self, endpoint: LocalEndpoint, now: float) -> None:
        """``instanceCount`` instances, each run once to its end (an instance that left a
        summary is not run again, also after a restart of ``up``, unless ``up`` stopping
        stopped it); one killed before it left one runs again after its back-off, as the
        operator's Job retries its index (``plan.batch_instance_runs_again``)."""
        spec, name = endpoint.manifest.spec, endpoint.name
        count = spec.batch_block().instance_count
        if spec.batch_block().stop and not self._batch_ended(endpoint):  # (see ``apply``)
            applied = self.state_dir / "endpoints" / f"{name}.json"  # when the stop was
            stopped = rfc3339(applied.stat().st_mtime) if applied.exists() else None
            # what the instances had done: the summaries they left stopping
            kept = ended_progress(self._summaries(name, count).values())[0]
            endpoint.status = Status(
                Phase.STOPPED, "Stopped", "stopped by spec.batch.stop", end_time=stopped,
                progress=kept if kept.total else None,
            )  # fmt: skip
            return
        holder = self._batch_output_held_by(endpoint)
        if holder is not None:  # it waits: no instance started yet
            endpoint.desired = 0
            uri = spec.batch_block().output.uri
            waits = output_in_use(holder, uri, made_by_api(endpoint.labels))
            endpoint.status = Status(Phase.IN_PROGRESS, OUTPUT_IN_USE, waits)
            return
        self._batch_dir(name).mkdir(parents=True, exist_ok=True)
        for key, child in list(endpoint.children.items()):
            if child.check(now):
                endpoint.event(f"{key} ended with {child.last_exit}")
                index = int(key.rsplit("-", 1)[1])
                summarised = self._summary_path(name, index).exists()
                if not summarised and plan.batch_instance_runs_again(child.last_exit, child.exits):
                    endpoint.event(f"{key} runs again (retry {child.exits} of "
                                   f"{plan.BATCH_INSTANCE_RETRIES})")  # fmt: skip
                    continue
                del endpoint.children[key]
                endpoint.metrics_ports.pop(key, None)
                if not summarised:
                    self._summary_path(name, index).write_text(json.dumps({
                        "version": 1, "index": index, "count": count, "state": "Failed",
                        "error": f"instance {index} exited with {child.last_exit} "
                                 "without a summary",
                    }))  # fmt: skip
        for index in range(count):  # at the start, and again for one stopped by another's hand
            key = f"{name}/instance-{index}"
            retried = endpoint.children.get(key)
            if retried is not None:  # running, or to run again once its back-off passed
                if not retried.running() and now >= retried.not_before:
                    retried.start(now)
                continue
            if self._ran_to_end(name, index):
                continue
            port = endpoint.metrics_ports[key] = free_port()  # its progress while it runs
            extra = {
                "JOB_COMPLETION_INDEX": str(index),
                **plan.settings_env(
                    BatchSettings,
                    metrics_port=port,
                    termination_message_path=str(self._summary_path(name, index)),
                ),
            }
            child_plan = plan.batch_instance(spec, self._run_id(name))
            child = Child(key, child_plan, self._log_path(endpoint, key), extra, restart=False)
            endpoint.children[key] = child
            child.start(now)
        if now - endpoint.progress_read_at >= PROGRESS_INTERVAL_SECONDS:  # not every tick
            endpoint.progress_read_at = now
            running = self._running_workers(endpoint)
            endpoint.progress_texts = await asyncio.to_thread(
                read_ports, running, fetch_metrics_text
            )
        texts = endpoint.progress_texts
        left = self._summaries(name, count)
        found, failures = ended_progress(left.values())
        ended = len(left)
        for index in range(count):
            text = texts.get(f"{name}/instance-{index}")
            if index not in left and text is not None:  # running: what it has done so far
                found = add_progress(found, units_progress(parse_batch_units(text)))
        active = len(endpoint.children)
        if ended < count:
            phase, reason = Phase.IN_PROGRESS, "Running"
            message = f"{found.done}/{found.total} objects, {found.records} records"
            if failures:
                message += f"; failed so far: {describe_failures(failures, found.failed)}"
        elif failures:
            phase, message = Phase.FAILED, describe_failures(failures, found.failed)
            reason = batch_failure_reason(failures)
        else:
            phase, reason = Phase.COMPLETED, COMPLETED
            message = f"{found.records} records; {found.done} objects written or already complete"
        endpoint.desired = count if phase is Phase.IN_PROGRESS else 0  # ended: wants no process
        end_time = None
        if phase is not Phase.IN_PROGRESS:  # when its last instance left its summary
            times = [path.stat().st_mtime for path in self._batch_dir(name).glob("summary-*")]
            end_time = rfc3339(max(times)) if times else None
        endpoint.status = Status(
            phase, reason, message, active, active, endpoint.desired, progress=found,
            end_time=end_time,
        )  # fmt: skip

    # the loop
    def _retry_load_later(self, name: str, now: float) -> float:
        """When an endpoint whose model could not load starts again (a model put in place
        since, a store that answers again): seconds from now, doubling with each attempt that
        failed since its last ready replica."""
        attempts = self.load_retries.get(name, (0, now))[0] + 1
        delay = min(LOAD_RETRY_FIRST_SECONDS * 2.0 ** (attempts - 1), LOAD_RETRY_MAX_SECONDS)
        self.load_retries[name] = (attempts, now + delay)
        return delay

    def _retry_loads(self, now: float) -> None:
        """Start again, as applied again, each endpoint whose model could not load and whose
        back-off is over; forget the attempts of one that has a ready replica again."""
        for name, (attempts, due) in list(self.load_retries.items()):
            endpoint = self.endpoints.get(name)
            if endpoint is None:
                del self.load_retries[name]
            elif endpoint.failure is None:
                if self._ready(endpoint) > 0:
                    del self.load_retries[name]
            elif endpoint.failure[0] == MODEL_LOAD_FAILED and now >= due:
                self.apply(endpoint.manifest)
                again = self.endpoints[name]
                again.load_failure = endpoint.failure
                # its server has shown nothing yet: what the last try said stands until it does
                # (an update's "Updating" in between let the API refuse the fixing update)
                again.status = endpoint.status
                # and its Ready condition's time: that of its last turn, not of each retry
                # (DescribeEndpoint's LastModifiedTime)
                again.reported = endpoint.reported
                again.event(f"started again: its model could not load {attempts} time(s) in a "
                            "row")  # fmt: skip

    def check_state_dir(self) -> None:
        """``rm -rf`` of the state dir while ``up`` runs takes its queue file, endpoints and
        token: async requests accepted then would go to a removed file no worker opens, so
        ``up`` stops (its children with it), saying why."""
        if self.lock_id is None:
            return
        try:
            info = (self.state_dir / "lock").stat()
            held = (info.st_dev, info.st_ino) == self.lock_id
        except OSError:
            held = False
        if not held:
            raise StateDirGone(
                f"the state dir {self.state_dir} was removed or replaced while infermodes up ran "
                "(its queue, endpoints and token with it): stopping; start up again"
            )

    async def tick(self) -> None:
        self.check_state_dir()
        now = time.monotonic()
        self._retry_loads(now)
        modes = {endpoint.manifest.spec.mode for endpoint in self.endpoints.values()}
        if Mode.SERVERLESS in modes and not self.zygote.started:
            self._start_zygote()  # once the first serverless endpoint is there
        elif Mode.SERVERLESS not in modes and self.zygote.proc is not None:
            await self._stop_zygote()  # the last one went: its ~65 MB go too
        for endpoint in list(self.endpoints.values()):
            if self.endpoints.get(endpoint.name) is not endpoint:
                continue  # replaced or deleted while another's decision awaited: not started
            try:
                await self._actuate(endpoint, now)
            except Exception as exc:  # one endpoint's trouble: the others, and up, go on
                self._actuation_failed(endpoint, exc, now)
            if self.endpoints.get(endpoint.name) is not endpoint:
                continue  # deleted or replaced while its decision was taken
            self._rolled_over(endpoint)
            if endpoint.kept_facts() != endpoint.kept:
                self._save(endpoint)
            self._show(endpoint)
        self._resume()
        self._reap()
        self.zygote.check()
        self.registry.save(self.all_children())

    def _actuation_failed(self, endpoint: LocalEndpoint, exc: Exception, now: float) -> None:
        """What no check foresaw (an OS call refusing a value, say): the endpoint fails, with
        the error, and its processes stop; the traceback is logged once."""
        failure = (ACTUATION_FAILED, f"{type(exc).__name__}: {exc}"[:REASON_SHOWN])
        if endpoint.failure != failure:
            log.error("%s: %s", endpoint.name, failure[1], exc_info=exc)
            endpoint.event(f"cannot run its processes: {failure[1]}")
        endpoint.failure = failure  # the next round stops its processes
        try:
            endpoint.status = self._failed_status(endpoint, failure, now)
        except Exception:  # looking at its processes failed too: Failed, without them
            endpoint.status = Status(Phase.FAILED, *failure)

    async def _stop_zygote(self) -> None:
        """Stop it (the servers it forked are ours, and stay), and have a new one started for
        the next serverless endpoint."""
        zygote, self.zygote = self.zygote, Zygote()
        await asyncio.to_thread(zygote.stop)  # it ends at EOF; its wait must not hold the loop

    def _start_zygote(self) -> None:
        """Start it; the moment it is ready (its first line) wakes the loop."""
        self.zygote.start()
        out = self.zygote.proc.stdout if self.zygote.proc is not None else None
        if out is None:
            return
        loop = asyncio.get_running_loop()

        def readable() -> None:
            loop.remove_reader(out)
            os.set_blocking(out.fileno(), True)  # the loop's reader made it non-blocking
            self.zygote.check()
            self.wake.set()

        loop.add_reader(out, readable)

    async def run(self, table: Table) -> None:
        """Until cancelled: a round per tick, or at once when woken (a cold start, an apply);
        on the way out every child is stopped."""
        self.table = table
        try:
            for endpoint in self.endpoints.values():
                self._show(endpoint)
            table.synced.add("local")
            await self.tick()  # before any status is shown (``looked``)
            self.first_round.set()
            while True:
                # not wait_for: on 3.11 it drops a cancel that comes as the event fires (gh-86296)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK_SECONDS):
                        await self.wake.wait()
                self.wake.clear()
                await self.tick()
        finally:
            with killing_on_signal(self.kill_all):  # the gateway is done with signals
                await asyncio.to_thread(self.stop_all)

    # what the API shows
    def _show(self, endpoint: LocalEndpoint) -> None:
        """The gateway's table takes the endpoint as it is now (its spec and status)."""
        if self.table is not None:
            self.table.apply_endpoint(self.object_of(endpoint, with_processes=False))

    async def looked(self) -> None:
        """Returns once the first round has looked at every endpoint: the status a restart
        starts from (``Creating``, nothing running) is not yet what is true."""
        await self.first_round.wait()

    def object_of(self, endpoint: LocalEndpoint, with_processes: bool = True) -> dict[str, Any]:
        """The endpoint as ``kubectl get ie -o yaml`` would show it, plus its processes."""
        endpoint.reported = endpoint.status.to_patch(1, endpoint.reported)
        obj: dict[str, Any] = {
            **endpoint.manifest.document,
            "metadata": {"name": endpoint.name, "namespace": NAMESPACE,
                         "creationTimestamp": endpoint.created},
            "status": copy.deepcopy(endpoint.reported),
        }  # fmt: skip
        if endpoint.annotations:
            obj["metadata"]["annotations"] = dict(endpoint.annotations)
        if with_processes:
            mode = endpoint.manifest.spec.mode
            path = "async-invocations" if mode is Mode.ASYNC else "invocations"
            obj["status"]["url"] = (
                None if mode is Mode.BATCH
                else f"http://127.0.0.1:{self.port}/endpoints/{endpoint.name}/{path}"
            )  # fmt: skip
            obj["status"]["processes"] = [
                {"key": c.key, "pid": c.pid, "port": endpoint.ports.get(c.key),
                 "running": c.running(),
                 "ready": None if mode is Mode.BATCH else self._is_ready(endpoint, c),
                 "restarts": c.exits, "lastExit": c.last_exit,
                 "log": str(c.log_path), "outgoing": outgoing}
                for outgoing, children in ((False, endpoint.children), (True, endpoint.outgoing))
                for c in children.values()
            ]  # fmt: skip
            obj["status"]["events"] = list(endpoint.events)
        return obj

    def shown(self, endpoint: LocalEndpoint) -> dict[str, Any]:
        """``object_of`` as the user sees it (get, describe, the API's JSON): in the namespace
        it was applied with. The gateway's table and the platform API's store take
        ``object_of``'s, keyed by ``NAMESPACE``, in which up routes every endpoint by name."""
        obj = self.object_of(endpoint)
        obj["metadata"]["namespace"] = endpoint.manifest.namespace or DEFAULT_NAMESPACE
        return obj

    def log_paths(self, name: str) -> list[tuple[Path, bool]]:
        """Each log file of the endpoint's processes, and whether one of its processes now
        writes it: the others are of processes that ended (a batch instance), were scaled in,
        or ran a spec before its last change (another mode's, after a change of mode)."""
        directory = self.state_dir / "logs" / name
        endpoint = self.endpoints.get(name)
        keys = [*endpoint.children, *endpoint.outgoing] if endpoint is not None else []
        current = {self._log_path(endpoint, key) for key in keys} if endpoint is not None else set()
        found = sorted(directory.glob("*.log")) if directory.is_dir() else []
        return [(path, path in current) for path in found]


@contextlib.contextmanager
def killing_on_signal(kill: Callable[[], None]) -> Iterator[None]:
    """While the children drain: SIGTERM or Ctrl-C again kills them now, instead of ending
    ``up`` (the default action once the gateway has stopped) and leaving them running, an
    async worker until its invocations end. Only the main thread may set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def now(signum: int, _frame: FrameType | None) -> None:
        log.warning("signal %d while the children stop: killing them now", signum)
        kill()

    previous = {sig: signal.signal(sig, now) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
