"""The status the operator writes: phase, reason, replica counts and conditions."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from infermodes.endpoints import spec
from infermodes.endpoints.spec import ADMITTED, EndpointSpec, Phase, parse_spec
from infermodes.metrics import OperatorMetrics
from infermodes.storage import prefix_within

# status reasons written by the operator and by `infermodes up`, read by Events and the docs
BROKER_UNREADABLE = "BrokerUnreadable"  # an async endpoint's reason while its queue is unread
MODEL_LOAD_FAILED = "ModelLoadFailed"
CONTAINER_CANNOT_RUN = "ContainerCannotRun"  # a missing Secret, an image that cannot be pulled
CONTAINER_CRASHING = "ContainerCrashing"
# a container (a local process) that has crashed this often, never ready, is not going to
# come up: both actuators then say so, and the gateway answers its held requests at once
CRASH_RESTARTS = 3
BROKER_LOGIN_REFUSED = "BrokerLoginRefused"  # async workers the broker Secret's URL cannot log in
FAILED_CREATE = "FailedCreate"  # the API refuses the pods: a quota, a Pod Security level
UNSCHEDULABLE = "Unschedulable"  # no node has room for them
IN_FLIGHT_UNKNOWN = "InFlightUnknown"  # an async pool whose workers cannot say what they hold
SCALED_TO_ZERO = "ScaledToZero"  # a serverless endpoint with no replica: a request starts one
SCALED_TO_ZERO_MESSAGE = "no replicas; a request starts one"
LOADING_MODEL = "LoadingModel"  # a serverless endpoint's new template: one replica loads it
LOADING_MODEL_MESSAGE = "one replica loads the model before the endpoint takes requests"
ROLLING_OUT = "RollingOut"
COMPLETED = "Completed"
OBJECTS_FAILED = "ObjectsFailed"  # a batch job with objects that failed
JOB_FAILED = "JobFailed"  # a batch job that failed on no object (no inputs, a listing)
BATCH_ENDED = frozenset({COMPLETED, OBJECTS_FAILED, JOB_FAILED})  # what a batch job ended with
APPLY_REFUSED = "ApplyRefused"  # the API server refused an object of the endpoint
INVALID_SPEC = "InvalidSpec"  # a spec that cannot run, or the operator does not run
# an async endpoint held back: an older one in another namespace holds its name (its queue)
NAME_IN_USE = "NameInUse"
# a new async pool started at its initial workers, fewer of them ready yet (``pool_starting``)
STARTING_WORKERS = "StartingWorkers"
# a batch job held back: an older one not ended writes an overlapping output prefix
OUTPUT_IN_USE = "OutputInUse"
ACTUATION_FAILED = "ActuationFailed"  # `infermodes up` could not run an endpoint's processes
# an update that cannot roll out: the spec before it serves (``Updating``), and a new update
# may replace it, as the platform lets one follow an update that failed and rolled back. Its
# pods refused or placed nowhere (a quota, no node with room: a new memory size, say) count:
# either may last, and the update that mends it was refused as in progress meanwhile
UPDATE_FAILURES = frozenset({MODEL_LOAD_FAILED, CONTAINER_CANNOT_RUN, CONTAINER_CRASHING,
                             BROKER_LOGIN_REFUSED, APPLY_REFUSED, ACTUATION_FAILED,
                             FAILED_CREATE, UNSCHEDULABLE})  # fmt: skip


@dataclass(frozen=True)
class Progress:
    """A batch job's progress in input objects (one split into byte ranges counted once)."""

    total: int = 0
    done: int = 0
    failed: int = 0
    records: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "objectsTotal": self.total,
            "objectsDone": self.done,
            "objectsFailed": self.failed,
            "recordsDone": self.records,
            "text": f"{self.done}/{self.total}"
            + (f" ({self.failed} failed)" if self.failed else ""),
        }

    @classmethod
    def from_dict(cls, found: Any) -> Progress | None:
        """``to_dict``'s figures read back (None: none, or not numbers)."""
        if not isinstance(found, dict):
            return None
        try:
            figures = ("objectsTotal", "objectsDone", "objectsFailed", "recordsDone")
            return cls(*(int(found.get(key, 0)) for key in figures))
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True)
class QueueFigures:
    """An async endpoint's queue as the scaler read it (None: unknown). ``oldest_age``: the
    seconds the oldest waiting request has waited since it was accepted (the platform's
    ApproximateAgeOfOldestRequest), 0 when nothing waits; ``consumers``: the queue's, for the
    scaler (not shown in the status); ``waiting_webhooks``: webhook jobs ready in the
    endpoint's outbox, which keep a worker (those of removed webhooks too: a worker acks them)."""

    ready: int | None
    in_flight: int | None
    oldest_age: float | None = None
    consumers: int | None = None
    waiting_webhooks: int = 0

    @property
    def total(self) -> int | None:
        if self.ready is None or self.in_flight is None:
            return None
        return self.ready + self.in_flight

    def to_dict(self) -> dict[str, Any]:
        age = None if self.oldest_age is None else round(self.oldest_age, 3)
        return {
            "ready": self.ready,
            "inFlight": self.in_flight,
            "total": self.total,
            "oldestAgeSeconds": age,
            "waitingWebhookJobs": self.waiting_webhooks,
        }


def oldest_age_from_dequeues(
    ready: int, dequeued_accepted_at: list[float], now: float
) -> float | None:
    """The oldest waiting request's age when the broker cannot tell it (a quorum queue has no
    head timestamp): each worker reports when the newest request it took was accepted, and as
    the queue hands requests out oldest first, whatever still waits was accepted after the
    newest of those. So ``now`` minus it bounds the age from above, tightly while workers take
    requests (only a retry put back in the queue can be older). 0 when nothing waits; None
    when no worker has taken a request yet."""
    if ready == 0:
        return 0.0
    if not dequeued_accepted_at:
        return None
    return max(0.0, now - max(dequeued_accepted_at))


def with_estimated_age(
    figures: QueueFigures, taken: Callable[[], Iterable[float | None]], now: float
) -> QueueFigures:
    """``figures`` with the oldest waiting request's age estimated from what the workers took
    last (``oldest_age_from_dequeues``; ``taken`` reads each worker's figure, None when it
    cannot say) when the broker does not report it (a quorum queue). The operator and
    ``infermodes up`` both use it; ``taken`` is read only then."""
    if figures.oldest_age is not None or figures.ready is None:
        return figures
    known = [at for at in taken() if at is not None]
    return replace(figures, oldest_age=oldest_age_from_dequeues(figures.ready, known, now))


@dataclass(frozen=True)
class AppliedSpec:
    """The spec the workload was last applied from and its generation (``status.appliedSpec``,
    its JSON, and ``status.appliedGeneration``): what its pods run while a later spec is refused
    or cannot be parsed (a CRD older than the operator takes specs it cannot parse), so the
    operator keeps actuating it and a gateway started meanwhile serves it. In the status, which
    only the operator writes and every CRD's schema keeps (its unknown fields are kept); the
    spec as one string, so a merge patch replaces it whole."""

    generation: int
    text: str

    @classmethod
    def of(cls, generation: int, spec: Mapping[str, Any]) -> AppliedSpec:
        return cls(generation, json.dumps(dict(spec), sort_keys=True, separators=(",", ":")))

    @classmethod
    def from_dict(cls, status: Any) -> AppliedSpec | None:
        """The one recorded in an endpoint's status; None when none (or not as written)."""
        if not isinstance(status, Mapping):
            return None
        generation, text = status.get("appliedGeneration"), status.get("appliedSpec")
        if isinstance(generation, bool) or not isinstance(generation, int):
            return None
        return cls(generation, text) if isinstance(text, str) else None

    def status_fields(self) -> dict[str, Any]:
        return {"appliedGeneration": self.generation, "appliedSpec": self.text}

    def spec(self) -> EndpointSpec | None:
        """The recorded spec, parsed; None when this operator cannot parse it either."""
        try:
            return EndpointSpec.model_validate(json.loads(self.text), context=ADMITTED)
        except (ValueError, ValidationError):  # json's errors are ValueErrors
            return None


def in_force(raw: Any, status: Any) -> tuple[EndpointSpec | None, str | None, int | None]:
    """The spec to actuate and serve, why it is not the one given (None: it is), and the
    generation the workload must run for it (None: any). A spec that cannot be parsed, one the
    CRD took (a CRD older than the operator's checks: helm never upgrades a chart's CRDs), is
    refused as ``not_allowed`` refuses one, and the spec its workload was last applied from
    (its status's ``AppliedSpec``) stands in for it: the operator keeps actuating it (scaled,
    activated, its queue watched) and the gateway serves it. A spec its endpoint ran before
    (``admitted_before``) is parsed as ``ADMITTED``: an upgrade's new checks do not fail it."""
    spec = parse_spec(raw, admitted_before(raw, status))
    if not isinstance(spec, str):
        return spec, None, None
    applied = AppliedSpec.from_dict(status)
    kept = None if applied is None else applied.spec()
    return kept, spec, None if applied is None else applied.generation


def admitted_before(raw: Any, status: Any) -> bool:
    """Whether an endpoint ran this spec before: its workload was applied from it (the status's
    ``AppliedSpec``), or, with none recorded (a release before it, or an ended job), the
    endpoint has a phase that no refusal of its spec gave. A new spec or a changed one is not."""
    applied = AppliedSpec.from_dict(status)
    if applied is not None:
        return applied.text == AppliedSpec.of(applied.generation, raw).text
    previous = Status.from_dict(status)
    return previous is not None and previous.reason != INVALID_SPEC


@dataclass(frozen=True)
class Status:
    phase: Phase
    reason: str = ""
    message: str = ""
    replicas: int = 0
    ready_replicas: int = 0
    desired_replicas: int = 0
    progress: Progress | None = None  # batch only
    backlog: QueueFigures | None = None  # async only
    # async only: its queue was to be read and could not be (whatever the phase says)
    backlog_unread: bool = field(default=False, compare=False)
    # when the operator last changed the replicas (RFC 3339): its cooldowns outlive a restart
    last_scale_time: str | None = None
    # when a batch job ended (RFC 3339), from what outlives a restart of either actuator
    end_time: str | None = None
    # the spec its workload runs (written only when it changes; None: left as written)
    applied: AppliedSpec | None = None
    # serverless: the template whose model a replica loaded (``loaded_template``; None: none)
    loaded_template: str | None = None

    @classmethod
    def from_dict(cls, status: Any) -> Status | None:
        if not status or "phase" not in status:
            return None
        try:
            phase = Phase(status["phase"])
        except ValueError:
            return None
        return cls(
            phase,
            status.get("reason", ""),
            status.get("message", ""),
            int(status.get("replicas", 0)),
            int(status.get("readyReplicas", 0)),
            int(status.get("desiredReplicas", 0)),
            progress=Progress.from_dict(status.get("progress")),
            last_scale_time=status.get("lastScaleTime"),
            applied=AppliedSpec.from_dict(status),
            loaded_template=status.get("loadedTemplate"),
        )

    def to_patch(self, generation: int, previous: Any) -> dict[str, Any]:
        """The status subresource patch. The Ready condition's transition time only moves
        when its value changes, so re-reconciling an unchanged endpoint writes nothing new."""
        ready = "True" if self.phase in (Phase.IN_SERVICE, Phase.COMPLETED) else "False"
        old: dict[str, Any] = next(
            (c for c in (previous or {}).get("conditions") or [] if c.get("type") == "Ready"), {}
        )
        since = old.get("lastTransitionTime") if old.get("status") == ready else None
        condition: dict[str, Any] = {
            "type": "Ready",
            "status": ready,
            "reason": self.reason or self.phase.value,
            "message": self.message,
            "lastTransitionTime": since or rfc3339(time.time()),
        }
        patch: dict[str, Any] = {
            "phase": self.phase.value,
            "reason": self.reason,
            "message": self.message,
            "replicas": self.replicas,
            "readyReplicas": self.ready_replicas,
            "desiredReplicas": self.desired_replicas,
            "observedGeneration": generation,
            "conditions": [condition],
        }
        if self.last_scale_time is not None:
            patch["lastScaleTime"] = self.last_scale_time
        if self.loaded_template is not None or (previous or {}).get("loadedTemplate"):
            # None removes it: a failure, or another mode, leaves no template known loaded
            patch["loadedTemplate"] = self.loaded_template
        if self.end_time is not None:
            patch["endTime"] = self.end_time
        elif (previous or {}).get("endTime") is not None:
            patch["endTime"] = None  # running again (a stopped job resumed): not ended
        if self.applied is not None and self.applied != AppliedSpec.from_dict(previous):
            patch.update(self.applied.status_fields())
        if self.progress is not None:
            patch["progress"] = self.progress.to_dict()
        if self.backlog is not None:
            patch["backlog"] = self.backlog.to_dict()
        elif (previous or {}).get("backlog") is not None:
            patch["backlog"] = None  # unread now (BrokerUnreadable): no figures left frozen
        return patch


def rfc3339(wall: float) -> str:
    """A wall-clock time as Kubernetes writes them (whole seconds, UTC)."""
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: object) -> float | None:
    """The wall-clock time ``rfc3339`` wrote; None for anything else."""
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def record_queue(metrics: OperatorMetrics, key: tuple[str, str], status: Status) -> None:
    """The platform's async metrics from the queue a reconcile read (``key``: namespace and
    name); the operator and ``infermodes up`` publish the same ones. None read (the broker
    unreadable, or no queue of its own): none published."""
    if status.backlog is None:
        metrics.forget(key)
        if status.backlog_unread:
            metrics.broker_unreadable.labels(*key).inc()
        return
    figures = status.backlog
    metrics.record(key, figures.total, status.replicas, status.ready_replicas, figures.oldest_age)


FAILURES_SHOWN = 5


def summary_progress(summary: Mapping[str, Any]) -> tuple[Progress, list[dict[str, Any]]]:
    """The progress one ended batch instance reports in its summary (``workers/batch/
    summary.py``, version 1) of its whole objects (its byte ranges of split objects are the
    job's to count: ``ended_progress``), and the failures it names (an instance-wide error as
    one without an object)."""
    units = summary.get("units") or {}
    failures = list(summary.get("failures") or [])
    if summary.get("error"):
        failures.append({"object": None, "line": None, "reason": summary["error"]})
    if summary.get("state") == "Failed" and not failures:  # every one cut from a 4 KiB message
        count = int(units.get("failed", 0))
        failed = f"instance {summary.get('index')}: {count} unit(s) failed"
        reason = f"{failed} (see its summary under the output prefix)"
        failures.append({"object": None, "line": None, "reason": reason, "units": count})
    ranges = ended_ranges(summary)
    failed_ranges = sum(1 for r in ranges if r.failed)
    finished = Progress(len(ranges), len(ranges) - failed_ranges, failed_ranges,
                        sum(r.records for r in ranges))  # fmt: skip
    units_done = units_progress({**units, "records": summary.get("records", 0)})
    whole = Progress(units_done.total - finished.total, units_done.done - finished.done,
                     units_done.failed - finished.failed,
                     units_done.records - finished.records)  # fmt: skip
    return whole, failures


@dataclass(frozen=True)
class EndedRange:
    """A byte range of a split object, as an ended instance's summary lists it."""

    object: str
    index: int
    of: int
    failed: bool
    records: int


def ended_ranges(summary: Mapping[str, Any]) -> list[EndedRange]:
    """The ranges of split objects an ended instance's summary lists; an entry that is not one
    (a summary not of this release, a damaged one) is left out, read in the operator's
    reconcile as it is."""
    found = []
    for entry in summary.get("ranges") or []:
        with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError):
            found.append(EndedRange(str(entry["object"]), int(entry.get("range", 0)),
                                    int(entry.get("of") or 1), entry.get("outcome") == "failed",
                                    int(entry.get("records") or 0)))  # fmt: skip
    return found


def split_objects_progress(ranges: Iterable[EndedRange]) -> Progress:
    """The objects split into byte ranges, from their ranges' outcomes in every ended
    instance's summary: each is one object once all its ranges ended (done, its records
    counted) or one failed (failed: its parts are deleted); until then its ended ranges count
    as units, as a running instance's do, so the job's progress does not step back as the
    first of its instances ends."""
    by_object: dict[str, dict[int, EndedRange]] = {}
    for ended in ranges:
        by_object.setdefault(ended.object, {})[ended.index] = ended
    found = Progress()
    for parts in by_object.values():
        records = sum(part.records for part in parts.values())
        if any(part.failed for part in parts.values()):
            found = add_progress(found, Progress(1, 0, 1, 0))
        elif len(parts) >= max(part.of for part in parts.values()):
            found = add_progress(found, Progress(1, 1, 0, records))
        else:  # more ranges to come: each ended one a unit, as before the object is whole
            found = add_progress(found, Progress(len(parts), len(parts), 0, records))
    return found


def ended_progress(
    summaries: Iterable[Mapping[str, Any]],
) -> tuple[Progress, list[dict[str, Any]]]:
    """The progress the ended instances report in their summaries, a split object counted
    once over all of them (``split_objects_progress``), and the failures they name."""
    found = Progress()
    failures: list[dict[str, Any]] = []
    ranges: list[EndedRange] = []
    for summary in summaries:
        progress, failed = summary_progress(summary)
        found, failures = add_progress(found, progress), failures + failed
        ranges += ended_ranges(summary)
    return add_progress(found, split_objects_progress(ranges)), failures


def add_progress(a: Progress, b: Progress) -> Progress:
    return Progress(a.total + b.total, a.done + b.done, a.failed + b.failed, a.records + b.records)


def units_progress(units: Mapping[str, Any]) -> Progress:
    """An instance's progress from its unit counts and records: a running one's metrics
    (``metrics.parse_batch_units``), or an ended one's summary."""
    return Progress(
        int(units.get("assigned", 0)),
        int(units.get("succeeded", 0) + units.get("skipped", 0)),
        int(units.get("failed", 0)),
        int(units.get("records", 0)),
    )


def batch_failure_reason(failures: list[dict[str, Any]]) -> str:
    """``ObjectsFailed`` when an object failed; ``JobFailed`` when none did (no inputs, a
    listing that failed, a model that cannot load: an instance-wide error)."""
    return OBJECTS_FAILED if any(f.get("object") for f in failures) else JOB_FAILED


def describe_failures(failures: list[dict[str, Any]], failed_units: int = 0) -> str:
    """The first few failures, each as ``object line N: reason``, and how many more (the same
    failure told by several instances, an instance-wide error say, once). ``failed_units``:
    the units (objects, or byte ranges of split ones) that failed in all, more than the
    failures named when the instances' summaries had no room for every one; those an
    instance's stand-in counts (``units``) are told by it."""
    failures = list({repr(sorted(f.items())): f for f in failures}.values())
    shown = []
    for failure in failures[:FAILURES_SHOWN]:
        line = f" line {failure['line']}" if failure.get("line") is not None else ""
        where = f"{failure['object']}{line}: " if failure.get("object") else ""
        shown.append(f"{where}{failure.get('reason')}")
    told = sum(1 if f.get("object") else int(f.get("units", 0)) for f in failures)
    more = len(failures) - len(shown) + max(failed_units - told, 0)
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def pool_starting(
    initial: int, wanted: int, ready: int, served: bool
) -> tuple[Phase, str, str] | None:
    """(phase, reason, message) of an async pool that has not ``served`` (no look before this
    one said ``InService`` or ``Updating``) while fewer of its workers are ready than it starts
    with: its ``initial`` ones (initialReplicas, minReplicas without it), or the fewer it still
    ``wanted`` (scaled in before they were). ``Creating`` then, as the platform says InService
    once the variant's instances run. None once they are ready, for a pool started at zero
    (requests queue: it is in service at once), and for one that served: its workers coming
    back, or a new spec's replacing them, are a scale or a rollout, not a start. The one rule
    of both actuators, each gathering these facts (the operator from its workload and the
    status it wrote, ``infermodes up`` from its processes and the status it showed)."""
    starting = min(initial, wanted)
    if served or ready >= starting:
        return None
    message = f"{ready}/{starting} initial workers ready; requests queue"
    return Phase.CREATING, STARTING_WORKERS, message


def still_served(served: bool, phase: Phase) -> bool:
    """Whether an endpoint that ``served`` (said ``InService`` or ``Updating``, or replaced a
    spec that did) still counts as one that served after a look that said ``phase``: not once
    it said ``Failed``. Nothing of it served then, so its replicas or workers coming back are
    a start (``Creating``: ``StartingWorkers``, a realtime endpoint's ``Creating``), not a
    rollout over ones that serve (``Updating``): the platform's Failed endpoint is never
    updated back into service (it is deleted and created again, Creating), and the operator,
    which asks ``served`` of the status it wrote last, says so; ``infermodes up`` forgets
    what it served by this rule."""
    return served and phase is not Phase.FAILED


def served(previous: Status | None) -> bool:
    """Whether the endpoint served before this look (a rollout, not a first start): its last
    status said ``InService`` or ``Updating`` (``still_served``: not ``Failed``)."""
    return previous is not None and previous.phase in (Phase.IN_SERVICE, Phase.UPDATING)


def pool_standing(
    figures: QueueFigures | None,
    replicas: int,
    rolling_out: bool,
    silent: Sequence[str],
    workers: str,
) -> tuple[Phase, str, str]:
    """(phase, reason, message) of an async pool past its start (``pool_starting``), as both
    actuators say it. The phase is the workers': ``Updating`` while a new spec's replace those
    of a pool that served (``rolling_out``; the queue accepts throughout), else ``InService``,
    also at zero workers. The reason says how the pool stands, the broker first, as it holds
    the pool's size whatever else is true: ``BrokerUnreadable`` (``figures`` None; a rollout
    goes on meanwhile, so it stays ``Updating``) and ``InFlightUnknown`` (``silent`` workers
    cannot say what they hold: neither scales the pool in), then ``RollingOut``, then ``Idle``
    (nothing queued nor held, no ``replicas`` wanted) or ``Processing``. ``workers``: the message's
    note of the workers (``N/M workers``, each actuator adding what it knows of them)."""
    phase = Phase.UPDATING if rolling_out else Phase.IN_SERVICE
    if figures is None:
        unread = "the broker cannot be read; the replicas stay as they are, but for a change of"
        return phase, BROKER_UNREADABLE, f"{unread} minReplicas or maxReplicas; {workers}"
    in_flight = "unknown" if figures.in_flight is None else str(figures.in_flight)
    queued = f"{figures.ready} queued, {in_flight} in flight"
    if figures.ready and figures.oldest_age is not None:
        queued += f" (oldest waiting {figures.oldest_age:.1f} s)"
    if figures.waiting_webhooks:
        queued += f", {figures.waiting_webhooks} webhook job(s) waiting"
    if silent:
        unknown = (
            f"worker(s) {', '.join(silent)} cannot say what they hold (their metrics port does "
            "not answer, or gives no count): the queue's figures scale the pool in only once "
            "they can"
        )
        return phase, IN_FLIGHT_UNKNOWN, f"{queued}; {unknown}; {workers}"
    if rolling_out:
        return phase, ROLLING_OUT, f"{queued}; {workers}"
    reason = "Idle" if figures.total == 0 and replicas == 0 else "Processing"
    return phase, reason, f"{queued}; {workers}"


def serverless_phase(
    loaded: bool, served: bool, replicas: int, ready: int, rolling_out: bool
) -> tuple[Phase, str, str]:
    """(phase, reason, message) of a serverless endpoint whose replicas are not failing, as
    both actuators say it. Until a replica of its template was ready (``loaded``), it is
    ``Creating`` (``Updating`` once it ``served``): one replica loads the model before the
    endpoint takes requests, as the platform's CreateEndpoint and UpdateEndpoint do, so a
    waiter for InService is never told so of a model that cannot load. Then InService at
    zero (the next request cold-starts a replica), and otherwise as any endpoint of model
    servers that takes requests (``replicas_phase``)."""
    if not loaded:
        phase = Phase.UPDATING if served else Phase.CREATING
        counts = f"{ready}/{replicas} replicas ready"
        return phase, LOADING_MODEL, f"{LOADING_MODEL_MESSAGE} ({counts})"
    if replicas == 0:
        return Phase.IN_SERVICE, SCALED_TO_ZERO, SCALED_TO_ZERO_MESSAGE
    return replicas_phase(served, replicas, ready, rolling_out)


def replicas_phase(
    served: bool, replicas: int, ready: int, rolling_out: bool
) -> tuple[Phase, str, str]:
    """(phase, reason, message) of an endpoint of model servers that takes requests (a
    realtime one once it served, a serverless one once its template loaded), its replicas not
    failing: ``Updating`` while a new template rolls out (``rolling_out``) over replicas of an
    endpoint that served, or that has a replica ready; else InService, every replica ready
    or replicas coming and going."""
    counts = f"{ready}/{replicas} replicas ready"
    if rolling_out and (ready > 0 or served):
        return Phase.UPDATING, ROLLING_OUT, counts
    if ready >= replicas:
        return Phase.IN_SERVICE, "AllReplicasReady", counts
    return Phase.IN_SERVICE, "Scaling", counts


def loaded_template(remembered: str | None, template: str, replica_ready: bool) -> str | None:
    """The template whose model a replica has loaded: ``template`` (``plan.replica_template``)
    once one of its replicas is ready, else the one ``remembered`` (the operator's in the
    status, ``up``'s in its memory), so a scale to zero does not load it again."""
    return template if replica_ready else remembered


def update_blocked(detail: str, serving: int) -> str:
    """The message of an endpoint whose new spec cannot roll out while the previous spec's
    replicas serve (both actuators keep it ``Updating``, as the platform keeps an endpoint on
    its old config when an update fails)."""
    return (
        f"the new spec cannot roll out ({detail}); {serving} replica(s) of the previous spec "
        "still serve: fix or revert the spec"
    )


def load_error(message: str) -> str:
    """The model server's (or worker's) reason from the end of its log (a pod's termination
    message with FallbackToLogsOnError, a local process's log file): the text after its
    ``cannot load model:`` line."""
    marker = "cannot load model: "
    for line in reversed(message.splitlines()):
        if marker in line:
            return line.split(marker, 1)[1].strip()
    return message or "the model server exited with code 3; see its log"


@dataclass(frozen=True)
class BatchOutput:
    """A batch job's hold on its output prefix, as an actuator lists them."""

    endpoint: str  # how the status names it: "namespace/name" (the operator), "name" (``up``)
    created: str  # its creationTimestamp (RFC 3339: it sorts as time)
    uri: str  # spec.batch.output.uri
    ended: bool  # it holds its prefix no more: ``batch_output_released``


def batch_output_released(phase: object, labels: Mapping[str, Any]) -> bool:
    """Whether a batch job (its status's phase, its labels) holds its output prefix no more:
    Completed or Failed. A Stopped job may resume (``spec.batch.stop`` set back to false), so it
    holds it, unless the platform API made it: StopTransformJob is final there, as on the
    platform (no call resumes a job), and the job created next on its output must not wait for
    one that will never end."""
    if phase in (Phase.COMPLETED, Phase.FAILED):
        return True
    return phase == Phase.STOPPED and made_by_api(labels)


def made_by_api(labels: Mapping[str, Any]) -> bool:
    """Whether a batch job (its labels) was made by the platform API's CreateTransformJob,
    whose caller has only that API's calls (StopTransformJob, no delete, no spec to edit)."""
    return labels.get(spec.PLATFORM_KIND_LABEL) == spec.PLATFORM_TRANSFORM_JOB


def output_held_by(job: BatchOutput, others: Iterable[BatchOutput]) -> str | None:
    """The older batch job, not ended, whose output prefix overlaps ``job``'s (the same, or
    one inside the other), which ``job`` waits for before it starts; None when there is none.
    Two jobs writing one prefix at once each take the other's outputs for their own (each
    skips what was written since it started), so each object ends with either's output.
    Older: created first (then the first endpoint name, for two created in one second). The
    overlap is asked last, of an older job not ended alone: it resolves a file:// folder on the
    file system, and ``up`` asks on every tick of a held job, against all its batch endpoints."""
    for other in sorted(others, key=lambda o: (o.created, o.endpoint)):
        if other.ended or (other.created, other.endpoint) >= (job.created, job.endpoint):
            continue
        if prefix_within(job.uri, other.uri) or prefix_within(other.uri, job.uri):
            return other.endpoint
    return None


def output_in_use(holder: str, uri: str, api_job: bool) -> str:
    """The message of a batch job that waits for ``holder`` (``output_held_by``), with the way
    to run it now that its maker has: ``api_job`` (``made_by_api``), the platform API's calls,
    which delete no job; otherwise the endpoint's own."""
    now = (
        "StopTransformJob this job and create one under another name with an S3OutputPath of "
        "its own to run it now"
        if api_job
        else "delete this one and create it with an output.uri of its own to run it now"
    )
    return (
        f"waits for batch endpoint {holder}, which writes to an output prefix overlapping {uri},"
        f" to end: two jobs writing one prefix at once would each take the other's outputs for"
        f" their own; {now}"
    )
