"""One module per mode behind one interface, chosen in one table.

A mode is pure: from the spec and what the operator observed it decides the replicas, the
desired objects and the status; ``reconcile`` does the reading and applying. Adding a mode is
one module here and one line in ``MODES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from infermodes.endpoints.scaling import ScalerMemory
from infermodes.endpoints.spec import EndpointSpec, Mode
from infermodes.endpoints.status import Status
from infermodes.metrics import ServerLoad
from infermodes.operator.modes import realtime
from infermodes.operator.objects import EndpointRef
from infermodes.operator.observed import WorkloadState


class EndpointMode(Protocol):
    """observe -> replicas -> desired objects -> status."""

    @property
    def COMPONENT(self) -> str:
        """The ``app.kubernetes.io/component`` label of the mode's pods."""

    def replicas(
        self,
        spec: EndpointSpec,
        workload: WorkloadState,
        loads: Callable[[], Mapping[str, ServerLoad]],
        memory: ScalerMemory,
        now: float,
        autoscale: bool,
    ) -> int:
        """The replicas wanted now; ``loads`` reads the ready pods' load (called only when
        the mode needs it)."""

    def desired_objects(
        self, ref: EndpointRef, spec: EndpointSpec, replicas: int, image: str
    ) -> list[dict[str, Any]]:
        """Every object the endpoint should have, for server-side apply."""

    def observe(self, workload: WorkloadState, previous: Status | None) -> Status:
        """The status the observed workload means."""


MODES: dict[Mode, EndpointMode] = {Mode.REALTIME: realtime}


def mode_for(mode: Mode) -> EndpointMode | None:
    """The mode's module, or None for a mode that is not built yet."""
    return MODES.get(mode)
