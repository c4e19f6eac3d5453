"""Realtime endpoints: an always-on Deployment of model servers behind a Service."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from infermodes.endpoints import spec as s
from infermodes.endpoints.plan import SERVER_PORT, model_server
from infermodes.endpoints.scaling import ScalerMemory, realtime_replicas
from infermodes.endpoints.status import Status
from infermodes.metrics import ServerLoad
from infermodes.operator.objects import EndpointRef, restricted_pod_spec, server_container
from infermodes.operator.observed import WorkloadState, synchronous_status

COMPONENT = "model-server"


def replicas(
    spec: s.EndpointSpec,
    workload: WorkloadState,
    loads: Callable[[], Mapping[str, ServerLoad]],
    memory: ScalerMemory,
    now: float,
    autoscale: bool,
) -> int:
    current = workload.replicas if workload.exists else None
    return realtime_replicas(spec.realtime_block(), current, loads, memory, now, autoscale)


def desired_objects(
    ref: EndpointRef, spec: s.EndpointSpec, replicas: int, image: str
) -> list[dict[str, Any]]:
    """The Deployment and Service for a realtime endpoint with ``replicas`` replicas."""
    block = spec.realtime_block()
    labels = ref.labels(COMPONENT)
    container = server_container(
        spec.image or image,
        model_server(spec, block.workers),
        block.resources,
        spec.storage_secret_ref,
    )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": ref.metadata(COMPONENT),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": ref.selector(COMPONENT)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": restricted_pod_spec([container], termination_grace_seconds=30),
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ref.metadata(COMPONENT),
        "spec": {
            "type": "ClusterIP",
            "selector": ref.selector(COMPONENT),
            "ports": [{"name": "http", "port": 80, "targetPort": SERVER_PORT, "protocol": "TCP"}],
        },
    }
    return [deployment, service]


def observe(workload: WorkloadState, previous: Status | None) -> Status:
    return synchronous_status(workload, previous)
