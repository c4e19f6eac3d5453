"""``infermodes gateway``: the app (invocations as a plain ASGI handler in front of a FastAPI app
with ``/metrics``, ``/healthz``, ``/readyz`` and any mounted routers, such as the async accept
route) and the process (uvicorn, the endpoint source, the demand writer, the SIGTERM drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Sequence
from types import FrameType

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CollectorRegistry

from infermodes.endpoints.demand import annotation_key
from infermodes.gateway.demand_writer import DemandSink, DemandWriter
from infermodes.gateway.proxy import Proxy, is_invocation
from infermodes.gateway.table import EndpointSource, Table
from infermodes.http import ASGIApp, Receive, Scope, Send, create_api, uvicorn_options
from infermodes.logs import configure_logging
from infermodes.metrics import GatewayMetrics
from infermodes.settings import GatewaySettings

log = logging.getLogger("infermodes.gateway")

FINAL_DEMAND_SECONDS = 5.0  # the last demand write on exit waits at most this


class Gateway:
    """The ASGI app. ``draining`` turns readiness off while in-flight requests finish."""

    def __init__(
        self,
        settings: GatewaySettings,
        table: Table,
        demand: DemandWriter | None,
        registry: CollectorRegistry | None = None,
        routers: Sequence[APIRouter] = (),
    ) -> None:
        self.table = table
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry)
        self.proxy = Proxy(table, settings, self.metrics, demand)
        self.draining = False
        api = create_api("infermodes gateway", self.registry)

        @api.get("/healthz")
        async def healthz() -> Response:
            return Response(b"ok", 200)

        @api.get("/readyz")
        async def readyz() -> Response:
            if self.draining:
                return Response(b"draining", 503)
            if not table.synced:
                return Response(b"endpoints not listed yet", 503)
            return Response(b"ok", 200)

        for router in routers:
            api.include_router(router)
        self.rest: ASGIApp = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_invocation(scope["path"]):
            await self.proxy(scope, receive, send)
        else:
            await self.rest(scope, receive, send)


def _uvicorn() -> tuple[type, type]:
    import uvicorn

    return uvicorn.Config, uvicorn.Server


class Runner:
    """One gateway process: serves until SIGTERM/SIGINT, then fails readiness, keeps serving
    for ``drain_delay_seconds``, stops accepting and lets in-flight (and held) invocations
    finish within ``drain_timeout_seconds``."""

    def __init__(
        self,
        settings: GatewaySettings,
        source: EndpointSource,
        sink: DemandSink | None,
        gateway_id: str,
    ) -> None:
        self.settings = settings
        self.source = source
        self.table = Table(demand_key=annotation_key(gateway_id))
        self.demand = DemandWriter(self.table, sink, gateway_id) if sink is not None else None
        self.app = Gateway(settings, self.table, self.demand)

    async def run(self) -> int:
        config_class, server_class = _uvicorn()
        settings = self.settings
        config = config_class(
            self.app,
            host=settings.host,
            port=settings.port,
            timeout_graceful_shutdown=settings.drain_timeout_seconds,
            proxy_headers=False,  # nothing here reads the client's address
            **uvicorn_options(settings.log_level),
        )
        app = self.app
        delay = settings.drain_delay_seconds

        class DrainingServer(server_class):  # type: ignore[misc, valid-type]  # uvicorn's class
            """Signals start the drain instead of an immediate stop (and are not re-raised)."""

            drain_from: float | None = None

            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                if self.drain_from is not None:  # a second signal: stop waiting
                    self.should_exit = True
                app.draining = True
                self.drain_from = time.monotonic()
                log.info("signal %d: draining (accepting for %g s more)", sig, delay)

            async def on_tick(self, counter: int) -> bool:
                if self.drain_from is not None and time.monotonic() - self.drain_from >= delay:
                    return True
                result: bool = await super().on_tick(counter)
                return result

        server = DrainingServer(config)
        background = [asyncio.create_task(self.source.run(self.table), name="source")]
        if self.demand is not None:
            background.append(asyncio.create_task(self.demand.run(), name="demand"))

        def source_failed(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error("endpoint source failed: %s", task.exception())
                server.should_exit = True

        background[0].add_done_callback(source_failed)
        try:
            await server.serve()
        finally:
            self.app.proxy.prober.stop()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        if self.demand is not None:  # the last figures: nothing in flight, the last request
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FINAL_DEMAND_SECONDS):
                    await self.demand.flush()
        failed = (
            background[0].done()
            and not background[0].cancelled()
            and (background[0].exception() is not None)
        )
        return 1 if failed or not server.started else 0


def serve(settings: GatewaySettings) -> int:
    """Entry point of ``infermodes gateway``; returns the process exit code."""
    import uvloop

    configure_logging(settings.log_level)
    gateway_id = settings.gateway_id or socket.gethostname()
    source: EndpointSource
    sink: DemandSink | None
    if settings.static_endpoints:
        from infermodes.gateway.static import StaticSource

        source, sink = StaticSource(settings.static_endpoints), None
    else:
        from infermodes.gateway.kube import Credentials, KubeApi, KubeDemandSink, KubeSource

        api = KubeApi(Credentials.discover())
        source = KubeSource(api, settings.namespaces)
        sink = KubeDemandSink(api, gateway_id)
    runner = Runner(settings, source, sink, gateway_id)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop:
        return loop.run(runner.run())
