"""What a batch job that cannot start says: the reason a transform job's FailureReason and an
endpoint's status quote, which must name the location at fault (the output path, a bucket
that does not exist), not send the user to look at inputs that are fine."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from prometheus_client import CollectorRegistry

from infermodes.metrics import BatchMetrics
from infermodes.predict.model import XGBoostModel
from infermodes.settings import BatchSettings
from infermodes.storage import S3Store, Storage
from infermodes.workers.batch.records import MIB
from infermodes.workers.batch.runner import Runner, write_summary
from infermodes.workers.batch.summary import Summary
from tests.unit.test_batch_listed_keys import ROWS, model  # noqa: F401 (a fixture)


@contextlib.contextmanager
def moto_bucket(monkeypatch: pytest.MonkeyPatch, *keys: str) -> Iterator[Any]:
    """A moto S3 client whose only bucket, ``data``, holds ``keys`` (each the example rows)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="data")
        for key in keys:
            client.put_object(Bucket="data", Key=key, Body=ROWS)
        yield client


def run_job(booster: Path, input_uri: str, output_uri: str, monkeypatch: pytest.MonkeyPatch,
            run_id: str = "job-1", stored: Callable[[Any], None] | None = None,
            ) -> Summary:  # fmt: skip
    """One instance of a job (with a run id, as the operator and up give one) over a moto S3
    whose only bucket, ``data``, holds ``in/a.csv``; ``stored``: called with the S3 client
    once the instance's summary is stored too."""
    with moto_bucket(monkeypatch, "in/a.csv") as client:
        settings = BatchSettings(model_uri=str(booster), input_uri=input_uri,
                                 output_uri=output_uri, run_id=run_id, metrics_port=0)  # fmt: skip
        storage = Storage(s3_store=S3Store(client))
        metrics = BatchMetrics(CollectorRegistry())
        summary = Runner(settings, storage, XGBoostModel.load(str(booster)), metrics).run()
        if stored is not None:
            write_summary(settings, storage, summary)
            stored(client)
        return summary


def test_an_output_bucket_that_does_not_exist_is_named_as_the_output_not_the_inputs(
    model: Path,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It said "cannot list the inputs: s3 cannot hold s3://nobucket/out/_infermodes-batch/
    run-....inputs.json": the job's listing is stored under the output, and its failure read
    as one of the input's."""
    summary = run_job(model, "s3://data/in/", "s3://nobucket/out/", monkeypatch)
    assert summary.error is not None
    assert summary.error.startswith("cannot use the output path s3://nobucket/out/: ")
    assert "the bucket nobucket does not exist" in summary.error
    assert "inputs" not in summary.error.split(": ", 1)[0]


def test_an_input_bucket_that_does_not_exist_is_named(
    model: Path,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It said "cannot list the inputs: no such object: s3://nobucket/in/", of a prefix,
    which names no object: the bucket is what is missing."""
    summary = run_job(model, "s3://nobucket/in/", "s3://data/out/", monkeypatch)
    assert summary.error is not None
    assert summary.error.startswith("cannot list the inputs: ")
    assert "the bucket nobucket does not exist" in summary.error


@pytest.mark.parametrize(("payload", "concurrency", "cap_mb"), [(0, 4, 25), (0, 3, 33), (0, 1, 100),
                                                                (6, 4, 6)])  # fmt: skip
def test_max_payload_zero_caps_a_mini_batch_at_the_share_of_100_mb_each_transform_has(
    model: Path,  # noqa: F811 (the fixture)
    tmp_path: Path,
    payload: int,
    concurrency: int,
    cap_mb: int,
) -> None:
    """maxPayloadInMB 0 (the platform's "no limit", for chunked requests) was 100 MB for each
    of maxConcurrentTransforms mini-batches: ~3 x (N + 1) x 100 MB held at once (677 MB
    measured at N = 2; 30 GB at N = 100, which the payload rule let through as 0 x 100). It is
    now 100 MB shared, as payload x concurrency <= 100 says: a record over the share fails its
    object, naming the cap, instead of the instance."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "big.csv").write_bytes(b"1," * (cap_mb * MIB // 2) + b"1\n")  # just over the cap
    settings = BatchSettings(model_uri=str(model), input_uri=str(folder),
                             output_uri=str(tmp_path / "out"), max_payload_in_mb=payload,
                             max_concurrent_transforms=concurrency, metrics_port=0)  # fmt: skip
    summary = Runner(settings, Storage(), XGBoostModel.load(str(model)),
                     BatchMetrics(CollectorRegistry())).run()  # fmt: skip
    [failure] = summary.failures
    assert (failure.line, failure.reason) == (
        1, f"record is larger than maxPayloadInMB ({cap_mb} MB)")  # fmt: skip


def test_a_file_uri_whose_escapes_name_no_object_says_the_path_it_looked_for(
    model: Path,  # noqa: F811 (the fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """S3Uri file:///in/keys/a%20b.csv, naming the file a%20b.csv, failed with "no input
    objects under file:///in/keys/a%20b.csv", the file in plain sight: the URI is
    percent-decoded, to the path of 'a b.csv', which the message now shows (r60, item 10)."""
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "a%20b.csv").write_bytes(ROWS)
    uri = f"file://{tmp_path}/keys/a%20b.csv"
    summary = run_job(model, uri, f"file://{tmp_path}/out/", monkeypatch)
    assert summary.error == (
        f"no input objects under {uri} (the path '{tmp_path}/keys/a b.csv': a file:// URI's "
        "%-escapes are decoded; write a '%' of a name as %25)"
    )
    escaped = run_job(model, f"file://{tmp_path}/keys/a%2520b.csv", f"file://{tmp_path}/out/",
                      monkeypatch, run_id="job-2")  # fmt: skip
    assert escaped.error is None and (tmp_path / "out" / "a%20b.csv.out").exists()
    plain = f"{tmp_path}/keys/100%/"  # a plain path's '%' is no escape: no advice to escape it
    summary = run_job(model, plain, f"file://{tmp_path}/out/", monkeypatch, run_id="job-3")
    assert summary.error == f"no input objects under {plain}"


def test_the_job_s_records_under_its_output_carry_their_content_type(
    model: Path,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The summaries, the input listing and the run marker under ``_infermodes-batch/`` were
    stored with no content type, as the ``.out`` objects once were."""
    folder = "out/_infermodes-batch/"
    stored: dict[str, str] = {}

    def content_types(client: Any) -> None:
        for item in client.list_objects_v2(Bucket="data", Prefix=folder)["Contents"]:
            head = client.head_object(Bucket="data", Key=item["Key"])
            stored[item["Key"][len(folder) :]] = head["ContentType"]

    run_job(model, "s3://data/in/", "s3://data/out/", monkeypatch, stored=content_types)
    assert stored == {
        "run-job-1": "text/plain",
        "run-job-1.inputs.json": "application/json",
        "summary-0000-of-0001.json": "application/json",
    }


class FailingWrites:
    """moto's S3 client, but its writes of ``.out`` objects fail with ``error``."""

    def __init__(self, client: Any, error: Exception) -> None:
        self.client, self.error = client, error

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.client, name)
        if name not in ("put_object", "create_multipart_upload"):
            return call

        def failing(**kwargs: Any) -> Any:
            if kwargs["Key"].endswith(".out"):
                raise self.error
            return call(**kwargs)

        return failing


def run_failing_writes(booster: Path, error: Exception, monkeypatch: pytest.MonkeyPatch
                       ) -> tuple[Summary, int | None]:  # fmt: skip
    """One instance over ``in/a.csv`` and ``in/b.csv`` whose outputs fail to be written with
    ``error``: its summary, and the exit code of an end that runs again (None: none)."""
    with moto_bucket(monkeypatch, "in/a.csv", "in/b.csv") as client:
        settings = BatchSettings(model_uri=str(booster), input_uri="s3://data/in/",
                                 output_uri="s3://data/out/", run_id="job-1",
                                 metrics_port=0)  # fmt: skip
        storage = Storage(s3_store=S3Store(FailingWrites(client, error)))
        runner = Runner(settings, storage, XGBoostModel.load(str(booster)),
                        BatchMetrics(CollectorRegistry()))  # fmt: skip
        return runner.run(), runner.runs_again


def test_a_store_that_cannot_be_reached_fails_no_object_and_the_instance_runs_again(
    model: Path,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store's own failure (a connection cut before its answer, which botocore raises
    with ``response = None``) is no fault of the object: failed, the job would be Failed for
    good (an instance with failed objects is not retried), all its objects after the outage
    too. The instance ends at the first, to run again (EXIT_STORE_FAILED)."""
    from botocore.exceptions import ConnectionClosedError

    from infermodes.errors import EXIT_STORE_FAILED

    cut = ConnectionClosedError(endpoint_url="http://127.0.0.1:1/data/out/a.csv.out")
    summary, runs_again = run_failing_writes(model, cut, monkeypatch)
    assert runs_again == EXIT_STORE_FAILED
    assert summary.failures == []
    assert summary.error is not None and summary.error.startswith("the object store failed: ")
    assert "Connection was closed" in summary.error


def test_a_store_that_refuses_an_output_fails_its_objects_as_before(
    model: Path,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 403 names what is wrong with the location, which no run again mends: the objects
    fail, named, and the instance leaves its summary."""
    from botocore.exceptions import ClientError

    refused = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject")
    summary, runs_again = run_failing_writes(model, refused, monkeypatch)
    assert runs_again is None
    assert [failure.object for failure in summary.failures] == [
        "s3://data/in/a.csv",
        "s3://data/in/b.csv",
    ]
