"""Every transform feature of ``infermodes batch``, each through real processes over file://
storage, checked against the xgboost package's own predictions."""

from __future__ import annotations

import gzip
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml

from infermodes.endpoints.plan import batch_instance
from infermodes.endpoints.spec import EndpointSpec
from infermodes.errors import EXIT_OBJECTS_FAILED
from infermodes.predict import codecs
from infermodes.predict.memory import MIN_INPUT_CAP
from tests.conftest import AbaloneModel
from tests.support.batch import (
    Finished,
    batch_command,
    csv_text,
    expected_scores,
    finish,
    run,
    run_instances,
    sample_rows,
    scores_of,
    start,
    with_faults,
)
from tests.support.processes import INFERMODES, REPO, stop_process, wait_until


@pytest.fixture(scope="module")
def booster(abalone_model: AbaloneModel) -> object:
    return abalone_model.booster()


@pytest.fixture
def rows(abalone_model: AbaloneModel) -> np.ndarray:
    return sample_rows(abalone_model.test_rows, 600, seed=1)


def summary(output: Path, index: int = 0, count: int = 1) -> dict:
    name = f"summary-{index:04d}-of-{count:04d}.json"
    return json.loads((output / "_infermodes-batch" / name).read_text())


def command(model: AbaloneModel, source: Path, output: Path, *args: str) -> list[str]:
    return batch_command(model.tarball, str(source), str(output), *args)


def run_id_dropped_and_joined(
    model: AbaloneModel, tmp_path: Path, objects: dict[str, str]
) -> Finished:
    """The platform's recipe over ``objects`` under ``tmp_path/in``: the first column dropped
    for the model (``$[1:]``) and joined back, with retries that a bad record must not use."""
    (tmp_path / "in").mkdir()
    for name, text in objects.items():
        (tmp_path / "in" / name).write_text(text)
    return run(
        command(model, tmp_path / "in", tmp_path / "out", "--input-filter", "$[1:]",
                "--join-source", "Input", "--invocations-max-retries", "3")
    )  # fmt: skip


def test_csv_filters_and_join(
    abalone_model: AbaloneModel, booster: object, rows: np.ndarray, tmp_path: Path
) -> None:
    features = csv_text(rows)
    ids = [f"id-{i}" for i in range(len(rows))]
    lines = [f"{i},{line}" for i, line in zip(ids, features.decode().splitlines(), strict=True)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in/a.csv").write_text("\n".join(lines) + "\n")
    done = run(
        command(abalone_model, tmp_path / "in", tmp_path / "out", "--input-filter", "$[1:]",
                "--join-source", "Input", "--output-filter", "$[0,-1]")
    )  # fmt: skip
    assert done.returncode == 0, done.log
    out = (tmp_path / "out/a.csv.out").read_text().splitlines()
    assert [line.split(",")[0] for line in out] == ids
    scores = np.array([float(line.split(",")[1]) for line in out], dtype=np.float32)
    np.testing.assert_array_equal(scores, expected_scores(booster, features))


def test_a_quoted_id_column_is_filtered_out_and_joined_back_as_written(
    abalone_model: AbaloneModel, booster: object, rows: np.ndarray, tmp_path: Path
) -> None:
    """The platform's recipe, ``$[1:]`` and a join, over ids in quotes holding commas and
    quotes (RFC 4180): each output row is the input row as written plus the booster's
    prediction for its numeric columns. The ids were split at their commas, so the model got
    a piece of the id as a feature and the object failed. A record with an unclosed quote (a
    newline inside a quoted field) fails its object at once, naming its line, not retried."""
    features = csv_text(rows).decode().splitlines()
    ids = ['"Smith, John"', '"O""Brien, Pat ""Jr"""', '""', "plain", '","', '5" screw', '"a" ']
    lines = [f"{ids[i % len(ids)]},{line}" for i, line in enumerate(features)]
    done = run_id_dropped_and_joined(
        abalone_model,
        tmp_path,
        {
            "a.csv": "\n".join(lines) + "\n",
            "b.csv": f'"a",{features[0]}\n"Smith\nJohn",{features[1]}\n',
        },
    )
    assert done.returncode == EXIT_OBJECTS_FAILED, done.log
    scores = expected_scores(booster, csv_text(rows)).tolist()
    expected = [f"{line},{score!r}" for line, score in zip(lines, scores, strict=True)]
    assert (tmp_path / "out/a.csv.out").read_text().splitlines() == expected
    assert "retrying" not in done.log
    assert not (tmp_path / "out/b.csv.out").exists()
    [failure] = summary(tmp_path / "out")["failures"]
    assert (failure["object"], failure["line"]) == (f"file://{tmp_path}/in/b.csv", 2), failure
    assert failure["reason"] == (
        "column 1: the quote that opens the field is not closed on its line ('\"Smith'): a "
        "newline inside a quoted field is not supported (CSV records are cut at newlines); "
        "remove the newline from the field, or close its quote"
    )


def test_without_a_filter_a_quoted_field_fails_its_object_naming_its_line_and_column(
    abalone_model: AbaloneModel, rows: np.ndarray, tmp_path: Path
) -> None:
    """Without an input filter CSV goes to the model as it is, whose reader parses no quotes:
    ``"0,455"`` was refused as "expected 10 features, got 11", which names no field."""
    features = csv_text(rows).decode().splitlines()
    quoted = features[6].split(",")
    quoted[3] = f'"{quoted[3].replace(".", ",")}"'
    features[6] = ",".join(quoted)
    (tmp_path / "in").mkdir()
    (tmp_path / "in/a.csv").write_text("\n".join(features) + "\n")
    done = run(command(abalone_model, tmp_path / "in", tmp_path / "out"))
    assert done.returncode == EXIT_OBJECTS_FAILED, done.log
    [failure] = summary(tmp_path / "out")["failures"]
    assert (failure["object"], failure["line"]) == (f"file://{tmp_path}/in/a.csv", 7), failure
    assert failure["reason"].startswith(
        f"column 4: the quoted field {quoted[3]!r} is not taken: the model reads numbers only"
    ), failure


def test_headers_with_parameters_are_read_as_the_platform_reads_them(
    abalone_model: AbaloneModel, booster: object, rows: np.ndarray, tmp_path: Path
) -> None:
    """``--content-type`` and ``--accept`` are the headers of each mini-batch, as the platform
    API's ContentType and Accept: a charset parameter names the same type (it was refused as
    not one of the four); a charset the instances cannot read is refused naming the option."""
    features = csv_text(rows)
    (tmp_path / "in").mkdir()
    (tmp_path / "in/a.csv").write_bytes(features)
    done = run(
        command(abalone_model, tmp_path / "in", tmp_path / "out", "--content-type",
                "text/csv; charset=utf-8", "--accept", "application/json;charset=UTF-8")
    )  # fmt: skip
    assert done.returncode == 0, done.log
    written = json.loads((tmp_path / "out/a.csv.out").read_text())
    scores = np.array([p["score"] for p in written["predictions"]], dtype=np.float32)
    np.testing.assert_array_equal(scores, expected_scores(booster, features))
    refused = run(
        command(abalone_model, tmp_path / "in", tmp_path / "refused", "--content-type",
                "text/csv; charset=latin-1")
    )  # fmt: skip
    assert refused.returncode == 2, refused.log
    assert "--content-type: unsupported charset 'latin-1'" in refused.log
    assert not (tmp_path / "refused").exists()


def test_jsonlines_features_filter_and_join(
    abalone_model: AbaloneModel, booster: object, rows: np.ndarray, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    records = [{"id": i, "features": row, "note": "x"} for i, row in enumerate(rows.tolist())]
    (tmp_path / "in/a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    done = run(
        command(abalone_model, tmp_path / "in", tmp_path / "out",
                "--content-type", "application/jsonlines", "--accept", "application/jsonlines",
                "--input-filter", "$.features", "--join-source", "Input",
                "--output-filter", "$['id','SageMakerOutput']")
    )  # fmt: skip
    assert done.returncode == 0, done.log
    out = [json.loads(line) for line in (tmp_path / "out/a.jsonl.out").read_text().splitlines()]
    assert [set(item) for item in out] == [{"id", "SageMakerOutput"}] * len(rows)
    assert [item["id"] for item in out] == list(range(len(rows)))
    scores = np.array([item["SageMakerOutput"]["score"] for item in out], dtype=np.float32)
    np.testing.assert_array_equal(scores, np.asarray(booster.inplace_predict(rows)))


def test_records_are_counted_as_split_type_cuts_them_not_as_the_rows_they_hold(
    abalone_model: AbaloneModel, rows: np.ndarray, tmp_path: Path
) -> None:
    """A JSON line of several rows (``{"instances": [[...], [...]]}``) is one record, as
    ``splitType Line`` cuts them; a whole document (``splitType None``) is one too. The
    summary counted the rows (600 for 200 records of 3)."""
    groups = rows.reshape(-1, 3, rows.shape[1]).tolist()
    (tmp_path / "lines").mkdir()
    lines = "".join(json.dumps({"instances": group}) + "\n" for group in groups)
    (tmp_path / "lines/a.jsonl").write_text(lines)
    (tmp_path / "whole").mkdir()
    (tmp_path / "whole/b.json").write_text(json.dumps({"instances": rows[:7].tolist()}, indent=1))
    for split, content_type, expected in (
        ("Line", "application/jsonlines", len(groups)),
        ("None", "application/json", 1),
    ):
        source = tmp_path / ("lines" if split == "Line" else "whole")
        out = tmp_path / f"out-{split}"
        settings = ("--split-type", split, "--content-type", content_type)
        done = run(command(abalone_model, source, out, *settings, "--accept", "application/json"))
        assert done.returncode == 0, done.log
        assert summary(out)["records"] == expected, done.log
        assert f"Completed: {expected} records in " in done.log


def test_single_and_multi_record_strategies(
    abalone_model: AbaloneModel, booster: object, rows: np.ndarray, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    text = csv_text(rows)
    (tmp_path / "in/a.csv").write_bytes(text)
    outputs = {}
    for strategy in ("SingleRecord", "MultiRecord"):
        for accept in ("text/csv", "application/json"):
            out = tmp_path / f"out-{strategy}-{accept.replace('/', '-')}"
            done = run(
                command(abalone_model, tmp_path / "in", out, "--batch-strategy", strategy,
                        "--accept", accept, "--max-payload-in-mb", "1")
            )  # fmt: skip
            assert done.returncode == 0, done.log
            outputs[strategy, accept] = (out / "a.csv.out").read_bytes()
    assert outputs["SingleRecord", "text/csv"] == outputs["MultiRecord", "text/csv"]
    np.testing.assert_array_equal(
        scores_of(outputs["MultiRecord", "text/csv"]), expected_scores(booster, text)
    )
    single = outputs["SingleRecord", "application/json"].splitlines()
    multi = outputs["MultiRecord", "application/json"].splitlines()
    assert len(single) == len(rows)  # one response document per record
    assert len(multi) == 1  # every record fits in one 1 MB mini-batch
    flattened = [json.loads(line)["predictions"][0]["score"] for line in single]
    assert flattened == [p["score"] for p in json.loads(multi[0])["predictions"]]


def test_split_none_sends_each_object_whole_and_refuses_one_over_the_payload(
    abalone_model: AbaloneModel, booster: object, rows: np.ndarray, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    text = csv_text(rows)
    (tmp_path / "in/small.csv").write_bytes(text)
    (tmp_path / "in/large.csv").write_bytes(text * 60)  # over 1 MB
    done = run(
        command(abalone_model, tmp_path / "in", tmp_path / "out", "--split-type", "None",
                "--max-payload-in-mb", "1")
    )  # fmt: skip
    assert done.returncode == EXIT_OBJECTS_FAILED, done.log
    np.testing.assert_array_equal(
        scores_of((tmp_path / "out/small.csv.out").read_bytes()), expected_scores(booster, text)
    )
    assert not (tmp_path / "out/large.csv.out").exists()
    failures = summary(tmp_path / "out")["failures"]
    assert failures == [
        {
            "object": f"file://{tmp_path}/in/large.csv",
            "line": None,  # the object as a whole
            "reason": "the object is over maxPayloadInMB (1 MB), and splitType None sends it "
            "whole, as one request: give splitType Line to send its lines in mini-batches, or a "
            "larger maxPayloadInMB (at most 100)",
        }
    ]


@pytest.mark.parametrize("compression", ["None", "Gzip"])
def test_a_whole_json_document_the_memory_cannot_hold_fails_its_object_naming_the_fix(
    abalone_model: AbaloneModel,
    booster: object,
    rows: np.ndarray,
    tmp_path: Path,
    compression: str,
) -> None:
    """A whole JSON document is parsed at up to ~40 times its size: one the instance's memory
    cannot hold was read and parsed until the pod was OOM-killed, the job's other objects with
    it. It fails its own object, as one over maxPayloadInMB does, saying what to change."""
    (tmp_path / "in").mkdir()
    small = json.dumps({"instances": rows[:20].tolist()}).encode()
    large = json.dumps({"instances": rows.tolist()}).encode()
    assert len(small) < 64 * 1024 < len(large)  # the cap with no memory to spare: 64 KiB
    pack = gzip.compress if compression == "Gzip" else bytes
    (tmp_path / "in/small.json").write_bytes(pack(small))
    (tmp_path / "in/large.json").write_bytes(pack(large))
    done = run(
        command(abalone_model, tmp_path / "in", tmp_path / "out", "--content-type",
                "application/json", "--split-type", "None", "--compression-type", compression),
        env={"INFERMODES_BATCH_MEMORY_BYTES": "1"},
    )  # fmt: skip
    assert done.returncode == EXIT_OBJECTS_FAILED, done.log
    np.testing.assert_array_equal(
        scores_of((tmp_path / "out/small.json.out").read_bytes()),
        expected_scores(booster, csv_text(rows[:20])),
    )
    assert not (tmp_path / "out/large.json.out").exists()
    [failure] = summary(tmp_path / "out")["failures"]
    assert (failure["object"], failure["line"]) == (f"file://{tmp_path}/in/large.json", None)
    size = f"is {len(large)} bytes" if compression == "None" else "decompresses to more than"
    assert failure["reason"].startswith(f"the object {size}"), failure
    assert "65536 bytes" in failure["reason"], failure
    assert failure["reason"].endswith(
        "split it into lines (splitType Line, a JSON document per line), send it as text/csv, "
        "or give the instance more memory (its container's limit, or "
        "INFERMODES_BATCH_MEMORY_BYTES)"
    ), failure


def test_gzip_input_gives_the_plain_inputs_output(
    abalone_model: AbaloneModel, rows: np.ndarray, tmp_path: Path
) -> None:
    text = csv_text(rows)
    for folder, name, data in (("plain", "a.csv", text), ("gz", "a.csv.gz", gzip.compress(text))):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_bytes(data)
    plain = run(command(abalone_model, tmp_path / "plain", tmp_path / "out-plain"))
    packed = run(
        command(abalone_model, tmp_path / "gz", tmp_path / "out-gz", "--compression-type", "Gzip")
    )
    assert plain.returncode == packed.returncode == 0, packed.log
    assert (tmp_path / "out-gz/a.csv.gz.out").read_bytes() == (
        tmp_path / "out-plain/a.csv.out"
    ).read_bytes()


def test_gzip_input_without_its_compression_type_says_so(
    abalone_model: AbaloneModel, rows: np.ndarray, tmp_path: Path
) -> None:
    """A .gz object read as CSV failed 'a carriage return inside a row; end rows with LF' (or a
    JSON or UTF-8 error): naming the bytes, not the setting to fix."""
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz/a.csv.gz").write_bytes(gzip.compress(csv_text(rows)))
    done = run(command(abalone_model, tmp_path / "gz", tmp_path / "out"))
    assert done.returncode == 4, done.log
    assert done.summary_line().endswith(
        "a.csv.gz: the object is gzip-compressed (it starts with 1f 8b): give compressionType "
        "Gzip (the API's TransformInput.CompressionType, the CLI's --compression-type)"
    ), done.log


def test_assemble_none_concatenates_the_responses(
    abalone_model: AbaloneModel, rows: np.ndarray, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in/a.csv").write_bytes(csv_text(rows[:3]))
    outputs = {}
    for assemble in ("None", "Line"):
        done = run(
            command(abalone_model, tmp_path / "in", tmp_path / assemble, "--accept",
                    "application/json", "--batch-strategy", "SingleRecord",
                    "--assemble-with", assemble)
        )  # fmt: skip
        assert done.returncode == 0, done.log
        outputs[assemble] = (tmp_path / assemble / "a.csv.out").read_bytes()
    assert outputs["None"].count(b"}]}{") == 2
    assert b"\n" not in outputs["None"]
    assert outputs["Line"] == outputs["None"].replace(b"}]}", b"}]}\n")


def libsvm_of(rows: np.ndarray) -> tuple[bytes, np.ndarray]:
    """``rows`` as libsvm lines (a label, then the non-zero features), and the matrix they
    describe (the zeros left out are missing values)."""
    lines = [" ".join(f"{i}:{v:.6g}" for i, v in enumerate(row) if v) for row in rows.tolist()]
    dense = np.full(rows.shape, np.nan, dtype=np.float32)
    for r, line in enumerate(lines):
        for item in line.split():
            index, value = item.split(":")
            dense[r, int(index)] = np.float32(value)
    return "".join(f"0 {line}\n" for line in lines).encode(), dense


def test_libsvm_input(abalone_model: AbaloneModel, booster: object, tmp_path: Path) -> None:
    text, dense = libsvm_of(abalone_model.test_rows[:50])
    (tmp_path / "in").mkdir()
    (tmp_path / "in/a.libsvm").write_bytes(text)
    done = run(
        command(abalone_model, tmp_path / "in", tmp_path / "out", "--content-type", "text/libsvm")
    )
    assert done.returncode == 0, done.log
    np.testing.assert_array_equal(
        scores_of((tmp_path / "out/a.libsvm.out").read_bytes()),
        np.asarray(booster.inplace_predict(dense), dtype=np.float32),
    )


def packed_within(budget: int) -> str:
    """The batch runner's start-up line for libsvm mini-batches held to ``budget``."""
    return (
        f"text/libsvm mini-batches are packed within {budget} bytes of memory each, at an "
        f"estimated 232 a row + 23 a byte: a line alone up to {(budget - 232) // 23} bytes"
    )


def test_libsvm_read_in_python_is_packed_within_the_memory_and_a_larger_line_fails_its_object(
    abalone_model: AbaloneModel, booster: object, rows: np.ndarray, tmp_path: Path
) -> None:
    """libsvm is read in Python, at an estimated 232 bytes of memory a row + 23 a byte: an
    instance packs its mini-batches within its memory's share (6.3 MiB here, the floor's, 64 KiB
    of its narrowest rows, with no memory to spare), not maxPayloadInMB's 6 MB, so a larger
    object is transformed whole a smaller mini-batch at a time; a line whose estimate alone is
    over that share fails its object, naming the line's size, its estimate and the memory,
    instead of getting the instance OOM-killed with the job's other objects."""
    text, dense = libsvm_of(np.tile(rows, (3, 1)))
    assert len(text) > 64 * 1024
    cost = codecs.PYTHON_READ_COST[codecs.LIBSVM]
    budget = MIN_INPUT_CAP * cost.worst_per_byte
    long_line = b"0 0:1" + b" " * 300_000 + b"1:1\n"
    assert cost.estimate(1, len(long_line)) > budget
    (tmp_path / "in").mkdir()
    (tmp_path / "in/big.libsvm").write_bytes(text)
    before = text[:200].rpartition(b"\n")[0] + b"\n"  # whole lines, then the long one
    (tmp_path / "in/long.libsvm").write_bytes(before + long_line)
    done = run(
        command(abalone_model, tmp_path / "in", tmp_path / "out", "--content-type", "text/libsvm"),
        env={"INFERMODES_BATCH_MEMORY_BYTES": "1"},
    )
    assert done.returncode == EXIT_OBJECTS_FAILED, done.log
    np.testing.assert_array_equal(
        scores_of((tmp_path / "out/big.libsvm.out").read_bytes()),
        np.asarray(booster.inplace_predict(dense), dtype=np.float32),
    )
    assert not (tmp_path / "out/long.libsvm.out").exists()
    [failure] = summary(tmp_path / "out")["failures"]
    assert failure["object"] == f"file://{tmp_path}/in/long.libsvm", failure
    assert failure["line"] == before.count(b"\n") + 1, failure
    size = len(long_line)
    assert failure["reason"] == (
        f"the text/libsvm line is {size} bytes and is read in Python, at an estimated "
        f"{232 + 23 * size + 4 * 10} bytes of memory (1 rows x 232 + {size} bytes x 23 + a "
        "matrix of 1 rows x 10 features x 4); one read may "
        f"take up to {budget} bytes of memory here (the instance's memory, 1 bytes less what "
        "its model and runtime hold, shared by 1 concurrent transform(s)): give the instance "
        "more memory (its container's limit, or INFERMODES_BATCH_MEMORY_BYTES)"
    ), failure
    assert packed_within(budget) in done.log


def test_a_libsvm_line_over_its_narrowest_rows_cap_is_read_when_its_estimate_fits(
    abalone_model: AbaloneModel, booster: object, rows: np.ndarray, tmp_path: Path
) -> None:
    """A long libsvm line costs ~23 bytes of memory a byte, not the ~100 of the narrowest rows:
    among short lines, a line of 80,000 bytes (over the 64 KiB those rows may take in 1 byte of
    memory at 2 concurrent transforms) is read in a mini-batch of its own and predicted, where
    it failed its object."""
    text, dense = libsvm_of(rows[:40])
    lines = text.splitlines(keepends=True)
    label, _, features = lines[20].partition(b" ")
    long_line = label + b" " + features.replace(b" ", b" " * 20_000)
    assert len(long_line) > 80_000
    (tmp_path / "in").mkdir()
    (tmp_path / "in/long.libsvm").write_bytes(b"".join([*lines[:20], long_line, *lines[21:]]))
    done = run(
        command(abalone_model, tmp_path / "in", tmp_path / "out", "--content-type", "text/libsvm",
                "--max-concurrent-transforms", "2"),
        env={"INFERMODES_BATCH_MEMORY_BYTES": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.log
    # one start-up line says what binds a mini-batch; the narrowest rows' 64 KiB is no cap of it
    budget = MIN_INPUT_CAP * codecs.PYTHON_READ_COST[codecs.LIBSVM].worst_per_byte
    assert packed_within(budget) in done.log
    assert "inputs capped at" not in done.log, done.log
    np.testing.assert_array_equal(
        scores_of((tmp_path / "out/long.libsvm.out").read_bytes()),
        np.asarray(booster.inplace_predict(dense), dtype=np.float32),
    )


def test_a_libsvm_object_read_whole_over_the_memory_fails_naming_what_was_read(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """With splitType None a libsvm object is one record: once the estimate of what was read
    of it is over the memory's share it fails, naming those bytes and lines, and says to split
    it into lines."""
    cost = codecs.PYTHON_READ_COST[codecs.LIBSVM]
    budget = MIN_INPUT_CAP * cost.worst_per_byte
    text = b"0 0:1" + b" " * 300_000 + b"1:1\n"  # one read block: read whole
    (tmp_path / "in").mkdir()
    (tmp_path / "in/one.libsvm").write_bytes(text)
    done = run(
        command(abalone_model, tmp_path / "in", tmp_path / "out", "--content-type", "text/libsvm",
                "--split-type", "None"),
        env={"INFERMODES_BATCH_MEMORY_BYTES": "1"},
    )  # fmt: skip
    assert done.returncode == EXIT_OBJECTS_FAILED, done.log
    [failure] = summary(tmp_path / "out")["failures"]
    size = len(text)
    assert (failure["line"], failure["reason"]) == (
        None,
        f"the text/libsvm object is at least {size} bytes and is read in Python, at an "
        f"estimated {232 + 23 * size + 4 * 10} bytes of memory (1 rows x 232 + {size} bytes x "
        "23 + a matrix of 1 rows x 10 features x 4); one "
        f"read may take up to {budget} bytes of memory here (the instance's memory, 1 bytes "
        "less what its model and runtime hold, shared by 1 concurrent transform(s)): split it "
        "into lines (splitType Line), or give the instance more memory (its container's limit, "
        "or INFERMODES_BATCH_MEMORY_BYTES)",
    ), failure


def test_transient_failures_are_retried_per_minibatch(
    abalone_model: AbaloneModel, booster: object, rows: np.ndarray, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    text = csv_text(rows)
    (tmp_path / "in/a.csv").write_bytes(text)
    done = run(
        command(abalone_model, tmp_path / "in", tmp_path / "out", "--invocations-max-retries", "3"),
        env=with_faults(2),
    )
    assert done.returncode == 0, done.log
    assert done.log.count("injected transient failure; retrying") == 2
    np.testing.assert_array_equal(
        scores_of((tmp_path / "out/a.csv.out").read_bytes()), expected_scores(booster, text)
    )


def test_a_minibatch_out_of_retries_fails_its_object(
    abalone_model: AbaloneModel, rows: np.ndarray, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in/a.csv").write_bytes(csv_text(rows))
    done = run(
        command(abalone_model, tmp_path / "in", tmp_path / "out", "--invocations-max-retries", "1"),
        env=with_faults(2),
    )
    assert done.returncode == EXIT_OBJECTS_FAILED, done.log
    assert not (tmp_path / "out/a.csv.out").exists()
    [failure] = summary(tmp_path / "out")["failures"]
    assert failure["line"] == 1
    assert failure["reason"] == (
        "the mini-batch starting here failed 2 attempt(s); last: "
        "RuntimeError: injected transient failure"
    )


def test_attempts_over_the_timeout_fail(
    abalone_model: AbaloneModel, rows: np.ndarray, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in/a.csv").write_bytes(csv_text(rows))
    done = run(
        command(abalone_model, tmp_path / "in", tmp_path / "out",
                "--invocations-timeout-in-seconds", "1e-9", "--invocations-max-retries", "2")
    )  # fmt: skip
    assert done.returncode == EXIT_OBJECTS_FAILED, done.log
    assert done.log.count("over the invocation timeout of 1e-09 s; retrying") == 2
    [failure] = summary(tmp_path / "out")["failures"]
    assert "failed 3 attempt(s); last: took" in failure["reason"]


def test_a_record_over_the_payload_fails_only_its_object(
    abalone_model: AbaloneModel, rows: np.ndarray, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    text = csv_text(rows)
    lines = text.splitlines(keepends=True)
    (tmp_path / "in/bad.csv").write_bytes(b"".join(lines[:7]) + b"1," * 600_000 + b"\n")
    (tmp_path / "in/good.csv").write_bytes(text)
    done = run(
        command(abalone_model, tmp_path / "in", tmp_path / "out", "--max-payload-in-mb", "1")
    )
    assert done.returncode == EXIT_OBJECTS_FAILED
    assert (tmp_path / "out/good.csv.out").exists()
    assert not (tmp_path / "out/bad.csv.out").exists()
    [failure] = summary(tmp_path / "out")["failures"]
    assert (failure["line"], failure["reason"]) == (
        8,
        "record is larger than maxPayloadInMB (1 MB)",
    )
    assert f"FAILED file://{tmp_path}/in/bad.csv line 8: record is larger" in done.log


def test_an_input_filter_selecting_no_column_of_a_row_fails_its_object_at_once(
    abalone_model: AbaloneModel, rows: np.ndarray, tmp_path: Path
) -> None:
    """A short row whose ``$[1:]`` selects nothing is that row's bad input: not retried as an
    internal failure (a ValueError, four attempts, blamed on the mini-batch's first line)."""
    features = csv_text(rows[:3]).decode().splitlines()
    done = run_id_dropped_and_joined(
        abalone_model,
        tmp_path,
        {"a.csv": f"id0,{features[0]}\nid1\nid2,{features[1]}\n", "b.csv": f"id3,{features[2]}\n"},
    )
    assert done.returncode == EXIT_OBJECTS_FAILED, done.log
    assert "retrying" not in done.log
    assert (tmp_path / "out/b.csv.out").exists()
    assert not (tmp_path / "out/a.csv.out").exists()
    [failure] = summary(tmp_path / "out")["failures"]
    assert (failure["line"], failure["reason"]) == (
        2,
        "inputFilter $[1:]: selects no column of the input record, which has 1 columns",
    ), failure


def test_an_output_filter_selecting_no_column_of_the_prediction_fails_its_object(
    abalone_model: AbaloneModel, rows: np.ndarray, tmp_path: Path
) -> None:
    """``$[1:]`` of the one-column prediction wrote a blank line per record, and the job
    succeeded."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in/a.csv").write_bytes(csv_text(rows[:3]))
    done = run(
        command(abalone_model, tmp_path / "in", tmp_path / "out", "--output-filter", "$[1:]")
    )
    assert done.returncode == EXIT_OBJECTS_FAILED, done.log
    assert "retrying" not in done.log
    assert not (tmp_path / "out/a.csv.out").exists()
    [failure] = summary(tmp_path / "out")["failures"]
    assert (failure["line"], failure["reason"]) == (
        1,
        "outputFilter $[1:]: selects no column of the output record (the prediction), which "
        "has 1 columns",
    ), failure


def test_a_large_object_over_two_instances_gives_the_one_instance_output(
    abalone_model: AbaloneModel, booster: object, tmp_path: Path
) -> None:
    text = csv_text(sample_rows(abalone_model.test_rows, 30_000, seed=3))
    (tmp_path / "in").mkdir()
    (tmp_path / "in/big.csv").write_bytes(text)
    (tmp_path / "in/small.csv").write_bytes(text[:5000].rsplit(b"\n", 1)[0] + b"\n")
    one = run(command(abalone_model, tmp_path / "in", tmp_path / "one"))
    assert one.returncode == 0, one.log
    args = ("--instance-count", "2", "--split-min-bytes", "1000", "--max-payload-in-mb", "1")
    two = run_instances(
        [
            command(
                abalone_model, tmp_path / "in", tmp_path / "two", "--instance-index", str(i), *args
            )
            for i in range(2)
        ]
    )
    assert [t.returncode for t in two] == [0, 0], [t.log for t in two]
    big = (tmp_path / "two/big.csv.out").read_bytes()
    assert big == (tmp_path / "one/big.csv.out").read_bytes()
    np.testing.assert_array_equal(scores_of(big), expected_scores(booster, text))
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "_infermodes-batch", "big.csv.out", "small.csv.out",
    ]  # fmt: skip
    documents = [summary(tmp_path / "two", i, 2) for i in range(2)]
    assert sum(d["units"]["succeeded"] for d in documents) == 3  # two ranges and the small one
    # small.csv.out, and big.csv.out by whoever finished last (by both, when they tie)
    assert sum(d["objectsWritten"] for d in documents) in (2, 3)


def test_a_failing_range_names_the_line_of_the_whole_object(
    abalone_model: AbaloneModel, booster: object, tmp_path: Path
) -> None:
    lines = csv_text(sample_rows(abalone_model.test_rows, 4000, seed=4)).splitlines(keepends=True)
    lines[3500] = b"1,2,oops,4,5,6,7,8,9,10\n"
    (tmp_path / "in").mkdir()
    (tmp_path / "in/big.csv").write_bytes(b"".join(lines))
    args = ("--instance-count", "2", "--split-min-bytes", "1000")
    done = run_instances(
        [
            command(
                abalone_model, tmp_path / "in", tmp_path / "out", "--instance-index", str(i), *args
            )
            for i in range(2)
        ]
    )
    assert [d.returncode for d in done] == [0, EXIT_OBJECTS_FAILED]
    [failure] = summary(tmp_path / "out", 1, 2)["failures"]
    assert failure["line"] == 3501
    assert failure["reason"].startswith("column 3: cannot parse 'oops' as a number")
    assert not (tmp_path / "out/big.csv.out").exists()
    lines[3500] = b"1,0,0,0.5,0.4,0.1,0.5,0.2,0.1,0.15\n"  # fixed: another size, new parts
    (tmp_path / "in/big.csv").write_bytes(b"".join(lines))
    again = run_instances(
        [
            command(
                abalone_model, tmp_path / "in", tmp_path / "out", "--instance-index", str(i), *args
            )
            for i in range(2)
        ]
    )
    assert [d.returncode for d in again] == [0, 0], [d.log for d in again]
    np.testing.assert_array_equal(
        scores_of((tmp_path / "out/big.csv.out").read_bytes()),
        expected_scores(booster, b"".join(lines)),
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "_infermodes-batch", "big.csv.out"
    ]  # fmt: skip


@pytest.mark.parametrize("mark", [b"", codecs.UTF8_BOM], ids=["plain", "byte-order-mark"])
def test_a_manifest_names_the_inputs(
    abalone_model: AbaloneModel, rows: np.ndarray, tmp_path: Path, mark: bytes
) -> None:
    """A manifest a Windows tool wrote, starting with a UTF-8 byte order mark, is read as the
    CSV and JSON inputs are (it was refused as not JSON)."""
    (tmp_path / "in/sub").mkdir(parents=True)
    for name in ("a.csv", "b.csv", "sub/c.csv"):
        (tmp_path / "in" / name).write_bytes(csv_text(rows[:10]))
    manifest = tmp_path / "manifest.json"
    listed = [{"prefix": f"file://{tmp_path}/in/"}, "sub/c.csv", "a.csv"]
    manifest.write_bytes(mark + json.dumps(listed).encode())
    done = run(
        [*command(abalone_model, tmp_path / "unused", tmp_path / "out")[:4], "--manifest",
         str(manifest), "--output", str(tmp_path / "out"), "--metrics-port", "0"]
    )  # fmt: skip
    assert done.returncode == 0, done.log
    assert (tmp_path / "out/a.csv.out").exists()
    assert (tmp_path / "out/sub/c.csv.out").exists()
    assert not (tmp_path / "out/b.csv.out").exists()


def test_bad_settings_are_refused_before_any_work(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    bad = [
        (("--max-payload-in-mb", "20", "--max-concurrent-transforms", "6"), "must not exceed 100"),
        (("--invocations-max-retries", "4"), "less than or equal to 3"),
        (("--split-type", "RecordIO"), "'None' or 'Line'"),
        (("--join-source", "Input", "--accept", "application/json"), "joins like with like"),
        (("--instance-index", "2", "--instance-count", "2"), "must be below instance_count"),
    ]
    for args, message in bad:
        done = run(command(abalone_model, tmp_path, tmp_path / "out", *args))
        assert done.returncode == 2, done.log
        assert message in done.log
    unparsable = run(command(abalone_model, tmp_path, tmp_path / "out", "--input-filter", "$..x"))
    assert unparsable.returncode == 2
    assert "unsupported JSONPath" in unparsable.log
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("s3://", "s3 URI has no bucket"),
        ("ftp://host/out/", "unsupported storage scheme 'ftp'"),
        ("file://host/out/", "file URI must be file:///absolute/path"),
    ],
)
def test_an_output_location_storage_cannot_name_is_one_line_not_a_traceback(
    abalone_model: AbaloneModel, tmp_path: Path, output: str, message: str
) -> None:
    """Refused with the settings, before the model loads: no summary could be written there."""
    done = run(batch_command(abalone_model.tarball, str(tmp_path), output))
    assert done.returncode == 2, done.log
    assert f"Error: --output: {message}" in done.log
    assert "Traceback" not in done.log


@pytest.mark.parametrize(
    "accept",
    [
        "text/csv",  # native CSV: transforms in threads of the runner's process
        "application/jsonlines",  # Python JSON encoding: transforms in worker processes
    ],
)
def test_concurrent_transforms_keep_the_order_and_name_bad_lines(
    abalone_model: AbaloneModel, booster: object, tmp_path: Path, accept: str
) -> None:
    text = csv_text(sample_rows(abalone_model.test_rows, 50_000, seed=6))
    lines = text.splitlines(keepends=True)
    lines[45_000] = b"1,0,0,0.5,0.4,0.1,0.5,0.2,0.1\n"
    (tmp_path / "in").mkdir()
    (tmp_path / "in/good.csv").write_bytes(text)
    (tmp_path / "in/bad.csv").write_bytes(b"".join(lines))
    # 3.5 MB per object: four 1 MB mini-batches each, three in flight at once
    args = ("--max-concurrent-transforms", "3", "--max-payload-in-mb", "1", "--accept", accept)
    done = run(command(abalone_model, tmp_path / "in", tmp_path / "out", *args))
    assert done.returncode == EXIT_OBJECTS_FAILED, done.log
    out = (tmp_path / "out/good.csv.out").read_bytes()
    if accept == "text/csv":
        scores = scores_of(out)
    else:
        scores = np.array([json.loads(line)["score"] for line in out.splitlines()], np.float32)
    np.testing.assert_array_equal(scores, expected_scores(booster, text))
    [failure] = summary(tmp_path / "out")["failures"]
    assert (failure["line"], failure["reason"]) == (45_001, "expected 10 features, got 9")


def test_the_example_manifest_runs_as_written_on_the_example_data(
    abalone_model: AbaloneModel, booster: object, tmp_path: Path
) -> None:
    """examples/abalone/batch.yaml's batch block as the instances' environment (URIs pointed at
    what train.py wrote), each instance told its index as an Indexed Job tells it."""
    manifest = yaml.safe_load((REPO / "examples/abalone/batch.yaml").read_text())
    manifest["spec"]["model"]["uri"] = abalone_model.tarball.as_uri()
    block = manifest["spec"]["batch"]
    block["input"]["uri"] = f"file://{abalone_model.directory}/batch/input/"
    block["output"]["uri"] = f"file://{tmp_path}/output/"
    spec = EndpointSpec.model_validate(manifest["spec"])
    env = dict(batch_instance(spec, "uid-1").env)  # what the operator gives each instance
    env["INFERMODES_BATCH_METRICS_PORT"] = "0"  # instances share this machine's ports
    env["INFERMODES_BATCH_TERMINATION_MESSAGE_PATH"] = str(tmp_path / "termination-log")
    count = spec.batch_block().instance_count
    procs = [
        start([INFERMODES, "batch"], {**env, "JOB_COMPLETION_INDEX": str(index)})
        for index in range(count)
    ]
    done = [finish(proc) for proc in procs]
    assert [d.returncode for d in done] == [0] * count, [d.log for d in done]
    inputs = sorted((abalone_model.directory / "batch/input").iterdir())
    assert len(inputs) == 4
    total = 0
    for path in inputs:
        text = path.read_bytes()
        scores = scores_of((tmp_path / "output" / f"{path.name}.out").read_bytes())
        np.testing.assert_array_equal(scores, expected_scores(booster, text))
        total += len(scores)
    assert total == 4177  # every row of the data set


def test_sigterm_discards_the_output_in_progress_and_reports_stopped(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in/a.csv").write_bytes(csv_text(sample_rows(abalone_model.test_rows, 200_000, 8)))
    proc = start(
        command(
            abalone_model, tmp_path / "in", tmp_path / "out", "--batch-strategy", "SingleRecord"
        )
    )
    try:
        # the atomic writer's temporary file shows the transform under way
        wait_until(
            lambda: any((tmp_path / "out").glob(".a.csv.out.*")), 60, "the output in progress"
        )
        os.kill(proc.pid, signal.SIGTERM)
        done = finish(proc)
    finally:
        stop_process(proc)
    assert done.returncode == 143, done.log
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_infermodes-batch"]
    assert summary(tmp_path / "out")["state"] == "Stopped"


def test_an_instance_sigkilled_midway_and_run_again_leaves_every_output_once_and_no_partial(
    abalone_model: AbaloneModel, booster: object, tmp_path: Path
) -> None:
    """SIGKILL (the OOM killer, a lost node) unwinds nothing: the output in progress stayed a
    hidden partial file beside it for ever, also once the job, run again, Completed. The
    instance run again removes it, skips the outputs written before (each record in the
    outputs once, in input order) and writes the rest."""
    (tmp_path / "in").mkdir()
    sizes = {"p0.csv": 1000, "p1.csv": 1000, "p2.csv": 300_000, "p3.csv": 1000}
    texts = {name: csv_text(sample_rows(abalone_model.test_rows, rows, seed))
             for seed, (name, rows) in enumerate(sizes.items())}  # fmt: skip
    for name, text in texts.items():
        (tmp_path / "in" / name).write_bytes(text)
    env = {"INFERMODES_BATCH_RUN_ID": "job-1"}  # as the operator and up give each job
    job = command(abalone_model, tmp_path / "in", tmp_path / "out", "--batch-strategy",
                  "SingleRecord")  # fmt: skip
    proc = start(job, env)
    try:
        wait_until(lambda: any((tmp_path / "out").glob(".p2.csv.out.*.partial")), 120,
                   "the third output in progress")  # fmt: skip
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(60) == -signal.SIGKILL
    finally:
        stop_process(proc)
    assert any((tmp_path / "out").glob(".p2.csv.out.*.partial"))  # what it left
    done = run(job, env)
    assert done.returncode == 0, done.log
    assert "removed 1 partial write(s) a stopped instance left" in done.log
    hidden = [p.name for p in (tmp_path / "out").rglob(".*")]
    assert hidden == [], hidden
    for name, text in texts.items():
        np.testing.assert_array_equal(
            scores_of((tmp_path / "out" / f"{name}.out").read_bytes()),
            expected_scores(booster, text),
        )
    assert summary(tmp_path / "out")["units"] == {
        "assigned": 4, "succeeded": 2, "skipped": 2, "failed": 0
    }  # fmt: skip


def test_an_unreadable_manifest_stops_the_instance_with_a_summary(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text('["not", "a", "manifest"]')
    done = run(
        [*command(abalone_model, tmp_path, tmp_path / "out")[:4], "--manifest", str(manifest),
         "--output", str(tmp_path / "out"), "--metrics-port", "0"]
    )  # fmt: skip
    assert done.returncode == 2, done.log
    document = summary(tmp_path / "out")
    assert document["state"] == "Failed"
    assert document["error"].startswith(f"cannot list the inputs: manifest {manifest} must be")


def test_a_jobs_output_read_by_another_job_leaves_out_the_first_jobs_summaries(
    abalone_model: AbaloneModel, rows: np.ndarray, tmp_path: Path
) -> None:
    """The first job's summaries (its bookkeeping under ``_infermodes-batch/``) are not the
    second job's inputs: only its outputs are."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in/a.csv").write_bytes(csv_text(rows))
    joining = ("--join-source", "Input", "--metrics-port", "0")  # the features, then the score
    first = run(command(abalone_model, tmp_path / "in", tmp_path / "first", *joining))
    assert first.returncode == 0, first.log
    assert summary(tmp_path / "first")["state"] == "Completed"
    second = run(command(abalone_model, tmp_path / "first", tmp_path / "second",
                         "--input-filter", "$[:-1]", "--metrics-port", "0"))  # fmt: skip
    assert second.returncode == 0, second.log
    assert [p.name for p in (tmp_path / "second").iterdir() if p.is_file()] == ["a.csv.out.out"]
    joined = (tmp_path / "first/a.csv.out").read_text().splitlines()
    again = (tmp_path / "second/a.csv.out.out").read_text().splitlines()
    assert [float(line) for line in again] == [float(line.rsplit(",", 1)[1]) for line in joined]


def test_a_model_that_cannot_be_loaded_leaves_a_summary_saying_so(
    rows: np.ndarray, tmp_path: Path
) -> None:
    """Exit 3 says only "the model"; the summary, which the job's status quotes, says why."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in/a.csv").write_bytes(csv_text(rows))
    (tmp_path / "model.tar.gz").write_bytes(b"not a tarball")
    for model, why in ((tmp_path / "missing.tar.gz", "no such object"),
                       (tmp_path / "model.tar.gz", "the model is not XGBoost")):  # fmt: skip
        done = run(batch_command(model, str(tmp_path / "in"), str(tmp_path / "out")))
        assert done.returncode == 3, done.log
        error = summary(tmp_path / "out")["error"]
        assert error.startswith("cannot load the model") and str(model) in error, error
        assert why in error
        assert summary(tmp_path / "out")["state"] == "Failed"


def test_an_input_prefix_with_no_objects_fails_the_job_naming_it(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """A mistyped prefix (or one holding only the outputs) is not a job that succeeded."""
    (tmp_path / "empty").mkdir()
    done = run(command(abalone_model, tmp_path / "empty", tmp_path / "out", "--metrics-port", "0"))
    assert done.returncode == 2, done.log
    document = summary(tmp_path / "out")
    assert document["state"] == "Failed"
    assert document["error"] == f"no input objects under {tmp_path}/empty"
    inside = run(command(abalone_model, tmp_path / "empty", tmp_path / "empty" / "out",
                         "--metrics-port", "0"))  # fmt: skip
    assert inside.returncode == 2, inside.log
    assert summary(tmp_path / "empty" / "out")["error"] == (
        f"no input objects under {tmp_path}/empty (objects under the output prefix "
        f"{tmp_path}/empty/out are not inputs)"
    )
    (tmp_path / "empty" / "in").mkdir()
    (tmp_path / "empty" / "in" / "a.csv").write_text("1,2\n")  # read as an output: skipped
    around = run(command(abalone_model, tmp_path / "empty" / "in", tmp_path / "empty",
                         "--metrics-port", "0"))  # fmt: skip
    assert around.returncode == 2, around.log
    assert summary(tmp_path / "empty")["error"] == (
        f"no input objects under {tmp_path}/empty/in: the input prefix lies inside the output "
        f"prefix {tmp_path}/empty (or is it), whose objects are never inputs; give the outputs "
        "a prefix of their own"
    )


def test_a_new_job_writes_over_an_earlier_jobs_outputs_and_an_instance_run_again_skips_its_own(
    abalone_model: AbaloneModel, booster: object, tmp_path: Path
) -> None:
    """The same output path, inputs changed, a new job (a new run id, as a re-created
    InferenceEndpoint's UID): its outputs are the new predictions (the earlier job's used to
    be skipped as done, the job Completed on stale results). The same job run again (an
    instance restarted) skips what it wrote; without a run id, as from a shell, anything."""
    (tmp_path / "in").mkdir()
    names = [f"part-{i}.csv" for i in range(3)]

    def job(run_id: str | None, seed: int) -> tuple[dict, dict[str, bytes]]:
        texts = {name: csv_text(sample_rows(abalone_model.test_rows, 50, seed + i))
                 for i, name in enumerate(names)}  # fmt: skip
        for name, text in texts.items():
            (tmp_path / "in" / name).write_bytes(text)
        env = {"INFERMODES_BATCH_RUN_ID": run_id} if run_id else {}
        done = run(command(abalone_model, tmp_path / "in", tmp_path / "out"), env)
        assert done.returncode == 0, done.log
        return summary(tmp_path / "out")["units"], texts

    def outputs_predict(texts: dict[str, bytes]) -> None:
        for name, text in texts.items():
            np.testing.assert_array_equal(
                scores_of((tmp_path / "out" / f"{name}.out").read_bytes()),
                expected_scores(booster, text),
            )

    units, texts = job("job-1", seed=30)
    assert (units["succeeded"], units["skipped"]) == (3, 0)
    units, texts = job("job-2", seed=40)  # new inputs, a new job
    assert (units["succeeded"], units["skipped"]) == (3, 0)
    outputs_predict(texts)
    (tmp_path / "out" / "part-1.csv.out").unlink()  # as if its instance stopped before it
    units, _ = job("job-2", seed=40)  # the same job again
    assert (units["succeeded"], units["skipped"]) == (1, 2)
    outputs_predict(texts)
    units, _ = job(None, seed=50)  # a shell's re-run: whatever exists is done
    assert (units["succeeded"], units["skipped"]) == (0, 3)
    outputs_predict(texts)


def test_instances_started_apart_plan_from_the_job_s_one_listing(
    abalone_model: AbaloneModel, booster: object, tmp_path: Path
) -> None:
    """Each instance planned from its own listing: an object added between two instances'
    starts (a quota let the second start later) moved the shares, and an object there from
    the start went to neither, the job Completed. The first instance stores its listing;
    the second plans from it, so every object listed gets its output (the late one is not
    this job's)."""
    (tmp_path / "in").mkdir()
    texts = {f"part-{i}.csv": csv_text(sample_rows(abalone_model.test_rows, 20 + 10 * i, i))
             for i in range(4)}  # fmt: skip
    for name, text in texts.items():
        (tmp_path / "in" / name).write_bytes(text)
    env = {"INFERMODES_BATCH_RUN_ID": "job-1"}
    first, second = (
        command(abalone_model, tmp_path / "in", tmp_path / "out", "--instance-count", "2",
                "--instance-index", str(index), "--metrics-port", "0")
        for index in (0, 1)
    )  # fmt: skip
    assert run(first, env).returncode == 0
    late = csv_text(sample_rows(abalone_model.test_rows, 45, 9))  # between the two largest
    (tmp_path / "in" / "late.csv").write_bytes(late)
    assert run(second, env).returncode == 0
    for name, text in texts.items():
        np.testing.assert_array_equal(
            scores_of((tmp_path / "out" / f"{name}.out").read_bytes()),
            expected_scores(booster, text),
        )
    assert not (tmp_path / "out" / "late.csv.out").exists()
    done = [summary(tmp_path / "out", i, 2)["units"]["succeeded"] for i in (0, 1)]
    assert sum(done) == 4, done


def test_a_job_keeping_existing_outputs_plans_from_its_one_listing_too(
    abalone_model: AbaloneModel, booster: object, tmp_path: Path
) -> None:
    """``output.keepExisting`` gave the instances no run id, so each planned from its own
    listing: an object added between two instances' starts moved the shares, an object there
    from the start went to neither, and the job Completed without its output. Now it has the
    job's one listing (as any job) and still keeps an output that exists, whoever wrote it."""
    (tmp_path / "in").mkdir()
    texts = {f"part-{i}.csv": csv_text(sample_rows(abalone_model.test_rows, 20 + 10 * i, i))
             for i in range(4)}  # fmt: skip
    for name, text in texts.items():
        (tmp_path / "in" / name).write_bytes(text)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "part-0.csv.out").write_bytes(b"kept\n")  # an earlier job's
    spec = EndpointSpec.model_validate({
        "mode": "batch", "model": {"uri": abalone_model.tarball.as_uri()},
        "batch": {"input": {"uri": f"file://{tmp_path}/in/", "contentType": "text/csv",
                            "splitType": "Line"},
                  "output": {"uri": f"file://{tmp_path}/out/", "keepExisting": True},
                  "instanceCount": 2},
    })  # fmt: skip
    env = {
        **batch_instance(spec, "uid-1").env,
        "INFERMODES_BATCH_METRICS_PORT": "0",
        "INFERMODES_BATCH_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log"),
    }
    first = run([INFERMODES, "batch"], {**env, "JOB_COMPLETION_INDEX": "0"})
    assert first.returncode == 0, first.log
    late = csv_text(sample_rows(abalone_model.test_rows, 45, 9))  # between the two largest
    (tmp_path / "in" / "late.csv").write_bytes(late)
    second = run([INFERMODES, "batch"], {**env, "JOB_COMPLETION_INDEX": "1"})
    assert second.returncode == 0, second.log
    assert (tmp_path / "out" / "part-0.csv.out").read_bytes() == b"kept\n"
    for name in ["part-1.csv", "part-2.csv", "part-3.csv"]:
        np.testing.assert_array_equal(
            scores_of((tmp_path / "out" / f"{name}.out").read_bytes()),
            expected_scores(booster, texts[name]),
        )
    assert not (tmp_path / "out" / "late.csv.out").exists()
    units = [summary(tmp_path / "out", i, 2)["units"] for i in (0, 1)]
    assert sum(u["succeeded"] for u in units) == 3 and sum(u["skipped"] for u in units) == 1


def test_records_of_an_object_that_failed_midway_are_not_counted(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Its output is discarded, so its records are not done: the summary said 15 records
    where the outputs held 10."""
    (tmp_path / "in").mkdir()
    good = csv_text(sample_rows(abalone_model.test_rows, 10, 1))
    (tmp_path / "in" / "a.csv").write_bytes(good)
    (tmp_path / "in" / "b.csv").write_bytes(csv_text(sample_rows(abalone_model.test_rows, 5, 2))
                                            + b"not,a,row\n")  # fmt: skip
    done = run(command(abalone_model, tmp_path / "in", tmp_path / "out", "--batch-strategy",
                       "SingleRecord", "--metrics-port", "0"))  # fmt: skip
    assert done.returncode == EXIT_OBJECTS_FAILED, done.log
    assert summary(tmp_path / "out")["records"] == 10
    assert not (tmp_path / "out" / "b.csv.out").exists()
