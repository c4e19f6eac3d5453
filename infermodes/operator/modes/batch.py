"""Batch endpoints: one Indexed Job scores a data set once, sharded over its instances.

``completions = parallelism = instanceCount``; pod i runs ``infermodes batch`` as instance i
(``JOB_COMPLETION_INDEX``) and ends; an index that fails for a reason a retry cannot mend
(input objects failed, a bad listing, a model that does not load) fails at once, any other
failure is retried ``BATCH_INSTANCE_RETRIES`` times (``up`` decides alike). Progress comes from
each running instance's metrics and, once it ended, from the summary it left as its termination
message. ``spec.batch.stop`` suspends the Job: its pods get SIGTERM, discard what they had half
written, and the endpoint reports ``Stopped``.
"""

from __future__ import annotations

import json
from typing import Any

from infermodes.endpoints import spec as s
from infermodes.endpoints.plan import (
    BATCH_INSTANCE_RETRIES,
    BATCH_METRICS_PORT,
    PERMANENT_BATCH_EXIT_CODES,
    TERMINATION_MESSAGE_PATH,
    batch_instance,
)
from infermodes.endpoints.scaling import ScalerMemory
from infermodes.endpoints.status import (
    BATCH_ENDED,
    COMPLETED,
    CONTAINER_CANNOT_RUN,
    FAILED_CREATE,
    FAILURES_SHOWN,
    OUTPUT_IN_USE,
    UNSCHEDULABLE,
    Progress,
    Status,
    add_progress,
    batch_failure_reason,
    describe_failures,
    ended_progress,
    output_in_use,
    units_progress,
)
from infermodes.errors import EXIT_STOPPED
from infermodes.metrics import parse_batch_units
from infermodes.operator.modes.base import Signals, no_pod_annotations
from infermodes.operator.objects import (
    EndpointRef,
    Ingress,
    env_list,
    guarded,
    liveness_probe,
    resources,
    restricted_pod_spec,
)
from infermodes.operator.observed import CANNOT_RUN_REASONS, PodState, running_pods
from infermodes.settings import BatchSettings

COMPONENT = "batch"
WORKLOAD = ("batch/v1", "Job")
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
TERMINATION_GRACE_SECONDS = 30


def replicas(spec: s.EndpointSpec, signals: Signals, memory: ScalerMemory) -> int:
    """``instanceCount``; none while an older job not ended writes an overlapping output
    prefix and this one's Job is not made yet (it waits: ``OutputInUse``)."""
    if signals.workload_object is None and signals.output_held_by() is not None:
        return 0
    return spec.batch_block().instance_count


pod_annotations = no_pod_annotations


def ended(status: Status) -> bool:
    """A transform job runs once: once it ended, its Job is left as it is, and one deleted
    (by hand, or by a clean-up) is not made again, which would run every instance anew; the
    outcome stays in the status."""
    return status.reason in BATCH_ENDED


def desired_objects(
    ref: EndpointRef,
    spec: s.EndpointSpec,
    replicas: int,
    image: str,
    ingress: Ingress | None = None,
) -> list[dict[str, Any]]:
    """The Indexed Job (immutable once created, as the CRD enforces, except ``suspend``);
    none while the job waits for its output prefix (``replicas``); with ``ingress``, a
    NetworkPolicy letting only the metrics' readers (the operator's progress) reach its
    metrics port."""
    if replicas == 0:
        return []
    block = spec.batch_block()
    plan = batch_instance(spec, ref.uid)  # made again (deleted, re-created): a new job
    container: dict[str, Any] = {
        "name": "batch",
        "image": spec.image or image,
        "command": list(plan.command),
        "env": env_list(BatchSettings, "metrics_host", plan),
        "ports": [{"name": "metrics", "containerPort": BATCH_METRICS_PORT, "protocol": "TCP"}],
        # 503 once a mini-batch is in flight past what its attempts may take (a hung predict,
        # which nothing else would end): the pod fails and the Job runs the index again,
        # skipping what it wrote; a long record within its timeout never fails it
        "livenessProbe": liveness_probe("metrics"),
        "resources": resources(block.resources),
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.storage_secret_ref is not None:
        container["envFrom"] = [{"secretRef": {"name": spec.storage_secret_ref.name}}]
    pod = restricted_pod_spec([container], TERMINATION_GRACE_SECONDS)
    pod["restartPolicy"] = "Never"
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": ref.metadata(COMPONENT),
        "spec": {
            "completionMode": "Indexed",
            "completions": replicas,
            "parallelism": replicas,
            "backoffLimitPerIndex": BATCH_INSTANCE_RETRIES,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailIndex",
                        "onExitCodes": {
                            "operator": "In",
                            "values": list(PERMANENT_BATCH_EXIT_CODES),
                        },
                    },
                    {
                        "action": "Ignore",
                        "onExitCodes": {"operator": "In", "values": [EXIT_STOPPED]},
                    },
                ]
            },
            "suspend": block.stop,
            "template": {"metadata": {"labels": ref.labels(COMPONENT)}, "spec": pod},
        },
    }
    peers = None if ingress is None else ingress.metrics
    return guarded([job], ref, COMPONENT, BATCH_METRICS_PORT, peers)


def summary_of(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The summary an ended instance left as its termination message (None otherwise)."""
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or {}
        try:
            document = json.loads(terminated.get("message") or "")
        except ValueError:
            continue
        if isinstance(document, dict) and document.get("version") == 1:
            return document
    return None


def latest_per_index(pods: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One pod per instance index: the newest attempt."""
    found: dict[str, dict[str, Any]] = {}
    for pod in sorted(pods, key=lambda p: str(p["metadata"].get("creationTimestamp", ""))):
        index = (pod["metadata"].get("annotations") or {}).get(INDEX_ANNOTATION)
        if index is not None:
            found[index] = pod
    return found


def pod_phase(pod: dict[str, Any]) -> str:
    """The pod's phase: ``Pending`` and ``Running`` while its process may still run (being
    deleted too, until it exits), ``Succeeded`` or ``Failed`` once it ended."""
    return str((pod.get("status") or {}).get("phase") or "")


def unsummarised(pods: list[dict[str, Any]]) -> str:
    """How the instances that ended without a summary ended (the OOM killer, a crash), as the
    kubelet and their last log lines say: the Job's own word, "Job has failed indexes",
    names no cause (``up`` says alike "exited with N without a summary")."""
    said = []
    for index, pod in sorted(latest_per_index(pods).items(), key=lambda item: int(item[0])):
        state = PodState.from_pod(pod)
        if summary_of(pod) is None and state.exit_code is not None:
            how = state.message or f"exit code {state.exit_code}"
            said.append(f"instance {index} (pod {state.name}) ended without a summary: {how}")
    more = len(said) - FAILURES_SHOWN  # each carries the tail of a log: a few KiB
    return "; ".join(said[:FAILURES_SHOWN]) + (f"; and {more} more" if more > 0 else "")


def progress(signals: Signals) -> tuple[Progress, list[dict[str, Any]]]:
    """Progress over every instance, and the failures their summaries name: an ended
    instance's from its summary, a running one's from its metrics (read together); an
    instance neither ended nor running (starting, or gone without a summary) adds nothing."""
    summaries, unfinished = [], []
    for pod in latest_per_index(signals.pods).values():
        summary = summary_of(pod)
        if summary is None:
            unfinished.append(pod)
        else:
            summaries.append(summary)
    found, failures = ended_progress(summaries)
    running = running_pods(unfinished)
    texts = signals.fetch_metrics(tuple(ip for _, ip in running), BATCH_METRICS_PORT)
    for _, ip in running:
        text = texts.get(ip)
        if text is not None:
            found = add_progress(found, units_progress(parse_batch_units(text)))
    return found, failures


def observe(spec: s.EndpointSpec, signals: Signals, previous: Status | None) -> Status:
    """``InProgress`` -> ``Completed`` | ``Failed`` (naming each failed object with its first
    bad record) | ``Stopped``, with progress throughout."""
    job = signals.workload_object or {}
    job_status = job.get("status") or {}
    conditions = {
        c.get("type"): c for c in job_status.get("conditions") or [] if c.get("status") == "True"
    }
    count = spec.batch_block().instance_count
    active = int(job_status.get("active", 0))
    found, failures = progress(signals)

    ready = int(job_status.get("ready", 0))  # active counts instances not placed yet too

    def status(phase: s.Phase, reason: str, message: str, ended: str | None = None,
               progress: Progress | None = None) -> Status:  # fmt: skip
        wanted = count if phase is s.Phase.IN_PROGRESS else 0  # an ended job wants no pods
        return Status(phase, reason, message, active, ready, wanted, progress=progress or found,
                      end_time=ended)  # fmt: skip

    def since(condition: str) -> str | None:  # when the Job's condition became true
        stamp = conditions.get(condition, {}).get("lastTransitionTime")
        return str(stamp) if stamp else None

    if "Complete" in conditions:
        return status(s.Phase.COMPLETED, COMPLETED, f"{found.records} records; {found.done} "
                      "objects written or already complete",
                      since("Complete"))  # fmt: skip
    if "Failed" in conditions:
        condition = conditions["Failed"]
        told = condition.get("message") or condition.get("reason", "")
        named = (describe_failures(failures, found.failed), unsummarised(signals.pods))
        detail = "; ".join(part for part in named if part) or told
        return status(s.Phase.FAILED, batch_failure_reason(failures), detail, since("Failed"))
    if spec.batch_block().stop:
        # the Job's count leaves out pods that are terminating, which still write their
        # summaries (and the output in hand) under the output path as they unwind: Stopped,
        # which may free that path for the next job, waits for them too
        exiting = sum(1 for pod in signals.pods if pod_phase(pod) in ("Pending", "Running"))
        if active == 0 and exiting == 0:  # its pods, and what they said, are gone: the
            last = previous.progress if previous is not None else None  # progress seen last
            kept = found if found.total or last is None else last  # stays
            return status(s.Phase.STOPPED, "Stopped", "stopped by spec.batch.stop",
                          since("Suspended"), kept)  # fmt: skip
        stopping = max(active, exiting)
        return status(s.Phase.IN_PROGRESS, "Stopping", f"{stopping} instance(s) stopping")
    holder = signals.output_held_by() if not job else None
    if holder is not None:
        uri = spec.batch_block().output.uri
        waits = output_in_use(holder, uri, signals.made_by_api)
        return status(s.Phase.IN_PROGRESS, OUTPUT_IN_USE, waits)
    message = f"{found.done}/{found.total} objects, {found.records} records"
    if failures:
        message += f"; failed so far: {describe_failures(failures, found.failed)}"
    stuck = stalled_instance(signals.pods)
    if stuck is None and job and len(latest_per_index(signals.pods)) < count:
        stuck = refused_creation(signals.workload_events())  # an instance with no pod at all
    if stuck is not None:  # the Job waits for them (a Secret created later lets them start)
        return status(s.Phase.IN_PROGRESS, stuck[0], f"{message}; {stuck[1]}")
    return status(s.Phase.IN_PROGRESS, "Running" if job else "Starting", message)


def stalled_instance(pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) of what keeps the newest attempt of an instance from starting: a
    missing Secret or an image that cannot be pulled (``ContainerCannotRun``, as its
    container's waiting reason says), or no node with room for it (``Unschedulable``)."""
    for pod in latest_per_index(pods).values():
        state = PodState.from_pod(pod)
        if state.waiting_reason in CANNOT_RUN_REASONS:
            detail = f"{state.waiting_reason}: {state.message}".rstrip(": ")
            return CONTAINER_CANNOT_RUN, f"instance pod {state.name} cannot start: {detail}"
        if state.unschedulable:
            return UNSCHEDULABLE, (
                f"instance pod {state.name} cannot be scheduled: {state.unschedulable}"
            )
    return None


def refused_creation(events: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) when the Job's newest word on creating pods is that it could not (a
    quota of pods, a Pod Security level): its Events say so, as no condition of it does."""
    creations = [e for e in events if e.get("reason") in (FAILED_CREATE, "SuccessfulCreate")]
    if not creations:
        return None
    newest = max(creations, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    if newest["reason"] != FAILED_CREATE:
        return None
    return FAILED_CREATE, f"instance pods cannot be created: {newest.get('message', '')}"
