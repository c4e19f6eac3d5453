"""A batch job's output is ``<output prefix>/<input key>.out``, the input key relative to the
input prefix as the store lists it. An S3 key may hold '.' and '..' segments
(``in/../../x.csv``), written by whoever may write under the input prefix: its output must not
land outside the output prefix (a ``file://`` output resolves them; so may an S3-compatible
server or a proxy), as a manifest's keys may not either: such an object fails alone."""

from __future__ import annotations

from pathlib import Path

import boto3
import numpy as np
import pytest
import xgboost as xgb
from moto import mock_aws
from prometheus_client import CollectorRegistry

from infermodes.metrics import BatchMetrics
from infermodes.predict.model import XGBoostModel
from infermodes.settings import BatchSettings
from infermodes.storage import S3Store, Storage
from infermodes.workers.batch.runner import Runner

ROWS = b"0.1,0.2\n0.3,0.4\n"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    features = np.random.default_rng(0).random((20, 2), dtype=np.float32)
    booster = xgb.train({"nthread": 1}, xgb.DMatrix(features, features.sum(axis=1)), 2)
    path = tmp_path / "model.json"
    booster.save_model(path)
    return path


@pytest.mark.parametrize("key", ["in/../../escaped.csv", "in/a/../../../escaped.csv"])
def test_a_listed_key_with_dot_segments_writes_nothing_outside_the_output(
    tmp_path: Path, model: Path, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    out = tmp_path / "job" / "out"
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="data")
        client.put_object(Bucket="data", Key="in/ok.csv", Body=ROWS)
        client.put_object(Bucket="data", Key=key, Body=ROWS)
        settings = BatchSettings(
            model_uri=str(model), input_uri="s3://data/in/", output_uri=f"file://{out}",
            metrics_port=0,
        )  # fmt: skip
        storage = Storage(s3_store=S3Store(client))
        runner = Runner(settings, storage, XGBoostModel.load(str(model)), BatchMetrics(
            CollectorRegistry()))  # fmt: skip
        summary = runner.run()
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    outside = [p for p in written if not p.startswith("job/out/") and p != "model.json"]
    assert outside == []
    # that object fails alone, named (the job's other objects are done): one stray key under
    # the input prefix made the whole job fail, with nothing written
    assert summary.error is None
    assert [(f.object, f.line) for f in summary.failures] == [(f"s3://data/{key}", None)]
    assert "'..' segment" in summary.failures[0].reason
    assert written == ["job/out/ok.csv.out", "model.json"]
