"""Reading an endpoint again before an invocation is refused for the table's view of it
(``gateway/reread.py``): which reads may start (per name, overall), coalescing, a failed read
leaving the table's answer, the table's part (which refusals may be the watch's lag, a watch
event older than a read, a read that raced a deletion) and the route's use of it. The real
watch lagging a real API server: ``tests/e2e/test_gateway_lag.py``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from infermodes.endpoints.spec import is_endpoint_name
from infermodes.gateway.app import async_accept_router
from infermodes.gateway.reread import ReadBudget, Rereads
from infermodes.gateway.table import Table
from infermodes.settings import GatewaySettings
from tests.unit.test_gateway_proxy import FakePool, ready_replica, receive, scope, setup


def test_a_name_is_read_at_most_once_per_interval() -> None:
    budget = ReadBudget(interval=1.0, max_reads=10)
    assert budget.allow("sl", 100.0)
    assert not budget.allow("sl", 100.5)
    assert budget.allow("other", 100.5)
    assert budget.allow("sl", 101.0)


def test_all_names_together_are_read_at_most_max_reads_times_per_interval() -> None:
    budget = ReadBudget(interval=1.0, max_reads=3)
    allowed = [budget.allow(f"made-up-{i}", 100.0 + i / 1000) for i in range(50)]
    assert allowed.count(True) == 3
    assert len(budget.started) == 3  # what it keeps stays bounded by the flood's allowed reads
    assert budget.allow("made-up-50", 101.0005)  # the first one's second is over


@pytest.mark.parametrize(
    ("name", "read"),
    [("abalone", True), ("a-1", True), ("../../secrets/x", False), ("a/b", False),
     ("-a", False), ("a" * 51, False), ("", False), ("a.b", False)],
)  # fmt: skip
def test_only_names_an_endpoint_can_have_are_read(name: str, read: bool) -> None:
    assert is_endpoint_name(name) is read


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class HeldRead:
    """A read that returns once released, counting the reads started."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, name: str) -> None:
        self.names.append(name)
        await self.release.wait()


def test_requests_during_a_read_share_it_and_those_just_after_start_none() -> None:
    async def run() -> None:
        read, clock = HeldRead(), FakeClock()
        rereads = Rereads(read, ReadBudget(interval=1.0, max_reads=10), clock=clock)
        waiting = [asyncio.create_task(rereads("sl", f"r{i}")) for i in range(20)]
        for _ in range(3):
            await asyncio.sleep(0)
        assert read.names == ["sl"] and not any(task.done() for task in waiting)
        read.release.set()
        await asyncio.gather(*waiting)
        clock.now += 0.5
        await rereads("sl", "late")  # within the interval: the table answers as the read left it
        assert read.names == ["sl"]
        clock.now += 0.5
        await rereads("sl", "next")
        assert read.names == ["sl", "sl"]

    asyncio.run(run())


def test_a_client_that_leaves_does_not_end_the_read_the_others_wait_for() -> None:
    async def run() -> None:
        read = HeldRead()
        rereads = Rereads(read)
        first = asyncio.create_task(rereads("sl", "r1"))
        second = asyncio.create_task(rereads("sl", "r2"))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        read.release.set()
        await second
        assert read.names == ["sl"] and not rereads.reading

    asyncio.run(run())


def test_a_failed_read_is_logged_once_naming_the_request_and_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def refused(name: str) -> None:
        raise PermissionError("403: inferenceendpoints is forbidden")

    async def run() -> None:
        clock = FakeClock()
        rereads = Rereads(refused, clock=clock)
        for i in range(5):
            await rereads("sl", f"request-{i}")
            clock.now += 1.0

    with caplog.at_level(logging.WARNING, logger="infermodes.gateway"):
        asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines  # the next ones are counted for the next line
    assert "request-0" in lines[0] and "403: inferenceendpoints is forbidden" in lines[0]


def test_a_read_that_does_not_answer_is_given_up_and_the_table_answers() -> None:
    async def run() -> None:
        read = HeldRead()  # never released
        rereads = Rereads(read, timeout=0.01)
        await rereads("sl", "r1")
        assert read.names == ["sl"] and not rereads.reading

    asyncio.run(run())


def rt_object(name: str, phase: str, version: str = "", namespace: str = "ns") -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace}
    if version:
        meta["resourceVersion"] = version
    spec = {"mode": "realtime", "model": {"uri": "file:///m"}, "realtime": {}}
    return {"metadata": meta, "spec": spec, "status": {"phase": phase, "reason": phase}}


def test_a_refusal_may_be_the_watchs_lag_for_a_phase_or_an_unknown_name_only() -> None:
    table = Table()
    assert table.behind("new")  # its ADDED event may not have come yet
    table.apply_endpoint(rt_object("rt", "Creating"))
    assert table.behind("rt")
    table.apply_endpoint(rt_object("rt", "InService"))
    assert not table.behind("rt")
    table.apply_endpoint(rt_object("rt", "Failed"))
    assert table.behind("rt")  # an update may have mended it
    table.apply_endpoint({"metadata": {"name": "as", "namespace": "ns"},
                          "spec": {"mode": "async", "model": {"uri": "file:///m"},
                                   "async": {"outputPath": "file:///o/"}},
                          "status": {"phase": "Creating"}})  # fmt: skip
    assert not table.behind("as")  # the wrong route: no status changes that
    table.apply_endpoint(rt_object("twice", "Creating", namespace="a"))
    table.apply_endpoint(rt_object("twice", "Creating", namespace="b"))
    assert not table.behind("twice")  # 409 whatever a read says


def test_a_watch_event_older_than_a_read_does_not_take_the_table_back() -> None:
    table = Table()
    table.apply_endpoint(rt_object("rt", "Creating", "100"))
    table.apply_read(rt_object("rt", "InService", "105"), table.removals)
    table.apply_endpoint(rt_object("rt", "Creating", "103"))  # the lagging watch catches up
    assert table.lookup("rt").phase is not None and table.lookup("rt").phase.value == "InService"
    table.apply_endpoint(rt_object("rt", "Updating", "107"))
    assert table.lookup("rt").phase.value == "Updating"


def test_a_read_that_raced_a_deletion_does_not_bring_the_endpoint_back() -> None:
    table = Table()
    table.apply_endpoint(rt_object("rt", "Creating", "100"))
    before = table.removals  # the read starts
    table.remove_endpoint("ns", "rt")  # the watch's DELETED comes before the read's answer
    table.apply_read(rt_object("rt", "InService", "101"), before)
    assert not table.known and table.behind("rt")
    table.apply_endpoint(rt_object("rt", "Creating", "90"))  # made again: a new object
    assert table.lookup("rt").phase is not None


async def answer(proxy: Any, path: str) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    request = scope()
    request["path"] = path
    await proxy(request, receive, send)
    return sent[0]["status"], sent[1]["body"]


def test_an_invocation_the_table_would_refuse_is_served_once_the_read_says_in_service() -> None:
    async def run() -> None:
        table, proxy, _, _ = setup(max_concurrency=5)
        stale = table.lookup("sl")
        pool = FakePool()
        pool.release.set()
        ready_replica(table, pool)
        now_in_service = {"metadata": {"name": "sl", "namespace": "ns"},
                          "spec": {"mode": "serverless", "model": {"uri": "file:///m"},
                                   "serverless": {"maxConcurrency": 5}},
                          "status": {"phase": "InService"}}  # fmt: skip
        stale.phase = None  # as the watch left it: not reconciled yet
        reads: list[str] = []

        async def read(name: str) -> None:
            reads.append(name)
            table.apply_read(now_in_service, table.removals)

        proxy.rereads = Rereads(read)
        status, body = await answer(proxy, "/endpoints/SL/invocations")
        assert (status, body, reads) == (200, b"9.5\n", ["sl"])
        assert await answer(proxy, "/endpoints/sl/invocations") == (200, b"9.5\n")
        assert reads == ["sl"]  # served: nothing to read again

    asyncio.run(run())


def test_an_invocation_whose_read_fails_gets_the_tables_4xx_not_a_5xx() -> None:
    async def run() -> None:
        table, proxy, _, _ = setup(max_concurrency=5)
        table.lookup("sl").phase = None

        async def down(name: str) -> None:
            raise ConnectionRefusedError("the API server is down")

        proxy.rereads = Rereads(down)
        status, body = await answer(proxy, "/endpoints/sl/invocations")
        assert status == 400 and b"not reconciled yet" in body, body
        status, body = await answer(proxy, "/endpoints/nope/invocations")
        assert status == 404 and b"nope" in body, body

    asyncio.run(run())


def test_the_async_route_reads_a_name_no_namespace_has_before_its_404_and_no_other(
    tmp_path: Path,
) -> None:
    table = Table()
    table.apply_endpoint(rt_object("rt", "InService"))  # another mode: 400 without a read
    spec = {"mode": "async", "model": {"uri": "file:///m"},
            "async": {"outputPath": f"file://{tmp_path}/out"}}  # fmt: skip
    fresh = {"metadata": {"name": "fresh", "namespace": "ns"}, "spec": spec}
    reads: list[str] = []

    async def read(name: str) -> None:
        reads.append(name)
        if name == "fresh":  # the API has it; the watch has not brought it yet
            table.apply_read(fresh, table.removals)

    closing: list[Callable[[], None]] = []
    app = FastAPI()
    app.include_router(async_accept_router(GatewaySettings(), f"sqlite:///{tmp_path}/queue.db",
                                           table, CollectorRegistry(), closing, None,
                                           Rereads(read)))  # fmt: skip
    try:
        client = TestClient(app)
        answers = {name: client.post(f"/endpoints/{name}/async-invocations", content=b"1,2",
                                     headers={"content-type": "text/csv"})
                   for name in ("fresh", "rt", "nope")}  # fmt: skip
    finally:
        for close in closing:
            close()
    assert answers["fresh"].status_code == 202, answers["fresh"].text
    assert answers["rt"].status_code == 400 and answers["nope"].status_code == 404
    assert reads == ["fresh", "nope"]
