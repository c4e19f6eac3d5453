"""What a batch job that cannot start says: the reason a transform job's FailureReason and an
endpoint's status quote, which must name the location at fault (the output path, a bucket
that does not exist), not send the user to look at inputs that are fine."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from prometheus_client import CollectorRegistry

from infermodes.metrics import BatchMetrics
from infermodes.predict.model import XGBoostModel
from infermodes.settings import BatchSettings
from infermodes.storage import S3Store, Storage
from infermodes.workers.batch.runner import Runner
from infermodes.workers.batch.summary import Summary
from tests.unit.test_batch_listed_keys import ROWS, model  # noqa: F401 (a fixture)


def run_job(booster: Path, input_uri: str, output_uri: str, monkeypatch: pytest.MonkeyPatch,
            run_id: str = "job-1") -> Summary:  # fmt: skip
    """One instance of a job (with a run id, as the operator and up give one) over a moto S3
    whose only bucket, ``data``, holds ``in/a.csv``."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="data")
        client.put_object(Bucket="data", Key="in/a.csv", Body=ROWS)
        settings = BatchSettings(model_uri=str(booster), input_uri=input_uri,
                                 output_uri=output_uri, run_id=run_id, metrics_port=0)  # fmt: skip
        storage = Storage(s3_store=S3Store(client))
        metrics = BatchMetrics(CollectorRegistry())
        return Runner(settings, storage, XGBoostModel.load(str(booster)), metrics).run()


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
