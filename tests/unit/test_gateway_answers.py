"""Every answer of the gateway is counted, and none is made twice: refusals before routing
(HTTP's own, the checks') and the routes' other than the invocations' (``metrics.ADMISSION``,
``PROTOCOL``, ``ROUTE``), with the id each was answered with in its log line."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from infermodes.gateway.app import Gateway
from infermodes.gateway.table import Table
from infermodes.http import Receive, Scope, Send
from infermodes.settings import GatewaySettings


def gateway() -> Gateway:
    """An open gateway on loopback only: it checks each request's caller first."""
    return Gateway(GatewaySettings(host="127.0.0.1"), Table(), None, CollectorRegistry())


def answers(served: Gateway, stage: str, code: int) -> float | None:
    labels = {"stage": stage, "code": str(code)}
    return served.registry.get_sample_value("infermodes_gateway_answers_total", labels)


def test_refusals_before_routing_and_other_routes_answers_are_counted_by_stage_and_code() -> None:
    """A request refused before routing, or answered by a route other than the invocations'
    (a path none serves, a method it does not take), was in no metric: the invocations' own
    are counted by endpoint, and these were not counted at all."""
    served = gateway()
    client = TestClient(served, base_url="http://127.0.0.1")
    assert client.get("/healthz").status_code == 200
    assert client.get("/nothing-here").status_code == 404
    assert client.post("/healthz").status_code == 405
    foreign = {"host": "rebound.example"}
    assert client.get("/healthz", headers=foreign).status_code == 403
    assert client.post("/endpoints/a/invocations", headers=foreign).status_code == 403
    assert client.post("/endpoints/a/invocations").status_code == 404  # counted by endpoint
    assert answers(served, "route", 200) == 1
    assert answers(served, "route", 404) == 1
    assert answers(served, "route", 405) == 1
    assert answers(served, "admission", 403) == 2
    duration = "infermodes_gateway_request_duration_seconds_count"
    assert served.registry.get_sample_value(duration, {"endpoint": "unknown", "code": "404"}) == 1


def test_a_protocol_refusal_is_counted_and_logged_with_the_id_it_was_answered_with(
    caplog: pytest.LogCaptureFixture,
) -> None:
    served = gateway()
    with caplog.at_level(logging.INFO, "infermodes.gateway"):
        served.refused_by_protocol(400, "malformed HTTP request", "id-1")
        served.refused_by_protocol(431, "request headers over 65536 bytes", "id-2")
    assert answers(served, "protocol", 400) == 1 and answers(served, "protocol", 431) == 1
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["refused a request before routing: 400, malformed HTTP request "
                     "(request id-1)"]  # fmt: skip  # the second is counted for the next line


def test_a_check_that_raises_after_starting_its_answer_is_not_answered_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``answer_bug`` was told nothing of an answer a check before routing had started: it
    sent a second response start, which the server refuses with an error of its own."""
    served = gateway()

    async def broken_guard(scope: Scope, receive: Receive, send: Send) -> Receive | None:
        await send({"type": "http.response.start", "status": 401, "headers": []})
        raise RuntimeError("broken after starting its answer")

    served.guard = broken_guard
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/healthz", "headers": []}
    with caplog.at_level(logging.ERROR, "infermodes.gateway"):
        asyncio.run(served(scope, receive, send))
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [401]
    named = dict(sent[0]["headers"])[b"x-amzn-requestid"].decode()
    assert [r.getMessage() for r in caplog.records] == [f"request {named}: internal error"]
    assert answers(served, "admission", 401) == 1
