"""The invocations route's accounting, in process with a fake replica: throttling at the share
of maxConcurrency, holding until a replica is ready, the demand of a cold start, retries only
for requests that never reached a replica."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from infermodes.errors import ClientClosedRequest, UnsupportedContentType
from infermodes.gateway.errors import (
    ERROR_TYPE_HEADER,
    InternalDependencyException,
    ServiceUnavailable,
    ThrottlingException,
    ValidationError,
)
from infermodes.gateway.kube import apply_endpoint
from infermodes.gateway.proxy import Proxy
from infermodes.gateway.table import Endpoint, Replica, Table
from infermodes.gateway.upstream import Answer, NotSent
from infermodes.http import BODY_TIMED_OUT_KEY, refuse_coding
from infermodes.metrics import GatewayMetrics
from infermodes.settings import GatewaySettings


class FakePool:
    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.release = asyncio.Event()
        self.failures = failures or []
        self.sent: list[bytes] = []

    def head(self, path: bytes, headers: list[tuple[bytes, bytes]], length: int) -> bytes:
        return b"head"

    async def request(self, head: bytes, body: bytes) -> Answer:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(body)
        await self.release.wait()
        return Answer(200, [(b"content-type", b"text/csv")], b"9.5\n")

    async def get(self, path: str) -> int:
        return 503  # probes of a refusing replica find it not ready

    def close(self) -> None:
        pass


class FakeDemand:
    def __init__(self) -> None:
        self.cold_starts: list[str] = []

    def cold_start(self, endpoint: Endpoint) -> None:
        self.cold_starts.append(endpoint.name)


def scope() -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/endpoints/sl/invocations",
            "headers": [(b"content-type", b"text/csv"), (b"x-other", b"dropped")]}  # fmt: skip


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"1,2,3", "more_body": False}


def setup(max_concurrency: int) -> tuple[Table, Proxy, FakeDemand, GatewayMetrics]:
    table = Table()
    spec = {"mode": "serverless", "model": {"uri": "file:///m"},
            "serverless": {"maxConcurrency": max_concurrency}}  # fmt: skip
    table.apply_endpoint({"metadata": {"name": "sl", "namespace": "ns"}, "spec": spec,
                          "status": {"phase": "InService"}})  # fmt: skip
    metrics = GatewayMetrics(CollectorRegistry())
    demand = FakeDemand()
    proxy = Proxy(table, GatewaySettings(), metrics, demand)  # type: ignore[arg-type]
    return table, proxy, demand, metrics


def ready_replica(table: Table, pool: FakePool, key: str = "p") -> Replica:
    replica = Replica(key, "127.0.0.1", 1, ready=True, handle=pool)
    table.set_replica("ns", "sl", replica)
    return replica


def test_held_requests_count_against_the_cap_and_go_out_when_a_replica_is_ready() -> None:
    async def scenario() -> None:
        table, proxy, demand, metrics = setup(max_concurrency=2)
        endpoint = table.lookup("sl")
        held = [
            asyncio.create_task(proxy.invoke(endpoint, scope(), receive, "r1")) for _ in range(2)
        ]
        await asyncio.sleep(0)
        assert (endpoint.active, endpoint.held, endpoint.in_flight) == (2, 2, 0)
        assert demand.cold_starts == ["sl"]  # once, for the first held request
        with pytest.raises(ThrottlingException):
            await proxy.invoke(endpoint, scope(), receive, "r1")
        assert metrics.throttled.labels("sl")._value.get() == 1
        pool = FakePool()
        ready_replica(table, pool)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert (endpoint.held, endpoint.in_flight) == (0, 2)
        assert pool.sent == [b"1,2,3", b"1,2,3"]  # the body as it came
        pool.release.set()
        answers = await asyncio.gather(*held)
        assert [a.body for a in answers] == [b"9.5\n", b"9.5\n"]
        assert endpoint.active == 0 and endpoint.cold_since is None
        assert metrics.cold_start_duration.labels("sl")._sum.get() > 0

    asyncio.run(scenario())


def test_a_cold_start_that_ended_unserved_does_not_stretch_the_next_ones_duration() -> None:
    """The last held request gave up (the hold's timeout) before any replica was ready: the
    next cold start is timed from its own first held request."""

    async def scenario() -> None:
        table, proxy, _, metrics = setup(max_concurrency=2)
        endpoint = table.lookup("sl")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await proxy.invoke(endpoint, scope(), receive, "r1")
        assert endpoint.held == 0 and endpoint.cold_since is None
        held = asyncio.create_task(proxy.invoke(endpoint, scope(), receive, "r1"))
        await asyncio.sleep(0)
        started = endpoint.cold_since
        assert started is not None
        pool = FakePool()
        pool.release.set()
        ready_replica(table, pool)
        await held
        assert endpoint.cold_since is None
        assert metrics.cold_start_duration.labels("sl")._sum.get() > 0

    asyncio.run(scenario())


class LoadingPool(FakePool):
    """A replica whose worker that took the request still loads its model (another of its
    workers answered the probe): 503 once, then answers."""

    def __init__(self) -> None:
        super().__init__()
        self.loading = True
        self.release.set()

    async def request(self, head: bytes, body: bytes) -> Answer:
        if self.loading:
            self.loading = False
            return Answer(503, [], b'{"error": "ModelNotReady", "message": "model is loading"}')
        return await super().request(head, body)


@pytest.mark.parametrize(
    ("first", "outcome"),
    [
        (lambda: FakePool([NotSent("refused", refused=True)]), "not_sent"),
        (LoadingPool, "not_ready"),
    ],
    ids=["refused", "model-loading"],
)
def test_a_request_a_replica_did_not_take_goes_to_another(first: Any, outcome: str) -> None:
    """A replica that refused the connection, or answered 503 as the worker that took the
    request still loads its model (another answered the probe), processed nothing: out of the
    rotation until a probe says otherwise, and the request goes to another replica instead of
    the client getting a 502."""

    async def scenario() -> None:
        table, proxy, _, metrics = setup(max_concurrency=10)
        skipped = ready_replica(table, first(), "a")
        working = FakePool()
        working.release.set()
        ready_replica(table, working, "b")
        endpoint = table.lookup("sl")
        for _ in range(2):  # ties rotate: one of the two requests tries the first replica
            answer = await proxy.invoke(endpoint, scope(), receive, "r1")
            assert answer.status == 200
        assert not skipped.ready and len(working.sent) == 2
        assert metrics.upstream_errors.labels("sl", outcome)._value.get() == 1
        proxy.prober.stop()

    asyncio.run(scenario())


def test_a_request_whose_kept_connections_close_unanswered_twice_is_not_sent_a_third_time() -> None:
    """A kept connection closed unanswered is taken for a replica closing an idle one and the
    request goes on, once: a request that kills every model server it reaches (a query of
    death) must not be sent to replica after replica until the timeout."""

    async def scenario() -> None:
        table, proxy, _, metrics = setup(max_concurrency=10)
        pools = [FakePool([NotSent("closed", presumed=True)]) for _ in range(3)]
        for name, pool in zip("abc", pools, strict=True):
            pool.release.set()
            ready_replica(table, pool, name)
        endpoint = table.lookup("sl")
        with pytest.raises(InternalDependencyException, match="closed the connection twice"):
            await proxy.invoke(endpoint, scope(), receive, "r1")
        assert sum(not pool.failures for pool in pools) == 2  # two tried, the third not
        assert metrics.upstream_errors.labels("sl", "not_sent")._value.get() == 1
        once = FakePool([NotSent("closed", presumed=True)])
        once.release.set()
        table2, proxy2, _, _ = setup(max_concurrency=10)
        ready_replica(table2, once, "a")
        assert (await proxy2.invoke(table2.lookup("sl"), scope(), receive, "r1")).status == 200
        # replicas going away (scaled in, rolled over) close their kept connections: not counted
        table3, proxy3, _, _ = setup(max_concurrency=10)
        leaving = [FakePool([NotSent("closed", presumed=True)]) for _ in range(2)]
        for name, pool in zip("ab", leaving, strict=True):
            pool.release.set()  # answers after its one close
            ready_replica(table3, pool, name).removed = True  # not dropped from the table yet
        assert (await proxy3.invoke(table3.lookup("sl"), scope(), receive, "r1")).status == 200
        assert not any(pool.failures for pool in leaving)  # both closed once, then one answered
        for other in (proxy, proxy2, proxy3):
            other.prober.stop()

    asyncio.run(scenario())


def test_a_held_client_that_leaves_frees_its_place_at_once() -> None:
    async def scenario() -> None:
        table, proxy, _, _ = setup(max_concurrency=1)
        endpoint = table.lookup("sl")
        left = asyncio.Event()
        sent_body = False

        async def leaving() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return await receive()
            await left.wait()
            return {"type": "http.disconnect"}

        held = asyncio.create_task(proxy.invoke(endpoint, scope(), leaving, "r1"))
        await asyncio.sleep(0)
        with pytest.raises(ThrottlingException):  # the one place is taken
            await proxy.invoke(endpoint, scope(), receive, "r1")
        left.set()
        with pytest.raises(ClientClosedRequest):
            await held
        assert (endpoint.active, endpoint.held, endpoint.waiters) == (0, 0, [])
        pool = FakePool()
        pool.release.set()
        ready_replica(table, pool)
        assert (await proxy.invoke(endpoint, scope(), receive, "r1")).status == 200

    asyncio.run(scenario())


def sl_object(phase: str, **status: str) -> dict[str, Any]:
    spec = {"mode": "serverless", "model": {"uri": "file:///m"}, "serverless": {}}
    return {"metadata": {"name": "sl", "namespace": "ns"}, "spec": spec,
            "status": {"phase": phase, **status}}  # fmt: skip


async def two_held(proxy: Proxy, endpoint: Endpoint) -> list[asyncio.Task[Any]]:
    """Two requests for an endpoint with no replica, held by the time this returns."""
    held = [asyncio.create_task(proxy.invoke(endpoint, scope(), receive, "r1")) for _ in range(2)]
    for _ in range(3):
        await asyncio.sleep(0)
    return held


def test_held_requests_of_an_endpoint_that_fails_get_the_error_a_new_request_gets() -> None:
    """Held through a cold start that stays Creating/InService; released when the endpoint
    turns Failed (here by a watch event, as on Kubernetes; ``up`` applies the same objects),
    with the 400 naming its reason (not its message, which may quote a container's log),
    instead of holding until the timeout."""

    async def scenario() -> None:
        table, proxy, _, _ = setup(max_concurrency=5)
        endpoint = table.lookup("sl")
        held = [
            asyncio.create_task(proxy.invoke(endpoint, scope(), receive, "r1")) for _ in range(2)
        ]
        for phase in ("Creating", "InService"):  # a cold start as usual: still held
            apply_endpoint(table, "MODIFIED", sl_object(phase, reason="Scaling"))
            for _ in range(3):
                await asyncio.sleep(0)
            assert not any(task.done() for task in held) and endpoint.held == 2
        failed = sl_object("Failed", reason="ModelLoadFailed",
                           message="model cannot be loaded: no such file")  # fmt: skip
        apply_endpoint(table, "MODIFIED", failed)
        async with asyncio.timeout(10):  # bounds a run without the fix (the hold is 60 s)
            errors = await asyncio.gather(*held, return_exceptions=True)
        with pytest.raises(ValidationError) as later:
            endpoint.check_servable()
        for error in errors:
            assert isinstance(error, ValidationError) and error.status_code == 400
            assert str(error) == str(later.value)
            assert "is Failed (ModelLoadFailed), not InService" in str(error)
            assert "no such file" not in str(error)
        assert (endpoint.active, endpoint.held, endpoint.waiters) == (0, 0, [])

    asyncio.run(scenario())


def test_held_requests_of_an_endpoint_whose_pods_cannot_start_get_a_503_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cold start whose pods a quota refuses: the requests held are answered when the
    status says so, not at the timeout (while one waits for a node they are held on); one that
    arrives meanwhile is held a little (its demand written: the cause may be gone), then told
    the same; once the cause is gone, a replica serves as usual."""
    monkeypatch.setattr("infermodes.gateway.proxy.REFUSED_HOLD_SECONDS", 0.05)

    async def scenario() -> None:
        table, proxy, demand, _ = setup(max_concurrency=5)
        endpoint = table.lookup("sl")
        held = await two_held(proxy, endpoint)
        assert endpoint.held == 2 and demand.cold_starts == ["sl"]
        # no node with room: with a cluster autoscaler, how a cold start waits for its node
        apply_endpoint(table, "MODIFIED", sl_object("InService", reason="Unschedulable"))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not any(task.done() for task in held) and endpoint.held == 2
        apply_endpoint(table, "MODIFIED", sl_object("InService", reason="FailedCreate"))
        async with asyncio.timeout(10):  # bounds a run without the fix (the hold is 60 s)
            errors = await asyncio.gather(*held, return_exceptions=True)
            with pytest.raises(ServiceUnavailable) as later:  # held 0.05 s: still refused
                await proxy.invoke(endpoint, scope(), receive, "r1")
        for error in [*errors, later.value]:
            assert isinstance(error, ServiceUnavailable) and error.status_code == 503
            assert "its pods cannot be created (FailedCreate)" in str(error)
        assert demand.cold_starts == ["sl", "sl"]  # the late one asked for a replica too
        assert (endpoint.active, endpoint.held, endpoint.waiters) == (0, 0, [])
        pool = FakePool()
        pool.release.set()
        apply_endpoint(table, "MODIFIED", sl_object("InService", reason="Scaling"))
        ready_replica(table, pool)
        answer = await proxy.invoke(endpoint, scope(), receive, "r1")
        assert answer.status == 200

    asyncio.run(scenario())


def test_a_request_held_past_the_timeout_for_pods_no_node_takes_is_told_why() -> None:
    """Pods waiting for a node (Unschedulable) keep requests held (an autoscaler may add one);
    the 503 at the hold's end said only that no replica became ready, though the status the
    gateway holds said why all along."""

    async def scenario() -> None:
        table, proxy, _, _ = setup(max_concurrency=5)
        endpoint = table.lookup("sl")
        apply_endpoint(table, "MODIFIED", sl_object("InService", reason="Unschedulable"))
        proxy.timeout = 0.05
        with pytest.raises(ServiceUnavailable) as held:
            await proxy.invoke(endpoint, scope(), receive, "r1")
        assert str(held.value) == (
            "no replica of endpoint sl became ready within 0.05 s (its status: Unschedulable)"
        )
        # a reason that says nothing of why no replica came (a cold start's Scaling): none named
        apply_endpoint(table, "MODIFIED", sl_object("InService", reason="Scaling"))
        with pytest.raises(ServiceUnavailable) as bare:
            await proxy.invoke(endpoint, scope(), receive, "r2")
        assert str(bare.value) == "no replica of endpoint sl became ready within 0.05 s"
        assert (endpoint.active, endpoint.held, endpoint.waiters) == (0, 0, [])

    asyncio.run(scenario())


def test_held_requests_of_an_endpoint_deleted_meanwhile_get_the_404_a_new_request_gets() -> None:
    async def scenario() -> None:
        table, proxy, _, _ = setup(max_concurrency=5)
        endpoint = table.lookup("sl")
        held = await two_held(proxy, endpoint)
        assert endpoint.held == 2
        apply_endpoint(table, "DELETED", sl_object("InService"))
        async with asyncio.timeout(10):  # bounds a run without the fix (the hold is 60 s)
            errors = await asyncio.gather(*held, return_exceptions=True)
        with pytest.raises(ValidationError) as later:
            table.lookup("sl")
        for error in errors:
            assert isinstance(error, ValidationError) and error.status_code == 404
            assert str(error) == str(later.value) == "endpoint sl not found"
        assert (endpoint.active, endpoint.held, endpoint.waiters) == (0, 0, [])

    asyncio.run(scenario())


def test_a_request_admitted_just_before_its_endpoint_failed_is_not_held() -> None:
    async def scenario() -> None:
        table, proxy, _, _ = setup(max_concurrency=5)
        endpoint = table.lookup("sl")  # admitted while InService; Failed before it holds
        table.apply_endpoint(sl_object("Failed", reason="ModelLoadFailed"))
        async with asyncio.timeout(10):  # bounds a run without the fix (the hold is 60 s)
            with pytest.raises(ValidationError, match="is Failed .ModelLoadFailed."):
                await proxy.invoke(endpoint, scope(), receive, "r1")
        assert (endpoint.active, endpoint.held, endpoint.waiters) == (0, 0, [])

    asyncio.run(scenario())


async def answered_with(
    name: bytes, value: bytes, times: int = 1
) -> tuple[Table, Proxy, FakePool, list[dict[str, Any]]]:
    """One request with this header more (``times`` over), to an endpoint with a ready
    replica: what the proxy sent back."""
    table, proxy, _, _ = setup(max_concurrency=5)
    pool = FakePool()
    pool.release.set()
    ready_replica(table, pool)
    request = scope()
    request["headers"] += [(name, value)] * times
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await proxy(request, receive, send)
    return table, proxy, pool, sent


@pytest.mark.parametrize(
    ("name", "value", "refused"),
    [(b"content-encoding", b"gzip", "Content-Encoding 'gzip' is not supported"),
     (b"content-encoding", b"br", "Content-Encoding 'br' is not supported"),
     (b"transfer-encoding", b"gzip, chunked", "Transfer-Encoding 'gzip, chunked'")],
)  # fmt: skip
def test_a_coded_body_is_refused_with_the_model_servers_415_and_never_forwarded(
    name: bytes, value: bytes, refused: str
) -> None:
    """The replica is sent no coding header: forwarded, a gzip body would be read as CSV."""

    async def scenario() -> None:
        table, proxy, pool, sent = await answered_with(name, value)
        with pytest.raises(UnsupportedContentType) as direct:  # the model server's check
            refuse_coding(name, value)
        assert sent[0]["status"] == 415
        assert (ERROR_TYPE_HEADER, b"UnsupportedContentType") in sent[0]["headers"]
        assert json.loads(sent[1]["body"]) == {"error": "UnsupportedContentType",
                                               "message": str(direct.value)}  # fmt: skip
        assert refused in str(direct.value)
        assert pool.sent == [] and table.lookup("sl").active == 0
        identity = scope()
        identity["headers"].append((b"content-encoding", b"identity"))
        assert (await proxy.invoke(table.lookup("sl"), identity, receive, "r1")).status == 200

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("header", "named"),
    [
        (b"x-amzn-sagemaker-target-model", "TargetModel"),
        (b"x-amzn-sagemaker-target-container-hostname", "TargetContainerHostname"),
        (b"x-amzn-sagemaker-inference-component", "InferenceComponentName"),
        (b"x-amzn-sagemaker-enable-explanations", "EnableExplanations"),
        (b"x-amzn-sagemaker-session-id", "SessionId"),
    ],
)
def test_a_request_for_another_model_or_an_explanation_is_refused_not_answered(
    header: bytes, named: str
) -> None:
    """One model serves an endpoint: a request routed to another (a multi-model endpoint's
    TargetModel, say) would get this one's answer without a word; so would a request of a
    stateful session (SessionId: no session is kept, nor a NewSessionId answered)."""

    async def scenario() -> None:
        _, _, pool, sent = await answered_with(header, b"model-b.tar.gz")
        assert sent[0]["status"] == 400
        assert (ERROR_TYPE_HEADER, b"ValidationError") in sent[0]["headers"]
        message = json.loads(sent[1]["body"])["message"]
        assert message.startswith(named) and "is not supported" in message, message
        assert pool.sent == []

    asyncio.run(scenario())


def test_a_target_variant_the_endpoint_does_not_have_is_refused_its_own_is_served() -> None:
    """InvokeEndpoint's TargetVariant was ignored: a variant the endpoint does not have was
    served anyway, where the platform answers a ValidationError. The variant is the platform
    API's (its annotation); an endpoint it did not make has no named variant."""
    from infermodes.platform.translate import REQUEST_ANNOTATION, VARIANT_ANNOTATION

    header = b"x-amzn-sagemaker-target-variant"

    async def scenario() -> None:
        table, proxy, pool, sent = await answered_with(header, b"Canary")
        assert sent[0]["status"] == 400
        assert (ERROR_TYPE_HEADER, b"ValidationError") in sent[0]["headers"]
        assert json.loads(sent[1]["body"])["message"] == (
            "TargetVariant 'Canary' is not a variant of endpoint sl (it was not made by the "
            "platform API and has no named variant): send its variant's name, or no TargetVariant"
        )
        obj = {"metadata": {"name": "sl", "namespace": "ns",
                            "annotations": {VARIANT_ANNOTATION: "AllTraffic"}},
               "spec": {"mode": "serverless", "model": {"uri": "file:///m"},
                        "serverless": {"maxConcurrency": 5}},
               "status": {"phase": "InService"}}  # fmt: skip
        table.apply_endpoint(obj)
        for asked, times in ((b"Canary", 1), (b"alltraffic", 1), (b"AllTraffic", 2)):
            request = scope()
            request["headers"] += [(header, asked)] * times
            with pytest.raises(ValidationError) as refused:
                await proxy.invoke(table.lookup("sl"), request, receive, "r1")
            assert refused.value.status_code == 400
            assert "its one variant is 'AllTraffic'" in str(refused.value) or times == 2
        assert pool.sent == []
        request = scope()
        request["headers"].append((header, b"AllTraffic"))
        assert (await proxy.invoke(table.lookup("sl"), request, receive, "r1")).status == 200
        # made before the variant had its own annotation: read from the request kept
        kept = {"ProductionVariants": [{"VariantName": "Green"}]}
        obj["metadata"]["annotations"] = {REQUEST_ANNOTATION: json.dumps(kept)}
        table.apply_endpoint(obj)
        request = scope()
        request["headers"].append((header, b"Green"))
        assert (await proxy.invoke(table.lookup("sl"), request, receive, "r1")).status == 200

    asyncio.run(scenario())


@pytest.mark.parametrize("name", [b"content-type", b"x-amzn-sagemaker-custom-attributes"])
def test_a_single_value_header_given_twice_is_the_callers_400_not_the_models_424(
    name: bytes,
) -> None:
    """Forwarded as given, the model server refused it and the gateway answered a 424
    ModelError (counted as the model's); as the async route, a 400 naming the header."""

    async def scenario() -> None:
        times = 1 if name == b"content-type" else 2  # the scope has a Content-Type already
        _, _, pool, sent = await answered_with(name, b"text/csv", times)
        assert sent[0]["status"] == 400
        assert (ERROR_TYPE_HEADER, b"ValidationError") in sent[0]["headers"]
        message = json.loads(sent[1]["body"])["message"]
        assert message == f"{name.decode()} was given 2 times; send it once", message
        assert pool.sent == []

    asyncio.run(scenario())


def test_an_answer_names_the_variant_that_served_it_as_the_platform_does() -> None:
    """boto3's ``invoke_endpoint`` gives the platform's ``x-Amzn-Invoked-Production-Variant``
    as ``InvokedProductionVariant``, which it always sends: code reading it (A/B logging) had
    a KeyError. An endpoint the API did not make has no named variant, and so none is sent;
    nor is an annotation that is not a variant name (it would be a header of anything)."""
    from infermodes.platform.translate import VARIANT_ANNOTATION

    invoked = b"x-amzn-invoked-production-variant"

    async def answer_to(table: Table, proxy: Proxy) -> list[tuple[bytes, bytes]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await proxy(scope(), receive, send)
        assert sent[0]["status"] == 200
        return [(name.lower(), value) for name, value in sent[0]["headers"]]

    async def scenario() -> None:
        table, proxy, _, _ = setup(max_concurrency=5)
        pool = FakePool()
        pool.release.set()
        ready_replica(table, pool)
        assert not [h for h in await answer_to(table, proxy) if h[0] == invoked]
        for variant, header in (("AllTraffic", b"AllTraffic"), ("a\r\nx-evil: 1", None)):
            table.apply_endpoint({
                "metadata": {"name": "sl", "namespace": "ns",
                             "annotations": {VARIANT_ANNOTATION: variant}},
                "spec": {"mode": "serverless", "model": {"uri": "file:///m"},
                         "serverless": {"maxConcurrency": 5}},
                "status": {"phase": "InService"},
            })  # fmt: skip
            found = [value for name, value in await answer_to(table, proxy) if name == invoked]
            assert found == ([header] if header else [])

    asyncio.run(scenario())


def endpoint_series(metrics: GatewayMetrics, name: str) -> list[str]:
    """Every series of the gateway's metrics labelled with endpoint ``name``."""
    families = [getattr(metrics, attribute) for attribute in vars(metrics)]
    return [
        sample.name
        for family in families
        for metric in family.collect()
        for sample in metric.samples
        if sample.labels.get("endpoint") == name
    ]


def test_a_deleted_endpoints_series_go_with_it() -> None:
    """Every endpoint ever served kept its series in /metrics after it was deleted (a
    histogram per status code, gauges, counters): with endpoints made and deleted (CI, the
    platform API), the gateway's memory and every scrape grew without bound, where the labels
    were to be those of the endpoints it serves. Held requests answered 404 at the deletion
    leave none behind either."""

    async def scenario() -> None:
        table, proxy, _, metrics = setup(max_concurrency=5)
        pool = FakePool()
        pool.release.set()
        ready_replica(table, pool)

        async def send(message: dict[str, Any]) -> None:
            pass

        await proxy(scope(), receive, send)
        metrics.upstream_errors.labels("sl", "timeout").inc()
        assert endpoint_series(metrics, "sl")
        table.drop_replica("ns", "sl", "p")
        held = asyncio.create_task(proxy(scope(), receive, send))
        await asyncio.sleep(0)
        assert table.lookup("sl").held == 1
        apply_endpoint(table, "DELETED", sl_object("InService"))
        async with asyncio.timeout(10):
            await held
        assert endpoint_series(metrics, "sl") == []

    asyncio.run(scenario())


def test_a_replica_ready_when_first_seen_gets_its_connection_pool() -> None:
    """A gateway (re)started beside pods already Ready lists them Ready: they joined the
    rotation with no connection pool (made only for a replica to probe), and every invocation
    sent to one was a 500 (AttributeError). One seen Ready at once gets its pool too, before it
    can be chosen."""
    table = setup(4)[0]  # its proxy makes the pools (the table's hooks)
    table.set_replica("ns", "sl", Replica("p", "127.0.0.1", 1, ready=True))
    replica = table.lookup("sl").replicas["p"]
    assert replica.handle is not None and replica.ready
    assert table.lookup("sl").choose() is replica
    replica.handle.close()


class FailingPool(FakePool):
    """A replica whose model server fails every request (an outage)."""

    async def request(self, head: bytes, body: bytes) -> Answer:
        return Answer(500, [], b'{"error": "InternalServerError", "message": "internal error"}')


def test_a_failing_replica_logs_one_line_of_each_kind_per_endpoint_then_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An outage of a model server fails every request alike: each was two warnings in the
    gateway's log, a flood. Now the first request's lines name its id, and the next of each
    kind, an interval later, says how many were left out."""
    table, proxy, _, _ = setup(max_concurrency=5)
    ready_replica(table, FailingPool())

    async def invoke(count: int) -> list[int]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        for _ in range(count):
            await proxy(scope(), receive, send)
        return [message["status"] for message in sent if "status" in message]

    with caplog.at_level(logging.INFO, "infermodes.gateway"):
        assert asyncio.run(invoke(50)) == [502] * 50
        first = [r.getMessage() for r in caplog.records]
        assert len(first) == 2, first
        assert "replica p answered 500" in first[0] and "answered 502" in first[1], first
        for kind in ("answered", "status_5xx"):
            proxy.told("sl", kind).clock = lambda: 1e9  # the interval has passed
        assert asyncio.run(invoke(1)) == [502]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines
    assert all("(and 49 more since the last such line, not logged: requests " in line
               for line in lines[2:]), lines  # fmt: skip
    assert {r.levelno for r in caplog.records} == {logging.WARNING}


@pytest.mark.parametrize(("timed_out", "counted"), [(True, "408"), (False, "499")])
def test_a_body_the_protocol_gave_up_on_is_counted_as_its_408(
    timed_out: bool, counted: str
) -> None:
    """The protocol answers a body too slow to arrive with its own 408 and tells the route the
    client left: it was counted as 499, a client gone, where the server had timed it out."""
    table, proxy, _, metrics = setup(max_concurrency=5)
    ready_replica(table, FakePool())
    request = scope()
    if timed_out:  # what GuardedHttpProtocol._expired leaves in the scope
        request[BODY_TIMED_OUT_KEY] = "request body not received within 60 s"

    async def cut_short() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    asyncio.run(proxy(request, cut_short, send))
    counts = {
        sample.labels["code"]: sample.value
        for metric in metrics.request_duration.collect()
        for sample in metric.samples
        if sample.name.endswith("_count")
    }
    assert counts == {counted: 1.0}
