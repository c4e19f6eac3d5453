"""One reconcile for create, update, resume and the timer: spec -> objects -> status.

Pure decisions live in the mode modules and ``scaling``; this function gathers the observed
state through ``KubeDoor``, asks them, applies the result and returns the status.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from infermodes.operator import scaling
from infermodes.operator import spec as s
from infermodes.operator.kube import KubeDoor
from infermodes.operator.modes import module_for
from infermodes.operator.objects import SERVER_PORT, EndpointRef
from infermodes.operator.observed import WorkloadState
from infermodes.operator.podmetrics import PodLoad
from infermodes.operator.status import Status
from infermodes.settings import OperatorSettings


@dataclass
class ScalerMemory:
    """What the autoscaler remembers about one endpoint between ticks."""

    samples: dict[str, scaling.CounterSample] = field(default_factory=dict)  # by pod name
    last_change_at: float = 0.0


@dataclass
class Deps:
    kube: KubeDoor
    settings: OperatorSettings
    scrape: Callable[[str, int], PodLoad | None]
    clock: Callable[[], float] = time.monotonic


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


def measured_load(
    block: s.RealtimeSpec, workload: WorkloadState, memory: ScalerMemory, deps: Deps
) -> float | None:
    """Total load over ready pods in the unit of the scaling target; None until measurable."""
    now = deps.clock()
    loads = {
        pod.name: deps.scrape(pod.ip, SERVER_PORT) for pod in workload.pods if pod.ready and pod.ip
    }
    readable = {name: load for name, load in loads.items() if load is not None}
    if not readable:
        return None
    if block.scaling.metric is s.ScalingMetric.IN_FLIGHT_REQUESTS:
        return sum(load.in_flight for load in readable.values())
    total = 0.0
    complete = True
    samples = {}
    for name, load in readable.items():
        sample = scaling.CounterSample(now, load.invocations_total)
        rate = scaling.rate_per_minute(memory.samples.get(name), sample)
        samples[name] = sample
        if rate is None:
            complete = False
        else:
            total += rate
    memory.samples = samples
    return total if complete else None


def choose_replicas(
    spec: s.EndpointSpec, workload: WorkloadState, memory: ScalerMemory, deps: Deps, autoscale: bool
) -> int:
    block: s.RealtimeSpec = spec.block()
    low, high = block.min_replicas, block.max_replicas
    current = min(max(workload.replicas, low), high) if workload.exists else low
    if not autoscale or not workload.exists:
        return current
    load = measured_load(block, workload, memory, deps)
    if load is None:
        return current
    wanted = scaling.replicas_for_load(load, block.scaling.target, current, low, high)
    decided = scaling.apply_cooldown(
        current,
        wanted,
        deps.clock() - memory.last_change_at,
        block.scaling.scale_out_cooldown_seconds,
        block.scaling.scale_in_cooldown_seconds,
    )
    if decided != current:
        memory.last_change_at = deps.clock()
    return decided


def reconcile(body: Any, memory: ScalerMemory, deps: Deps, autoscale: bool = False) -> Status:
    """Bring the endpoint's objects to their desired state and say what state it is in."""
    ref = EndpointRef.from_body(body)
    previous = Status.from_dict(body.get("status"))
    spec = parse_spec(body.get("spec") or {})
    if isinstance(spec, str):
        return Status(s.Phase.FAILED, "InvalidSpec", spec)
    mode = module_for(spec.mode)
    if mode is None:
        return Status(s.Phase.FAILED, "ModeNotSupported", f"mode {spec.mode} not supported yet")
    deployment = deps.kube.get("apps/v1", "Deployment", ref.namespace, ref.child_name)
    pods = deps.kube.list("v1", "Pod", ref.namespace, ref.selector(mode.COMPONENT))
    workload = WorkloadState.from_objects(deployment, pods)
    replicas = choose_replicas(spec, workload, memory, deps, autoscale)
    objects = mode.desired_objects(ref, spec, replicas, deps.settings.image)
    applied = {obj["kind"]: deps.kube.apply(obj) for obj in objects}
    deployment = applied.get("Deployment", deployment)
    return mode.observe(WorkloadState.from_objects(deployment, pods), previous)
