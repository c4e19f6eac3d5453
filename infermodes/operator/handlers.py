"""kopf handlers: thin adapters that call ``reconcile`` and write its status.

Create, update, resume and the timer share one reconcile; API failures become kopf's temporary
errors (retried with a delay); phase changes become Kubernetes Events. Between timer ticks the
operator reacts to events: a change of the Deployments and pods it owns, or of the demand the
gateways write on an endpoint, reconciles that endpoint at once (coalesced over a few
milliseconds, so a burst of pod events costs one reconcile). One lock per endpoint keeps its
reconciles one at a time, whichever path started them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kopf
from prometheus_client import CollectorRegistry

from infermodes.endpoints import spec as s
from infermodes.endpoints.demand import ANNOTATION_PREFIX
from infermodes.endpoints.scaling import ScalerMemory
from infermodes.endpoints.status import (
    APPLY_REFUSED,
    BROKER_UNREADABLE,
    CONTAINER_CANNOT_RUN,
    CONTAINER_CRASHING,
    FAILED_CREATE,
    IN_FLIGHT_UNKNOWN,
    INVALID_SPEC,
    MODEL_LOAD_FAILED,
    NAME_IN_USE,
    UNSCHEDULABLE,
    Status,
    in_force,
    record_queue,
)
from infermodes.errors import BrokerUrlError
from infermodes.logs import quiet_client_logs
from infermodes.metrics import LIVENESS_PATH, OperatorMetrics, serve_metrics
from infermodes.operator.kube import KubeDoor, KubeError
from infermodes.operator.objects import ENDPOINT_LABEL
from infermodes.operator.reconcile import Deps, Reconciled, reconcile
from infermodes.operator.signals.backlog import look_wants_more, read_backlog
from infermodes.operator.signals.names import AsyncNames
from infermodes.operator.signals.podmetrics import scrape
from infermodes.queueing.broker import (
    BrokerUrl,
    ManagementUrl,
    given_management_url,
    given_url,
    url_now,
)
from infermodes.queueing.rabbitmq import QueueReader
from infermodes.settings import OperatorSettings, warn_of_unknown_variables

RETRY_DELAY_SECONDS = 5
NUDGE_DELAY_SECONDS = 0.02  # events closer than this share one reconcile
QUEUE_LOOK_THREADS = 4
TIMER_EXIT_POLL_SECONDS = 1.0  # a deleted endpoint's timer still running: look again after
RESOURCE = (s.GROUP, s.VERSION, s.PLURAL)
API_VERSION = f"{s.GROUP}/{s.VERSION}"
Key = tuple[str, str]  # (namespace, name)


@dataclass
class EndpointState:
    """What the operator keeps about one endpoint between reconciles."""

    memory: ScalerMemory = field(default_factory=ScalerMemory)
    lock: threading.Lock = field(default_factory=threading.Lock)
    demand_seen: dict[str, str] = field(default_factory=dict)
    # the (phase, reason) last told in an Event: a body read before the last status write
    # (kopf's, or the nudger's) would tell the same change twice
    told: tuple[s.Phase, str] | None = None


class Endpoints:
    """Every endpoint's state, shared by all handlers (kopf's per-object memo is not shared
    with the handlers of the pods and Deployments that nudge an endpoint)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[Key, EndpointState] = {}

    def state(self, key: Key) -> EndpointState:
        with self._lock:
            return self._states.setdefault(key, EndpointState())

    def forget(self, key: Key) -> None:
        with self._lock:
            self._states.pop(key, None)


class Nudger:
    """Runs ``reconcile_now`` for an endpoint soon after it is nudged; nudges that arrive
    before that run share it, and one more run follows a run in progress."""

    def __init__(self, endpoints: Endpoints, deps: Deps, metrics: OperatorMetrics) -> None:
        self.endpoints = endpoints
        self.deps = deps
        self.metrics = metrics
        self._pending: set[Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def nudge(self, key: Key) -> None:
        if key in self._pending:
            return
        self._pending.add(key)
        task = asyncio.get_running_loop().create_task(self._run(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: Key) -> None:
        await asyncio.sleep(NUDGE_DELAY_SECONDS)
        self._pending.discard(key)
        try:
            await asyncio.to_thread(self.reconcile_now, key)
        except KubeError as exc:  # the next event or tick tries again
            logging.getLogger("infermodes.operator").warning("reconcile of %s/%s: %s", *key, exc)
        except Exception:  # a bug: said now with its traceback, not when the task is collected
            logging.getLogger("infermodes.operator").exception("reconcile of %s/%s failed", *key)

    def reconcile_now(self, key: Key) -> None:
        namespace, name = key
        raw = self.deps.kube.get(API_VERSION, s.KIND, namespace, name)
        if raw is None or (raw.get("metadata") or {}).get("deletionTimestamp"):
            self.endpoints.forget(key)
            self.metrics.forget(key, deleted=True)
            return
        body = kopf.Body(raw)  # type: ignore[arg-type]  # a RawBody is the API's JSON dict
        result, changed = run_locked(body, self.endpoints.state(key), self.deps, autoscale=False)
        generation = int(body["metadata"].get("generation", 1))
        patch = result.status.to_patch(generation, body.get("status"))
        self.deps.kube.patch_status(API_VERSION, s.KIND, namespace, name, patch)
        tell(body, result, changed)
        record_queue(self.metrics, key, result.status)


def run_locked(body: kopf.Body, state: EndpointState, deps: Deps,
               autoscale: bool) -> tuple[Reconciled, bool]:  # fmt: skip
    """The reconcile, and whether its phase or reason is news: against the last told, or
    (first after a start) the body's."""
    with state.lock:
        result = reconcile(body, state.memory, deps, autoscale=autoscale)
        before = Status.from_dict(body.get("status"))
        told = state.told or (None if before is None else (before.phase, before.reason))
        state.told = (result.status.phase, result.status.reason)
        return result, told != state.told


# reasons that say something is wrong though the phase is not Failed: an update that cannot
# roll out, pods that cannot be created or placed, a queue that cannot be read
WARNING_REASONS = frozenset({
    MODEL_LOAD_FAILED, CONTAINER_CANNOT_RUN, CONTAINER_CRASHING, APPLY_REFUSED, FAILED_CREATE,
    UNSCHEDULABLE, BROKER_UNREADABLE, IN_FLIGHT_UNKNOWN, INVALID_SPEC,
})  # fmt: skip


def event_type(status: Status) -> str:
    """Warning for a Failed endpoint or a problem it waits on; Normal otherwise."""
    if status.phase is s.Phase.FAILED or status.reason in WARNING_REASONS:
        return "Warning"
    return "Normal"


def tell(body: kopf.Body, result: Reconciled, changed: bool) -> None:
    """Events: every phase or reason change, and what the reconcile found worth telling."""
    status = result.status
    if changed:
        kind = event_type(status)
        kopf.event(body, type=kind, reason=status.phase.value,
                   message=status.message or status.reason)  # fmt: skip
        logging.getLogger("infermodes.operator").info(
            "%s: phase %s (%s): %s", body["metadata"]["name"], status.phase, status.reason,
            status.message,
        )  # fmt: skip
    for reason, message in result.events:
        kopf.event(body, type="Normal", reason=reason, message=message)


def demand_annotations(body: kopf.Body) -> dict[str, str]:
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return {k: v for k, v in annotations.items() if k.startswith(ANNOTATION_PREFIX)}


def configure(
    operator_settings: OperatorSettings, url: BrokerUrl | None, management: ManagementUrl | None
) -> None:
    """Register the handlers for this process's settings (called once at start); ``url`` and
    ``management``: the broker's URLs they give (``given_url``)."""

    @kopf.on.startup()
    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.posting.level = logging.INFO
        # an endpoint deleted while its timer runs a reconcile (in a thread, which cannot be
        # cancelled) keeps its finalizer until kopf sees the timer gone: look again in a
        # second, not kopf's default minute
        settings.background.cancellation_polling = TIMER_EXIT_POLL_SECONDS
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=s.GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=s.GROUP, key="last-handled-configuration"
        )
        kube = KubeDoor()
        # kept connections (a look each second per pool, a reconcile with every nudge: a
        # connection each is churn), the reconciles' apart from the looks': a broker that does
        # not answer must not queue reconciles behind looks waiting out their timeouts
        memo.queue_reader = QueueReader(url, QUEUE_LOOK_THREADS) if url else None
        reader = memo.backlog_reader = QueueReader(url, QUEUE_LOOK_THREADS) if url else None
        names = AsyncNames(kube)  # one list of every endpoint serves both
        memo.deps = Deps(
            kube,
            operator_settings,
            scrape,
            read_backlog=lambda endpoint, webhooks: read_backlog(
                endpoint, url, management, reader, webhooks
            ),
            async_holders=names.holders,
            batch_outputs=names.batch_outputs,
        )
        memo.endpoints = Endpoints()
        registry = CollectorRegistry()
        memo.metrics = OperatorMetrics(registry)
        memo.nudger = Nudger(memo.endpoints, memo.deps, memo.metrics)
        # threads of their own: looks at a broker that does not answer (each may wait for its
        # connect timeout) must not hold the threads every other reconcile runs on
        memo.queue_looks = ThreadPoolExecutor(QUEUE_LOOK_THREADS, "queue-look")
        if operator_settings.metrics_port:
            serve_metrics(operator_settings.metrics_port, operator_settings.metrics_host, registry)

    @kopf.on.cleanup()
    def cleanup(memo: kopf.Memo, **_: Any) -> None:
        """Close the kept broker connections (the broker would log each as dropped)."""
        memo.queue_looks.shutdown(wait=False, cancel_futures=True)
        for reader in (memo.queue_reader, memo.backlog_reader):
            if reader is not None:
                reader.close()

    def run(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, autoscale: bool) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        state: EndpointState = memo.endpoints.state(key)
        try:
            result, changed = run_locked(body, state, memo.deps, autoscale)
        except KubeError as exc:
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_SECONDS) from exc
        generation = int(body["metadata"].get("generation", 1))
        patch.status.update(result.status.to_patch(generation, body.get("status")))
        tell(body, result, changed)
        record_queue(memo.metrics, key, result.status)

    @kopf.on.create(*RESOURCE)
    @kopf.on.update(*RESOURCE, field="spec")
    @kopf.on.resume(*RESOURCE)
    def changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        run(body, patch, memo, autoscale=False)

    @kopf.timer(*RESOURCE, interval=operator_settings.resync_seconds, initial_delay=1)
    def tick(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        run(body, patch, memo, autoscale=True)

    @kopf.timer(
        *RESOURCE,
        interval=operator_settings.activation_seconds,
        when=lambda spec, status, **_: (
            spec.get("mode") == s.Mode.ASYNC
            and (status or {}).get("reason") != NAME_IN_USE  # the queue is another's
        ),
    )
    async def look_at_queue(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """An async pool: look at its queue every second and decide at once when the requests
        waiting ask for more workers than the pool has (a pool at zero with anything waiting,
        requests or webhook jobs in its outbox; a burst that outgrew it); the resync timer is
        too slow for that. Scale-in stays with
        the resync, behind its cooldown."""
        spec = in_force(body.get("spec") or {}, body.get("status"))[0]
        if spec is None or spec.async_ is None:
            return  # the reconcile reports the spec
        name = body["metadata"]["name"]
        status = Status.from_dict(body.get("status"))
        current = status.replicas if status is not None else 0
        wants_more = await asyncio.get_running_loop().run_in_executor(
            memo.queue_looks, look_wants_more, name, spec.async_, current, memo.queue_reader
        )
        if wants_more:
            memo.nudger.nudge((body["metadata"]["namespace"], name))

    @kopf.on.event(*RESOURCE)
    async def demand_changed(body: kopf.Body, memo: kopf.Memo, type: str | None, **_: Any) -> None:
        """The gateways' demand moved: decide replicas now (a held request may be waiting, or
        an async request was accepted for a pool at zero). An endpoint gone: its state and
        metrics go with it."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if type == "DELETED":
            memo.endpoints.forget(key)
            memo.metrics.forget(key, deleted=True)
            return
        state: EndpointState = memo.endpoints.state(key)
        demand = demand_annotations(body)
        if demand != state.demand_seen:
            state.demand_seen = demand
            memo.nudger.nudge(key)

    @kopf.on.event("apps", "v1", "deployments", labels={ENDPOINT_LABEL: kopf.PRESENT})
    @kopf.on.event("batch", "v1", "jobs", labels={ENDPOINT_LABEL: kopf.PRESENT})
    @kopf.on.event("", "v1", "pods", labels={ENDPOINT_LABEL: kopf.PRESENT})
    async def child_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """A pod, Deployment or Job of an endpoint changed: its status may have too."""
        metadata = body["metadata"]
        memo.nudger.nudge((metadata["namespace"], metadata["labels"][ENDPOINT_LABEL]))


def not_routine_success(record: logging.LogRecord) -> bool:
    """A logging filter against kopf's ``Timer 'tick' succeeded.`` and ``Handler
    'child_changed' succeeded.``: runs of a timer (each second for each async endpoint) and of
    an event handler (each change of every pod), which kopf logs through its local logger
    (``k8s_skip``: never posted as an event) at INFO. A line each would bury the operator's
    own lines; their failures, and the successes of the handlers of a change, stay."""
    return not (
        record.levelno == logging.INFO
        and getattr(record, "k8s_skip", False) is True
        and record.getMessage().endswith(" succeeded.")
    )


def configure_logging(level: str) -> None:
    """kopf's handler at ``level`` (its own ``verbose`` means DEBUG, so it is not used for
    info); pika's lines about channels the broker closes (a passive declare of a queue no
    request made yet, every second) and kopf's routine successes (``not_routine_success``)
    only at debug."""
    level = level.lower()
    kopf.configure(debug=level == "debug", quiet=level in ("warning", "error"), log_prefix=True)
    logging.getLogger().setLevel(level.upper())
    quiet_client_logs(level)
    objects = logging.getLogger("kopf.objects")
    objects.removeFilter(not_routine_success)
    if level != "debug":
        objects.addFilter(not_routine_success)


def run_operator(operator_settings: OperatorSettings) -> None:
    """Run until stopped; watches the configured namespaces or all of them."""
    configure_logging(operator_settings.log_level)
    warn_of_unknown_variables(operator_settings)
    url = given_url(operator_settings.broker_url, operator_settings.broker_url_file)
    try:
        if url is not None:  # a file that cannot be read is refused at start
            url_now(url)
    except BrokerUrlError as exc:
        raise SystemExit(f"broker_url_file: {exc}") from None
    management = given_management_url(
        operator_settings.management_url, operator_settings.management_url_file
    )
    configure(operator_settings, url, management)
    namespaces = operator_settings.namespaces
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        memo=kopf.Memo(),
        liveness_endpoint=liveness_endpoint(operator_settings),
    )


def liveness_endpoint(operator_settings: OperatorSettings) -> str | None:
    """kopf's liveness endpoint: served on the operator's event loop, so a loop that hangs
    fails the probe and gets the pod restarted, while one busy with handlers still answers."""
    port = operator_settings.liveness_port
    if not port:
        return None
    host = operator_settings.metrics_host
    return f"http://{f'[{host}]' if ':' in host else host}:{port}{LIVENESS_PATH}"
