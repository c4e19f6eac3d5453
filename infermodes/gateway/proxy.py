"""``POST /endpoints/{name}/invocations``: admit (maxConcurrency), hold while no replica is
ready, forward to the ready replica with the fewest requests in flight, map the answer.

A plain ASGI handler, like the model server's ``/invocations``: the forward is a few tens of
microseconds of Python on top of the replica's own time. Bodies pass through as bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from infermodes.endpoints.spec import object_name
from infermodes.endpoints.status import FAILED_CREATE, UNSCHEDULABLE
from infermodes.errors import (
    ClientClosedRequest,
    InfermodesError,
    MethodNotAllowed,
    PayloadTooLarge,
    shown,
)
from infermodes.gateway.demand_writer import DemandWriter
from infermodes.gateway.errors import (
    INTERNAL_FAILURE,
    INTERNAL_FAILURE_BODY,
    UNKNOWN_OPERATION,
    InternalDependencyException,
    ModelError,
    ModelInvocationTimeout,
    ServiceUnavailable,
    ThrottlingException,
    ValidationError,
    custom_attributes_problem,
    error_headers,
    gateway_error_body,
    unknown_operation_body,
)
from infermodes.gateway.reread import Rereads
from infermodes.gateway.table import Endpoint, Replica, Table
from infermodes.gateway.upstream import Answer, NotSent, Pool, UpstreamFailed
from infermodes.http import (
    REQUEST_ID_HEADER,
    Receive,
    Scope,
    Send,
    check_declared_length,
    new_request_id,
    read_checked_body,
    refuse_codings,
    repeated_header,
)
from infermodes.logs import ThrottledPer
from infermodes.metrics import UNKNOWN_ENDPOINT, GatewayMetrics
from infermodes.settings import GatewaySettings

log = logging.getLogger("infermodes.gateway")

PREFIX, SUFFIX = "/endpoints/", "/invocations"
UPSTREAM_PATH = b"/invocations"
# Request headers passed to the replica, with the spelling they are sent in; the client's own
# x-amzn-RequestId is not among them: the replica is sent the gateway's (``http.forwarded_id``)
FORWARDED = {
    b"content-type": b"Content-Type",
    b"accept": b"Accept",
    b"x-amzn-sagemaker-custom-attributes": b"X-Amzn-SageMaker-Custom-Attributes",
}
# InvokeEndpoint's routing to one of several models, containers or components, Clarify's
# explanations and stateful sessions: one stateless model serves an endpoint here, so a
# request asking for another, if answered, would get that model's answer without a word
ONE_MODEL = "an endpoint serves one model"
UNSUPPORTED_TARGETS = {  # header: (the parameter, why it is refused)
    b"x-amzn-sagemaker-target-model": ("TargetModel (multi-model endpoints)", ONE_MODEL),
    b"x-amzn-sagemaker-target-container-hostname": (
        "TargetContainerHostname (multi-container endpoints)",
        ONE_MODEL,
    ),
    b"x-amzn-sagemaker-inference-component": (
        "InferenceComponentName (inference components)",
        ONE_MODEL,
    ),
    b"x-amzn-sagemaker-enable-explanations": ("EnableExplanations (SageMaker Clarify)", ONE_MODEL),
    b"x-amzn-sagemaker-session-id": (
        "SessionId (stateful sessions)",
        "the model server keeps no session, requests go to any replica and no NewSessionId is "
        "answered",
    ),
}
CUSTOM_ATTRIBUTES_HEADER = b"x-amzn-sagemaker-custom-attributes"
TARGET_VARIANT = b"x-amzn-sagemaker-target-variant"
INVOKED_VARIANT = b"x-amzn-invoked-production-variant"  # InvokeEndpoint's
MAX_ATTEMPTS = 100  # replicas tried or waited for per request (the timeout bounds it too)
# a model server's answer while its model loads (a replica's other worker may answer /ping)
NOT_READY = 503
REFUSED_HOLD_SECONDS = 5.0  # a request that arrives while the API refuses the pods: held this long
MAX_ORIGINAL_MESSAGE = 1000


def refuse_headers(headers: Sequence[tuple[bytes, bytes]]) -> None:
    """400, in one pass over the headers, for a request that asks for a model, container or
    component other than the endpoint's one, for an explanation or a session; and for a
    header of one value given twice (the model server would refuse it, and the gateway pass
    that on as the model's error): forwarding either would be a guess. Several Accepts are
    one list."""
    seen: set[bytes] = set()
    for name, value in headers:
        if name == CUSTOM_ATTRIBUTES_HEADER and (
            too_long := custom_attributes_problem(value.decode("utf-8", "replace"))
        ):
            raise ValidationError(too_long)
        asked = UNSUPPORTED_TARGETS.get(name)
        if asked is not None:
            what, why = asked
            raise ValidationError(f"{what} is not supported: {why}; send no {name.decode()} header")
        if name in FORWARDED and name != b"accept":
            if name in seen:
                count = sum(1 for other, _ in headers if other == name)
                raise ValidationError(repeated_header(name.decode(), count))
            seen.add(name)


def check_target_variant(endpoint: Endpoint, headers: Sequence[tuple[bytes, bytes]]) -> None:
    """InvokeEndpoint's ``TargetVariant``, if given, must name the endpoint's one production
    variant, as the platform refuses a variant its endpoint does not have (a 400): served
    anyway, the caller would believe its request went where it asked. An endpoint the API did
    not make (a manifest's) has no named variant."""
    asked = [value for name, value in headers if name == TARGET_VARIANT]
    if not asked:
        return
    if len(asked) > 1:
        raise ValidationError(repeated_header(TARGET_VARIANT.decode(), len(asked)))
    variant = asked[0].decode("latin-1")
    if variant == endpoint.variant:
        return
    has = (
        f"its one variant is {endpoint.variant!r}"
        if endpoint.variant is not None
        else "it was not made by the platform API and has no named variant"
    )
    raise ValidationError(
        f"TargetVariant {shown(variant)} is not a variant of endpoint {endpoint.name} "
        f"({has}): send its variant's name, or no TargetVariant"
    )


def invoked_variant(endpoint: Endpoint) -> list[tuple[bytes, bytes]]:
    """InvokeEndpoint's ``InvokedProductionVariant``, which the platform always answers: the
    endpoint's one variant, when the API made it (``variant_of`` keeps only variant names)."""
    variant = endpoint.variant
    return [] if variant is None else [(INVOKED_VARIANT, variant.encode())]


def is_invocation(path: str) -> bool:
    return path.startswith(PREFIX) and path.endswith(SUFFIX) and len(path) > len(PREFIX + SUFFIX)


def original_message(body: bytes) -> str:
    """The model server's own message: the ``message`` of its JSON error, else its text."""
    try:
        parsed = json.loads(body)
        message = parsed.get("message") if isinstance(parsed, dict) else None
        if isinstance(message, str):
            return message[:MAX_ORIGINAL_MESSAGE]
    except ValueError:
        pass
    return body[:MAX_ORIGINAL_MESSAGE].decode("utf-8", "replace")


def checked_answer(endpoint: Endpoint, answer: Answer) -> Answer:
    """The answer itself if 2xx/3xx; a model's 4xx is the platform's 424 ModelError, a 5xx
    a 502."""
    if answer.status < 400:
        return answer
    message = original_message(answer.body)
    if answer.status < 500:
        raise ModelError(endpoint.name, answer.status, message)
    raise InternalDependencyException(  # no replica named to the caller: the log has it
        f"endpoint {endpoint.name}: the model server failed with {answer.status}: {message}",
        answer.status,
    )


class Prober:
    """Probes a new (or refusing) replica's ``/ping`` until it answers 200, so it takes
    traffic at once, without waiting for the pod's Ready condition to travel back."""

    def __init__(self, table: Table, interval: float, timeout: float) -> None:
        self.table = table
        self.interval = interval
        self.timeout = timeout
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def start(self, endpoint: Endpoint, replica: Replica) -> None:
        if id(replica) not in self.tasks:
            task = asyncio.get_running_loop().create_task(self.probe(endpoint, replica))
            self.tasks[id(replica)] = task
            task.add_done_callback(lambda _: self.tasks.pop(id(replica), None))

    async def probe(self, endpoint: Endpoint, replica: Replica) -> None:
        pool: Pool = replica.handle
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while not replica.removed and not replica.ready and loop.time() < deadline:
            try:
                async with asyncio.timeout(max(self.interval, 1.0)):
                    if await pool.get("/ping") == 200:
                        self.table.mark_ready(endpoint, replica)
                        return
            except (NotSent, UpstreamFailed, TimeoutError):
                pass
            await asyncio.sleep(self.interval)
        if not replica.ready and not replica.removed:
            log.warning(
                "replica %s of endpoint %s did not answer /ping within %g s; it joins when its pod "
                "reports Ready",
                replica.key,
                endpoint.name,
                self.timeout,
            )

    def stop(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()


class Proxy:
    """The invocations route, over the table. One instance per gateway process."""

    def __init__(
        self,
        table: Table,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
        demand: DemandWriter | None,
    ) -> None:
        self.table = table
        self.settings = settings
        self.metrics = metrics
        self.demand = demand
        self.timeout = settings.invocation_timeout_seconds
        self.prober = Prober(table, settings.probe_interval_seconds, settings.probe_timeout_seconds)
        # set when the source can read an endpoint ahead of its watch (``Runner``)
        self.rereads: Rereads | None = None
        table.on_new_replica = self.replica_added
        table.on_removed_replica = self.replica_removed
        table.forgotten.append(self.endpoint_forgotten)
        self._durations: dict[tuple[str, int], Any] = {}
        self._gauges: dict[str, tuple[Any, Any]] = {}
        # lines about failed requests, per endpoint and kind: an outage fails them all alike
        self.told = ThrottledPer(log)

    # replicas
    def replica_added(self, endpoint: Endpoint, replica: Replica) -> None:
        if replica.handle is None:
            replica.handle = Pool(
                replica.host,
                replica.port,
                self.settings.upstream_idle_seconds,
                self.settings.max_idle_connections,
            )
        if not replica.ready:
            self.prober.start(endpoint, replica)

    def replica_removed(self, endpoint: Endpoint, replica: Replica) -> None:
        if replica.handle is not None:
            replica.handle.close()

    def endpoint_forgotten(self, name: str) -> None:
        """The last entry of this name is gone (deleted, its requests answered): its series
        go too, or every endpoint ever served would stay in /metrics."""
        if name == UNKNOWN_ENDPOINT or self.table.has_entry(name):
            return
        codes = [status for label, status in self._durations if label == name]
        for status in codes:
            del self._durations[name, status]
        self._gauges.pop(name, None)
        self.told.forget(name)
        self.metrics.forget(name, codes)

    # metrics children, cached: labels() costs more than the observation
    def _observe(self, label: str, status: int, seconds: float) -> None:
        key = (label, status)
        child = self._durations.get(key)
        if child is None:
            child = self._durations[key] = self.metrics.request_duration.labels(label, str(status))
        child.observe(seconds)

    def _live(self, label: str) -> tuple[Any, Any]:
        gauges = self._gauges.get(label)
        if gauges is None:
            gauges = self._gauges[label] = (
                self.metrics.in_flight.labels(label),
                self.metrics.held_now.labels(label),
            )
        return gauges

    # the route
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        label = UNKNOWN_ENDPOINT
        served: Endpoint | None = None
        headers: list[tuple[bytes, bytes]]
        named = new_request_id()  # x-amzn-RequestId, success or error, and the log lines'
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed("use POST for /endpoints/{name}/invocations")
            name = object_name(scope["path"][len(PREFIX) : -len(SUFFIX)])
            if self.rereads is not None and self.table.behind(name):
                await self.rereads(name, named)  # the watch may lag what the caller was told
            endpoint = self.table.lookup(name)
            label, served = endpoint.name, endpoint
            endpoint.check_servable()
            answer = await self.invoke(endpoint, scope, receive, named)
            status, body, headers = answer.status, answer.body, list(answer.headers)
            headers += invoked_variant(endpoint)
        except InfermodesError as exc:
            status, body, code = exc.status_code, gateway_error_body(exc), type(exc).__name__
            if status >= 500:  # ours to explain (throttled per endpoint: the first line of a
                # burst names its request, the next says how many were left out)
                self.told(label, "answered").warning(
                    "endpoint %s: answered %d %s (request %s): %s",
                    label, status, code, named, exc, request=named,
                )  # fmt: skip
            if isinstance(exc, MethodNotAllowed):  # as routing's own 405 elsewhere
                body, code = unknown_operation_body(code, str(exc)), UNKNOWN_OPERATION
            headers = error_headers(code, scope)
        except Exception:  # a bug: the log has it, under the id; the caller learns nothing of it
            log.exception("endpoint %s: internal error (request %s)", label, named)
            status, body = 500, INTERNAL_FAILURE_BODY
            headers = error_headers(INTERNAL_FAILURE, scope)
        headers.append((b"content-length", str(len(body)).encode()))
        headers.append((REQUEST_ID_HEADER, named.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self._observe(label, status, time.perf_counter() - started)
        if served is not None and not self.table.holds(served):
            self.endpoint_forgotten(label)  # deleted while it was answered: observed after

    async def invoke(
        self, endpoint: Endpoint, scope: Scope, receive: Receive, named: str
    ) -> Answer:
        """``named``: the request's id, for the log lines."""
        # refused here as the model server refuses them: the replica is sent neither header
        # (a chunked body goes on with a Content-Length), so it would read a gzip body as plain
        refuse_codings(scope["headers"])
        refuse_headers(scope["headers"])
        check_target_variant(endpoint, scope["headers"])
        limit = self._body_limit(endpoint)
        with self._too_large(endpoint, limit):
            declared = check_declared_length(scope, limit)
        # admitted before its body is read: a request over maxConcurrency is refused without
        # reading it (nor, with Expect: 100-continue, asking for it), and one reading its body
        # holds its place, so a flood of large bodies is never held in memory beyond the cap
        endpoint.last_request_at = now = time.time()
        cap = endpoint.concurrency_cap(now)
        if cap is not None and endpoint.active >= cap:
            self.metrics.throttled.labels(endpoint.name).inc()
            raise ThrottlingException(
                f"endpoint {endpoint.name} is at its maxConcurrency ({cap} invocations in flight "
                "or held in this gateway); retry later"
            )
        forwarded = [(FORWARDED[k], v) for k, v in scope["headers"] if k in FORWARDED]
        forwarded.append((REQUEST_ID_HEADER, named.encode()))  # the replica's lines name it
        in_flight, _ = self._live(endpoint.name)
        endpoint.active += 1
        endpoint.peak_active = max(endpoint.peak_active, endpoint.active)
        in_flight.inc()
        holding = [False]
        try:
            with self._too_large(endpoint, limit):
                body = await read_checked_body(scope, receive, limit, declared)
            async with asyncio.timeout(self.timeout):
                return await self.forward(endpoint, forwarded, body, holding, receive, named)
        except TimeoutError:
            if holding[0]:  # with why its replicas do not come, when its status says it
                stalled = endpoint.why in (UNSCHEDULABLE, FAILED_CREATE)  # not "Scaling"
                why = f" (its status: {endpoint.why})" if stalled else ""
                raise ServiceUnavailable(
                    f"no replica of endpoint {endpoint.name} became ready within "
                    f"{self.timeout:g} s{why}"
                ) from None
            self.metrics.upstream_errors.labels(endpoint.name, "timeout").inc()
            raise ModelInvocationTimeout(
                f"endpoint {endpoint.name} did not answer within the invocation timeout of "
                f"{self.timeout:g} s"
            ) from None
        finally:
            endpoint.active -= 1
            in_flight.dec()
            endpoint.last_request_at = time.time()
            self.table.forget_if_gone(endpoint)

    def _body_limit(self, endpoint: Endpoint) -> int:
        if endpoint.serverless is not None:
            return self.settings.serverless_max_payload_bytes
        return self.settings.realtime_max_payload_bytes

    @contextlib.contextmanager
    def _too_large(self, endpoint: Endpoint, limit: int) -> Iterator[None]:
        """A body over the mode's limit, declared or read, is the platform's 413."""
        try:
            yield
        except PayloadTooLarge as exc:
            mode = "serverless" if endpoint.serverless is not None else "realtime"
            raise ValidationError(
                f"endpoint {endpoint.name}: {exc} ({mode} endpoints take at most {limit} bytes)",
                413,
            ) from None

    async def forward(
        self,
        endpoint: Endpoint,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        holding: list[bool],
        receive: Receive,
        named: str,
    ) -> Answer:
        """Send to a ready replica, holding while there is none (and the endpoint has neither
        failed nor been deleted); a replica the request never reached is left for another.
        ``named``: the request's id, for the log lines."""
        was_held = False
        presumed_once = False
        for _ in range(MAX_ATTEMPTS):
            replica = endpoint.choose()
            if replica is None:
                if not self.table.serves(endpoint):  # deleted: what a new request is told
                    raise self.table.not_found(endpoint.name)
                if not endpoint.may_come():  # none will: what a new request is told
                    endpoint.check_servable()
                if was_held and endpoint.pods_refused():
                    raise ServiceUnavailable(
                        f"no replica of endpoint {endpoint.name} can start now: its pods cannot "
                        f"be created ({endpoint.why}); retry later"
                    )
                if not was_held:
                    was_held = True
                    self.metrics.held.labels(endpoint.name).inc()
                holding[0] = True
                # its demand is written all the same: the cause may be gone (a quota raised)
                await self.hold(
                    endpoint, receive, REFUSED_HOLD_SECONDS if endpoint.pods_refused() else None
                )
                holding[0] = False
                continue
            pool: Pool = replica.handle
            replica.in_flight += 1
            try:
                answer = await pool.request(pool.head(UPSTREAM_PATH, headers, len(body)), body)
            except NotSent as exc:
                # one going away (left the table) closes its kept connections: that is the race
                presumed = exc.presumed and not replica.removed
                if presumed and presumed_once:  # twice: not a race with an idle close
                    self.metrics.upstream_errors.labels(endpoint.name, "failed").inc()
                    raise InternalDependencyException(
                        f"replicas of endpoint {endpoint.name} closed the connection twice "
                        "without an answer; the request is not sent again"
                    ) from None
                presumed_once = presumed_once or presumed
                self.metrics.upstream_errors.labels(endpoint.name, "not_sent").inc()
                self.told(endpoint.name, "not_sent").info(
                    "endpoint %s: %s; trying again (request %s)", endpoint.name, exc, named,
                    request=named,
                )  # fmt: skip
                if exc.refused:
                    self.table.mark_unready(endpoint, replica)
                continue
            except UpstreamFailed as exc:
                self.metrics.upstream_errors.labels(endpoint.name, "failed").inc()
                self.told(endpoint.name, "failed").warning(
                    "endpoint %s: replica %s at %s failed: %s (request %s)",
                    endpoint.name, replica.key, pool.address, exc, named, request=named,
                )  # fmt: skip
                raise InternalDependencyException(
                    f"endpoint {endpoint.name}: a model server failed: {exc}"
                ) from None
            finally:
                replica.in_flight -= 1
            if answer.status == NOT_READY:  # one of its workers still loads the model: it took
                self.metrics.upstream_errors.labels(endpoint.name, "not_ready").inc()  # nothing
                self.table.mark_unready(endpoint, replica)  # probed again; the request goes on
                continue
            self._forwarded(endpoint)
            if answer.status >= 500:
                self.metrics.upstream_errors.labels(endpoint.name, "status_5xx").inc()
                self.told(endpoint.name, "status_5xx").warning(
                    "endpoint %s: replica %s answered %d (request %s)",
                    endpoint.name, replica.key, answer.status, named, request=named,
                )  # fmt: skip
            return checked_answer(endpoint, answer)
        raise InternalDependencyException(
            f"no replica of endpoint {endpoint.name} took the request in {MAX_ATTEMPTS} attempts"
        )

    def _forwarded(self, endpoint: Endpoint) -> None:
        """The first forward after a cold start ends it."""
        if endpoint.cold_since is not None:
            self.metrics.cold_start_duration.labels(endpoint.name).observe(
                time.monotonic() - endpoint.cold_since
            )
            endpoint.cold_since = None

    async def hold(self, endpoint: Endpoint, receive: Receive, limit: float | None = None) -> None:
        """Wait until a replica of the endpoint becomes ready or it is woken (the caller's
        timeout bounds it, and ``limit`` if given) or the client leaves (its place under
        maxConcurrency is freed at once); the first held request of a cold start has its
        demand written at once."""
        _, held_now = self._live(endpoint.name)
        if endpoint.held == 0 and endpoint.cold_since is None:
            endpoint.cold_since = time.monotonic()
        endpoint.held += 1
        held_now.inc()
        if endpoint.held == 1 and self.demand is not None:
            self.demand.cold_start(endpoint)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        endpoint.waiters.append(waiter)
        gone = asyncio.ensure_future(left(receive))
        try:
            await asyncio.wait((waiter, gone), timeout=limit, return_when=asyncio.FIRST_COMPLETED)
            if gone.done():
                raise ClientClosedRequest(
                    f"the client of endpoint {endpoint.name} left while its request was held"
                )
        finally:
            gone.cancel()
            endpoint.held -= 1
            held_now.dec()
            if not waiter.done():
                waiter.cancel()
                endpoint.waiters.remove(waiter)
            if endpoint.held == 0 and not any(r.ready for r in endpoint.replicas.values()):
                endpoint.cold_since = None  # it ended unserved: the next cold start is new


async def left(receive: Receive) -> None:
    """Returns when the client disconnects (after the whole body, ``receive`` has nothing else
    to tell)."""
    for _ in range(MAX_ATTEMPTS):  # anything but a disconnect is not expected here
        if (await receive())["type"] == "http.disconnect":
            return
    await asyncio.Event().wait()  # never a disconnect: only the waiter can end the hold
