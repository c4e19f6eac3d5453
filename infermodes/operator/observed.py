"""Observed state of an endpoint's workload, parsed from API objects, and the status it means."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infermodes.endpoints.spec import GROUP, Phase
from infermodes.endpoints.status import (
    BROKER_LOGIN_REFUSED,
    CONTAINER_CANNOT_RUN,
    CONTAINER_CRASHING,
    CRASH_RESTARTS,
    FAILED_CREATE,
    MODEL_LOAD_FAILED,
    UNSCHEDULABLE,
    Status,
    load_error,
    replicas_phase,
    served,
    update_blocked,
)
from infermodes.errors import EXIT_BROKER_LOGIN_REFUSED, EXIT_MODEL_LOAD_FAILED

CANNOT_RUN_REASONS = frozenset({
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerError",
    "CreateContainerConfigError", "RunContainerError", "StartError",
})  # fmt: skip
# The node authorizer's words while it has not yet linked a new pod to its node: the kubelet
# was refused the pod's Secret for a moment and reads it again at once (a race, not the spec's
# fault; taken for one, it failed a cold start and its held requests)
NODE_NOT_YET_LINKED = "no relationship found between node"


GENERIC_EXIT_REASONS = frozenset({"Error", "Completed"})  # the kubelet's words for any exit


def termination_message(terminated: dict[str, Any]) -> str:
    """What a container said as it died: its termination message (with
    ``FallbackToLogsOnError``, the end of its log), led by the kubelet's reason when that
    names a cause the log cannot tell, such as ``OOMKilled`` (a model larger than the
    replica's memory), rather than the ``Error`` of any exit."""
    message = str(terminated.get("message") or "").strip()
    reason = str(terminated.get("reason") or "")
    if reason and reason not in GENERIC_EXIT_REASONS:
        cause = f"{reason} (exit code {terminated.get('exitCode')})"
        return f"{cause}: {message}" if message else cause
    return message or reason


@dataclass(frozen=True)
class PodState:
    name: str
    ip: str | None
    ready: bool
    restarts: int = 0
    exit_code: int | None = None  # of the current or last terminated run
    waiting_reason: str | None = None
    message: str = ""
    running: bool = False  # its containers run, and it is not being deleted (``running_pods``)
    unschedulable: str = ""  # the scheduler's word when no node can take it
    deleting: bool = False  # on its way out (a deletionTimestamp): it stands for no spec now

    @classmethod
    def from_pod(cls, pod: dict[str, Any]) -> PodState:
        status = pod.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        scheduled = conditions.get("PodScheduled") or {}
        containers = status.get("containerStatuses") or []
        restarts = sum(int(c.get("restartCount", 0)) for c in containers)
        exit_code: int | None = None
        waiting: str | None = None
        message = ""
        for container in containers:
            state = container.get("state") or {}
            last = container.get("lastState") or {}
            terminated = state.get("terminated") or last.get("terminated")
            if terminated:  # what the process said as it died outranks a back-off note
                exit_code = terminated.get("exitCode")
                message = termination_message(terminated)
            if state.get("waiting"):
                waiting = state["waiting"].get("reason")
                message = message or state["waiting"].get("message") or ""
        return cls(
            name=pod["metadata"]["name"],
            ip=status.get("podIP"),
            ready=(conditions.get("Ready") or {}).get("status") == "True"
            and not pod["metadata"].get("deletionTimestamp"),
            restarts=restarts,
            exit_code=exit_code,
            waiting_reason=waiting,
            message=message.strip(),
            running=bool(containers)
            and all("running" in (c.get("state") or {}) for c in containers)
            and status.get("phase") == "Running"
            and not pod["metadata"].get("deletionTimestamp"),
            unschedulable=(scheduled.get("message") or "Unschedulable").strip()
            if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"
            else "",
            deleting=bool(pod["metadata"].get("deletionTimestamp")),
        )


# On a Deployment: its generation when the operator last changed its pod template. Each
# change of replicas (every autoscaler step) also makes a generation the Deployment controller
# has not seen yet; only a template the controller has not seen is a rollout to wait for.
TEMPLATE_GENERATION = f"{GROUP}/template-generation"


def template_generation(deployment: dict[str, Any]) -> int:
    """The generation of the Deployment's pod template (``TEMPLATE_GENERATION``); its
    generation when none is noted (a change not known to be of replicas only)."""
    metadata = deployment.get("metadata") or {}
    generation = int(metadata.get("generation", 1))
    noted = str((metadata.get("annotations") or {}).get(TEMPLATE_GENERATION, ""))
    return min(int(noted), generation) if noted.isdigit() else generation


@dataclass(frozen=True)
class WorkloadState:
    """A Deployment's view: ``exists`` False before it is created."""

    exists: bool
    replicas: int = 0
    ready: int = 0
    updated: int = 0
    # the Deployment controller has seen its latest pod template, and no pod of an older one
    # is left: a change of replicas alone is no rollout (the replicas say how it scales)
    rolled_out: bool = True
    pods: list[PodState] = field(default_factory=list)
    replica_failure: str = ""  # why the API refused its pods (a quota, an admission policy)

    def status(self, phase: Phase, reason: str, message: str) -> Status:
        """A status with this workload's replica counts."""
        return Status(
            phase,
            reason,
            message,
            replicas=self.replicas,
            ready_replicas=min(self.ready, self.replicas),
            desired_replicas=self.replicas,
        )

    @classmethod
    def from_objects(
        cls, deployment: dict[str, Any] | None, pods: list[dict[str, Any]]
    ) -> WorkloadState:
        if deployment is None:
            return cls(exists=False)
        spec = deployment.get("spec") or {}
        status = deployment.get("status") or {}
        replicas = int(spec.get("replicas", 1))
        updated = int(status.get("updatedReplicas", 0))
        current = int(status.get("observedGeneration", 0)) >= template_generation(deployment)
        total = int(status.get("replicas", 0))
        refused = next(
            (c for c in status.get("conditions") or []
             if c.get("type") == "ReplicaFailure" and c.get("status") == "True"),
            None,
        )  # fmt: skip
        return cls(
            exists=True,
            replicas=replicas,
            ready=int(status.get("readyReplicas", 0)),
            updated=updated,
            rolled_out=current and total <= updated,
            pods=[PodState.from_pod(p) for p in pods],
            replica_failure=""
            if refused is None
            else (refused.get("message") or refused.get("reason") or "ReplicaFailure").strip(),
        )


def running_pods(pods: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(name, IP) of the pods whose containers run and that are not being deleted: the ones
    whose own metrics mean something now. A failed or evicted pod keeps its IP, which another
    pod may have been given since; a crash-looping one stays ``Running`` with its container
    waiting."""
    states = map(PodState.from_pod, pods)
    return [(state.name, state.ip) for state in states if state.running and state.ip]


def failure(workload: WorkloadState, ready_needs_broker: bool = False) -> tuple[str, str] | None:
    """(reason, message) when the pods cannot come up, as far as their statuses tell. With
    ``ready_needs_broker`` (async workers: ready only while they consume their queue), a pod
    whose containers run is not crashing, ready or not: a broker outage makes every worker
    not ready, whatever restarts it had before."""
    for pod in workload.pods:
        if pod.deleting:  # a reverted update's pod, or one scaled away: what it says is past
            continue
        # a ready pod is no model-load failure, whatever its last run said: its model loaded
        # (the file arrived, the store answers again) once the kubelet restarted it. Ready, not
        # running: a worker restarted to try again runs a moment before it exits 3 again
        if pod.exit_code == EXIT_MODEL_LOAD_FAILED and not pod.ready:
            return MODEL_LOAD_FAILED, f"model cannot be loaded: {load_error(pod.message)}"
        if pod.exit_code == EXIT_BROKER_LOGIN_REFUSED and not pod.ready:
            return BROKER_LOGIN_REFUSED, (
                f"the broker refused the login of worker {pod.name} (a wrong user, password or "
                "vhost in the broker Secret's URL); once the Secret is mended, the restarted "
                "workers read it"
            )
        if pod.waiting_reason in CANNOT_RUN_REASONS and NODE_NOT_YET_LINKED not in pod.message:
            return CONTAINER_CANNOT_RUN, f"{pod.waiting_reason}: {pod.message}".rstrip(": ")
        alive = pod.ready or (ready_needs_broker and pod.running)
        if pod.restarts >= CRASH_RESTARTS and not alive:
            detail = pod.message or f"exit code {pod.exit_code}"
            return CONTAINER_CRASHING, f"pod {pod.name} keeps crashing: {detail}"
    return None


def stalled(workload: WorkloadState) -> tuple[str, str] | None:
    """(reason, message) when wanted replicas cannot be created or placed: the API refuses
    their pods (``FailedCreate``: a quota, an admission policy) or no node has room for them
    (``Unschedulable``). Not a failure: either mends by itself once capacity frees or the
    quota grows, and the pods then start; until then the status says why they do not."""
    if workload.replica_failure:
        return FAILED_CREATE, f"pods cannot be created: {workload.replica_failure}"
    for pod in workload.pods:
        if pod.unschedulable:
            return UNSCHEDULABLE, f"pod {pod.name} cannot be scheduled: {pod.unschedulable}"
    return None


def waiting_status(workload: WorkloadState, phase: Phase, reason: str, message: str) -> Status:
    """A status for replicas still to come up; a stall, when there is one, gives the reason
    and adds why to the message."""
    settled = workload.rolled_out and workload.ready >= workload.replicas
    stall = None if settled else stalled(workload)
    if stall is not None:
        reason, message = stall[0], f"{message}; {stall[1]}"
    return workload.status(phase, reason, message)


def failed_status(
    workload: WorkloadState, previous: Status | None, problem: tuple[str, str]
) -> Status:
    """The status of a Deployment of model servers whose pods cannot come up (``problem``, from
    ``failure``): Failed, unless replicas serve (as an async pool is). While a new spec cannot
    roll out, an endpoint that served stays Updating on the previous spec's replicas; with its
    spec rolled out, a pod that keeps crashing beside ready ones (a bad node, say) leaves it
    InService, as the platform keeps an endpoint in service while it replaces a failed
    instance. The reason says why either way."""
    if served(previous) and not workload.rolled_out and workload.ready > 0:
        return workload.status(
            Phase.UPDATING, problem[0], update_blocked(problem[1], workload.ready)
        )
    if workload.rolled_out and workload.ready > 0:
        ready = f"{workload.ready}/{workload.replicas} replicas ready"
        return workload.status(Phase.IN_SERVICE, problem[0], f"{ready}; {problem[1]}")
    return workload.status(Phase.FAILED, *problem)


def synchronous_status(workload: WorkloadState, previous: Status | None) -> Status:
    """Creating -> InService (every wanted replica ready) -> Updating (rollout) -> InService,
    once it served as ``replicas_phase`` says it (a serverless endpoint's too); Failed with a
    reason when pods cannot run and none serves (``failed_status``): while the previous spec's
    replicas serve and the new one's cannot roll out, the endpoint stays Updating, as the
    platform keeps an endpoint on its old config when an update fails."""
    problem = failure(workload)
    if problem is not None:
        return failed_status(workload, previous, problem)
    if not workload.exists:
        return Status(Phase.CREATING, "Creating", "creating the workload")
    was_serving = served(previous)
    if not was_serving and not (workload.rolled_out and workload.ready >= workload.replicas):
        phase, reason = Phase.CREATING, "Creating"
        message = f"{workload.ready}/{workload.replicas} replicas ready"
    else:
        # a rollout lasts while the Deployment rolls out and, after a new template over no
        # replicas (rolled out at once), until one is ready; a lost last replica being
        # replaced is no rollout (pods roll out with maxUnavailable 0: a rollout keeps one)
        updating = previous is not None and previous.phase is Phase.UPDATING
        over_none = updating and workload.ready == 0 < workload.replicas
        rolling_out = not workload.rolled_out or over_none
        phase, reason, message = replicas_phase(
            was_serving, workload.replicas, workload.ready, rolling_out
        )
    if not workload.rolled_out:
        message += f", {workload.updated} of the new spec created"
    return waiting_status(workload, phase, reason, message)
