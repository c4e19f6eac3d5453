"""``infermodes gateway``: the app (invocations as a plain ASGI handler in front of a FastAPI app
with ``/metrics``, ``/healthz``, ``/readyz`` and any mounted routers, such as the async accept
route and the managed platform's control plane; with access keys, every request but health,
readiness and metrics verified first) and the process (uvicorn, the endpoint source, the demand
writer, the SIGTERM drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Sequence
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException

from infermodes.endpoints.demand import annotation_key
from infermodes.errors import BrokerUrlError
from infermodes.gateway.auth import (
    OPEN_PLATFORM,
    OPEN_STATUS,
    OPEN_WARNING,
    Guard,
    Keys,
    access_keys,
    loopback_only,
    refusal_log,
    refused_caller,
    verified,
)
from infermodes.gateway.demand_writer import DemandSink, DemandWriter
from infermodes.gateway.errors import (
    AnsweringFailures,
    ProtocolRefusals,
    ValidationError,
    WatchedSend,
    answer_bug,
    refusal_code,
    runtime_error_response,
    unknown_operation,
)
from infermodes.gateway.proxy import Proxy, is_invocation
from infermodes.gateway.reread import Rereads
from infermodes.gateway.table import EndpointSource, RereadingSource, Table
from infermodes.http import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    create_api,
    naming_request,
    uvicorn_options,
)
from infermodes.logs import configure_logging
from infermodes.metrics import ADMISSION, ROUTE, GatewayMetrics, serve_metrics
from infermodes.platform.router import MAX_REQUEST_BYTES
from infermodes.platform.sigv4 import Verifier
from infermodes.queueing.broker import BrokerUrl, given_url
from infermodes.settings import GatewaySettings, warn_of_unknown_variables

if TYPE_CHECKING:
    from infermodes.gateway.kube import KubeApi

log = logging.getLogger("infermodes.gateway")

FINAL_DEMAND_SECONDS = 5.0  # the last demand write on exit waits at most this
ASYNC_SUFFIX = "/async-invocations"
LISTEN_BACKLOG = 2048  # uvicorn's own default
ANYWHERE_WARNING = (
    "no async storage prefixes: this gateway stores async inputs and sweeps under whatever "
    "paths an endpoint names, with its own storage credentials. Set INFERMODES_GATEWAY_ASYNC_"
    "STORAGE_PREFIXES (in the chart, gateway.asyncStoragePrefixes) to the prefixes it may use."
)


class Gateway:
    """The ASGI app. ``draining`` turns readiness off while in-flight requests finish. Without
    access keys it is open, and its ``/readyz`` says so; open and on loopback only, it answers
    only requests addressed to this machine from no other web page (``auth.refused_caller``)."""

    def __init__(
        self,
        settings: GatewaySettings,
        table: Table,
        demand: DemandWriter | None,
        registry: CollectorRegistry | None = None,
        routers: Sequence[APIRouter] = (),
        keys: Keys | None = None,
    ) -> None:
        self.table = table
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry)
        self.proxy = Proxy(table, settings, self.metrics, demand)
        self.draining = False
        self.verifier = Verifier(keys) if keys is not None else None
        self.refusals = refusal_log()
        # told of HTTP's own refusals, before the app (``uvicorn_options(on_refusal=...)``)
        self.refused_by_protocol = ProtocolRefusals(self.metrics.answers, refusal_log())
        # open and on loopback only: a web page must not use it (with keys, a page can sign
        # nothing, and a local proxy in front of it forwards its clients' Host for signatures)
        self.guard_callers = self.verifier is None and loopback_only(settings.host)
        self.guard: Guard | None = None  # set by ``infermodes up``: its token (local/access.py)
        # a signed body is read whole before routing: at most what its route takes
        self.invocation_limit = max(
            settings.realtime_max_payload_bytes, settings.serverless_max_payload_bytes
        )
        self.async_limit = settings.max_inline_bytes
        ready = b"ok" if self.verifier is not None else OPEN_STATUS
        # on the side port, if any (``Runner``), where only the scraper is let in
        api = create_api("infermodes gateway", None if settings.metrics_port else self.registry)
        api.exception_handler(HTTPException)(unknown_operation)  # the platform's code
        api.add_middleware(AnsweringFailures)  # bugs too

        @api.get("/healthz")
        async def healthz() -> Response:
            return Response(b"ok", 200)

        @api.get("/readyz")
        async def readyz() -> Response:
            if self.draining:
                return Response(b"draining", 503)
            if not table.synced:
                return Response(b"endpoints not listed yet", 503)
            return Response(ready, 200)

        @api.post("/endpoints/{name}/invocations-response-stream")
        async def response_stream(name: str) -> Response:
            """InvokeEndpointWithResponseStream: refused in a code boto3 models, naming it."""
            return runtime_error_response(
                ValidationError(
                    "InvokeEndpointWithResponseStream is not supported: the model server "
                    "answers whole; call InvokeEndpoint (POST /endpoints/NAME/invocations)"
                )
            )

        self.api = api
        for router in routers:
            self.include(router)
        self.rest: ASGIApp = api

    def include(self, router: APIRouter) -> None:
        """Serve a router's routes too (the async accept route, the local runtime's API)."""
        self.api.include_router(router)

    def body_limit(self, path: str) -> int:
        if is_invocation(path):
            return self.invocation_limit
        return self.async_limit if path.endswith(ASYNC_SUFFIX) else MAX_REQUEST_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every answer names its request (``x-amzn-RequestId``) and is counted: the proxy's
        itself, on the hot path (by endpoint); refusals before routing (``admission``) with
        the id ``auth.refuse`` gives; the other routes' (``route``) through ``send``. Those
        HTTP itself makes before the app sees a request: ``refused_by_protocol``."""
        if scope["type"] != "http":
            await self.rest(scope, receive, send)
            return
        invocation = is_invocation(scope["path"])
        if invocation and not self.guard_callers and self.verifier is None:
            await self.proxy(scope, receive, send)  # nothing checked before it
            return
        watched = WatchedSend(send if invocation else naming_request(scope, send))
        try:
            admitted = await self.admitted(scope, receive, watched, invocation)
        except Exception:  # a bug before any route, which answers its own (``AnsweringFailures``)
            await answer_bug(scope, watched)  # not if the check had started its answer
            admitted = None
        if admitted is None:
            self.count(ADMISSION, watched)
        elif invocation:
            await self.proxy(scope, admitted, send)
        else:
            try:
                await self.rest(scope, admitted, watched)
            finally:
                self.count(ROUTE, watched)

    def count(self, stage: str, answered: WatchedSend) -> None:
        """Count an answer made at ``stage``; none is counted for a client gone unanswered."""
        if answered.status is not None:
            self.metrics.answered(stage, answered.status)

    async def admitted(
        self, scope: Scope, receive: Receive, send: Send, invocation: bool
    ) -> Receive | None:
        """``receive`` for the route, once the caller, the signature and ``up``'s token are
        checked; None when one of them refused the request (answered then, each at its end)."""
        if self.guard_callers and await refused_caller(scope, send):
            return None
        if self.verifier is not None:
            limit = self.body_limit(scope["path"])
            checked = await verified(self.verifier, self.refusals, limit, scope, receive, send)
            if checked is None:
                return None
            receive = checked
        if self.guard is not None and not invocation:  # invocations stay unguarded
            return await self.guard(scope, receive, send)
        return receive


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
        registry: CollectorRegistry | None = None,
        routers: Sequence[APIRouter] = (),
        keys: Keys | None = None,
        namespaced: bool = True,
    ) -> None:
        """``namespaced``: whether the source's namespaces mean something to a caller, whom
        errors then name them to (``Endpoint.namespaced``)."""
        self.settings = settings
        self.source = source
        self.table = Table(
            demand_key=annotation_key(gateway_id),
            storage_prefixes=settings.async_storage_prefixes,
            namespaced=namespaced,
        )
        self.demand = DemandWriter(self.table, sink, gateway_id) if sink is not None else None
        self.app = Gateway(settings, self.table, self.demand, registry, routers, keys)
        if isinstance(source, RereadingSource):
            self.app.proxy.rereads = Rereads(partial(source.reread, self.table))

    async def run(self) -> int:
        settings = self.settings
        sockets = listen(settings.host, settings.port)
        if sockets is None:
            return 1
        metrics_server = None
        if settings.metrics_port:
            try:
                metrics_server = serve_metrics(settings.metrics_port, settings.host,
                                               self.app.registry)  # fmt: skip
            except OSError as exc:
                log.error("cannot serve /metrics on %s port %d: %s", settings.host,
                          settings.metrics_port, exc.strerror)  # fmt: skip
                for sock in sockets:
                    sock.close()
                return 1
            log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
        config_class, server_class = _uvicorn()
        config = config_class(
            self.app,
            host=settings.host,
            port=settings.port,
            timeout_graceful_shutdown=settings.drain_timeout_seconds,
            proxy_headers=False,  # nothing here reads the client's address
            # its protocol writes head and body at once, and its refusals in the platform's codes
            **uvicorn_options(settings.log_level, refusal_code=refusal_code,
                              on_refusal=self.app.refused_by_protocol),
        )  # fmt: skip
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
            await server.serve(sockets=sockets)
        finally:
            if metrics_server is not None:  # its loop ends within its poll interval (0.5 s)
                await asyncio.to_thread(metrics_server.shutdown)
                metrics_server.server_close()
            self.app.proxy.prober.stop()
            if self.app.proxy.rereads is not None:
                self.app.proxy.rereads.stop()
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


def listen(host: str, port: int) -> list[socket.socket] | None:
    """The listening sockets, bound before the endpoint source and the demand writer start: a
    busy port must end the process before they run (under ``up``, before any child starts),
    not leave them running behind a server that failed to start. One per address ``host``
    resolves to, as uvicorn's own bind would make (IPv6 ones IPv6 only). None, the reason
    logged, when an address cannot be had."""
    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)  # fmt: skip
    except socket.gaierror as exc:
        log.error("cannot listen on %s port %d: %s", host, port, exc.strerror)
        return None
    sockets: list[socket.socket] = []
    for family, kind, proto, _, address in dict.fromkeys(found):  # once each, in order
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:
            continue  # a family this machine has no stack for (IPv6 off, say)
        sockets.append(sock)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
        except OSError as exc:
            for opened in sockets:
                opened.close()
            log.error("cannot listen: %s (while attempting to bind on address %r)",
                      exc.strerror, address[:2])  # fmt: skip
            return None
    if not sockets:
        log.error("cannot listen on %s port %d: no address to bind", host, port)
        return None
    for sock in sockets:
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
        log.info("listening on http://%s:%d", shown, bound[1])
    return sockets


def serve(settings: GatewaySettings) -> int:
    """Entry point of ``infermodes gateway``; returns the process exit code."""
    import uvloop

    configure_logging(settings.log_level)
    warn_of_unknown_variables(settings)
    setting = "INFERMODES_GATEWAY_ACCESS_KEYS" + ("_FILE" if settings.access_keys_file else "")
    try:
        keys = access_keys(settings)
    except ValueError as exc:
        log.error("%s: %s", setting, exc)
        return 1
    if keys is not None:
        log.info("requests must be signed (AWS Signature V4) with one of %d access keys (%s)",
                 len(keys()), setting)  # fmt: skip
    else:  # on Kubernetes its platform API is off then, unless asked for
        served = settings.open_platform_api and not settings.static_endpoints
        log.warning(OPEN_WARNING.format(OPEN_PLATFORM if served else ""))
    gateway_id = settings.gateway_id or socket.gethostname()
    source: EndpointSource
    sink: DemandSink | None
    routers: list[APIRouter] = []
    if settings.static_endpoints:
        from infermodes.gateway.static import StaticSource

        source, sink = StaticSource(settings.static_endpoints), None
    else:
        from infermodes.gateway.kube import Credentials, KubeApi, KubeDemandSink, KubeSource

        try:
            api = KubeApi(Credentials.discover())
        except (OSError, ValueError, KeyError, StopIteration) as exc:
            log.error(
                "no Kubernetes credentials (%s: %s): run in a pod, set KUBECONFIG, or give "
                "--static-endpoints",
                type(exc).__name__,
                exc,
            )
            return 1
        source = KubeSource(api, settings.namespaces)
        sink = KubeDemandSink(api, gateway_id)
        if keys is None and not settings.open_platform_api:
            routers.append(platform_refused())
    registry = CollectorRegistry()
    runner = Runner(settings, source, sink, gateway_id, registry, routers, keys)
    if not settings.static_endpoints and (keys is not None or settings.open_platform_api):
        runner.app.include(platform_router(settings, api, runner.table))
    closing: list[Callable[[], None]] = []
    broker_url = given_url(settings.broker_url, settings.broker_url_file)
    if broker_url:
        if not settings.async_storage_prefixes:
            log.warning(ANYWHERE_WARNING)
        try:
            router = async_accept_router(settings, broker_url, runner.table, registry, closing,
                                         runner.demand, runner.app.proxy.rereads)  # fmt: skip
        except BrokerUrlError as exc:  # its text never holds the password
            log.error("the broker URL: %s", exc)
            return 1
        runner.app.include(router)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop:
            return loop.run(runner.run())
    finally:
        for close in closing:
            close()


def platform_refused() -> APIRouter:
    """``POST /`` of a gateway without access keys: the platform API creates workloads and
    names Secrets for them, which nobody unauthenticated may do unless asked for."""
    from infermodes.platform.sigv4 import MissingAuthenticationTokenException, error_response

    router = APIRouter()
    refusal = MissingAuthenticationTokenException(
        "this gateway has no access keys, so its platform API is off: give it access keys "
        "(gateway.auth.secretRef in the chart) and sign requests, or serve it open on purpose "
        "(gateway.platform.allowAnonymous: true; INFERMODES_GATEWAY_OPEN_PLATFORM_API)"
    )

    @router.post("/")
    async def control_plane() -> Response:
        status, headers, body = error_response(refusal)
        return Response(body, status, headers={k.decode(): v.decode() for k, v in headers})

    log.info("platform API off: no access keys (see gateway.platform.allowAnonymous)")
    return router


def platform_router(settings: GatewaySettings, api: KubeApi, table: Table) -> APIRouter:
    """The managed platform's control plane (``POST /``), its state as objects in the platform
    namespace; endpoints it creates get the configured Secrets, and no name ``table`` serves
    from another namespace."""
    from infermodes.gateway.platform_store import KubePlatformStore
    from infermodes.platform.router import create_router
    from infermodes.platform.translate import Defaults

    namespace = settings.platform_namespace or api.credentials.namespace
    defaults = Defaults(
        namespace=namespace,
        storage_secret=settings.platform_storage_secret,
        broker_secret=settings.platform_broker_secret,
    )
    log.info("platform API: models, endpoint configs and endpoints in namespace %s", namespace)
    return create_router(KubePlatformStore(api, namespace, table), defaults)


def async_accept_router(
    settings: GatewaySettings,
    broker_url: BrokerUrl,
    table: Table,
    registry: CollectorRegistry,
    closing: list[Callable[[], None]],
    demand: DemandWriter | None = None,
    rereads: Rereads | None = None,
) -> APIRouter:
    """``POST /endpoints/{name}/async-invocations`` for the async endpoints the table knows,
    over the broker at ``broker_url``, with the retention sweep of their inputs;
    what must be closed at exit is added to ``closing``; ``demand`` hears of each accepted
    request (it wakes a pool at zero workers); ``rereads``: the invocations route's, which
    reads a name no watched namespace has yet (an endpoint just created) before its 404."""
    from infermodes.gateway.async_accept import create_router
    from infermodes.gateway.async_retention import Sweeper
    from infermodes.metrics import AsyncApiMetrics
    from infermodes.queueing.connect import broker_from_url
    from infermodes.storage import Storage

    storage = Storage()
    enqueuer = broker_from_url(broker_url).enqueuer(
        table.max_attempts, settings.publish_connections
    )
    sweeper = Sweeper(storage, table.async_swept, settings.sweep_interval_seconds)
    sweeper.start()
    closing.extend([sweeper.stop, enqueuer.close])
    metrics = AsyncApiMetrics(registry)
    table.forgotten.append(metrics.forget)  # as the invocations' series go
    return create_router(
        table.async_layouts,
        enqueuer,
        storage,
        metrics,
        settings.max_inline_bytes,
        settings.allowed_input_prefixes,
        missing=table.async_missing,
        input_paths=table.async_input_paths,
        accepted=demand.async_accepted if demand is not None else None,
        # installed by hand or by the chart: it cannot tell, so it names both
        allowed_from=f"{GatewaySettings.env_names('allowed_input_prefixes')[0]}, in the chart "
        "gateway.allowedInputPrefixes,",
        forgotten=table.forgotten,
        reread=None if rereads is None else partial(read_unknown, table, rereads),
    )


async def read_unknown(table: Table, rereads: Rereads, name: str, request: str) -> None:
    """The accept route's re-read: only of a name no watched namespace has (one of another
    mode, or refused, is refused whatever its status)."""
    if not table.namespaces_of(name):
        await rereads(name, request)
