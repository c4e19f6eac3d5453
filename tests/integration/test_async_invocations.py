"""Accept, queue, process, store, notify: the async data plane with a real broker, real
``infermodes async-api`` and ``infermodes worker`` processes, and real storage."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pika
import pytest

from infermodes.queueing.rabbitmq import backlog, connect, queue_name
from infermodes.storage import Storage
from tests.conftest import AbaloneModel
from tests.support.async_plane import (
    Notifications,
    Process,
    WebhookReceiver,
    plane,
    running_api,
    spawn,
    to_csv,
)
from tests.support.processes import free_port, stop_process, wait_until
from tests.support.rabbitmq import Broker


def predictions_in(path: Path) -> np.ndarray:
    return np.array(path.read_text().split(), dtype=np.float32)


def test_inline_and_by_reference_requests_complete_with_notifications(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    endpoint = "flow"
    notes = Notifications(rabbitmq, endpoint).declare()
    rows = abalone_model.test_rows[:20]
    expected = abalone_model.booster().inplace_predict(rows)
    by_reference = tmp_path / "given" / "rows.csv"
    by_reference.parent.mkdir()
    by_reference.write_bytes(to_csv(rows))
    with (
        plane(rabbitmq, endpoint, f"file://{tmp_path}/store", tmp_path) as live,
        WebhookReceiver() as hook,
    ):
        inline = live.invoke(to_csv(rows), {"accept": "application/json"})
        reference = live.invoke(
            headers={
                "X-Amzn-SageMaker-InputLocation": f"file://{by_reference}",
                "X-Amzn-SageMaker-Custom-Attributes": "trace=1",
                "X-Amzn-SageMaker-Inference-Id": "my-request-1",
            },
        )
        for response in (inline, reference):
            assert response.status_code == 202, response.text
            body = response.json()
            assert body["OutputLocation"] == response.headers["X-Amzn-SageMaker-OutputLocation"]
            assert body["FailureLocation"] == response.headers["X-Amzn-SageMaker-FailureLocation"]
        assert reference.json()["InferenceId"] == "my-request-1"
        assert (
            reference.json()["OutputLocation"] == f"file://{tmp_path}/store/output/my-request-1.out"
        )
        live.start_worker(
            f"file://{abalone_model.tarball}", "w", extra=("--success-webhook-url", hook.url)
        )
        ids = {inline.json()["InferenceId"], "my-request-1"}
        notes.wait_for(ids, "Completed", 60)
        wait_until(lambda: len(hook.received) == 2, 30, "2 webhook calls")
    assert {h["inferenceId"] for h in hook.received} == ids
    stored = Storage()
    json_output = json.loads(stored.get_bytes(inline.json()["OutputLocation"]))
    scores = np.array([p["score"] for p in json_output["predictions"]], dtype=np.float32)
    np.testing.assert_array_equal(scores, expected)
    np.testing.assert_array_equal(
        predictions_in(tmp_path / "store/output/my-request-1.out"), expected
    )
    by_id = {n["inferenceId"]: n for n in notes.received}
    note = by_id["my-request-1"]
    assert note["routingKey"] == f"{endpoint}.success"
    assert note["responseParameters"]["outputLocation"].endswith("my-request-1.out")
    assert note["requestParameters"]["customAttributes"] == "trace=1"
    inline_result = np.array(note["responseBody"]["content"].split(), dtype=np.float32)
    np.testing.assert_array_equal(inline_result, expected)
    # the inline input is gone once answered; each request keeps its record of the id and
    # the claim of its one result
    assert sorted(p.name for p in (tmp_path / "store/input").iterdir()) == sorted(
        f"{i}{suffix}" for i in ids for suffix in (".request", ".result")
    )


def test_requests_through_s3(
    rabbitmq: Broker, s3, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    endpoint = "on-s3"
    client_s3 = s3.client()
    client_s3.create_bucket(Bucket="async")
    client_s3.upload_file(str(abalone_model.tarball), "async", "model.tar.gz")
    rows = abalone_model.test_rows[:7]
    client_s3.put_object(Bucket="async", Key="given/rows.csv", Body=to_csv(rows))
    notes = Notifications(rabbitmq, endpoint).declare()
    with plane(rabbitmq, endpoint, "s3://async/ep", tmp_path, s3.env) as live:
        live.start_worker("s3://async/model.tar.gz", "w")
        inline = live.invoke(to_csv(rows))
        reference = live.invoke(
            headers={"X-Amzn-SageMaker-InputLocation": "s3://async/given/rows.csv"},
        )
        assert inline.status_code == reference.status_code == 202
        ids = {inline.json()["InferenceId"], reference.json()["InferenceId"]}
        notes.wait_for(ids, "Completed", 60)
    expected = abalone_model.booster().inplace_predict(rows)
    for response in (inline, reference):
        key = response.json()["OutputLocation"].removeprefix("s3://async/")
        body = client_s3.get_object(Bucket="async", Key=key)["Body"].read()
        np.testing.assert_array_equal(np.array(body.split(), dtype=np.float32), expected)
        claim = f"ep/input/{response.json()['InferenceId']}.result"  # a success's: empty
        assert client_s3.get_object(Bucket="async", Key=claim)["Body"].read() == b""


@pytest.fixture(scope="module")
def refusing_api(rabbitmq: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    root = tmp_path_factory.mktemp("refusing")
    with running_api(rabbitmq, {"refused": f"file://{root}"}, root / "api.log") as api:
        yield api


@pytest.mark.parametrize(
    ("headers", "body", "status", "message"),
    [
        ({}, b"", 400, "no input"),
        ({"X-Amzn-SageMaker-InputLocation": "file:///x"}, b"1", 400, "not both"),
        ({"X-Amzn-SageMaker-InputLocation": "ftp://x/y"}, b"", 400, "unsupported storage"),
        # a folder (a console's zero-byte marker, or a server's directory): it was read as an
        # object and failed "empty input: expected at least one row"
        ({"X-Amzn-SageMaker-InputLocation": "s3://b/rows/"}, b"", 400, "names a folder"),
        ({"content-type": "image/png"}, b"1", 415, "unsupported content type"),
        ({"accept": "text/html"}, b"1", 406, "text/html"),
        ({"X-Amzn-SageMaker-RequestTTLSeconds": "0"}, b"1", 400, "RequestTTLSeconds"),
        ({"X-Amzn-SageMaker-InvocationTimeoutSeconds": "3601"}, b"1", 400, "1 to 3600"),
        ({"X-Amzn-SageMaker-Inference-Id": "a/b"}, b"1", 400, "Inference-Id"),
        # boto3 sends it (its pattern takes any printable id); the message said only which
        # characters, all of which it has
        ({"X-Amzn-SageMaker-Inference-Id": ".a"}, b"1", 400, "the first a letter or digit"),
        # a path, or file: with one slash: it was read relative to the working directory
        ({"X-Amzn-SageMaker-InputLocation": "rows.csv"}, b"", 400, "'rows.csv' is not an s3://"),
        ({"X-Amzn-SageMaker-InputLocation": "/x/rows.csv"}, b"", 400, "file:///absolute/path"),
        ({"X-Amzn-SageMaker-InputLocation": "file:/x/rows.csv"}, b"", 400, "not an s3:// or"),
        # no file name holds a NUL: under the input prefix, it was accepted and failed each
        # attempt ("ValueError: embedded null byte")
        ({"X-Amzn-SageMaker-InputLocation": "file:///x/a%00b"}, b"", 400, "a NUL"),
        # not UTF-8 once decoded: it was read as another file's name (U+FFFD for the byte)
        ({"X-Amzn-SageMaker-InputLocation": "file:///x/%FF.csv"}, b"", 400, "not UTF-8"),
        (
            {"X-Amzn-SageMaker-InputLocation": "file:///etc/passwd"},
            b"",
            403,
            "is not under an allowed prefix",
        ),
    ],
)
def test_bad_requests_are_refused_before_queueing(
    rabbitmq: Broker,
    refusing_api: Process,
    headers: dict[str, str],
    body: bytes,
    status: int,
    message: str,
) -> None:
    with httpx.Client(base_url=refusing_api.url) as client:
        response = client.post(
            "/endpoints/refused/async-invocations", content=body, headers=headers
        )
        assert response.status_code == status, response.text
        assert message in response.json()["message"]
        assert client.post("/endpoints/nowhere/async-invocations", content=b"1").status_code == 404
    assert backlog("refused", rabbitmq.amqp_url, None).total == 0
    connection = connect(rabbitmq.amqp_url)
    try:  # nothing was ever queued: not even the queue was declared
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"):
            connection.channel().queue_declare(queue_name("refused"), passive=True)
    finally:
        if connection.is_open:
            connection.close()


def test_worker_start_failures_are_clear(abalone_model: AbaloneModel, tmp_path: Path) -> None:
    base = ["worker", "--endpoint", "ep", "--metrics-port", "0"]
    cases = [
        ([*base, "--model", f"file://{tmp_path}/absent.tar.gz"], 3, "cannot load model"),
        (
            [*base, "--model", "x", "--max-concurrent-invocations", "0"],
            2,
            "--max-concurrent-invocations: Input should be greater than or equal to 1",
        ),
    ]
    for index, (args, code, message) in enumerate(cases):
        worker = spawn(args, tmp_path / f"{index}.log")
        try:
            assert worker.proc.wait(60) == code
            assert message in worker.log
        finally:
            stop_process(worker.proc)


def test_a_worker_waits_for_its_broker_and_stops_cleanly(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    args = ["worker", "--endpoint", "ep", "--metrics-port", "0", "--broker-url", nowhere]
    worker = spawn([*args, "--model", f"file://{abalone_model.tarball}"], tmp_path / "w.log")
    try:
        wait_until(lambda: "reconnecting in" in worker.log, 60, "a reconnect attempt")
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(30) == 0
        assert worker.log.count("broker unreachable") == 1  # one line for the outage
    finally:
        stop_process(worker.proc)
