"""The accepting route in-process, with a recording publisher: headers, storage of inline
bodies, 202 only after the publish returned, 503 (leaving nothing stored) when it did not, and
the inference id as the caller's idempotency key."""

import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.datastructures import Headers

from infermodes.errors import BrokerUnavailable, InputNotAllowed, InvalidInput
from infermodes.gateway.async_accept import (
    create_app,
    create_router,
    header_location,
    header_seconds,
    header_text,
    inference_id_of,
    input_location_of,
)
from infermodes.gateway.errors import INTERNAL_FAILURE_BODY
from infermodes.gateway.table import Table
from infermodes.http import RequestNaming
from infermodes.metrics import ROUTE, AsyncApiMetrics
from infermodes.queueing.messages import parse_request
from infermodes.settings import AsyncApiSettings, AsyncEndpoint
from infermodes.storage import Storage


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
    assert message.claim_location == f"file://{tmp_path}/input/{inference_id}.result"
    assert (message.accept, message.custom_attributes) == ("application/json", "a=b")
    assert message.expires_at - message.accepted_at == 120
    assert message.invocation_timeout_seconds == 60


def test_by_reference_stores_only_the_request_record(tmp_path: Path) -> None:
    publisher = RecordingPublisher()
    response = client_for(tmp_path, publisher).post(
        "/endpoints/ep/async-invocations",
        headers={
            "X-Amzn-SageMaker-InputLocation": "s3://bucket/key.csv",
            "X-Amzn-SageMaker-Inference-Id": "ref-1",
        },
    )
    assert response.status_code == 202
    message = parse_request(publisher.sent[0][2])
    assert message.input_location == "s3://bucket/key.csv"
    assert (message.inline_input, message.input_root) == (False, None)
    assert message.claim_location == f"file://{tmp_path}/input/ref-1.result"
    assert message.invocation_timeout_seconds == 900
    assert [p.name for p in (tmp_path / "input").iterdir()] == ["ref-1.request"]


def test_broker_down_is_503_says_so_and_leaves_nothing(tmp_path: Path) -> None:
    response = client_for(tmp_path, RecordingPublisher(down=True)).post(
        "/endpoints/ep/async-invocations", content=b"1"
    )
    assert response.status_code == 503
    assert "broker unreachable" in response.json()["message"]
    assert list((tmp_path / "input").iterdir()) == []


def test_boto3s_content_type_and_accept_headers_win(tmp_path: Path) -> None:
    """boto3 sends InvokeEndpointAsync's ContentType and Accept as X-Amzn-SageMaker-* headers
    (its own Content-Type, if any, says nothing of the input); plain ones serve curl."""
    publisher = RecordingPublisher()
    response = client_for(tmp_path, publisher).post(
        "/endpoints/ep/async-invocations",
        content=b'{"instances": [[1, 2]]}',
        headers={"content-type": "application/octet-stream", "accept": "text/csv",
                 "X-Amzn-SageMaker-Content-Type": "application/json",
                 "X-Amzn-SageMaker-Accept": "application/jsonlines"},
    )  # fmt: skip
    assert response.status_code == 202, response.text
    message = parse_request(publisher.sent[0][2])
    assert (message.content_type, message.accept) == ("application/json", "application/jsonlines")
    refused = client_for(tmp_path, publisher).post(
        "/endpoints/ep/async-invocations",
        content=b"x",
        headers={"content-type": "text/csv", "X-Amzn-SageMaker-Content-Type": "image/png"},
    )
    assert refused.status_code == 415, refused.text
    assert refused.headers["x-amzn-errortype"] == "ValidationError"


@pytest.mark.parametrize(
    "header", ["X-Amzn-SageMaker-S3OutputPathExtension", "X-Amzn-SageMaker-Filename"]
)
def test_output_naming_headers_are_refused_not_ignored(tmp_path: Path, header: str) -> None:
    publisher = RecordingPublisher()
    response = client_for(tmp_path, publisher).post(
        "/endpoints/ep/async-invocations", content=b"1", headers={header: "x"}
    )
    assert response.status_code == 400
    assert f"{header} is not supported" in response.json()["message"]
    assert publisher.sent == []


def test_refusals_carry_the_platforms_code_for_boto3(tmp_path: Path) -> None:
    """boto3 takes an error's code from ``x-amzn-ErrorType`` (else it is the HTTP status);
    the body's ``error`` keeps ours, which names the problem."""
    client = client_for(tmp_path, RecordingPublisher())
    refused = {"X-Amzn-SageMaker-InputLocation": "file:///etc/passwd"}
    outside = client.post("/endpoints/ep/async-invocations", headers=refused)
    assert (outside.status_code, outside.headers["x-amzn-errortype"]) == (403, "ValidationError")
    assert outside.json()["error"] == "InputNotAllowed"
    unknown = client.post("/endpoints/nope/async-invocations", content=b"1")
    assert (unknown.status_code, unknown.headers["x-amzn-errortype"]) == (404, "ValidationError")
    down = client_for(tmp_path, RecordingPublisher(down=True))
    busy = down.post("/endpoints/ep/async-invocations", content=b"1")
    assert (busy.status_code, busy.headers["x-amzn-errortype"]) == (503, "ServiceUnavailable")


def post(client: TestClient, body: bytes, **headers: str) -> tuple[int, dict[str, str]]:
    response = client.post("/endpoints/ep/async-invocations", content=body, headers=headers)
    return response.status_code, response.json()


ID = "X-Amzn-SageMaker-Inference-Id"


def test_a_repeated_request_gets_the_same_answer_and_a_different_one_a_409(
    tmp_path: Path,
) -> None:
    publisher = RecordingPublisher()
    client = client_for(tmp_path, publisher)
    first = post(client, b"1,2,3\n", **{ID: "same"})
    assert first[0] == 202
    assert post(client, b"1,2,3\n", **{ID: "same"}) == first  # in flight: queued again
    assert [message_id for _, message_id, _ in publisher.sent] == ["same", "same"]
    assert parse_request(publisher.sent[0][2]) == parse_request(publisher.sent[1][2])
    status, body = post(client, b"4,5,6\n", **{ID: "same"})
    assert status == 409
    assert "Inference-Id same was already used for a different request" in body["message"]
    assert (tmp_path / "input/same.in").read_bytes() == b"1,2,3\n"
    for other in ({"accept": "application/json"}, {"X-Amzn-SageMaker-RequestTTLSeconds": "60"}):
        assert post(client, b"1,2,3\n", **{ID: "same"}, **other)[0] == 409
    (tmp_path / "output").mkdir()
    (tmp_path / "output/same.out").write_text("9\n")
    assert post(client, b"1,2,3\n", **{ID: "same"}) == first  # done: not queued again
    assert len(publisher.sent) == 2


def test_an_id_whose_record_is_gone_but_whose_result_stays_is_refused(tmp_path: Path) -> None:
    client = client_for(tmp_path, RecordingPublisher())
    (tmp_path / "failure").mkdir()
    (tmp_path / "failure/old.error").write_text("{}")
    status, body = post(client, b"1\n", **{ID: "old"})
    assert status == 409
    assert "already has a result at file://" in body["message"]
    assert list((tmp_path / "input").iterdir()) == []


def test_an_id_refused_by_the_broker_is_free_again(tmp_path: Path) -> None:
    publisher = RecordingPublisher(down=True)
    client = client_for(tmp_path, publisher)
    assert post(client, b"1\n", **{ID: "again"})[0] == 503
    publisher.down = False
    assert post(client, b"2\n", **{ID: "again"})[0] == 202  # a different body: no conflict
    assert (tmp_path / "input/again.in").read_bytes() == b"2\n"


def test_an_unreadable_record_is_a_409_not_a_500(tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    (tmp_path / "input/torn.request").write_text("{not json")
    status, body = post(client_for(tmp_path, RecordingPublisher()), b"1\n", **{ID: "torn"})
    assert status == 409 and "record is unreadable" in body["message"]


def test_header_values_are_utf8(tmp_path: Path) -> None:
    publisher = RecordingPublisher()
    client = client_for(tmp_path, publisher)
    attributes = "café=naïve ✓"
    response = client.post(
        "/endpoints/ep/async-invocations",
        content=b"1\n",
        headers=[(b"X-Amzn-SageMaker-Custom-Attributes", attributes.encode())],
    )
    assert response.status_code == 202
    assert parse_request(publisher.sent[0][2]).custom_attributes == attributes
    latin1 = Headers(raw=[(b"x-amzn-sagemaker-custom-attributes", "café".encode("latin-1"))])
    with pytest.raises(InvalidInput, match="Custom-Attributes is not valid UTF-8"):
        header_text(latin1, "X-Amzn-SageMaker-Custom-Attributes")


def test_custom_attributes_over_1024_characters_are_invalid_input_as_every_header_refusal(
    tmp_path: Path,
) -> None:
    """They alone answered "error": "ValidationError" where this route's other header
    refusals say InvalidInput; boto3's code (x-amzn-ErrorType) stays ValidationError."""
    publisher = RecordingPublisher()
    response = client_for(tmp_path, publisher).post(
        "/endpoints/ep/async-invocations",
        content=b"1\n",
        headers={"X-Amzn-SageMaker-Custom-Attributes": "a" * 1025},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "InvalidInput"
    assert "Custom-Attributes has 1025 characters; at most 1024" in response.json()["message"]
    assert response.headers["x-amzn-errortype"] == "ValidationError"
    assert not publisher.sent


def test_locations_outside_latin1_are_percent_encoded_in_the_headers(tmp_path: Path) -> None:
    """An endpoint's paths may hold any character; a header (read as Latin-1, as boto3 does)
    cannot carry most of them: the request was queued and then answered 500 "not accepted",
    and each retry queued it again. The body keeps every location as it is."""
    publisher = RecordingPublisher()
    settings = AsyncApiSettings(endpoints={"ep": AsyncEndpoint.under(f"file://{tmp_path}/予測 %")})
    client = TestClient(create_app(settings, publisher, registry=CollectorRegistry()))
    response = client.post("/endpoints/ep/async-invocations", content=b"1\n")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["OutputLocation"].startswith(f"file://{tmp_path}/予測 %/output/")
    header = response.headers["X-Amzn-SageMaker-OutputLocation"]
    assert header == body["OutputLocation"].replace("予測", "%E4%BA%88%E6%B8%AC")
    assert len(publisher.sent) == 1


def test_latin1_locations_reach_the_header_as_they_are() -> None:
    """What boto3 (http.client: Latin-1) reads back unchanged stays unchanged; controls and
    anything beyond Latin-1 are percent-encoded."""
    assert header_location("s3://b/café 100%/x.out") == "s3://b/café 100%/x.out"
    assert header_location("s3://b/a\r\nb/✓") == "s3://b/a%0D%0Ab/%E2%9C%93"
    assert header_location("s3://b/\x85") == "s3://b/%C2%85"


@pytest.mark.parametrize(
    "header", ["X-Amzn-SageMaker-RequestTTLSeconds", "X-Amzn-SageMaker-InvocationTimeoutSeconds"]
)
def test_a_number_too_long_to_convert_is_a_400(tmp_path: Path, header: str) -> None:
    """Python refuses to convert over 4300 digits: that must not become a 500."""
    publisher = RecordingPublisher()
    response = client_for(tmp_path, publisher).post(
        "/endpoints/ep/async-invocations", content=b"1\n", headers={header: "9" * 5000}
    )
    assert response.status_code == 400 and header in response.json()["message"]
    assert not publisher.sent


def test_unexpected_errors_are_a_counted_500_with_the_error_shape(tmp_path: Path) -> None:
    class Broken(RecordingPublisher):
        def submit(self, endpoint: str, message_id: str, body: bytes) -> None:
            raise RuntimeError("bug")

    client = client_for(tmp_path, Broken())
    response = client.post("/endpoints/ep/async-invocations", content=b"1")
    assert response.status_code == 500
    assert response.content == INTERNAL_FAILURE_BODY  # the gateway's: __type for boto3 too
    assert response.headers["x-amzn-errortype"] == "InternalFailure"
    assert response.headers.get_list("x-amzn-requestid") == [response.headers["x-amzn-requestid"]]
    assert list((tmp_path / "input").iterdir()) == []
    text = client.get("/metrics").text
    assert 'infermodes_async_requests_total{endpoint="ep",status_code="500"} 1.0' in text


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


def route_answers(text: str) -> dict[str, float]:
    """``infermodes_async_api_answers_total{stage="route"}`` by code, parsed from ``text``."""
    return {
        sample.labels["code"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "infermodes_async_api_answers_total" and sample.labels["stage"] == ROUTE
    }


def test_answers_no_endpoint_counts_are_counted_at_the_route_stage(tmp_path: Path) -> None:
    """``/ping``, ``/metrics``, a path it does not serve (404) and a wrong method (405, on the
    accept path too) are counted as the gateway counts its routes'; the accept route's answers,
    counted by endpoint, are not counted twice, whatever their status."""
    client = client_for(tmp_path, RecordingPublisher())
    assert client.get("/ping").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/nowhere").status_code == 404
    assert client.delete("/ping").status_code == 405
    assert client.get("/endpoints/ep/async-invocations").status_code == 405
    assert client.post("/endpoints/ep/async-invocations", content=b"1").status_code == 202
    assert client.post("/endpoints/nope/async-invocations", content=b"1").status_code == 404
    assert route_answers(client.get("/metrics").text) == {"200": 2, "404": 1, "405": 2}


@pytest.mark.parametrize(("value", "result"), [(None, 900), ("1", 1), ("3600", 3600), (" 60 ", 60)])
def test_header_seconds(value: str | None, result: int) -> None:
    assert header_seconds(value, "T", 900, 3600) == result


@pytest.mark.parametrize(
    "value",
    ["0", "3601", "-1", "1.5", "abc", "", "\xb2", "١٢", "+5", "9" * 5000, "0" * 5000 + "60"],
)
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
    allowed = ["s3://data/in/", "file:///data/in"]
    root = None if location.startswith("s3") else "file:///data/in"  # S3 keys have no links
    assert input_location_of(location, allowed, OWN) == (normalised, root)
    own = input_location_of(location, [], "file:///data")
    assert own == (normalised, None if location.startswith("s3") else "file:///data")


@pytest.mark.parametrize(
    "prefix", ["FILE:///data/ep/input", "file://localhost/data/ep/input/", "file:///data//ep/input"]
)
def test_an_own_prefix_written_as_the_spec_allows_admits_the_files_under_it(prefix: str) -> None:
    """The spec takes a scheme in any case and file://localhost/: the endpoint's own input
    prefix written so refused every file input before."""
    found = input_location_of("file:///data/ep/input/x.csv", [], prefix)
    assert found == ("file:///data/ep/input/x.csv", "file:///data/ep/input")
    allowed = input_location_of("s3://data/in/x.csv", ["S3://data/in"], OWN)
    assert allowed == ("s3://data/in/x.csv", None)
    with pytest.raises(InputNotAllowed):
        input_location_of("file:///data/ep/inputs/x.csv", [], prefix)


@pytest.mark.parametrize(
    ("allowed", "location", "root"),
    [
        ("s3://", "s3://any/bucket/x.csv", None),  # a scheme alone: anywhere on it
        ("file:///", "file:///data/x.csv", "file:///"),  # the root: the worker's root too
        ("file://localhost/", "file:///data/x.csv", "file:///"),
    ],
)
def test_a_prefix_at_the_top_admits_everything_under_it(
    allowed: str, location: str, root: str | None
) -> None:
    assert input_location_of(location, [allowed], OWN) == (location, root)


@pytest.mark.parametrize("location", ["s3://bucket", "s3://bucket/", "file:///"])
def test_a_location_naming_no_object_is_refused(location: str) -> None:
    with pytest.raises(InvalidInput, match="names no object"):
        input_location_of(location, [], OWN)


@pytest.mark.parametrize(
    "location", ["file:///data/in/../../etc/passwd", "file:///data/inbox/x", "s3://other/in/x"]
)
def test_locations_outside_the_allowed_prefixes_are_refused(location: str) -> None:
    with pytest.raises(InputNotAllowed, match="not under an allowed prefix"):
        input_location_of(location, ["s3://data/in", "file:///data/in"], OWN)


@pytest.mark.parametrize(
    "location", ["s3://data/in/x/../y.csv", "s3://data/in/./y.csv", "s3://data/in/../in/y.csv"]
)
def test_an_s3_key_with_dot_segments_is_refused_naming_them(location: str) -> None:
    """Such a key lies under no prefix (a server may resolve it elsewhere), but "not under an
    allowed prefix: s3://data/in", which it is as written, did not say why."""
    with pytest.raises(InputNotAllowed, match="has a '.' or '..' segment"):
        input_location_of(location, ["s3://data/in", "file:///data/in"], OWN)


@pytest.mark.parametrize("location", [OWN, f"{OWN}/", "s3://data/in", "file:///data/in/"])
def test_a_location_naming_a_prefix_itself_says_so(location: str) -> None:
    """Not "x is not under an allowed prefix: x": a folder is no input object."""
    with pytest.raises(InvalidInput, match=r"names the prefix \S+ itself: name one object"):
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
        with pytest.raises(InputNotAllowed, match="not under an allowed prefix"):
            input_location_of(location, [], OWN)


@pytest.mark.parametrize(
    ("own", "name"),
    [
        (OWN, "someone-else.in"),
        (OWN, "someone-else.request"),
        (OWN, "someone-else.result"),
        (OWN, "sub/../someone-else.in"),
        (OWN, ".someone-else.in.partial"),
        ("s3://bucket/ep/input", "someone-else.in"),
        # S3 keys are taken as written, but a store may resolve them: SeaweedFS reads
        # ep//input/x.in as ep/input/x.in (others resolve '.' and '..' segments)
        ("s3://bucket/ep/input", "/someone-else.request"),
        ("s3://bucket/ep/input", "sub/../someone-else.in"),
        ("s3://bucket/ep/input", "./someone-else.result"),
    ],
)
def test_the_apis_own_objects_are_never_an_input_location(own: str, name: str) -> None:
    """Other callers' inline bodies and request records share the endpoint's input prefix,
    however a store might resolve the key that names them."""
    with pytest.raises(InputNotAllowed, match="one of the API's own objects"):
        input_location_of(f"{own}/{name}", [], own)
    assert input_location_of(f"{own}/sub/mine.in", [], own)  # a folder of the caller's own


def test_nor_are_another_endpoints_or_a_prefix_written_loosely() -> None:
    others = ["s3://bucket/other/input/", "file:///srv/x//in/"]
    for location in ("s3://bucket/other/input/id.in", "file:///srv/x/in/id.request"):
        with pytest.raises(InputNotAllowed, match="one of the API's own objects"):
            input_location_of(location, ["s3://bucket", "file:///srv"], OWN, others)
    with pytest.raises(InputNotAllowed, match="one of the API's own objects"):
        input_location_of("file:///srv/y/in/id.in", [], "file:///srv/y/./in/")
    for location in ("s3://bucket/ep//input/id.in", "s3://bucket/x/../ep/input/id.request"):
        with pytest.raises(InputNotAllowed, match="one of the API's own objects"):
            input_location_of(location, ["s3://bucket"], "s3://bucket/ep/input")


def test_a_location_leaving_the_prefix_by_dot_dot_is_refused_as_sent() -> None:
    """The refusal named only the path resolved (file:///etc/passwd), which the caller never
    wrote: it names what was sent, what it was read as, and the prefix."""
    sent = "file:///srv/in/out/../../../etc/passwd"
    with pytest.raises(InputNotAllowed) as refused:
        input_location_of(sent, ["file:///srv/in"], OWN)
    assert str(refused.value) == (
        f"X-Amzn-SageMaker-InputLocation {sent!r} (read as file:///etc/passwd) is not under an "
        f"allowed prefix: file:///srv/in, {OWN}"
    )


def test_a_refused_location_is_403_and_nothing_is_queued(tmp_path: Path) -> None:
    publisher = RecordingPublisher()
    response = client_for(tmp_path, publisher, ("s3://data/in",)).post(
        "/endpoints/ep/async-invocations",
        headers={"X-Amzn-SageMaker-InputLocation": "file:///etc/passwd"},
    )
    assert response.status_code == 403
    assert "file:///etc/passwd is not under an allowed prefix: s3://data/in" in response.text
    assert not publisher.sent


def test_a_refused_location_names_only_a_setting_its_process_has(tmp_path: Path) -> None:
    """Every process said "the gateway's --allow-input-prefix adds more": the gateway has no
    such flag (it reads INFERMODES_GATEWAY_ALLOWED_INPUT_PREFIXES, which a chart user sets as
    gateway.allowedInputPrefixes), and `infermodes up` no such setting at all (its inputs lie
    under the endpoint's input path)."""
    from infermodes.gateway.app import async_accept_router
    from infermodes.settings import GatewaySettings

    outside = {"X-Amzn-SageMaker-InputLocation": "file:///etc/passwd"}
    route = "/endpoints/s/async-invocations"
    async_api = client_for(tmp_path, RecordingPublisher()).post(
        "/endpoints/ep/async-invocations", headers=outside
    )
    assert async_api.json()["message"].endswith(" (--allow-input-prefix adds more)")
    table = Table()
    spec = {"mode": "async", "model": {"uri": "file:///m"},
            "async": {"outputPath": f"file://{tmp_path}/out"}}  # fmt: skip
    table.apply_endpoint({"metadata": {"name": "s", "namespace": "default"}, "spec": spec})
    closing: list[Callable[[], None]] = []
    gateway = FastAPI()
    gateway.include_router(async_accept_router(
        GatewaySettings(), f"sqlite:///{tmp_path}/queue.db", table, CollectorRegistry(), closing
    ))  # fmt: skip
    up = FastAPI()  # as `up` mounts it: no prefixes beyond the endpoints' own
    up.include_router(create_router(table.async_layouts, RecordingPublisher(), Storage(),
                                    AsyncApiMetrics(CollectorRegistry()), 100, []))  # fmt: skip
    try:
        by_gateway = TestClient(gateway).post(route, headers=outside).json()["message"]
        by_up = TestClient(up).post(route, headers=outside).json()["message"]
    finally:
        for close in closing:
            close()
    assert by_gateway.endswith(" (INFERMODES_GATEWAY_ALLOWED_INPUT_PREFIXES, in the chart "
                               "gateway.allowedInputPrefixes, adds more)")  # fmt: skip
    assert by_up.endswith(f"not under an allowed prefix: file://{tmp_path}/out/input")


def test_the_gateway_route_answers_409_for_a_name_in_two_namespaces(tmp_path: Path) -> None:
    table = Table()
    for namespace in ("team-a", "team-b"):
        spec = {"mode": "async", "model": {"uri": "file:///m"},
                "async": {"outputPath": f"file://{tmp_path}/{namespace}"}}  # fmt: skip
        table.apply_endpoint({"metadata": {"name": "s", "namespace": namespace}, "spec": spec})
    publisher = RecordingPublisher()
    metrics = AsyncApiMetrics(CollectorRegistry())
    app = FastAPI()
    app.include_router(
        create_router(
            table.async_layouts, publisher, Storage(), metrics, 100, [], missing=table.async_missing
        )
    )
    response = TestClient(app).post("/endpoints/s/async-invocations", content=b"1")
    assert response.status_code == 409 and "team-a and team-b" in response.text
    assert not publisher.sent
    table.remove_endpoint("team-b", "s")
    response = TestClient(app).post("/endpoints/s/async-invocations", content=b"1")
    assert response.status_code == 202 and f"{tmp_path}/team-a" in response.json()["OutputLocation"]
    [(_, _, body)] = publisher.sent  # stamped: a team-b worker inheriting the queue skips it
    assert parse_request(body).namespace == "team-a"


def test_no_input_names_the_api_s_objects_of_an_endpoint_the_gateway_does_not_serve(
    tmp_path: Path,
) -> None:
    """A refused endpoint (or a name in two namespaces) has no layout on the route, but its
    input folder still holds the API's objects: requests of its own from before, records."""
    table = Table(storage_prefixes=[f"file://{tmp_path}/"])
    for name, out in (("served", f"file://{tmp_path}/served"), ("refused", "s3://legacy/b")):
        spec = {"mode": "async", "model": {"uri": "file:///m"}, "async": {"outputPath": out}}
        table.apply_endpoint({"metadata": {"name": name, "namespace": "ns"}, "spec": spec})
    assert "refused" not in table.async_layouts
    publisher = RecordingPublisher()
    app = FastAPI()
    app.include_router(create_router(
        table.async_layouts, publisher, Storage(), AsyncApiMetrics(CollectorRegistry()), 100, [],
        missing=table.async_missing, input_paths=table.async_input_paths,
    ))  # fmt: skip
    location = {"X-Amzn-SageMaker-InputLocation": "s3://legacy/b/input/123.request"}
    response = TestClient(app).post("/endpoints/served/async-invocations", headers=location)
    assert response.status_code == 403 and "the API's own objects" in response.text
    assert not publisher.sent


@pytest.mark.parametrize("coding", ["gzip", "br, gzip"])
def test_a_compressed_body_is_a_415_before_anything_is_stored(tmp_path: Path, coding: str) -> None:
    """As the model server answers: no worker would undo the coding."""
    publisher = RecordingPublisher()
    response = client_for(tmp_path, publisher).post(
        "/endpoints/ep/async-invocations",
        content=b"\x1f\x8b\x08",
        headers={"content-encoding": coding},
    )
    assert response.status_code == 415 and "send the body uncompressed" in response.text
    assert not publisher.sent and not list(tmp_path.rglob("*.in"))


def test_the_route_tells_of_each_accepted_request_and_of_no_refused_one(tmp_path: Path) -> None:
    """What the gateway pushes to a pool at zero workers: only requests on the queue."""
    told: list[str] = []
    publisher = RecordingPublisher()
    app = FastAPI()
    app.include_router(create_router(
        {"ep": AsyncEndpoint.under(f"file://{tmp_path}")}, publisher, Storage(),
        AsyncApiMetrics(CollectorRegistry()), 100, [], accepted=told.append,
    ))  # fmt: skip
    client = TestClient(app)
    assert client.post("/endpoints/ep/async-invocations", content=b"1").status_code == 202
    assert client.post("/endpoints/nope/async-invocations", content=b"1").status_code == 404
    assert client.post("/endpoints/ep/async-invocations", content=b"1" * 101).status_code == 413
    publisher.down = True
    assert client.post("/endpoints/ep/async-invocations", content=b"1").status_code == 503
    assert told == ["ep"]


def test_a_failure_telling_of_an_accepted_request_leaves_it_accepted(tmp_path: Path) -> None:
    """The message is on the queue: a 500 would have the client send it again."""

    def failing(name: str) -> None:
        raise RuntimeError(f"cannot tell of {name}")

    publisher = RecordingPublisher()
    app = FastAPI()
    app.include_router(create_router(
        {"ep": AsyncEndpoint.under(f"file://{tmp_path}")}, publisher, Storage(),
        AsyncApiMetrics(CollectorRegistry()), 100, [], accepted=failing,
    ))  # fmt: skip
    response = TestClient(app).post("/endpoints/ep/async-invocations", content=b"1")
    assert response.status_code == 202 and len(publisher.sent) == 1


def test_an_endpoint_whose_input_location_cannot_hold_a_file_is_no_503_to_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file where the endpoint's input folder would be, or a file system that makes no
    folder there (/proc: ENOENT): every request was a 503 "retry later" (or a 500), which boto3
    retries and no retry mends. A 424 naming the endpoint's storage, which clients do not
    retry; a storage that fails for a while (a full disk) stays a 503."""
    import errno
    import tempfile

    (tmp_path / "input").write_bytes(b"not a folder")
    publisher = RecordingPublisher()
    app = FastAPI()
    app.include_router(create_router(
        {"ep": AsyncEndpoint.under(f"file://{tmp_path}"),
         "proc": AsyncEndpoint.under(f"file:///proc/infermodes-{uuid.uuid4().hex}"),
         "full": AsyncEndpoint.under(f"file://{tmp_path}/full")},
        publisher, Storage(), AsyncApiMetrics(CollectorRegistry()), 100, [],
    ))  # fmt: skip
    client = TestClient(app)
    for name, why in (("ep", "a file is in the way of its folder"),
                      ("proc", "the file system makes no folder there")):  # fmt: skip
        response = client.post(f"/endpoints/{name}/async-invocations", content=b"1")
        assert response.status_code == 424, response.text
        assert response.headers["x-amzn-errortype"] == "ValidationError"  # boto3's exception
        assert response.json()["error"] == "StorageUnusable"
        message = response.json()["message"]
        assert why in message and "retry will not help" in message, message
    assert not publisher.sent

    def full_disk(*_args: object, **_kwargs: object) -> tuple[int, str]:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patched:
        patched.setattr(tempfile, "mkstemp", full_disk)
        response = client.post("/endpoints/full/async-invocations", content=b"1")
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "StorageUnavailable"
    assert "No space left on device" in response.json()["message"]
    assert not publisher.sent


def test_an_endpoint_whose_result_folders_cannot_hold_a_file_is_refused_naming_the_field(
    tmp_path: Path,
) -> None:
    """An S3FailurePath under a regular file was accepted: the 202's FailureLocation never
    existed, the error object was lost, and nothing said why. Such a failure (or output)
    path is a 424 naming the field, the location and the file in the way, nothing queued;
    once the file is gone, the same endpoint's requests are taken (a refusal is not kept)."""
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    publisher = RecordingPublisher()
    app = FastAPI()
    app.include_router(create_router(
        {"failure": AsyncEndpoint(input_path=f"file://{tmp_path}/in",
                                  output_path=f"file://{tmp_path}/out",
                                  failure_path=f"file://{blocker}/fail"),
         "output": AsyncEndpoint(input_path=f"file://{tmp_path}/in",
                                 output_path=f"file://{blocker}",
                                 failure_path=f"file://{tmp_path}/fail")},
        publisher, Storage(), AsyncApiMetrics(CollectorRegistry()), 100, [],
    ))  # fmt: skip
    client = TestClient(app)
    for name, field, location in (("failure", "S3FailurePath", f"file://{blocker}/fail"),
                                  ("output", "S3OutputPath", f"file://{blocker}")):  # fmt: skip
        response = client.post(f"/endpoints/{name}/async-invocations", content=b"1")
        assert response.status_code == 424, response.text
        assert response.headers["x-amzn-errortype"] == "ValidationError"
        assert response.json()["error"] == "StorageUnusable"
        message = response.json()["message"]
        assert field in message and location in message, message
        assert f"{blocker} is a file, not a folder" in message, message
    assert not publisher.sent
    assert not (tmp_path / "in").exists()  # no inline input stored
    blocker.unlink()
    response = client.post("/endpoints/failure/async-invocations", content=b"1")
    assert response.status_code == 202, response.text
    assert len(publisher.sent) == 1


def test_an_endpoint_whose_bucket_does_not_exist_is_no_503_to_retry() -> None:
    """S3's NoSuchBucket read as "no such object", a storage error like any other: a 503
    "retry later" for an input path in a bucket that does not exist, which no retry mends."""
    import boto3
    from moto import mock_aws

    from infermodes.storage import S3Store

    publisher = RecordingPublisher()
    with mock_aws():
        storage = Storage(s3_store=S3Store(boto3.client("s3", region_name="us-east-1")))
        app = FastAPI()
        app.include_router(create_router(
            {"ep": AsyncEndpoint.under("s3://no-such-bucket/ep")},
            publisher, storage, AsyncApiMetrics(CollectorRegistry()), 100, [],
        ))  # fmt: skip
        response = TestClient(app).post("/endpoints/ep/async-invocations", content=b"1")
    assert response.status_code == 424, response.text
    assert response.json()["error"] == "StorageUnusable"
    assert "the bucket no-such-bucket does not exist" in response.json()["message"]
    assert not publisher.sent


def test_an_id_used_at_another_endpoint_sharing_the_storage_is_a_409_not_its_result(
    tmp_path: Path,
) -> None:
    """Two endpoints (two model versions, say) whose objects lie under one prefix: the same
    request under the same id sent to the second was taken for a repeat of the first's and
    answered with the first's 202, queued to the first's endpoint: the second's model never
    ran, and its notifications (its webhooks, its routing key) never came."""
    publisher = RecordingPublisher()
    app = FastAPI()
    shared = AsyncEndpoint.under(f"file://{tmp_path}")
    app.include_router(create_router(
        {"v1": shared, "v2": shared}, publisher, Storage(), AsyncApiMetrics(CollectorRegistry()),
        100, [],
    ))  # fmt: skip
    client = TestClient(app)
    headers = {"X-Amzn-SageMaker-Inference-Id": "order-123", "content-type": "text/csv"}
    first = client.post("/endpoints/v1/async-invocations", content=b"1,2", headers=headers)
    assert first.status_code == 202, first.text
    again = client.post("/endpoints/v1/async-invocations", content=b"1,2", headers=headers)
    assert again.status_code == 202 and again.json() == first.json()  # a repeat: the same 202
    other = client.post("/endpoints/v2/async-invocations", content=b"1,2", headers=headers)
    assert other.status_code == 409, other.text
    assert other.json()["error"] == "InferenceIdInUse"
    assert "endpoint v1" in other.json()["message"], other.json()
    assert [endpoint for endpoint, _, _ in publisher.sent] == ["v1", "v1"]


def test_a_broker_outage_logs_its_first_refusal_per_endpoint_then_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker that is down refuses every request alike: each 503 was a warning of its own,
    a flood in the log of the gateway or async-api. The first names its request's id; the rest
    are counted on the next line (``logs.Throttled``)."""
    client = client_for(tmp_path, RecordingPublisher(down=True))
    with caplog.at_level(logging.WARNING, "infermodes.gateway"):
        answers = [client.post("/endpoints/ep/async-invocations", content=b"1") for _ in range(30)]
    assert {answer.status_code for answer in answers} == {503}
    lines = [r.getMessage() for r in caplog.records if "answered 503" in r.getMessage()]
    assert len(lines) == 1, lines
    assert answers[0].headers["x-amzn-requestid"] in lines[0]


def test_an_endpoint_gone_takes_its_log_throttle_with_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The route's throttle per endpoint was never dropped: an endpoint deleted left its entry
    for ever, and one created again under its name within the period had its first failure
    left out. Told the endpoint is gone (the routing table's ``forgotten``), the route tells
    the count it held, naming the requests, and the next endpoint's first line is logged."""
    forgotten: list[Callable[[str], None]] = []
    app = FastAPI()
    app.include_router(create_router(
        {"ep": AsyncEndpoint.under(f"file://{tmp_path}")}, RecordingPublisher(down=True),
        Storage(), AsyncApiMetrics(CollectorRegistry()), 100, [], forgotten=forgotten,
    ))  # fmt: skip
    app.add_middleware(RequestNaming)  # the ids the answers and lines name, as in the gateway
    client = TestClient(app)
    with caplog.at_level(logging.WARNING, "infermodes.gateway"):
        answers = [client.post("/endpoints/ep/async-invocations", content=b"1") for _ in range(3)]
        for forget in forgotten:
            forget("ep")
        again = client.post("/endpoints/ep/async-invocations", content=b"1")
    named = [answer.headers["x-amzn-requestid"] for answer in [*answers, again]]
    lines = [r.getMessage() for r in caplog.records if "answered 503" in r.getMessage()]
    assert len(lines) == 3, lines
    assert named[0] in lines[0]
    assert f"requests {named[1]} (first) to {named[2]} (last)" in lines[1], lines
    assert named[3] in lines[2] and "not logged" not in lines[2], lines
