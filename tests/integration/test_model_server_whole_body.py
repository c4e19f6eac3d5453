"""The real ``infermodes serve``: a small ``/invocations`` POST with a Content-Length is answered
by the protocol without an ASGI task (``GuardedHttpProtocol``), a chunked one by the ASGI
handler; both must give the same answer, byte for byte, and count the same in the metrics."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AbaloneModel
from tests.support.hostile import Connection, Request, Response
from tests.support.processes import ServerProcess, running_server

ROW = b"1,0,0,0.455,0.365,0.095,0.514,0.2245,0.101,0.15"
CASES = [
    ([(b"Content-Type", b"text/csv")], ROW),
    ([(b"Content-Type", b"text/csv")], b"\n".join([ROW] * 50)),
    ([(b"Content-Type", b"text/csv"), (b"Accept", b"application/json")], ROW + b"\n" + ROW),
    ([(b"Content-Type", b"text/csv"), (b"Accept", b"application/jsonlines")], ROW),
    ([(b"Content-Type", b"application/json")], b"[[" + ROW + b"]]"),
    ([(b"Content-Type", b"text/libsvm")], b"0:1 3:0.455 9:0.15"),
    ([(b"Content-Type", b"text/csv")], b"1,2,x,4,5,6,7,8,9,10"),
    ([(b"Content-Type", b"text/csv")], b"1,2,3"),
    ([(b"Content-Type", b"text/csv")], b""),
    ([(b"Content-Type", b"image/png")], ROW),
    ([(b"Content-Type", b"text/csv"), (b"Accept", b"image/png")], ROW),
]
IDS = [
    "one-row",
    "50-rows",
    "json-out",
    "jsonlines-out",
    "json-in",
    "libsvm-in",
    "bad-value",
    "few-features",
    "empty",
    "unsupported-type",
    "unacceptable",
]


@pytest.fixture(scope="module")
def server(
    abalone_model: AbaloneModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("whole-body") / "server.log"
    args = ["--model", f"file://{abalone_model.tarball}", "--workers", "1"]
    with running_server(args, log) as process:
        yield process
    assert "Traceback" not in process.log, process.log


def answers(server: ServerProcess, requests: list[Request]) -> list[Response]:
    """The answers to ``requests`` pipelined on one connection."""
    with Connection(server.port) as connection:
        connection.send(b"".join(request.wire() for request in requests))
        out = [connection.response() for _ in requests]
    assert all(response is not None for response in out)
    return [response for response in out if response is not None]


def durations_count(server: ServerProcess) -> dict[str, float]:
    """``/invocations`` requests counted by the duration histogram, by status code."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text):
        for sample in family.samples:
            if (
                sample.name == "infermodes_http_request_duration_seconds_count"
                and sample.labels["route"] == "/invocations"
            ):
                counts[sample.labels["status_code"]] = sample.value
    return counts


@pytest.mark.parametrize(("headers", "body"), CASES, ids=IDS)
def test_with_a_length_or_chunked_the_answer_is_the_same(
    server: ServerProcess, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    by_length = Request("POST", "/invocations", headers, body)
    chunked = Request("POST", "/invocations", headers, body, transfer_encoding=b"chunked")
    first, second, third = (answers(server, [r])[0] for r in (by_length, chunked, by_length))
    # an error found in the headers closes the ASGI path's connection: the body is unread
    second.headers.pop(b"connection", None)
    assert first == second == third
    assert first.status in (200, 400, 406, 415)


def test_each_answer_is_counted_once_by_its_status(server: ServerProcess) -> None:
    before = durations_count(server)
    good = Request("POST", "/invocations", [(b"Content-Type", b"text/csv")], ROW)
    bad = Request("POST", "/invocations", [(b"Content-Type", b"text/csv")], b"1,2")
    statuses = [r.status for r in answers(server, [good, bad, good, good])]
    after = durations_count(server)
    assert statuses == [200, 400, 200, 200]
    assert after.get("200", 0) - before.get("200", 0) == 3
    assert after.get("400", 0) - before.get("400", 0) == 1


def test_http_1_0_is_answered_and_closed(server: ServerProcess) -> None:
    wire = b"POST /invocations HTTP/1.0\r\nContent-Type: text/csv\r\nContent-Length: %d\r\n\r\n"
    with Connection(server.port) as connection:
        connection.send(wire % len(ROW) + ROW)
        response = connection.response()
        assert response is not None and response.status == 200
        assert response.headers[b"connection"] == b"close"
        assert connection.closed_by_server()
