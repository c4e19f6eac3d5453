"""``infermodes batch`` over a real S3 store (SeaweedFS's S3 gateway on loopback): two instances
sharing a job, a failing object, a re-run, and a large object split over instances."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from infermodes.endpoints.status import Progress, ended_progress
from tests.conftest import AbaloneModel
from tests.support.batch import (
    batch_command,
    csv_text,
    expected_scores,
    run,
    run_instances,
    sample_rows,
    scores_of,
    start,
)
from tests.support.processes import stop_process, wait_until
from tests.support.s3 import S3Endpoint

EXIT_OBJECTS_FAILED = 4
OBJECTS = 5
ROWS = 20_000


@pytest.fixture(scope="module")
def booster(abalone_model: AbaloneModel) -> object:
    return abalone_model.booster()


def put(s3: S3Endpoint, bucket: str, key: str, data: bytes) -> None:
    s3.client().put_object(Bucket=bucket, Key=key, Body=data)


def get(s3: S3Endpoint, bucket: str, key: str) -> bytes:
    return s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def keys(s3: S3Endpoint, bucket: str, prefix: str) -> list[str]:
    listing = s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def instances(model: AbaloneModel, bucket: str, count: int, *args: str) -> list[list[str]]:
    return [
        batch_command(model.tarball, f"s3://{bucket}/in/", f"s3://{bucket}/out/",
                      "--instance-index", str(i), "--instance-count", str(count), *args)
        for i in range(count)
    ]  # fmt: skip


def summary(s3: S3Endpoint, bucket: str, index: int, count: int) -> dict:
    name = f"out/_infermodes-batch/summary-{index:04d}-of-{count:04d}.json"
    return json.loads(get(s3, bucket, name))


def test_five_objects_over_two_instances_equal_the_booster_row_by_row(
    abalone_model: AbaloneModel, booster: object, seaweedfs: S3Endpoint, bucket: str
) -> None:
    texts = {}
    for i in range(OBJECTS):
        texts[f"part-{i}.csv"] = csv_text(sample_rows(abalone_model.test_rows, ROWS, seed=10 + i))
        put(seaweedfs, bucket, f"in/part-{i}.csv", texts[f"part-{i}.csv"])
    done = run_instances(instances(abalone_model, bucket, 2), env=seaweedfs.env)
    assert [d.returncode for d in done] == [0, 0], [d.log for d in done]
    for name, text in texts.items():
        np.testing.assert_array_equal(
            scores_of(get(seaweedfs, bucket, f"out/{name}.out")), expected_scores(booster, text)
        )
    documents = [summary(seaweedfs, bucket, i, 2) for i in range(2)]
    assert [d["state"] for d in documents] == ["Completed", "Completed"]
    assert sum(d["records"] for d in documents) == OBJECTS * ROWS
    assert sorted(d["units"]["assigned"] for d in documents) == [2, 3]


def test_a_malformed_row_fails_only_its_object_and_a_rerun_does_only_that_one(
    abalone_model: AbaloneModel, booster: object, seaweedfs: S3Endpoint, bucket: str
) -> None:
    texts = {
        f"part-{i}.csv": csv_text(sample_rows(abalone_model.test_rows, 2000, seed=20 + i))
        for i in range(OBJECTS)
    }
    lines = texts["part-3.csv"].splitlines(keepends=True)
    good_line = lines[1233]
    lines[1233] = b"1,0,0,0.5,0.4,0.1,0.5,x0.2,0.1,0.15\n"
    for name, text in texts.items():
        put(seaweedfs, bucket, f"in/{name}", b"".join(lines) if name == "part-3.csv" else text)
    done = run_instances(instances(abalone_model, bucket, 2), env=seaweedfs.env)
    assert sorted(d.returncode for d in done) == [0, EXIT_OBJECTS_FAILED]
    assert keys(seaweedfs, bucket, "out/part-") == [
        f"out/part-{i}.csv.out" for i in range(OBJECTS) if i != 3
    ]
    failures = [f for i in range(2) for f in summary(seaweedfs, bucket, i, 2)["failures"]]
    assert len(failures) == 1
    assert failures[0]["object"] == f"s3://{bucket}/in/part-3.csv"
    assert failures[0]["line"] == 1234
    assert failures[0]["reason"].startswith("column 8: cannot parse 'x0.2' as a number")
    failed_log = next(d.log for d in done if d.returncode)
    assert f"FAILED s3://{bucket}/in/part-3.csv line 1234: column 8" in failed_log

    lines[1233] = good_line
    put(seaweedfs, bucket, "in/part-3.csv", texts["part-3.csv"])
    again = run_instances(instances(abalone_model, bucket, 2), env=seaweedfs.env)
    assert [d.returncode for d in again] == [0, 0], [d.log for d in again]
    documents = [summary(seaweedfs, bucket, i, 2) for i in range(2)]
    assert sum(d["units"]["succeeded"] for d in documents) == 1
    assert sum(d["units"]["skipped"] for d in documents) == OBJECTS - 1
    assert sum(d["records"] for d in documents) == 2000
    assert sum(d.log.count("skipping s3://") for d in again) == OBJECTS - 1
    for name, text in texts.items():
        np.testing.assert_array_equal(
            scores_of(get(seaweedfs, bucket, f"out/{name}.out")), expected_scores(booster, text)
        )


def test_folder_markers_are_not_inputs(
    abalone_model: AbaloneModel, booster: object, seaweedfs: S3Endpoint, bucket: str
) -> None:
    """What a console's "Create folder" leaves (an empty key ending in '/') holds no records:
    no ``sub/.out`` is written for it, and a prefix of markers alone has no inputs."""
    text = csv_text(sample_rows(abalone_model.test_rows, 50, seed=40))
    put(seaweedfs, bucket, "in/", b"")
    put(seaweedfs, bucket, "in/sub/", b"")
    put(seaweedfs, bucket, "in/sub/a.csv", text)
    put(seaweedfs, bucket, "only/empty/", b"")
    done = run(instances(abalone_model, bucket, 1)[0], env=seaweedfs.env)
    assert done.returncode == 0, done.log
    assert [k for k in keys(seaweedfs, bucket, "out/") if "_infermodes-batch" not in k] == [
        "out/sub/a.csv.out"
    ]
    np.testing.assert_array_equal(
        scores_of(get(seaweedfs, bucket, "out/sub/a.csv.out")), expected_scores(booster, text)
    )
    assert summary(seaweedfs, bucket, 0, 1)["units"]["assigned"] == 1
    markers_only = batch_command(
        abalone_model.tarball, f"s3://{bucket}/only/", f"s3://{bucket}/only-out/"
    )
    nothing = run(markers_only, env=seaweedfs.env)
    assert nothing.returncode == 2, nothing.log
    assert f"no input objects under s3://{bucket}/only/" in nothing.log


def test_a_large_object_split_over_two_instances_on_s3(
    abalone_model: AbaloneModel, booster: object, seaweedfs: S3Endpoint, bucket: str
) -> None:
    text = csv_text(sample_rows(abalone_model.test_rows, 40_000, seed=30))
    put(seaweedfs, bucket, "in/big.csv", text)
    args = ("--split-min-bytes", "100000", "--max-payload-in-mb", "1")
    done = run_instances(instances(abalone_model, bucket, 2, *args), env=seaweedfs.env)
    assert [d.returncode for d in done] == [0, 0], [d.log for d in done]
    assert keys(seaweedfs, bucket, "out/big") == ["out/big.csv.out"]
    two = get(seaweedfs, bucket, "out/big.csv.out")
    np.testing.assert_array_equal(scores_of(two), expected_scores(booster, text))
    assert [summary(seaweedfs, bucket, i, 2)["units"]["assigned"] for i in range(2)] == [1, 1]

    s3 = seaweedfs.client()
    s3.delete_object(Bucket=bucket, Key="out/big.csv.out")
    one = run(instances(abalone_model, bucket, 1, *args)[0], env=seaweedfs.env)
    assert one.returncode == 0, one.log
    assert get(seaweedfs, bucket, "out/big.csv.out") == two
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_split_object_with_a_failed_range_counts_once_in_the_job_s_progress(
    abalone_model: AbaloneModel, seaweedfs: S3Endpoint, bucket: str
) -> None:
    """Two objects, the large one split over the two instances and its second half holding a
    malformed row: the job's progress from the instances' summaries (as the operator and
    ``up`` read them) said 3 objects, 2 done, and counted the records of the range whose part
    the failure deleted. It is 2 objects, 1 done, 1 failed, and the small object's records."""
    lines = csv_text(sample_rows(abalone_model.test_rows, 40_000, seed=31)).splitlines()
    lines[30_000] = lines[30_000].replace(b",", b",x", 1)
    put(seaweedfs, bucket, "in/big.csv", b"\n".join(lines) + b"\n")
    put(seaweedfs, bucket, "in/small.csv", csv_text(abalone_model.test_rows[:5]))
    args = ("--split-min-bytes", "100000", "--max-payload-in-mb", "1")
    done = run_instances(instances(abalone_model, bucket, 2, *args), env=seaweedfs.env)
    assert sorted(d.returncode for d in done) == [0, EXIT_OBJECTS_FAILED], [d.log for d in done]
    documents = [summary(seaweedfs, bucket, i, 2) for i in range(2)]
    assert sum(d["units"]["assigned"] for d in documents) == 3  # two ranges and an object
    # not assembled; a part the other instance wrote after the failure removed the parts it saw
    # stays until a later run succeeds (docs/batch.md, "Assembling a split object")
    assert "out/big.csv.out" not in keys(seaweedfs, bucket, "out/big")
    assert ended_progress(documents)[0] == Progress(total=2, done=1, failed=1, records=5)


@pytest.mark.parametrize("accept", ["application/jsonlines", "application/json"])
def test_outputs_are_stored_with_the_media_type_of_their_records(
    abalone_model: AbaloneModel, seaweedfs: S3Endpoint, bucket: str, accept: str
) -> None:
    """Every ``.out`` was stored as ``text/plain`` whatever the ``accept``; the async worker
    stores its outputs with their media type. A whole object's and an assembled split
    object's (its parts streamed through the instance) alike."""
    put(
        seaweedfs,
        bucket,
        "in/big.csv",
        csv_text(sample_rows(abalone_model.test_rows, 4_000, seed=32)),
    )
    put(seaweedfs, bucket, "in/small.csv", csv_text(abalone_model.test_rows[:5]))
    args = ("--split-min-bytes", "10000", "--split-type", "Line", "--accept", accept,
            "--output-filter", "$.score")  # fmt: skip
    done = run_instances(instances(abalone_model, bucket, 2, *args), env=seaweedfs.env)
    assert [d.returncode for d in done] == [0, 0], [d.log for d in done]
    assert sum("from 2 parts (streamed)" in d.log for d in done) >= 1, [d.log for d in done]
    s3 = seaweedfs.client()
    stored = {
        key: s3.head_object(Bucket=bucket, Key=f"out/{key}.out")["ContentType"]
        for key in ("big.csv", "small.csv")
    }
    assert stored == {"big.csv": accept, "small.csv": accept}


def test_a_split_object_s_parts_of_5_mib_are_assembled_by_the_store_s_copy(
    abalone_model: AbaloneModel, booster: object, seaweedfs: S3Endpoint, bucket: str
) -> None:
    """The instance that assembled a split object downloaded every part and uploaded it
    again, the whole output through one instance at the job's end; parts of 5 MiB and more
    (all but the last) are now copied by the store (UploadPartCopy)."""
    text = csv_text(sample_rows(abalone_model.test_rows, 200_000, seed=31))
    put(seaweedfs, bucket, "in/big.csv", text)
    args = ("--split-min-bytes", "100000", "--join-source", "Input")  # parts of ~7 MB
    done = run_instances(instances(abalone_model, bucket, 2, *args), env=seaweedfs.env)
    assert [d.returncode for d in done] == [0, 0], [d.log for d in done]
    assert sum("from 2 parts (copied by the store)" in d.log for d in done) >= 1, done[0].log
    assert keys(seaweedfs, bucket, "out/big") == ["out/big.csv.out"]
    lines = get(seaweedfs, bucket, "out/big.csv.out").splitlines()
    assert [line.rsplit(b",", 1)[0] for line in lines] == text.splitlines()
    scores = np.array([float(line.rsplit(b",", 1)[1]) for line in lines], dtype=np.float32)
    np.testing.assert_array_equal(scores, expected_scores(booster, text))
    assert seaweedfs.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    head = seaweedfs.client().head_object(Bucket=bucket, Key="out/big.csv.out")
    assert head["ContentType"] == "text/csv"  # the job's accept, by default


def test_s3_writes_stream_as_multipart_and_abort_on_failure(
    seaweedfs: S3Endpoint, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the runner's atomic .out relies on, against the real store."""
    from infermodes.storage import MULTIPART_CHUNK, Storage

    for name, value in seaweedfs.env.items():
        monkeypatch.setenv(name, value)
    storage = Storage()
    data = bytes(range(256)) * (MULTIPART_CHUNK * 2 // 256 + 1000)  # three parts
    with storage.open_write(f"s3://{bucket}/whole") as sink:
        for start in range(0, len(data), 1 << 20):
            sink.write(data[start : start + (1 << 20)])
    assert storage.get_bytes(f"s3://{bucket}/whole") == data
    with storage.open_read(f"s3://{bucket}/whole", 12345) as source:
        assert source.read(100) == data[12345:12445]
    with (
        pytest.raises(RuntimeError, match="the transform failed"),
        storage.open_write(f"s3://{bucket}/broken") as sink,
    ):
        sink.write(data)  # two parts uploaded already
        raise RuntimeError("the transform failed")
    assert not storage.exists(f"s3://{bucket}/broken")
    assert seaweedfs.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_new_job_writes_over_an_earlier_jobs_outputs_on_s3(
    abalone_model: AbaloneModel, booster: object, seaweedfs: S3Endpoint, bucket: str
) -> None:
    """S3's times come in whole seconds: the job's start (its marker's time) and the outputs'
    are both the store's, so an earlier job's outputs are written over whatever the clocks
    of the machines running the instances say; both instances find the one marker, and plan
    from the one input listing the first stored."""
    for run_id, seed in (("job-1", 60), ("job-2", 70)):
        texts = {f"part-{i}.csv": csv_text(sample_rows(abalone_model.test_rows, 200, seed + i))
                 for i in range(3)}  # fmt: skip
        for name, text in texts.items():
            put(seaweedfs, bucket, f"in/{name}", text)
        env = {**seaweedfs.env, "INFERMODES_BATCH_RUN_ID": run_id}
        done = run_instances(instances(abalone_model, bucket, 2), env=env)
        assert [d.returncode for d in done] == [0, 0], [d.log for d in done]
        documents = [summary(seaweedfs, bucket, i, 2) for i in range(2)]
        assert sum(d["units"]["succeeded"] for d in documents) == 3, documents
        for name, text in texts.items():
            np.testing.assert_array_equal(
                scores_of(get(seaweedfs, bucket, f"out/{name}.out")),
                expected_scores(booster, text),
            )
    # one marker and one input listing per job, though both instances started at once
    assert keys(seaweedfs, bucket, "out/_infermodes-batch/run-") == [
        f"out/_infermodes-batch/run-job-{n}{kind}" for n in (1, 2) for kind in ("", ".inputs.json")
    ]


def test_an_instance_sigkilled_mid_upload_and_run_again_leaves_no_incomplete_upload(
    abalone_model: AbaloneModel, booster: object, seaweedfs: S3Endpoint, bucket: str
) -> None:
    """A SIGKILLed instance cannot abort its multipart upload: S3 kept (and billed) its parts
    for ever, also once the job, run again, Completed. The instance run again aborts it."""
    text = csv_text(sample_rows(abalone_model.test_rows, 200_000, seed=80))
    put(seaweedfs, bucket, "in/big.csv", text)
    joined = ("--join-source", "Input", "--batch-strategy", "SingleRecord")  # > one 8 MiB part
    [job] = instances(abalone_model, bucket, 1, *joined)
    env = {**seaweedfs.env, "INFERMODES_BATCH_RUN_ID": "job-1"}
    s3 = seaweedfs.client()

    def uploads() -> list[str]:
        return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]

    proc = start(job, env)
    try:
        wait_until(lambda: uploads() == ["out/big.csv.out"], 120, "the output's upload")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(60) == -signal.SIGKILL
    finally:
        stop_process(proc)
    assert uploads() == ["out/big.csv.out"]  # what it left
    done = run(job, env)
    assert done.returncode == 0, done.log
    assert "removed 1 partial write(s) a stopped instance left" in done.log
    assert uploads() == []
    lines = get(seaweedfs, bucket, "out/big.csv.out").splitlines()
    scores = np.array([float(line.rsplit(b",", 1)[1]) for line in lines], dtype=np.float32)
    np.testing.assert_array_equal(scores, expected_scores(booster, text))


def test_the_job_s_records_are_stored_with_their_content_type(
    abalone_model: AbaloneModel, seaweedfs: S3Endpoint, bucket: str
) -> None:
    """The summaries, the input listing and the run marker under ``_infermodes-batch/`` had
    no content type, as the ``.out`` objects once had."""
    put(seaweedfs, bucket, "in/a.csv", csv_text(abalone_model.test_rows[:5]))
    env = {**seaweedfs.env, "INFERMODES_BATCH_RUN_ID": "job-1"}
    done = run_instances(instances(abalone_model, bucket, 2), env=env)
    assert [d.returncode for d in done] == [0, 0], [d.log for d in done]
    s3 = seaweedfs.client()
    stored = {
        key: s3.head_object(Bucket=bucket, Key=key).get("ContentType")
        for key in keys(seaweedfs, bucket, "out/_infermodes-batch/")
    }
    folder = "out/_infermodes-batch/"
    assert stored == {
        f"{folder}run-job-1": "text/plain",
        f"{folder}run-job-1.inputs.json": "application/json",
        f"{folder}summary-0000-of-0002.json": "application/json",
        f"{folder}summary-0001-of-0002.json": "application/json",
    }
