"""The accepting route in-process, with a recording publisher: headers, storage of inline
bodies, 202 only after the publish returned, and 503 when it did not."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from infermodes.errors import BrokerUnavailable, InputNotAllowed, InvalidInput
from infermodes.gateway.async_accept import (
    create_app,
    header_seconds,
    inference_id_of,
    input_location_of,
)
from infermodes.queueing.messages import parse_request
from infermodes.settings import AsyncApiSettings, AsyncEndpoint


class RecordingPublisher:
    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.sent: list[tuple[str, str, bytes]] = []

    def submit(self, endpoint: str, message_id: str, body: bytes) -> None:
        if self.down:
            raise BrokerUnavailable("message broker unreachable (refused); retry later")
        self.sent.append((endpoint, message_id, body))


def client_for(
    tmp_path: Path, publisher: RecordingPublisher, allowed: tuple[str, ...] = ()
) -> TestClient:
    settings = AsyncApiSettings(
        endpoints={"ep": AsyncEndpoint.under(f"file://{tmp_path}")},
        max_inline_bytes=100,
        allowed_input_prefixes=list(allowed),
    )
    return TestClient(create_app(settings, publisher, registry=CollectorRegistry()))


def test_inline_body_is_stored_then_queued_then_202(tmp_path: Path) -> None:
    publisher = RecordingPublisher()
    client = client_for(tmp_path, publisher)
    response = client.post(
        "/endpoints/ep/async-invocations",
        content=b"1,2,3\n",
        headers={
            "content-type": "text/csv",
            "accept": "application/json",
            "X-Amzn-SageMaker-Custom-Attributes": "a=b",
            "X-Amzn-SageMaker-RequestTTLSeconds": "120",
            "X-Amzn-SageMaker-InvocationTimeoutSeconds": "60",
        },
    )
    assert response.status_code == 202, response.text
    body = response.json()
    inference_id = body["InferenceId"]
    assert body["OutputLocation"] == f"file://{tmp_path}/output/{inference_id}.out"
    assert body["FailureLocation"] == f"file://{tmp_path}/failure/{inference_id}.error"
    assert response.headers["X-Amzn-SageMaker-OutputLocation"] == body["OutputLocation"]
    assert response.headers["X-Amzn-SageMaker-FailureLocation"] == body["FailureLocation"]
    assert (tmp_path / "input" / f"{inference_id}.in").read_bytes() == b"1,2,3\n"
    [(endpoint, message_id, wire)] = publisher.sent
    message = parse_request(wire)
    assert (endpoint, message_id, message.inference_id) == ("ep", inference_id, inference_id)
    assert message.input_location == f"file://{tmp_path}/input/{inference_id}.in"
    assert (message.accept, message.custom_attributes) == ("application/json", "a=b")
    assert message.expires_at - message.accepted_at == 120
    assert message.invocation_timeout_seconds == 60


def test_by_reference_stores_nothing(tmp_path: Path) -> None:
    publisher = RecordingPublisher()
    response = client_for(tmp_path, publisher).post(
        "/endpoints/ep/async-invocations",
        headers={"X-Amzn-SageMaker-InputLocation": "s3://bucket/key.csv"},
    )
    assert response.status_code == 202
    assert parse_request(publisher.sent[0][2]).input_location == "s3://bucket/key.csv"
    assert parse_request(publisher.sent[0][2]).invocation_timeout_seconds == 900
    assert not (tmp_path / "input").exists()


def test_broker_down_is_503_and_says_so(tmp_path: Path) -> None:
    response = client_for(tmp_path, RecordingPublisher(down=True)).post(
        "/endpoints/ep/async-invocations", content=b"1"
    )
    assert response.status_code == 503
    assert "broker unreachable" in response.json()["message"]


def test_inline_bodies_are_capped(tmp_path: Path) -> None:
    response = client_for(tmp_path, RecordingPublisher()).post(
        "/endpoints/ep/async-invocations", content=b"1," * 100
    )
    assert response.status_code == 413


def test_metrics_count_requests_by_status(tmp_path: Path) -> None:
    client = client_for(tmp_path, RecordingPublisher())
    client.post("/endpoints/ep/async-invocations", content=b"1")
    client.post("/endpoints/nope/async-invocations", content=b"1")
    text = client.get("/metrics").text
    assert 'infermodes_async_requests_total{endpoint="ep",status_code="202"} 1.0' in text
    assert 'infermodes_async_requests_total{endpoint="unknown",status_code="404"} 1.0' in text


@pytest.mark.parametrize(("value", "result"), [(None, 900), ("1", 1), ("3600", 3600), (" 60 ", 60)])
def test_header_seconds(value: str | None, result: int) -> None:
    assert header_seconds(value, "T", 900, 3600) == result


@pytest.mark.parametrize("value", ["0", "3601", "-1", "1.5", "abc", ""])
def test_header_seconds_refuses(value: str) -> None:
    with pytest.raises(InvalidInput, match="T must be a whole number of seconds from 1 to 3600"):
        header_seconds(value, "T", 900, 3600)


def test_inference_ids() -> None:
    assert inference_id_of("req-1.a_b") == "req-1.a_b"
    assert len(inference_id_of(None)) == 36
    for bad in ("", "a/b", "../x", "x" * 65, "-start"):
        with pytest.raises(InvalidInput):
            inference_id_of(bad)


OWN = "file:///srv/endpoints/ep/input"


@pytest.mark.parametrize(
    ("location", "normalised"),
    [
        ("s3://data/in/x.csv", "s3://data/in/x.csv"),
        ("file:///data/in/x.csv", "file:///data/in/x.csv"),
        ("file:///data/in/sub/../x.csv", "file:///data/in/x.csv"),
    ],
)
def test_allowed_input_locations(location: str, normalised: str) -> None:
    assert input_location_of(location, ["s3://data/in/", "file:///data/in"], OWN) == normalised
    assert input_location_of(location, [], "file:///data") == normalised


@pytest.mark.parametrize(
    "location", ["file:///data/in/../../etc/passwd", "file:///data/inbox/x", "s3://other/in/x"]
)
def test_locations_outside_the_allowed_prefixes_are_refused(location: str) -> None:
    with pytest.raises(InputNotAllowed, match="not under an allowed prefix"):
        input_location_of(location, ["s3://data/in", "file:///data/in"], OWN)


@pytest.mark.parametrize(
    ("location", "allowed"),
    [
        ("s3://anywhere/x.csv", True),
        (f"{OWN}/x.csv", True),
        ("file:///etc/passwd", False),
        (f"{OWN}/../../etc/passwd", False),
    ],
)
def test_without_prefixes_file_inputs_stay_under_the_endpoint(location: str, allowed: bool) -> None:
    if allowed:
        assert input_location_of(location, [], OWN)
    else:
        with pytest.raises(InputNotAllowed, match="add one with --allow-input-prefix"):
            input_location_of(location, [], OWN)


def test_a_refused_location_is_403_and_nothing_is_queued(tmp_path: Path) -> None:
    publisher = RecordingPublisher()
    response = client_for(tmp_path, publisher, ("s3://data/in",)).post(
        "/endpoints/ep/async-invocations",
        headers={"X-Amzn-SageMaker-InputLocation": "file:///etc/passwd"},
    )
    assert response.status_code == 403
    assert "file:///etc/passwd is not under an allowed prefix: s3://data/in" in response.text
    assert not publisher.sent
