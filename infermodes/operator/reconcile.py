"""One reconcile for create, update, resume and the timer: spec -> objects -> status.

Pure decisions live in the mode modules and ``endpoints.scaling``; this function gathers the
observed state through ``KubeDoor`` (and pod load through ``Deps.scrape``), asks the mode,
applies the result and returns the status.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from infermodes.endpoints import spec as s
from infermodes.endpoints.demand import Demand
from infermodes.endpoints.plan import SERVER_PORT
from infermodes.endpoints.scaling import ScalerMemory
from infermodes.endpoints.status import Status
from infermodes.metrics import ServerLoad
from infermodes.operator.kube import KubeDoor
from infermodes.operator.modes import mode_for
from infermodes.operator.modes.base import Signals
from infermodes.operator.objects import EndpointRef
from infermodes.operator.observed import WorkloadState
from infermodes.settings import OperatorSettings


@dataclass
class Deps:
    kube: KubeDoor
    settings: OperatorSettings
    scrape: Callable[[str, int], ServerLoad | None]
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class Reconciled:
    """The status to write, and Events worth telling beyond a phase change."""

    status: Status
    events: list[tuple[str, str]] = field(default_factory=list)  # (reason, message)


def spec_error(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        problems.append(f"spec.{where}: {item['msg']}" if where else item["msg"])
    return "; ".join(problems)


def parse_spec(raw: Any) -> s.EndpointSpec | str:
    try:
        return s.EndpointSpec.model_validate(dict(raw))
    except ValidationError as exc:
        return spec_error(exc)


def reconcile(body: Any, memory: ScalerMemory, deps: Deps, autoscale: bool = False) -> Reconciled:
    """Bring the endpoint's objects to their desired state and say what state it is in."""
    ref = EndpointRef.from_body(body)
    previous = Status.from_dict(body.get("status"))
    spec = parse_spec(body.get("spec") or {})
    if isinstance(spec, str):
        return Reconciled(Status(s.Phase.FAILED, "InvalidSpec", spec))
    mode = mode_for(spec.mode)
    if mode is None:
        message = f"mode {spec.mode} not supported yet"
        return Reconciled(Status(s.Phase.FAILED, "ModeNotSupported", message))
    deployment = deps.kube.get("apps/v1", "Deployment", ref.namespace, ref.child_name)
    pods = deps.kube.list("v1", "Pod", ref.namespace, ref.selector(mode.COMPONENT))
    workload = WorkloadState.from_objects(deployment, pods)

    def loads() -> dict[str, ServerLoad]:
        found = {
            pod.name: deps.scrape(pod.ip, SERVER_PORT)
            for pod in workload.pods
            if pod.ready and pod.ip
        }
        return {name: load for name, load in found.items() if load is not None}

    wall = deps.wall_clock()
    annotations = (body.get("metadata") or {}).get("annotations")
    signals = Signals(
        workload, loads, Demand.from_annotations(annotations, wall), deps.clock(), wall, autoscale
    )
    replicas = mode.replicas(spec, signals, memory)
    if workload.exists and workload.replicas == 0 and replicas > 0:
        memory.activated_at = wall
    objects = mode.desired_objects(ref, spec, replicas, deps.settings.image)
    applied = {obj["kind"]: deps.kube.apply(obj) for obj in objects}
    deployment = applied.get("Deployment", deployment)
    status = mode.observe(WorkloadState.from_objects(deployment, pods), previous)
    events = []
    if memory.activated_at is not None and status.ready_replicas > 0:
        seconds = wall - memory.activated_at
        events.append(("ScaledFromZero", f"a replica was ready {seconds:.2f} s after activation"))
        memory.activated_at = None
    return Reconciled(status, events)
