"""The async accept route as ``infermodes up`` mounts it on its gateway."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from infermodes.gateway.app import Runner
from infermodes.local.demand import LocalDemandSink
from infermodes.local.manifests import NAMESPACE
from infermodes.local.supervisor import Supervisor
from infermodes.local.up import GATEWAY_ID, UpGatewaySettings, gateway_options, mount_async_route
from infermodes.queueing.connect import embedded_url
from infermodes.queueing.embedded import EmbeddedQueue
from infermodes.settings import AsyncEndpoint
from tests.unit.test_async_api import RecordingPublisher
from tests.unit.test_gateway_table import endpoint_object


def test_an_endpoint_deleted_under_up_takes_the_routes_log_throttle_with_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """up mounted the route without the table's ``forgotten``: a deleted endpoint's throttle
    entry stayed for ever (a slow leak over create/delete cycles), and the count it held was
    never told. Deleted from up's table, the endpoint's entry goes, its count told."""
    queue = EmbeddedQueue(tmp_path / "queue.db")
    supervisor = Supervisor(tmp_path, queue, embedded_url(tmp_path / "queue.db"), 0)
    settings = UpGatewaySettings(**gateway_options(8080, "info"))  # type: ignore[arg-type]
    registry = CollectorRegistry()
    runner = Runner(settings, supervisor, LocalDemandSink(supervisor), GATEWAY_ID, registry,
                    namespaced=False)  # fmt: skip
    layouts = {"ep": AsyncEndpoint.under(f"file://{tmp_path}/ep")}
    mount_async_route(runner, layouts, RecordingPublisher(down=True), registry)
    runner.table.apply_endpoint(endpoint_object("ep", mode="async", namespace=NAMESPACE))
    client = TestClient(runner.app, base_url="http://127.0.0.1")  # up answers loopback only
    with caplog.at_level(logging.WARNING, "infermodes.gateway"):
        answers = [client.post("/endpoints/ep/async-invocations", content=b"1") for _ in range(3)]
        runner.table.remove_endpoint(NAMESPACE, "ep")
    assert {answer.status_code for answer in answers} == {503}
    named = [answer.headers["x-amzn-requestid"] for answer in answers]
    lines = [r.getMessage() for r in caplog.records if "answered 503" in r.getMessage()]
    assert len(lines) == 2, lines  # the first, then the two held, told as the entry goes
    assert f"requests {named[1]} (first) to {named[2]} (last)" in lines[1], lines
