"""The gateway's demand, handed to the supervisor in memory: the ``DemandSink`` of the local
runtime (on Kubernetes the same figures travel as annotations)."""

from __future__ import annotations

from infermodes.endpoints.demand import GatewayDemand
from infermodes.endpoints.spec import Mode
from infermodes.local.supervisor import Supervisor


class LocalDemandSink:
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    async def write(self, namespace: str, name: str, demand: GatewayDemand) -> None:
        """Keep the figures; held requests (a cold start) wake the supervisor at once, as does
        the push for an async pool at zero (whose queue is its demand: nothing is kept). A
        deleted endpoint's last figures are dropped: the gateway keeps its entry, and the
        figures would otherwise start a replica for an endpoint of the same name applied
        again."""
        endpoint = self.supervisor.endpoints.get(name)
        if endpoint is None:
            return
        if endpoint.manifest.spec.mode is Mode.ASYNC:
            self.supervisor.wake.set()
            return
        self.supervisor.demand[name] = demand
        if demand.held:
            self.supervisor.wake.set()
