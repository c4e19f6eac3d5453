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

from typing import Any

from infermodes.endpoints import spec as s
from infermodes.endpoints.plan import (
    SERVER_STOP_GRACE_SECONDS,
    SERVERLESS_MB_PER_CPU,
    serverless_server,
)
from infermodes.endpoints.scaling import ScalerMemory, serverless_replicas
from infermodes.endpoints.status import (
    MODEL_LOAD_FAILED,
    SCALED_TO_ZERO,
    SCALED_TO_ZERO_MESSAGE,
    Status,
)
from infermodes.operator.modes.base import Signals, never_ends, no_pod_annotations
from infermodes.operator.objects import (
    EndpointRef,
    Ingress,
    model_server_objects,
    server_container,
)
from infermodes.operator.observed import failed_status, failure, served, waiting_status

COMPONENT = "model-server"
WORKLOAD = ("apps/v1", "Deployment")


def replica_resources(block: s.ServerlessSpec) -> s.Resources:
    millicores = block.memory_size_in_mb * 1000 // SERVERLESS_MB_PER_CPU
    return s.Resources(cpu=f"{millicores}m", memory=f"{block.memory_size_in_mb}Mi")


def replicas(spec: s.EndpointSpec, signals: Signals, memory: ScalerMemory) -> int:
    """The demand's replicas; one at least while a pod says its model cannot be loaded (it
    keeps trying under the kubelet's back-off: ``serverless_replicas``)."""
    workload = signals.workload
    current = workload.replicas if workload.exists else 0
    problem = failure(workload)
    load_failed = problem is not None and problem[0] == MODEL_LOAD_FAILED
    return serverless_replicas(spec.serverless_block(), current, signals.demand, memory,
                               signals.now, signals.wall, load_failed)  # fmt: skip


pod_annotations = no_pod_annotations
ended = never_ends


def desired_objects(
    ref: EndpointRef,
    spec: s.EndpointSpec,
    replicas: int,
    image: str,
    ingress: Ingress | None = None,
) -> list[dict[str, Any]]:
    """The Deployment (``replicas`` may be 0) and the Service of a serverless endpoint, and
    with ``ingress`` their NetworkPolicy."""
    container = server_container(
        spec.image or image,
        serverless_server(spec),
        replica_resources(spec.serverless_block()),
        spec.storage_secret_ref,
    )
    return model_server_objects(
        ref, COMPONENT, replicas, container, SERVER_STOP_GRACE_SECONDS, ingress
    )


def observe(spec: s.EndpointSpec, signals: Signals, previous: Status | None) -> Status:
    """``InService`` whenever the endpoint can take requests, also at zero replicas
    (``ScaledToZero``: the next request cold-starts one) and while replicas come and go;
    ``Updating`` only while a spec change rolls out over replicas (of an endpoint that served
    before), or cannot roll out while they serve."""
    workload = signals.workload
    problem = failure(workload)
    if problem is not None:  # an update that cannot roll out while warm: the old replicas serve
        return failed_status(workload, previous, problem)
    if not workload.exists:
        return Status(s.Phase.CREATING, "Creating", "creating the workload")
    ready = f"{workload.ready}/{workload.replicas} replicas ready"
    if workload.replicas == 0:
        return workload.status(s.Phase.IN_SERVICE, SCALED_TO_ZERO, SCALED_TO_ZERO_MESSAGE)
    # a new template over replicas that serve, or that start for an endpoint that served (its
    # InService while none was ready yet would turn back to Updating once the old one is)
    if not workload.rolled_out and (workload.ready > 0 or served(previous)):
        return waiting_status(workload, s.Phase.UPDATING, "RollingOut", ready)
    if workload.ready >= workload.replicas:
        return workload.status(s.Phase.IN_SERVICE, "AllReplicasReady", ready)
    return waiting_status(workload, s.Phase.IN_SERVICE, "Scaling", ready)
