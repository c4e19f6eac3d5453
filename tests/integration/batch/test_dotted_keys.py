"""``infermodes batch`` over a real S3 server whose input prefix holds a key with a '..'
segment (anyone who may write under the prefix can put one there): that object fails alone,
named, and the job's other objects are done, as a malformed row fails only its object."""

from __future__ import annotations

import json

from infermodes.errors import EXIT_OBJECTS_FAILED
from tests.conftest import AbaloneModel
from tests.support.batch import (
    batch_command,
    csv_text,
    expected_scores,
    run,
    sample_rows,
    scores_of,
)
from tests.support.s3 import S3Endpoint

STRAY = "in/sub/../../stray.csv"


def test_a_key_with_a_dot_dot_segment_fails_alone_and_the_others_are_done(
    s3: S3Endpoint, abalone_model: AbaloneModel
) -> None:
    client = s3.client()
    bucket = "dotted-keys"
    client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    data = csv_text(sample_rows(abalone_model.test_rows, 30, seed=7))
    for key in ("in/a.csv", "in/b.csv", STRAY):
        client.put_object(Bucket=bucket, Key=key, Body=data)  # type: ignore[attr-defined]
    command = batch_command(abalone_model.tarball, f"s3://{bucket}/in/", f"s3://{bucket}/out/")
    done = run(command, {**s3.env, "INFERMODES_BATCH_RUN_ID": "dotted"})
    assert done.returncode == EXIT_OBJECTS_FAILED, done.log
    listing = client.list_objects_v2(Bucket=bucket, Prefix="")  # type: ignore[attr-defined]
    outputs = sorted(o["Key"] for o in listing["Contents"] if o["Key"].endswith(".out"))
    assert outputs == ["out/a.csv.out", "out/b.csv.out"]
    booster = abalone_model.booster()
    for key in outputs:
        out = client.get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[attr-defined]
        assert (scores_of(out) == expected_scores(booster, data)).all()
    summary = json.loads(
        client.get_object(  # type: ignore[attr-defined]
            Bucket=bucket, Key="out/_infermodes-batch/summary-0000-of-0001.json"
        )["Body"].read()
    )
    assert summary["error"] is None
    assert summary["units"] == {"assigned": 3, "succeeded": 2, "skipped": 0, "failed": 1}
    [failure] = summary["failures"]
    assert failure["object"] == f"s3://{bucket}/{STRAY}"
    assert "'.' or '..' segment" in failure["reason"]
