"""The interface every mode module implements, and what the operator hands it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from infermodes.endpoints.demand import Demand
from infermodes.endpoints.scaling import ScalerMemory
from infermodes.endpoints.spec import EndpointSpec
from infermodes.endpoints.status import QueueFigures, Status
from infermodes.metrics import ServerLoad
from infermodes.operator.objects import EndpointRef, Ingress
from infermodes.operator.observed import WorkloadState


@dataclass(frozen=True)
class Signals:
    """What the operator observed for one endpoint, as the mode's decision reads it."""

    workload: WorkloadState  # the Deployment's view (``exists`` only, for other workloads)
    workload_object: dict[str, Any] | None  # the workload as the API returned it
    pods: list[dict[str, Any]]
    loads: Callable[[], Mapping[str, ServerLoad]]  # ready pods' load, read only when called
    # the /metrics text of each pod IP on a port, read together (None: it cannot be read)
    fetch_metrics: Callable[[tuple[str, ...], int], Mapping[str, str | None]]
    backlog: Callable[[], QueueFigures | None]  # the queue (async), None when unreadable
    demand: Demand  # the gateways' demand (synchronous modes)
    now: float  # monotonic clock, for cooldowns between the operator's own decisions
    wall: float  # wall clock, for timestamps written by other processes (demand)
    autoscale: bool  # a resync tick: time-based decisions (rates, cooldowns) may move
    # the namespace of an older async endpoint of the same name, which holds the name's queue
    # (``signals/names.py``); None when there is none, or it cannot be told
    name_held_by: Callable[[], str | None] = lambda: None
    # the Events of the workload (a Job's FailedCreate: no condition says it), read when called
    workload_events: Callable[[], list[dict[str, Any]]] = lambda: []
    # the older batch endpoint, not ended, that writes an overlapping output prefix
    # (``endpoints/status.output_held_by``); None when there is none, or it cannot be told
    output_held_by: Callable[[], str | None] = lambda: None
    # made by the platform API (``endpoints/status.made_by_api``): its messages name its calls
    made_by_api: bool = False
    # the serverless template whose model a replica loaded, as the operator's memory or else
    # the status remembers it (``endpoints/status.loaded_template``)
    loaded_template: str | None = None


class EndpointMode(Protocol):
    """observe -> replicas -> desired objects -> status."""

    @property
    def COMPONENT(self) -> str:
        """The ``app.kubernetes.io/component`` label of the mode's pods."""

    @property
    def WORKLOAD(self) -> tuple[str, str]:
        """(apiVersion, kind) of the object that runs the pods, named ``ref.child_name``."""

    def replicas(self, spec: EndpointSpec, signals: Signals, memory: ScalerMemory) -> int:
        """The replicas wanted now."""

    def desired_objects(
        self,
        ref: EndpointRef,
        spec: EndpointSpec,
        replicas: int,
        image: str,
        ingress: Ingress | None = None,
    ) -> list[dict[str, Any]]:
        """Every object the endpoint should have, for server-side apply; with ``ingress``, a
        NetworkPolicy first, admitting only those peers to its pods."""

    def pod_annotations(
        self, spec: EndpointSpec, signals: Signals, replicas: int
    ) -> dict[str, dict[str, str]]:
        """Annotations to set on running pods (by name) before the replicas change, such as
        which pods the ReplicaSet should remove first."""

    def observe(self, spec: EndpointSpec, signals: Signals, previous: Status | None) -> Status:
        """The status the workload means (``signals`` as observed after applying)."""

    def ended(self, status: Status) -> bool:
        """Whether the endpoint's work is done (a transform job that ended): its workload is
        then neither applied again nor made again when someone deletes it."""


def no_pod_annotations(
    spec: EndpointSpec, signals: Signals, replicas: int
) -> dict[str, dict[str, str]]:
    """``pod_annotations`` of the modes that leave their pods alone."""
    return {}


def never_ends(status: Status) -> bool:
    """``ended`` of the modes whose workload serves for as long as the endpoint exists."""
    return False
