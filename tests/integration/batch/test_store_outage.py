"""``infermodes batch`` whose S3 server goes away mid-job (a real S3 server behind a loopback
proxy the test cuts): the store's own failure is no fault of the objects, so the instance fails
none of them (which its Job would never retry: a job lost to a blip) but ends without a summary,
to run again; run again once the store is back, it skips what it wrote and does the rest."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from infermodes.errors import EXIT_STORE_FAILED
from tests.conftest import AbaloneModel
from tests.support.batch import (
    FAULTS,
    batch_command,
    csv_text,
    expected_scores,
    finish,
    run,
    sample_rows,
    scores_of,
    start,
)
from tests.support.processes import stop_process, wait_until
from tests.support.proxy import cuttable_proxy
from tests.support.s3 import S3Endpoint

OBJECTS = 4


def test_an_s3_outage_mid_job_fails_no_object_and_the_run_again_completes(
    s3: S3Endpoint, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    client = s3.client()
    bucket = "store-outage"
    client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    inputs = {f"part-{i}.csv": csv_text(sample_rows(abalone_model.test_rows, 50, seed=i))
              for i in range(OBJECTS)}  # fmt: skip
    for name, data in inputs.items():
        client.put_object(Bucket=bucket, Key=f"in/{name}", Body=data)  # type: ignore[attr-defined]
    hold = tmp_path / "hold"
    hold.touch()
    command = batch_command(abalone_model.tarball, f"s3://{bucket}/in/", f"s3://{bucket}/out/")
    target = urlsplit(s3.url).port
    assert target is not None
    with cuttable_proxy(target) as proxy:
        env = {**s3.env, "AWS_ENDPOINT_URL": proxy.url, "INFERMODES_BATCH_RUN_ID": "outage"}
        faults = os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")]))
        held = {**env, "INFERMODES_TEST_HELD_PREDICT": str(hold), "PYTHONPATH": faults}
        proc = start(command, held)
        try:
            # the first object's mini-batch is in the model: the listing and the read are done
            wait_until(Path(f"{hold}.started").exists, 120, "the first prediction to start")
            proxy.cut()  # the store goes away before the first output is written
            hold.unlink()
            outage = finish(proc)
        finally:
            if proc.poll() is None:
                stop_process(proc)
        assert outage.returncode == EXIT_STORE_FAILED, outage.log
        assert "the object store failed" in outage.log
        assert "FAILED" not in outage.log  # no object is taken for a bad one
        proxy.restore()
        again = run(command, env)
    assert again.returncode == 0, again.log
    summary = json.loads(
        client.get_object(  # type: ignore[attr-defined]
            Bucket=bucket, Key="out/_infermodes-batch/summary-0000-of-0001.json"
        )["Body"].read()
    )
    assert summary["state"] == "Completed"
    assert summary["units"]["failed"] == 0
    assert summary["units"]["succeeded"] + summary["units"]["skipped"] == OBJECTS
    booster = abalone_model.booster()
    for name, data in inputs.items():
        out = client.get_object(Bucket=bucket, Key=f"out/{name}.out")["Body"].read()  # type: ignore[attr-defined]
        np.testing.assert_array_equal(scores_of(out), expected_scores(booster, data))
