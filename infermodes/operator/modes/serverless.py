"""Serverless endpoints: model servers that exist only while there is demand.

A Deployment of one-worker model servers scaled from zero by the gateways' demand (they hold a
cold start's requests until a replica answers), back to zero after ``idleTimeoutSeconds``. Each
replica's memory is ``memorySizeInMB`` (request = limit) with CPU in proportion, one vCPU per
``SERVERLESS_MB_PER_CPU``: the managed platform also gives more CPU to more memory, and one
worker uses one core for small requests and the rest through XGBoost's threads for large ones.
The termination grace period outlasts the invocation timeout, so a replica that is scaled away
finishes what it holds.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from infermodes.endpoints import spec as s
from infermodes.endpoints.plan import (
    SERVER_STOP_GRACE_SECONDS,
    SERVERLESS_MB_PER_CPU,
    replica_template,
    serverless_server,
)
from infermodes.endpoints.scaling import ScalerMemory, serverless_replicas
from infermodes.endpoints.status import (
    MODEL_LOAD_FAILED,
    Status,
    loaded_template,
    served,
    serverless_phase,
)
from infermodes.operator.modes.base import Signals, never_ends, no_pod_annotations
from infermodes.operator.objects import (
    EndpointRef,
    Ingress,
    model_server_objects,
    server_container,
)
from infermodes.operator.observed import failed_status, failure, waiting_status

COMPONENT = "model-server"
WORKLOAD = ("apps/v1", "Deployment")
# On the Deployment: the template (``plan.replica_template``) it was last applied with, so a
# ready replica is known to be of the spec's template before and after an apply
REPLICA_TEMPLATE = f"{s.GROUP}/replica-template"


def replica_resources(block: s.ServerlessSpec) -> s.Resources:
    millicores = block.memory_size_in_mb * 1000 // SERVERLESS_MB_PER_CPU
    return s.Resources(cpu=f"{millicores}m", memory=f"{block.memory_size_in_mb}Mi")


def template_loaded(template: str, signals: Signals) -> str | None:
    """The template whose model a replica loaded: the spec's (``template``, its
    ``replica_template``, which its caller compares with this) once the Deployment, applied
    with it, rolled out with a replica ready; else the one the status remembers."""
    workload = signals.workload
    metadata = (signals.workload_object or {}).get("metadata") or {}
    applied = (metadata.get("annotations") or {}).get(REPLICA_TEMPLATE) == template
    ready = applied and workload.rolled_out and workload.ready > 0
    return loaded_template(signals.loaded_template, template, ready)


def replicas(spec: s.EndpointSpec, signals: Signals, memory: ScalerMemory) -> int:
    """The demand's replicas; one at least while a pod says its model cannot be loaded (it
    keeps trying under the kubelet's back-off) or while no replica of the spec's template has
    loaded its model yet (``serverless_replicas``)."""
    workload = signals.workload
    current = workload.replicas if workload.exists else 0
    problem = failure(workload)
    load_failed = problem is not None and problem[0] == MODEL_LOAD_FAILED
    template = replica_template(spec)
    loaded = template_loaded(template, signals) == template
    return serverless_replicas(spec.serverless_block(), current, signals.demand, memory,
                               signals.now, signals.wall, load_failed, loaded)  # fmt: skip


pod_annotations = no_pod_annotations
ended = never_ends


def desired_objects(
    ref: EndpointRef,
    spec: s.EndpointSpec,
    replicas: int,
    image: str,
    ingress: Ingress | None = None,
) -> list[dict[str, Any]]:
    """The Deployment (``replicas`` may be 0), noted with its template (``REPLICA_TEMPLATE``),
    and the Service of a serverless endpoint, and with ``ingress`` their NetworkPolicy."""
    container = server_container(
        spec.image or image,
        serverless_server(spec),
        replica_resources(spec.serverless_block()),
        spec.storage_secret_ref,
    )
    objects = model_server_objects(
        ref, COMPONENT, replicas, container, SERVER_STOP_GRACE_SECONDS, ingress
    )
    for obj in objects:
        if obj["kind"] == WORKLOAD[1]:
            annotations = obj["metadata"].setdefault("annotations", {})
            annotations[REPLICA_TEMPLATE] = replica_template(spec)
    return objects


def observe(spec: s.EndpointSpec, signals: Signals, previous: Status | None) -> Status:
    """``Creating`` (``Updating`` once it served) until a replica of the spec's template has
    loaded the model, then ``InService`` whenever the endpoint can take requests, also at zero
    replicas and while replicas come and go (``serverless_phase``, as ``infermodes up`` says
    it); ``Failed``, or ``Updating`` while the previous spec's replicas serve, when its pods
    cannot come up."""
    workload = signals.workload
    problem = failure(workload)
    if problem is not None:  # an update that cannot roll out while warm: the old replicas serve
        return failed_status(workload, previous, problem)
    if not workload.exists:
        return Status(s.Phase.CREATING, "Creating", "creating the workload")
    template = replica_template(spec)
    loaded = template_loaded(template, signals)
    phase, reason, message = serverless_phase(
        loaded == template, served(previous), workload.replicas, workload.ready,
        not workload.rolled_out,
    )  # fmt: skip
    return replace(waiting_status(workload, phase, reason, message), loaded_template=loaded)
