"""The invocations route's accounting, in process with a fake replica: throttling at the share
of maxConcurrency, holding until a replica is ready, the demand of a cold start, retries only
for requests that never reached a replica."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from infermodes.gateway.errors import ClientClosedRequest, ThrottlingException
from infermodes.gateway.proxy import Proxy
from infermodes.gateway.table import Endpoint, Replica, Table
from infermodes.gateway.upstream import Answer, NotSent
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
        held = [asyncio.create_task(proxy.invoke(endpoint, scope(), receive)) for _ in range(2)]
        await asyncio.sleep(0)
        assert (endpoint.active, endpoint.held, endpoint.in_flight) == (2, 2, 0)
        assert demand.cold_starts == ["sl"]  # once, for the first held request
        with pytest.raises(ThrottlingException):
            await proxy.invoke(endpoint, scope(), receive)
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


def test_a_request_that_never_reached_a_replica_goes_to_another() -> None:
    async def scenario() -> None:
        table, proxy, _, metrics = setup(max_concurrency=10)
        refused = ready_replica(table, FakePool([NotSent("refused", refused=True)]), "a")
        working = FakePool()
        working.release.set()
        ready_replica(table, working, "b")
        endpoint = table.lookup("sl")
        for _ in range(2):  # ties rotate: one of the two requests tries the refusing replica
            answer = await proxy.invoke(endpoint, scope(), receive)
            assert answer.status == 200
        assert not refused.ready  # out of the rotation until a probe says otherwise
        assert metrics.upstream_errors.labels("sl", "not_sent")._value.get() == 1
        proxy.prober.stop()

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

        held = asyncio.create_task(proxy.invoke(endpoint, scope(), leaving))
        await asyncio.sleep(0)
        with pytest.raises(ThrottlingException):  # the one place is taken
            await proxy.invoke(endpoint, scope(), receive)
        left.set()
        with pytest.raises(ClientClosedRequest):
            await held
        assert (endpoint.active, endpoint.held, endpoint.waiters) == (0, 0, [])
        pool = FakePool()
        pool.release.set()
        ready_replica(table, pool)
        assert (await proxy.invoke(endpoint, scope(), receive)).status == 200

    asyncio.run(scenario())
