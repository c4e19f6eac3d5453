"""``infermodes gateway`` (static endpoints) in front of real ``infermodes serve`` processes."""

from __future__ import annotations

import concurrent.futures
import contextlib
import gzip
import http.server
import json
import os
import re
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infermodes.settings import MIB
from tests.conftest import AbaloneModel
from tests.support.async_plane import Process, running_api
from tests.support.batch import FAULTS
from tests.support.gateway import (
    GatewayProcess,
    answer_head,
    running_gateway,
    scraped,
    static_endpoint,
)
from tests.support.processes import (
    ServerProcess,
    free_port,
    running_server,
    start_server,
    stop_process,
    wait_until,
)


def to_csv(rows: np.ndarray) -> bytes:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in rows).encode()


def predictions(response: httpx.Response) -> np.ndarray:
    return np.array(response.text.split(), dtype=np.float32)


def server_args(abalone_model: AbaloneModel) -> list[str]:
    return ["--model", f"file://{abalone_model.tarball}", "--workers", "1"]


@pytest.fixture(scope="module")
def server(abalone_model: AbaloneModel, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:  # fmt: skip
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with running_server(server_args(abalone_model), log) as process:
        yield process


@pytest.fixture(scope="module")
def gateway(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[GatewayProcess]:  # fmt: skip
    address = server.url.removeprefix("http://")
    endpoints = [
        static_endpoint("realtime", "realtime", [address]),
        static_endpoint("serverless", "serverless", [address], maxConcurrency=5),
        static_endpoint("creating", "serverless", [address], phase="Creating"),
        static_endpoint("nowhere", "serverless", [f"127.0.0.1:{free_port()}"], maxConcurrency=1),
        static_endpoint("twice", "realtime", [address], namespace="team-a"),
        static_endpoint("twice", "realtime", [address], namespace="team-b"),
    ]
    with running_gateway(endpoints, tmp_path_factory.mktemp("gateway")) as process:
        yield process


def test_predictions_through_the_gateway_equal_the_servers(
    gateway: GatewayProcess, server: ServerProcess, abalone_model: AbaloneModel
) -> None:
    rows = abalone_model.test_rows
    body = to_csv(rows)
    direct = httpx.post(f"{server.url}/invocations", content=body,
                        headers={"content-type": "text/csv"})  # fmt: skip
    for name in ("realtime", "serverless"):
        through = gateway.invoke(name, body)
        assert through.status_code == 200, through.text
        assert through.headers["content-type"] == direct.headers["content-type"]
        assert through.content == direct.content
    np.testing.assert_array_equal(
        predictions(direct), abalone_model.booster().inplace_predict(rows)
    )
    instances = json.dumps({"instances": rows[:3].tolist()}).encode()
    accept = {"accept": "application/json"}
    as_json = gateway.invoke("realtime", instances, "application/json", headers=accept)
    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"] == "application/json"
    got = [p["score"] for p in as_json.json()["predictions"]]
    np.testing.assert_allclose(got, predictions(direct)[:3], rtol=1e-6)


def expect_error(response: httpx.Response, status: int, code: str, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["x-amzn-errortype"] == code
    body = response.json()
    assert body["error"] == code
    for word in words:
        assert word in body["message"], body
    return body


def test_bad_inputs_get_the_documented_4xx_and_the_gateway_stays_up(
    gateway: GatewayProcess, abalone_model: AbaloneModel
) -> None:
    expect_error(gateway.invoke("missing", b"1"), 404, "ValidationError", "endpoint missing")
    expect_error(gateway.invoke("serverless", b"1" * (4 * MIB + 1)), 413, "ValidationError",
                 str(4 * MIB))  # fmt: skip
    expect_error(gateway.invoke("realtime", b"1" * (6 * MIB + 1)), 413, "ValidationError")
    malformed = expect_error(gateway.invoke("serverless", b"1,2,x\n"), 424, "ModelError")
    assert malformed["OriginalStatusCode"] == 400
    assert "row 1" in malformed["OriginalMessage"]
    assert malformed["OriginalMessage"] in malformed["message"]
    unsupported = expect_error(gateway.invoke("realtime", b"\x00", "image/png"), 424, "ModelError")
    assert unsupported["OriginalStatusCode"] == 415
    assert "image/png" in unsupported["OriginalMessage"]
    expect_error(gateway.invoke("creating", b"1"), 400, "ValidationError", "Creating")
    expect_error(gateway.invoke("twice", b"1"), 409, "ValidationError", "team-a and team-b")
    wrong_method = httpx.get(f"{gateway.url}/endpoints/realtime/invocations")
    assert wrong_method.status_code == 405
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200
    row = to_csv(abalone_model.test_rows[:1])
    assert gateway.invoke("serverless", row).status_code == 200
    assert gateway.proc.poll() is None


def test_a_gzip_body_gets_the_model_servers_415_through_the_gateway(
    gateway: GatewayProcess, server: ServerProcess, abalone_model: AbaloneModel
) -> None:
    """Not read as CSV by a replica that was never told of the coding (a 424 then)."""
    coded = {"content-type": "text/csv", "content-encoding": "gzip"}
    body = gzip.compress(to_csv(abalone_model.test_rows[:1]))
    direct = httpx.post(f"{server.url}/invocations", content=body, headers=coded)
    assert direct.status_code == 415, direct.text
    for name in ("realtime", "serverless"):
        through = gateway.invoke(name, body, headers=coded)
        assert through.json() == direct.json()
        expect_error(through, 415, "UnsupportedContentType", "Content-Encoding 'gzip'")


def test_held_requests_over_max_concurrency_get_429_at_once_and_the_rest_are_forwarded_when_a_server_starts(  # noqa: E501
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """50 concurrent requests for a serverless endpoint (maxConcurrency 10) with no replica up:
    10 are held, 40 get 429 without waiting; when the server starts, the 10 are answered."""
    port = free_port()
    endpoint = static_endpoint("cold", "serverless", [f"127.0.0.1:{port}"], maxConcurrency=10)
    rows = abalone_model.test_rows[:5]
    expected = abalone_model.booster().inplace_predict(rows)
    with running_gateway([endpoint], tmp_path) as gateway:
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            futures = [pool.submit(gateway.invoke, "cold", to_csv(rows)) for _ in range(50)]
            wait_until(
                lambda: (
                    sum(f.done() for f in futures) == 40
                    and gateway.metric("infermodes_gateway_requests_held", endpoint="cold") == 10
                ),
                60,
                "40 answered and 10 held requests",
            )
            for future in futures:
                if future.done():  # answered at once, while the other 10 wait
                    expect_error(future.result(), 429, "ThrottlingException", "maxConcurrency")
            server = start_server(server_args(abalone_model), tmp_path / "server.log", port=port)
            try:
                responses = [f.result(timeout=120) for f in futures]
            finally:
                stop_process(server.proc)
        statuses = [r.status_code for r in responses]
        assert statuses.count(429) == 40 and statuses.count(200) == 10, statuses
        for response in responses:
            if response.status_code == 200:
                np.testing.assert_array_equal(predictions(response), expected)
        metric = gateway.metric
        assert metric("infermodes_gateway_throttled_total", endpoint="cold") == 40
        assert metric("infermodes_gateway_held_for_cold_start_total", endpoint="cold") == 10
        assert metric("infermodes_gateway_cold_start_duration_seconds_count", endpoint="cold") == 1


def test_a_replica_stopped_while_requests_are_in_flight_loses_none(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    rows = abalone_model.test_rows[:300]
    body = to_csv(rows)
    expected = abalone_model.booster().inplace_predict(rows)
    args = server_args(abalone_model)
    with running_server(args, tmp_path / "a.log") as first, \
            running_server(args, tmp_path / "b.log") as second:  # fmt: skip
        replicas = [s.url.removeprefix("http://") for s in (first, second)]
        with running_gateway([static_endpoint("pair", "realtime", replicas)], tmp_path) as gateway:
            results: list[httpx.Response] = []
            stop = threading.Event()

            def client() -> None:
                with httpx.Client(timeout=60) as http:
                    for _ in range(2000):  # bounded; stopped long before
                        if stop.is_set():
                            return
                        url = f"{gateway.url}/endpoints/pair/invocations"
                        csv = {"content-type": "text/csv"}
                        results.append(http.post(url, content=body, headers=csv))

            threads = [threading.Thread(target=client) for _ in range(6)]
            for thread in threads:
                thread.start()
            try:
                wait_until(lambda: len(results) >= 30, 60, "traffic through both replicas")
                stop_process(first.proc)  # SIGTERM while requests are in flight
                count = len(results)
                wait_until(lambda: len(results) >= count + 30, 60, "traffic after the stop")
            finally:
                stop.set()
                for thread in threads:
                    thread.join(60)
            assert len(results) >= 60
            for response in results:
                assert response.status_code == 200, response.text
                np.testing.assert_array_equal(predictions(response), expected)
            assert gateway.metric("infermodes_gateway_upstream_errors_total",
                                  endpoint="pair", outcome="failed") == 0  # fmt: skip


class FakeReplica(http.server.BaseHTTPRequestHandler):
    """A replica whose /ping is fine but whose invocations fail (500) or hang (sleep)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        if self.server.hang:  # type: ignore[attr-defined]
            self.server.release.wait(30)  # type: ignore[attr-defined]
            return
        body = b'{"error": "Boom", "message": "the model crashed"}'
        self.send_response(500)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@contextlib.contextmanager
def fake_replica(hang: bool) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeReplica)
    server.hang = hang  # type: ignore[attr-defined]
    server.release = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.release.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_failures_and_timeouts_get_502_504_and_503_with_clear_bodies(tmp_path: Path) -> None:
    with fake_replica(hang=False) as failing, fake_replica(hang=True) as hanging:
        endpoints = [
            static_endpoint("failing", "realtime", [failing]),
            static_endpoint("hanging", "realtime", [hanging]),
            static_endpoint("never", "serverless", [f"127.0.0.1:{free_port()}"]),
        ]
        args = ["--invocation-timeout-seconds", "2"]
        with running_gateway(endpoints, tmp_path, args) as gateway:
            answer = gateway.invoke("failing", b"1")
            failed = expect_error(answer, 502, "InternalDependencyException", "the model crashed")
            assert failed["OriginalStatusCode"] == 500
            request_id = answer.headers["x-amzn-requestid"]  # the log line a ticket leads to
            assert [line for line in gateway.log.splitlines()
                    if request_id in line and "answered 500" in line], gateway.log  # fmt: skip
            timed_out = gateway.invoke("hanging", b"1")
            expect_error(timed_out, 504, "ModelInvocationTimeout", "invocation timeout of 2 s")
            unready = gateway.invoke("never", b"1")
            expect_error(unready, 503, "ServiceUnavailable",
                         "no replica of endpoint never became ready within 2 s")  # fmt: skip
            for answered in (timed_out, unready):  # the gateway's own 5xx: logged, named
                named = answered.headers["x-amzn-requestid"]
                status = str(answered.status_code)
                lines = gateway.log.splitlines()
                assert [line for line in lines if named in line and status in line], gateway.log
            assert gateway.metric("infermodes_gateway_upstream_errors_total",
                                  endpoint="hanging", outcome="timeout") == 1  # fmt: skip


def test_sigterm_drains_a_held_request_before_the_gateway_exits(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    port = free_port()
    rows = abalone_model.test_rows[:2]
    endpoint = static_endpoint("late", "serverless", [f"127.0.0.1:{port}"])
    with running_gateway([endpoint], tmp_path) as gateway, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:  # fmt: skip
        pending = pool.submit(gateway.invoke, "late", to_csv(rows))
        wait_until(lambda: gateway.metric("infermodes_gateway_requests_held", endpoint="late") == 1,
                   30, "the request to be held")  # fmt: skip
        os.killpg(gateway.proc.pid, signal.SIGTERM)
        wait_until(lambda: not gateway.ready(), 30, "the gateway to stop accepting")
        assert gateway.proc.poll() is None and not pending.done()  # its answer is still owed
        server = start_server(server_args(abalone_model), tmp_path / "server.log", port=port)
        try:
            response = pending.result(timeout=120)
            assert response.status_code == 200, response.text
            np.testing.assert_array_equal(
                predictions(response), abalone_model.booster().inplace_predict(rows)
            )
            assert gateway.proc.wait(60) == 0
        finally:
            stop_process(server.proc)


def test_boto3s_sagemaker_runtime_client_calls_the_gateway_unchanged(
    gateway: GatewayProcess, server: ServerProcess, abalone_model: AbaloneModel
) -> None:
    import boto3

    client = boto3.client("sagemaker-runtime", endpoint_url=gateway.url, region_name="us-east-1",
                          aws_access_key_id="unused", aws_secret_access_key="unused")  # fmt: skip
    body = to_csv(abalone_model.test_rows[:4])
    direct = httpx.post(
        f"{server.url}/invocations", content=body, headers={"content-type": "text/csv"}
    )
    answer = client.invoke_endpoint(EndpointName="serverless", Body=body, ContentType="text/csv",
                                    Accept="text/csv")  # fmt: skip
    assert answer["Body"].read() == direct.content
    assert answer["ContentType"] == "text/csv"
    with pytest.raises(client.exceptions.ValidationError) as missing:
        client.invoke_endpoint(EndpointName="missing", Body=b"1", ContentType="text/csv")
    assert "endpoint missing not found" in missing.value.response["Error"]["Message"]
    with pytest.raises(client.exceptions.ModelError) as failed:
        client.invoke_endpoint(EndpointName="realtime", Body=b"1,2,x", ContentType="text/csv")
    assert failed.value.response["OriginalStatusCode"] == 400
    assert "row 1" in failed.value.response["OriginalMessage"]


def test_every_answer_of_the_invocation_routes_names_its_request_as_the_platform_does(
    gateway: GatewayProcess, abalone_model: AbaloneModel
) -> None:
    """boto3 reads ``x-amzn-RequestId`` into ``ResponseMetadata.RequestId`` (what a support
    ticket quotes): the gateway's invocation routes sent none, success or error."""
    import boto3
    from botocore.exceptions import ClientError

    client = boto3.client("sagemaker-runtime", endpoint_url=gateway.url, region_name="us-east-1",
                          aws_access_key_id="unused", aws_secret_access_key="unused")  # fmt: skip
    answer = client.invoke_endpoint(EndpointName="realtime", ContentType="text/csv",
                                    Body=to_csv(abalone_model.test_rows[:1]))  # fmt: skip
    named = [answer["ResponseMetadata"]["RequestId"]]
    calls = [
        lambda: client.invoke_endpoint(EndpointName="missing", Body=b"1", ContentType="text/csv"),
        lambda: client.invoke_endpoint(
            EndpointName="realtime", Body=b"1,x", ContentType="text/csv"
        ),
        lambda: client.invoke_endpoint_async(EndpointName="realtime", InputLocation="s3://b/k"),
        # a DEL in a header: boto3 sends it (ASCII), HTTP refuses it before any route
        lambda: client.invoke_endpoint_async(
            EndpointName="realtime", InputLocation="s3://b/k", CustomAttributes="a\x7fb"
        ),
    ]
    for call in calls:
        with pytest.raises(ClientError) as caught:
            call()
        named.append(caught.value.response["ResponseMetadata"].get("RequestId", ""))
    assert all(uuid.UUID(request_id) for request_id in named), named
    assert len(set(named)) == len(named), named
    # the refusal HTTP made carries the platform's code too: boto3 raised one coded "400"
    assert caught.value.response["Error"]["Code"] == "ValidationError", caught.value.response
    wrong_method = httpx.get(f"{gateway.url}/endpoints/realtime/invocations")
    assert uuid.UUID(wrong_method.headers["x-amzn-requestid"])


HELD_NOW = "infermodes_gateway_requests_held"


def test_a_held_client_that_gives_up_frees_its_place(gateway: GatewayProcess) -> None:
    """maxConcurrency 1 and no replica: a client that leaves while held must not keep the
    endpoint throttled until the invocation timeout."""
    for attempt in (1, 2):
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{gateway.url}/endpoints/nowhere/invocations", content=b"1",
                       headers={"content-type": "text/csv"}, timeout=1.0)  # fmt: skip
        # well before the gateway's 30 s invocation timeout would free it anyway
        wait_until(lambda: gateway.metric(HELD_NOW, endpoint="nowhere") == 0, 10, "a free place")
        held = gateway.metric("infermodes_gateway_held_for_cold_start_total", endpoint="nowhere")
        assert held == attempt  # held again, not throttled by the one that left
    assert gateway.metric("infermodes_gateway_throttled_total", endpoint="nowhere") == 0


def test_a_client_that_half_closes_after_pipelining_gets_every_answer(
    gateway: GatewayProcess, abalone_model: AbaloneModel
) -> None:
    """``shutdown(SHUT_WR)`` after its requests: unlike a client that left (above), it still
    reads, and each proxied request is answered (only the first one was, then the EOF closed)."""
    body = to_csv(abalone_model.test_rows[:1])
    head = (b"POST /endpoints/realtime/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: text/csv\r\nContent-Length: %d\r\n\r\n")  # fmt: skip
    invocation = head % len(body) + body
    healthz = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(invocation + healthz + invocation)
        conn.shutdown(socket.SHUT_WR)
        answers = b""
        while chunk := conn.recv(65536):  # the server closes after the last answer
            answers += chunk
    statuses = re.findall(rb"HTTP/1\.1 ([2-5]\d\d) ", answers)  # a 1xx is skipped, as clients do
    assert statuses == [b"200"] * 3, answers


def test_a_client_that_waits_for_100_continue_gets_it_and_then_its_answer(
    gateway: GatewayProcess, abalone_model: AbaloneModel
) -> None:
    body = to_csv(abalone_model.test_rows[:1])
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(b"POST /endpoints/realtime/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: text/csv\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))  # fmt: skip
        assert conn.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n")
        conn.sendall(body)
        answer = b""
        for _ in range(100):  # bounded: the answer is a few hundred bytes
            chunk = conn.recv(4096)
            answer += chunk
            if not chunk or (b"\r\n\r\n" in answer and answer.endswith(b"\n")):
                break
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_boto3_gets_a_named_error_for_an_operation_the_gateway_does_not_serve(
    gateway: GatewayProcess,
) -> None:
    """No broker (no async route) and no platform API here: boto3 raised a ClientError coded
    "404" for both, which names nothing a caller can catch; the platform names it."""
    import boto3
    from botocore.exceptions import ClientError

    keys = {"aws_access_key_id": "unused", "aws_secret_access_key": "unused"}
    runtime = boto3.client("sagemaker-runtime", endpoint_url=gateway.url,
                           region_name="us-east-1", **keys)  # fmt: skip
    control = boto3.client("sagemaker", endpoint_url=gateway.url, region_name="us-east-1", **keys)
    calls = [
        lambda: runtime.invoke_endpoint_async(EndpointName="realtime", InputLocation="s3://b/k"),
        lambda: control.list_endpoints(),
    ]
    for call in calls:
        with pytest.raises(ClientError) as caught:
            call()
        error = caught.value.response["Error"]
        assert error["Code"] == "UnknownOperationException", error
        assert "no route /" in error["Message"]
    for wrong_method in (httpx.put(f"{gateway.url}/healthz"),
                         httpx.get(f"{gateway.url}/endpoints/realtime/invocations")):  # fmt: skip
        assert wrong_method.status_code == 405
        assert wrong_method.headers["x-amzn-errortype"] == "UnknownOperationException"
        assert wrong_method.json()["error"] == "MethodNotAllowed"
        assert wrong_method.json()["__type"] == "UnknownOperationException"


def test_a_request_over_max_concurrency_is_refused_before_its_body_is_read(
    gateway: GatewayProcess,
) -> None:
    """maxConcurrency 1, its place taken by a held request: the next one gets its 429 without
    the gateway reading (or, with Expect: 100-continue, asking for) a body of megabytes."""
    host, port = gateway.url.removeprefix("http://").split(":")
    request = (b"POST /endpoints/nowhere/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Type: text/csv\r\n")  # fmt: skip
    with socket.create_connection((host, int(port)), timeout=30) as held:
        held.sendall(request + b"Content-Length: 1\r\n\r\n1")
        wait_until(lambda: gateway.metric(HELD_NOW, endpoint="nowhere") == 1, 30, "a held request")
        with socket.create_connection((host, int(port)), timeout=30) as large:
            expecting = b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (4 * MIB)
            large.sendall(request + expecting)
            head = answer_head(large)
            assert head.startswith(b"HTTP/1.1 429 "), head
            assert b"connection: close" in head.lower()
    wait_until(lambda: gateway.metric(HELD_NOW, endpoint="nowhere") == 0, 30, "a free place")


def test_a_json_body_not_in_utf8_is_refused_naming_its_encoding(
    gateway: GatewayProcess, abalone_model: AbaloneModel
) -> None:
    """RFC 8259: JSON between systems is UTF-8. A UTF-16 body was decoded by guess and scored,
    as no CSV or libsvm body would be; a UTF-8 byte order mark may be skipped, and is."""
    import boto3

    client = boto3.client("sagemaker-runtime", endpoint_url=gateway.url, region_name="us-east-1",
                          aws_access_key_id="unused", aws_secret_access_key="unused")  # fmt: skip
    document = json.dumps({"instances": abalone_model.test_rows[:1].tolist()})
    for encoding, named in (("utf-16", "UTF-16"), ("utf-16-le", "UTF-16-LE"),
                            ("utf-32", "UTF-32")):  # fmt: skip
        with pytest.raises(client.exceptions.ModelError) as refused:
            client.invoke_endpoint(EndpointName="realtime", Body=document.encode(encoding),
                                   ContentType="application/json")  # fmt: skip
        assert refused.value.response["OriginalStatusCode"] == 400
        assert f"JSON must be UTF-8 (RFC 8259); the body is {named}" in (
            refused.value.response["OriginalMessage"])  # fmt: skip
    marked = client.invoke_endpoint(EndpointName="realtime", ContentType="application/json",
                                    Body=b"\xef\xbb\xbf" + document.encode())  # fmt: skip
    expected = abalone_model.booster().inplace_predict(abalone_model.test_rows[:1])
    scored = np.array(marked["Body"].read().split(), dtype=np.float32)  # CSV, the default
    np.testing.assert_allclose(scored, expected, rtol=1e-6)


def test_custom_attributes_over_the_platforms_limit_are_refused_as_the_async_route_does(
    gateway: GatewayProcess, abalone_model: AbaloneModel
) -> None:
    """boto3 checks no maximum length: 2,000 characters were forwarded and answered here,
    where the platform (and this gateway's async route) refuses more than 1,024."""
    import boto3

    client = boto3.client("sagemaker-runtime", endpoint_url=gateway.url, region_name="us-east-1",
                          aws_access_key_id="unused", aws_secret_access_key="unused")  # fmt: skip
    row = to_csv(abalone_model.test_rows[:1])
    with pytest.raises(client.exceptions.ValidationError) as refused:
        client.invoke_endpoint(EndpointName="realtime", Body=row, ContentType="text/csv",
                               CustomAttributes="a" * 1025)  # fmt: skip
    assert "X-Amzn-SageMaker-Custom-Attributes has 1025 characters; at most 1024" in (
        refused.value.response["Error"]["Message"])  # fmt: skip
    answered = client.invoke_endpoint(EndpointName="realtime", Body=row, ContentType="text/csv",
                                      CustomAttributes="a" * 1024)  # fmt: skip
    assert answered["Body"].read().strip()


def raw_answer(gateway: GatewayProcess | Process, request: bytes) -> bytes:
    """The whole answer to raw ``request`` bytes: a refusal ends with the server's EOF."""
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def botocore_error(answer: bytes, protocol: str) -> dict[str, Any]:
    """What botocore's parser of ``protocol`` makes of a raw error answer, as boto3 would."""
    from botocore.parsers import create_parser

    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines)}  # fmt: skip
    response = {"status_code": int(status_line.split()[1]), "headers": headers, "body": body}
    parsed: dict[str, Any] = create_parser(protocol).parse(response, None)
    return parsed


def test_the_protocols_own_refusals_carry_the_platforms_codes_for_boto3(
    gateway: GatewayProcess,
) -> None:
    """A head too malformed (400) or too large (431) for the app, or too slow (408): boto3's
    clients, REST-JSON (``sagemaker-runtime``) and JSON 1.1 (``sagemaker``), raised an error
    coded "400", "431" or "408", which names nothing a caller can catch or retry."""
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as slow:
        slow.sendall(b"POST /endpoints/realtime/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        invocation = b"POST /endpoints/realtime/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        malformed = invocation + b"Content Type: text/csv\r\n\r\n"
        large = invocation + b"X-Large: " + b"a" * (64 * 1024) + b"\r\n\r\n"
        answers = [raw_answer(gateway, malformed), raw_answer(gateway, large)]
        answers.append(b"".join(iter(lambda: slow.recv(65536), b"")))  # its header timeout
    expected = [(400, "ValidationError"), (431, "ValidationError"),
                (408, "RequestTimeoutException")]  # fmt: skip
    for answer, (status, code) in zip(answers, expected, strict=True):
        for protocol in ("rest-json", "json"):
            parsed = botocore_error(answer, protocol)
            assert parsed["ResponseMetadata"]["HTTPStatusCode"] == status, answer
            assert parsed["Error"]["Code"] == code, (protocol, answer)
            assert uuid.UUID(parsed["ResponseMetadata"]["RequestId"])
        message = botocore_error(answer, "rest-json")["Error"]["Message"]
        assert message and "request" in message, answer


def test_every_answer_before_a_route_is_counted_and_its_line_names_its_id(
    tmp_path: Path,
) -> None:
    """Refusals made before any route (HTTP's own 400 for a malformed head or Content-Length
    and 431 for one too large; the caller check's 403) were in no metric, and HTTP's own were
    logged (at debug only) without the id they were answered with; nor was a route's other
    than the invocations' (a 404 for a path none serves) counted."""
    endpoint = static_endpoint("realtime", "realtime", [f"127.0.0.1:{free_port()}"])
    with running_gateway([endpoint], tmp_path) as gateway:
        invocation = b"POST /endpoints/realtime/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        refused = [
            raw_answer(gateway, invocation + b"Content Type: text/csv\r\n\r\n"),
            raw_answer(gateway, invocation + b"Content-Length: 1x\r\n\r\n1"),
            raw_answer(gateway, invocation + b"X-Large: " + b"a" * (64 * 1024) + b"\r\n\r\n"),
        ]
        assert [answer.split(b" ", 2)[1] for answer in refused] == [b"400", b"400", b"431"]
        named = [botocore_error(answer, "rest-json")["ResponseMetadata"]["RequestId"]
                 for answer in refused]  # fmt: skip
        foreign = gateway.invoke("realtime", b"1", headers={"host": "rebound.example"})
        assert foreign.status_code == 403, foreign.text
        assert httpx.get(f"{gateway.url}/nothing-here", timeout=30).status_code == 404
        counted = {(stage, code): gateway.metric("infermodes_gateway_answers_total",
                                                 stage=stage, code=code)
                   for stage, code in [("protocol", "400"), ("protocol", "431"),
                                       ("admission", "403"), ("route", "404")]}  # fmt: skip
        log = gateway.log
    assert counted == {("protocol", "400"): 2, ("protocol", "431"): 1,
                       ("admission", "403"): 1, ("route", "404"): 1}, counted  # fmt: skip
    lines = [line for line in log.splitlines() if "refused a request before routing" in line]
    assert len(lines) == 1 and f"400, malformed HTTP request (request {named[0]})" in lines[0], (
        log  # the next two are counted, for the next such line (at most one a minute)
    )


def test_a_check_that_fails_after_starting_its_answer_is_not_answered_twice(
    tmp_path: Path,
) -> None:
    """A check before routing that raised after it had started its answer (here the caller's
    refusal, ``faults/``) was answered again by ``answer_bug``: a second response start,
    which uvicorn refused with an error of its own, logged without the request's id."""
    secret = "refusal detail 4c1d"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")])),
           "INFERMODES_TEST_BROKEN_REFUSAL": secret}  # fmt: skip
    endpoint = static_endpoint("realtime", "realtime", [f"127.0.0.1:{free_port()}"])
    with running_gateway([endpoint], tmp_path, env=env) as gateway:
        answer = raw_answer(gateway, b"GET /metrics HTTP/1.1\r\nHost: rebound.example\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 403 ") and answer.count(b"HTTP/1.1") == 1, answer
        named = re.search(rb"x-amzn-requestid: ([0-9a-f-]+)", answer)
        assert named is not None, answer
        line = f"request {named[1].decode()}: internal error"
        wait_until(lambda: line in gateway.log, 10, "the failure's log line")
        stop_process(gateway.proc)
        log = gateway.log
    assert log.count(f"RuntimeError: {secret}") == 1, log
    assert "Exception in ASGI application" not in log, log


def test_sigterm_ends_a_lingering_close_at_once(tmp_path: Path) -> None:
    """A request whose chunked body is malformed gets its 400 while the client may still be
    sending: the connection lingers (``http._Lingering``), and the gateway's drain waited for
    it to end on its own. Here its bound is an hour, in the gateway process itself: an exit
    within the wait below is the drain ending it, not the bound."""
    program = [sys.executable, "-c", "import infermodes.http as h; h.LINGER_SECONDS = 3600.0; "
               "from infermodes.cli import main; main()"]  # fmt: skip
    endpoint = static_endpoint("realtime", "realtime", [f"127.0.0.1:{free_port()}"])
    with running_gateway([endpoint], tmp_path, program=program) as gateway:
        host, port = gateway.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=60) as conn:
            conn.sendall(b"POST /endpoints/realtime/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"zz\r\n1,2\r\n")  # fmt: skip
            assert answer_head(conn).startswith(b"HTTP/1.1 400 "), gateway.log
            os.killpg(gateway.proc.pid, signal.SIGTERM)
            assert gateway.proc.wait(60) == 0, gateway.log  # the client still holds it open
            with contextlib.suppress(ConnectionResetError):
                while conn.recv(65536):  # the rest of the answer, then the connection's end
                    pass


def test_a_bug_is_answered_in_the_platforms_shape_and_logged_once_with_the_request_id(
    tmp_path: Path,
) -> None:
    """An unexpected error in a handler (here a dependency that raises, ``faults/``) was a
    plain-text 500 on the invocations route, and a 500 without the platform's code elsewhere,
    logged by uvicorn without the request's id."""
    secret = "internal detail 5f1c"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")])),
           "INFERMODES_TEST_BROKEN_GATEWAY": secret}  # fmt: skip
    endpoint = static_endpoint("realtime", "realtime", [f"127.0.0.1:{free_port()}"])
    with running_gateway([endpoint], tmp_path, env=env) as gateway:
        answers = [gateway.invoke("realtime", b"1,2"), httpx.get(f"{gateway.url}/metrics")]
        for answer in answers:
            assert answer.status_code == 500, answer.text
            assert answer.headers["content-type"] == "application/json", answer.text
            assert answer.headers["x-amzn-errortype"] == "InternalFailure", answer.headers
            body = answer.json()
            assert body["__type"] == "InternalFailure", body
            assert "log" in body["message"] and secret not in answer.text, body
            named = answer.headers["x-amzn-requestid"]
            assert uuid.UUID(named)
            wait_until(lambda named=named: named in gateway.log, 10, "the failure's log line")
        stop_process(gateway.proc)
        log = gateway.log
    for answer in answers:
        lines = [line for line in log.splitlines() if answer.headers["x-amzn-requestid"] in line]
        assert len(lines) == 1, log
    assert log.count(f"RuntimeError: {secret}") == len(answers), log


def expect_internal_failure(answer: httpx.Response, secret: str) -> str:
    """``answer`` is the platform's 500 for a bug, naming nothing of it: its request's id."""
    assert answer.status_code == 500, answer.text
    assert answer.headers["content-type"] == "application/json", answer.text
    assert answer.headers["x-amzn-errortype"] == "InternalFailure", answer.headers
    body = answer.json()
    assert body["__type"] == "InternalFailure" and "log" in body["message"], body
    assert secret not in answer.text, body
    named = answer.headers["x-amzn-requestid"]
    assert uuid.UUID(named) and answer.headers.get_list("x-amzn-requestid") == [named]
    return named


def test_a_bug_before_any_route_is_answered_in_the_platforms_shape_and_logged_with_the_id(
    tmp_path: Path,
) -> None:
    """An unexpected error in a check made before routing (here of the caller, ``faults/``)
    reached uvicorn: a plain-text 500 without the platform's code or a request id, and a log
    line without the id. Both the invocations and the other routes are checked so."""
    secret = "admission detail 7a2e"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")])),
           "INFERMODES_TEST_BROKEN_ADMISSION": secret}  # fmt: skip
    endpoint = static_endpoint("realtime", "realtime", [f"127.0.0.1:{free_port()}"])
    broken = {"x-test-broken": "1"}
    with running_gateway([endpoint], tmp_path, env=env) as gateway:
        answers = [
            httpx.post(f"{gateway.url}/endpoints/realtime/invocations", content=b"1,2",
                       headers={**broken, "content-type": "text/csv"}, timeout=30),
            httpx.get(f"{gateway.url}/metrics", headers=broken, timeout=30),
        ]  # fmt: skip
        named = [expect_internal_failure(answer, secret) for answer in answers]
        for one in named:
            wait_until(lambda one=one: one in gateway.log, 10, "the failure's log line")
        stop_process(gateway.proc)
        log = gateway.log
    for one in named:
        assert len([line for line in log.splitlines() if one in line]) == 1, log
    assert log.count(f"RuntimeError: {secret}") == len(answers), log


def test_a_bug_in_async_api_is_answered_in_the_platforms_shape_and_logged_with_the_id(
    tmp_path: Path,
) -> None:
    """``infermodes async-api``'s own 500s lacked the platform's code in the body
    (``__type``), and a bug in a route other than its own (here ``/metrics``, ``faults/``)
    was Starlette's 500 without the platform's code, logged by uvicorn without the id."""
    secret = "internal detail 93b0"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")])),
           "INFERMODES_TEST_BROKEN_GATEWAY": secret}  # fmt: skip
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"  # /metrics needs no broker
    with running_api(None, {"ep": f"file://{tmp_path}/ep"}, tmp_path / "api.log", env,  # type: ignore[arg-type]  # the broker is not used
                     broker_url=closed) as api:  # fmt: skip
        named = expect_internal_failure(httpx.get(f"{api.url}/metrics", timeout=30), secret)
        wait_until(lambda: named in api.log, 10, "the failure's log line")
        stop_process(api.proc)
        log = api.log
    assert len([line for line in log.splitlines() if named in line]) == 1, log
    assert log.count(f"RuntimeError: {secret}") == 1, log


def test_async_apis_protocol_refusals_are_counted_and_logged_with_the_ids_answered(
    tmp_path: Path,
) -> None:
    """``infermodes async-api`` answered HTTP's own refusals (a malformed head 400, headers
    over 64 KiB 431) in the platform's codes, but counted them in no metric and logged only a
    malformed head's, at debug and without the id it answered with: the gateway's
    ``ProtocolRefusals`` is told of them now."""
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"  # refused before any publish
    with running_api(None, {"ep": f"file://{tmp_path}/ep"}, tmp_path / "api.log",  # type: ignore[arg-type]  # the broker is not used
                     broker_url=closed) as api:  # fmt: skip
        accept = b"POST /endpoints/ep/async-invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        refused = [
            raw_answer(api, accept + b"Content Type: text/csv\r\n\r\n"),
            raw_answer(api, accept + b"X-Large: " + b"a" * (64 * 1024) + b"\r\n\r\n"),
        ]
        assert [answer.split(b" ", 2)[1] for answer in refused] == [b"400", b"431"], refused
        named = [botocore_error(answer, "rest-json")["ResponseMetadata"]["RequestId"]
                 for answer in refused]  # fmt: skip
        counted = {code: scraped(api.url, "infermodes_async_api_answers_total",
                                 stage="protocol", code=code)
                   for code in ("400", "431")}  # fmt: skip
        stop_process(api.proc)
        log = api.log
    assert counted == {"400": 1, "431": 1}, counted
    lines = [line for line in log.splitlines() if "refused a request before routing" in line]
    assert len(lines) == 1 and f"400, malformed HTTP request (request {named[0]})" in lines[0], (
        log  # the next is counted, for the next such line (at most one a minute)
    )


def route_answers(url: str) -> dict[str, float]:
    """``infermodes_async_api_answers_total{stage="route"}`` by code, from one scrape of
    ``url``'s ``/metrics`` (counted itself only after it was answered)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {
        sample.labels["code"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "infermodes_async_api_answers_total" and sample.labels["stage"] == "route"
    }


def test_async_apis_other_answers_are_counted_at_the_route_stage(tmp_path: Path) -> None:
    """``infermodes async-api`` counted no answer of ``/ping``, ``/metrics``, a path it does
    not serve (404) or a wrong method (405), where the gateway counts its routes' at the
    ``route`` stage: now it counts them so too, and its accept route's answers only by
    endpoint (here a 503: the broker is down)."""
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    with running_api(None, {"ep": f"file://{tmp_path}/ep"}, tmp_path / "api.log",  # type: ignore[arg-type]  # the broker is not used
                     broker_url=closed) as api:  # fmt: skip
        before = route_answers(api.url)  # the start's /ping polls
        statuses = [
            httpx.get(f"{api.url}/ping", timeout=30).status_code,
            httpx.get(f"{api.url}/nowhere", timeout=30).status_code,
            httpx.delete(f"{api.url}/ping", timeout=30).status_code,
            httpx.get(f"{api.url}/endpoints/ep/async-invocations", timeout=30).status_code,
            httpx.post(f"{api.url}/endpoints/ep/async-invocations", content=b"1",
                       headers={"content-type": "text/csv"}, timeout=30).status_code,
        ]  # fmt: skip
        assert statuses == [200, 404, 405, 405, 503], statuses
        after = route_answers(api.url)
        by_endpoint = scraped(api.url, "infermodes_async_requests_total",
                              endpoint="ep", status_code="503")  # fmt: skip
    counted = {code: after.get(code, 0) - before.get(code, 0) for code in after.keys() | before}
    assert counted == {"200": 2, "404": 1, "405": 2}, counted  # /ping and the first scrape
    assert by_endpoint == 1


def test_metrics_on_a_side_port_are_not_served_on_the_gateways_own(tmp_path: Path) -> None:
    """Anyone who reached the gateway's port read its /metrics, unsigned: every endpoint's
    name and traffic. With ``INFERMODES_GATEWAY_METRICS_PORT`` they are on that port alone
    (the chart's, for the scraper); the gateway's own answers the platform's 404."""
    side = free_port()
    endpoint = static_endpoint("realtime", "realtime", [f"127.0.0.1:{free_port()}"])
    env = {"INFERMODES_GATEWAY_METRICS_PORT": str(side)}
    with running_gateway([endpoint], tmp_path, env=env) as gateway:
        assert gateway.invoke("nothing", b"1,2").status_code == 404
        front = httpx.get(f"{gateway.url}/metrics", timeout=30)
        assert front.status_code == 404, front.text
        assert front.headers["x-amzn-errortype"] == "UnknownOperationException", front.headers
        assert "infermodes_gateway" not in front.text
        scraped = httpx.get(f"http://127.0.0.1:{side}/metrics", timeout=30)
        assert scraped.status_code == 200, scraped.text
        counted = '_request_duration_seconds_count{code="404",endpoint="unknown"} 1.0'
        assert f"infermodes_gateway{counted}" in scraped.text, scraped.text
    (tmp_path / "busy").mkdir()
    with socket.create_server(("127.0.0.1", 0)) as busy:  # a side port it cannot have
        env = {"INFERMODES_GATEWAY_METRICS_PORT": str(busy.getsockname()[1])}
        with pytest.raises(RuntimeError, match="cannot serve /metrics on 127.0.0.1 port"), \
             running_gateway([endpoint], tmp_path / "busy", env=env):  # fmt: skip
            pass


def test_sigterm_ends_a_lingering_close_that_starts_during_the_drain_at_once(
    tmp_path: Path,
) -> None:
    """A connection that starts lingering after the drain began (a request in flight whose
    chunked body turns out malformed once the gateway is stopping) was left to its bound, the
    drain waiting for it. Bound and drain timeout are an hour here: an exit within the wait
    below is the drain ending it."""
    program = [sys.executable, "-c", "import infermodes.http as h; h.LINGER_SECONDS = 3600.0; "
               "from infermodes.cli import main; main()"]  # fmt: skip
    endpoint = static_endpoint("realtime", "realtime", [f"127.0.0.1:{free_port()}"])
    env = {"INFERMODES_GATEWAY_DRAIN_TIMEOUT_SECONDS": "3600"}
    with running_gateway([endpoint], tmp_path, program=program, env=env) as gateway:
        host, port = gateway.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=60) as conn:
            conn.sendall(b"POST /endpoints/realtime/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"3\r\n1,2\r\n")  # fmt: skip
            os.killpg(gateway.proc.pid, signal.SIGTERM)
            wait_until(lambda: "Waiting for connections to close" in gateway.log, 30,
                       "the drain")  # fmt: skip
            conn.sendall(b"zz\r\n1,2\r\n")  # malformed: refused, then the connection lingers
            assert answer_head(conn).startswith(b"HTTP/1.1 400 "), gateway.log
            assert gateway.proc.wait(60) == 0, gateway.log  # the client still holds it open
