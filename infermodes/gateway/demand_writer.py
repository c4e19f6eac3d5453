"""Writing this gateway's demand for serverless endpoints, by the rules of
``infermodes.endpoints.demand``: rewrite when the figures change but at most every
``WRITE_INTERVAL_SECONDS``; the first held request of a cold start at once; a heartbeat every
``HEARTBEAT_SECONDS`` while requests are in flight or held.

For an async endpoint whose pool is at zero workers, the entry is a push: written at once when
the first request is accepted, so the operator, which reconciles an endpoint whose demand
changed, reads the queue and starts a worker without waiting for its next look. One push each
time the pool is at zero (a failed one is tried again at the next round): the operator's
once-a-second look covers the rest, so a pool that cannot start costs no write per request.
Nothing else is written for async endpoints: the queue is their demand.

Where it goes is a ``DemandSink``: an annotation on the InferenceEndpoint on Kubernetes
(``kube.KubeDemandSink``), anything else for the local runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from infermodes.endpoints.demand import HEARTBEAT_SECONDS, WRITE_INTERVAL_SECONDS, GatewayDemand
from infermodes.gateway.errors import ValidationError
from infermodes.gateway.table import Endpoint, Table

log = logging.getLogger("infermodes.gateway")

Figures = tuple[int, int, float]  # in flight, held, last request at


class DemandSink(Protocol):
    async def write(self, namespace: str, name: str, demand: GatewayDemand) -> None:
        """Store one gateway's demand for one endpoint; raise on failure (it is retried)."""


class DemandSchedule:
    """When one endpoint's demand is due (pure: the clock is an argument)."""

    def __init__(self) -> None:
        self.written: Figures | None = None
        self.written_at = -float("inf")

    def due(self, figures: Figures, now: float, urgent: bool = False) -> bool:
        if urgent and figures != self.written:
            return True
        if figures != self.written:
            return now - self.written_at >= WRITE_INTERVAL_SECONDS
        active = figures[0] + figures[1] > 0
        return active and now - self.written_at >= HEARTBEAT_SECONDS

    def wrote(self, figures: Figures, now: float) -> None:
        self.written, self.written_at = figures, now


class DemandWriter:
    """One task that writes every serverless endpoint's demand when due, and the pushes to
    async pools at zero. It looks once per write interval, and at once when a cold start
    begins (``urgent``) or a push is due."""

    def __init__(
        self,
        table: Table,
        sink: DemandSink,
        gateway_id: str,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self.sink = sink
        self.gateway_id = gateway_id
        self.monotonic = monotonic
        self.wall = wall
        self.schedules: dict[tuple[str, str], DemandSchedule] = {}
        self._urgent: set[tuple[str, str]] = set()
        self._pushes: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()

    def cold_start(self, endpoint: Endpoint) -> None:
        """The first request of a cold start is held: its demand goes out now."""
        self._urgent.add((endpoint.namespace, endpoint.name))
        self._wake.set()

    def async_accepted(self, name: str) -> None:
        """A request for async endpoint ``name`` was accepted (its message is on the queue):
        when the operator last said its pool had no worker, and no push went out since, push.
        A push already waiting (one that failed waits for the next round) is not hurried."""
        try:
            endpoint = self.table.lookup(name)
        except ValidationError:  # gone or ambiguous since: the operator's own look finds it
            return
        if endpoint.async_ is None:
            return
        endpoint.last_request_at = self.wall()
        key = (endpoint.namespace, endpoint.name)
        if endpoint.async_.workers == 0 and not endpoint.pushed_at_zero and key not in self._pushes:
            self._pushes.add(key)
            self._wake.set()

    async def write_due(self) -> None:
        """Write every endpoint whose demand is due, and the pushes; failures wait for the
        next round."""
        urgent, self._urgent = self._urgent, set()
        pushes, self._pushes = self._pushes, set()
        now = self.monotonic()
        for gone in self.schedules.keys() - self.table.known:  # its object (and demand) is gone
            del self.schedules[gone]
        for key, endpoint in list(self.table.endpoints.items()):
            if key not in self.table.known:
                continue
            if endpoint.async_ is not None:
                if key in pushes:
                    await self._push(key, endpoint)
                continue
            if endpoint.serverless is None and key not in self.schedules:
                continue
            # the busiest moment since the last write, not this instant: short requests in a
            # burst are mostly between two samples, and replicas must follow the burst
            in_flight = max(endpoint.in_flight, endpoint.peak_active - endpoint.held)
            figures = (in_flight, endpoint.held, endpoint.last_request_at)
            schedule = self.schedules.setdefault(key, DemandSchedule())
            if not schedule.due(figures, now, key in urgent):
                continue
            demand = GatewayDemand(self.gateway_id, *figures, at=self.wall())
            try:
                await self.sink.write(endpoint.namespace, endpoint.name, demand)
            except Exception as exc:  # any sink failure is retried on the next round
                log.warning("cannot write demand of %s/%s: %s", *key, exc)
                if key in urgent:
                    self._urgent.add(key)
                continue
            schedule.wrote(figures, now)
            endpoint.peak_active = endpoint.active

    async def _push(self, key: tuple[str, str], endpoint: Endpoint) -> None:
        """The async endpoint's entry, naming its latest accepted request; the flag is set
        before the write, so requests accepted meanwhile add no second push."""
        if endpoint.pushed_at_zero or endpoint.async_ is None or endpoint.async_.workers:
            return  # pushed meanwhile, or the operator has already started workers
        endpoint.pushed_at_zero = True
        demand = GatewayDemand(self.gateway_id, 0, 0, endpoint.last_request_at, at=self.wall())
        try:
            await self.sink.write(endpoint.namespace, endpoint.name, demand)
        except Exception as exc:  # tried again at the next round, not at each request
            log.warning("cannot push the backlog of %s/%s: %s", *key, exc)
            endpoint.pushed_at_zero = False
            self._pushes.add(key)

    async def flush(self) -> None:
        """Write every changed figure now, whatever the interval (the gateway is stopping)."""
        self._urgent.update(self.table.endpoints)
        await self.write_due()

    async def run(self) -> None:
        """Until cancelled: a round per write interval, or sooner for a cold start or a push."""
        while True:
            # not wait_for: on 3.11 it drops a cancel that comes as the event fires (gh-86296)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WRITE_INTERVAL_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            await self.write_due()
