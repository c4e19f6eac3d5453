"""Reading one endpoint again before an invocation is refused for what the table says of it.

The table follows a watch, which may lag the API server: a waiter that saw ``InService`` in
DescribeEndpoint (a GET, maybe answered by another gateway replica) must not then be told the
endpoint is ``Creating``, nor, just created, that it does not exist. So a refusal for a phase
that takes no invocations, or for an unknown name, first has the source read that endpoint
(``RereadingSource``) and the table decides again. Reads are coalesced (one in flight per name,
its waiters share it) and bounded (``ReadBudget``), so a client hammering an endpoint that is
``Creating``, or made-up names, costs the API server at most a few reads a second; a read that
fails, or takes too long, leaves the table's answer (logged, throttled).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from infermodes.endpoints.spec import is_endpoint_name
from infermodes.logs import OUTAGE_LOG_SECONDS, Throttled

log = logging.getLogger("infermodes.gateway")

READ_INTERVAL_SECONDS = 1.0  # a name is read at most once in this
MAX_READS_PER_INTERVAL = 10  # all names together, in the same span
READ_TIMEOUT_SECONDS = 2.0  # a request waits this long at most for a read; then the table answers


@dataclass
class ReadBudget:
    """Which reads may start: none of a name read within ``interval``, and fewer than
    ``max_reads`` of all names within it. Pure: the caller gives the (monotonic) time. It keeps
    only the reads of the last interval, so at most ``max_reads`` names."""

    interval: float = READ_INTERVAL_SECONDS
    max_reads: int = MAX_READS_PER_INTERVAL
    started: dict[str, float] = field(default_factory=dict)  # name: when its read started

    def allow(self, name: str, now: float) -> bool:
        """Whether a read of ``name`` may start at ``now``; if so, it is counted as started."""
        self.started = {key: at for key, at in self.started.items() if now - at < self.interval}
        if name in self.started or len(self.started) >= self.max_reads:
            return False
        self.started[name] = now
        return True


class Rereads:
    """``await rereads(name, request)``: the source's read of ``name`` applied to the table, if
    the budget lets one start or one is in flight; returns when it is done, failed or timed
    out. Never raises for the read: the table's answer then stands (a failed read is logged
    naming ``request``, the id of the request that started it, at most once per
    ``OUTAGE_LOG_SECONDS``)."""

    def __init__(
        self,
        read: Callable[[str], Awaitable[None]],
        budget: ReadBudget | None = None,
        timeout: float = READ_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read = read
        self.budget = budget if budget is not None else ReadBudget()
        self.timeout = timeout
        self.clock = clock
        self.reading: dict[str, asyncio.Task[None]] = {}
        self.told = Throttled(log, OUTAGE_LOG_SECONDS)  # an API server down fails every read

    async def __call__(self, name: str, request: str) -> None:
        task = self.reading.get(name)
        if task is None:
            # only a name an endpoint can have: a request's path never becomes another API path
            if not is_endpoint_name(name) or not self.budget.allow(name, self.clock()):
                return
            task = asyncio.get_running_loop().create_task(self._read(name, request))
            self.reading[name] = task
            task.add_done_callback(lambda _: self.reading.pop(name, None))
        await asyncio.shield(task)  # a client that leaves does not end the others' read

    async def _read(self, name: str, request: str) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.read(name)
        except Exception as exc:  # whatever the source raised: the table answers as it is
            self.told.warning(
                "reading endpoint %s again for request %s failed (%s: %s); answered as the "
                "watch last said", name, request, type(exc).__name__, str(exc) or "timed out",
                request=request,
            )  # fmt: skip

    def stop(self) -> None:
        for task in list(self.reading.values()):
            task.cancel()
