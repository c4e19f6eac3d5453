"""Realtime endpoints: an always-on Deployment of model servers behind a Service."""

from __future__ import annotations

from typing import Any

from infermodes.endpoints import spec as s
from infermodes.endpoints.plan import SERVER_STOP_GRACE_SECONDS, model_server
from infermodes.endpoints.scaling import ScalerMemory, realtime_replicas
from infermodes.endpoints.status import Status
from infermodes.operator.modes.base import Signals, never_ends, no_pod_annotations
from infermodes.operator.objects import (
    EndpointRef,
    Ingress,
    model_server_objects,
    server_container,
)
from infermodes.operator.observed import synchronous_status

COMPONENT = "model-server"
WORKLOAD = ("apps/v1", "Deployment")


def replicas(spec: s.EndpointSpec, signals: Signals, memory: ScalerMemory) -> int:
    workload = signals.workload
    current = workload.replicas if workload.exists else None
    return realtime_replicas(
        spec.realtime_block(), current, signals.loads, memory, signals.now, signals.autoscale
    )


pod_annotations = no_pod_annotations
ended = never_ends


def desired_objects(
    ref: EndpointRef,
    spec: s.EndpointSpec,
    replicas: int,
    image: str,
    ingress: Ingress | None = None,
) -> list[dict[str, Any]]:
    """The Deployment and Service for a realtime endpoint with ``replicas`` replicas, and
    with ``ingress`` their NetworkPolicy."""
    block = spec.realtime_block()
    container = server_container(
        spec.image or image,
        model_server(spec, block.workers),
        block.resources,
        spec.storage_secret_ref,
    )
    return model_server_objects(
        ref, COMPONENT, replicas, container, SERVER_STOP_GRACE_SECONDS, ingress
    )


def observe(spec: s.EndpointSpec, signals: Signals, previous: Status | None) -> Status:
    return synchronous_status(signals.workload, previous)
