"""The platform container's request and response formats through the real ``infermodes serve``
process: ``text/x-libsvm``, RecordIO-protobuf (dense and sparse records), ``Accept:
application/jsonlines``, and the selectable outputs of ``SAGEMAKER_INFERENCE_OUTPUT`` for
regression, binary and multi-class models; then classifiers through the real async plane and
``infermodes batch``, in the same shapes. Classification models are the old XGBoost versions'
fixtures, and every answer is checked against what that XGBoost predicted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from infermodes.errors import EXIT_MODEL_LOAD_FAILED
from infermodes.storage import Storage
from tests.conftest import AbaloneModel
from tests.integration.test_legacy_serving import FIXTURES, platform_tarball, to_csv
from tests.support import recordio
from tests.support.async_plane import Notifications, plane
from tests.support.batch import batch_command
from tests.support.batch import run as run_batch
from tests.support.processes import ServerProcess, running_server, start_server, stop_process
from tests.support.rabbitmq import Broker

ROWS = np.load(FIXTURES / "rows.npy")
JSONLINES = "application/jsonlines"
RECORDIO = "application/x-recordio-protobuf"
ALL_BINARY = "predicted_label,labels,probability,probabilities,raw_score,raw_scores"


@contextmanager
def serving(
    tmp_path: Path, model: str, *args: str, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A server for a fixture model (``VERSION/NAME.bin``) packed as the platform packs it."""
    tarball = platform_tarball(tmp_path / "model.tar.gz", (FIXTURES / model).read_bytes())
    command = ["--model", f"file://{tarball}", "--workers", "1", *args]
    with running_server(command, tmp_path / "server.log", env) as server:
        yield server


def invoke(server: ServerProcess, body: bytes, content_type: str, accept: str) -> httpx.Response:
    response = httpx.post(
        f"{server.url}/invocations",
        content=body,
        headers={"content-type": content_type, "accept": accept},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == accept
    return response


def expected(model: str) -> np.ndarray:
    return np.load(FIXTURES / model.replace(".bin", ".npy"))


def close(got: object, want: np.ndarray) -> None:
    """Within float32 rounding of what the old XGBoost predicted."""
    np.testing.assert_allclose(np.array(got, dtype=np.float32), want, rtol=1e-5, atol=1e-6)


def test_libsvm_alias_recordio_and_jsonlines_on_a_regression_model(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    rows = abalone_model.test_rows[:20]
    want = abalone_model.booster().inplace_predict(rows)  # type: ignore[attr-defined]
    sparse_rows = rows.copy()
    sparse_rows[::3, 1:4] = np.nan  # absent from the sparse records: missing values
    want_sparse = abalone_model.booster().inplace_predict(sparse_rows)  # type: ignore[attr-defined]
    libsvm = "\n".join(" ".join(f"{i}:{float(v)!r}" for i, v in enumerate(r)) for r in rows)
    args = ["--model", f"file://{abalone_model.tarball}", "--workers", "1"]
    with running_server(args, tmp_path / "server.log") as server:
        got = invoke(server, libsvm.encode(), "text/x-libsvm", "text/csv").text.split()
        np.testing.assert_array_equal(np.array(got, dtype=np.float32), want)
        for body, target in [
            (recordio.dense(rows), want),
            (recordio.dense(rows, kind="float64"), want),
            (recordio.sparse(sparse_rows), want_sparse),
        ]:
            lines = invoke(server, body, RECORDIO, JSONLINES).text.splitlines()
            scores = [json.loads(line)["score"] for line in lines]
            np.testing.assert_array_equal(np.array(scores, dtype=np.float32), target)
        bad = recordio.dense(rows[:2]) + recordio.frame(b"\x0b")
        response = httpx.post(
            f"{server.url}/invocations", content=bad, headers={"content-type": RECORDIO}
        )
        assert response.status_code == 400
        assert "record 3: unsupported wire type" in response.json()["message"]
    env = {"SAGEMAKER_INFERENCE_OUTPUT": "predicted_score"}
    with running_server(args, tmp_path / "selected.log", env) as server:
        body = invoke(server, recordio.dense(rows), RECORDIO, "application/json").json()
        scores = [entry["predicted_score"] for entry in body["predictions"]]
        np.testing.assert_array_equal(np.array(scores, dtype=np.float32), want)


@pytest.mark.parametrize("model", ["1.7.6/binary.bin", "1.0.2/multiclass.bin", "0.90/softmax.bin"])
def test_classifier_scores_in_every_output_type(tmp_path: Path, model: str) -> None:
    want = expected(model)
    with serving(tmp_path, model) as server:
        csv_text = invoke(server, to_csv(ROWS), "text/csv", "text/csv").text
        close([line.split(",") for line in csv_text.splitlines()], want.reshape(len(ROWS), -1))
        document = invoke(server, recordio.dense(ROWS), RECORDIO, "application/json").json()
        close([entry["score"] for entry in document["predictions"]], want)
        lines = invoke(server, to_csv(ROWS), "text/csv", JSONLINES).text.splitlines()
        close([json.loads(line)["score"] for line in lines], want)


def test_binary_selection_in_every_output_type(tmp_path: Path) -> None:
    model = "1.7.6/binary.bin"
    probability = expected(model)
    with serving(tmp_path, model, env={"SAGEMAKER_INFERENCE_OUTPUT": ALL_BINARY}) as server:
        entries = invoke(server, to_csv(ROWS), "text/csv", "application/json").json()
        lines = invoke(server, recordio.sparse(ROWS), RECORDIO, JSONLINES).text.splitlines()
        csv_rows = invoke(server, to_csv(ROWS), "text/csv", "text/csv").text.splitlines()
    for got in (entries["predictions"], [json.loads(line) for line in lines]):
        assert [list(entry) for entry in got] == [ALL_BINARY.split(",")] * len(ROWS)
        assert [entry["predicted_label"] for entry in got] == (probability > 0.5).astype(
            int
        ).tolist()
        assert all(entry["labels"] == [0, 1] for entry in got)
        close([entry["probability"] for entry in got], probability)
        close([entry["raw_score"] for entry in got], probability)
        close(
            [entry["probabilities"] for entry in got], np.stack([1 - probability, probability], 1)
        )
        assert all(entry["raw_scores"] == entry["probabilities"] for entry in got)
    first = entries["predictions"][0]
    assert csv_rows[0] == (
        f'{first["predicted_label"]},"[0, 1]",{first["probability"]!r},'
        f'"{first["probabilities"]}",{first["raw_score"]!r},"{first["raw_scores"]}"'
    )
    assert len(csv_rows) == len(ROWS)


@pytest.mark.parametrize(
    ("model", "keys"),
    [
        ("1.0.2/multiclass.bin", "predicted_label,probability,probabilities,labels"),
        ("1.7.6/softmax.bin", "predicted_label,raw_score,labels"),
    ],
)
def test_multiclass_selection_through_the_flag(tmp_path: Path, model: str, keys: str) -> None:
    want = expected(model)
    with serving(tmp_path, model, "--inference-output", keys) as server:
        document = invoke(server, to_csv(ROWS), "text/csv", "application/json").json()
        csv_rows = invoke(server, to_csv(ROWS), "text/csv", "text/csv").text.splitlines()
    got = document["predictions"]
    assert [list(entry) for entry in got] == [keys.split(",")] * len(ROWS)
    assert all(entry["labels"] == [0, 1, 2] for entry in got)
    if want.ndim == 2:  # softprob: a probability per class
        assert [entry["predicted_label"] for entry in got] == want.argmax(axis=1).tolist()
        close([entry["probability"] for entry in got], want.max(axis=1))
        close([entry["probabilities"] for entry in got], want)
    else:  # softmax predicts the class itself
        assert [entry["predicted_label"] for entry in got] == want.tolist()
        assert [entry["raw_score"] for entry in got] == want.tolist()
    assert [row.split(",")[0] for row in csv_rows] == [str(e["predicted_label"]) for e in got]


def test_a_key_the_objective_lacks_stops_the_server(tmp_path: Path) -> None:
    tarball = platform_tarball(
        tmp_path / "model.tar.gz", (FIXTURES / "1.7.6/regression.bin").read_bytes()
    )
    server = start_server(
        ["--model", str(tarball), "--workers", "1"],
        tmp_path / "server.log",
        {"SAGEMAKER_INFERENCE_OUTPUT": "probabilities"},
    )
    try:
        assert server.proc.wait(60) == EXIT_MODEL_LOAD_FAILED
    finally:
        stop_process(server.proc)
    assert "'probabilities' not available for the model's objective 'reg:squarederror'" in (
        server.log
    )


def test_async_invocations_take_recordio_and_answer_in_the_same_shapes(
    rabbitmq: Broker, tmp_path: Path
) -> None:
    """A multi-class model behind the real async plane: RecordIO in, jsonlines out, and CSV in,
    JSON out, each what the old XGBoost predicted, in the server's shapes."""
    endpoint = "formats"
    model = "1.0.2/multiclass.bin"
    want = expected(model)
    tarball = platform_tarball(tmp_path / "model.tar.gz", (FIXTURES / model).read_bytes())
    notes = Notifications(rabbitmq, endpoint).declare()
    with plane(rabbitmq, endpoint, f"file://{tmp_path}/store", tmp_path) as live:
        sparse = live.invoke(recordio.sparse(ROWS), {"content-type": RECORDIO, "accept": JSONLINES})
        dense = live.invoke(to_csv(ROWS), {"accept": "application/json"})
        assert (sparse.status_code, dense.status_code) == (202, 202), sparse.text + dense.text
        live.start_worker(f"file://{tarball}", "w")
        ids = {sparse.json()["InferenceId"], dense.json()["InferenceId"]}
        notes.wait_for(ids, "Completed", 60)
    stored = Storage()
    lines = stored.get_bytes(sparse.json()["OutputLocation"]).decode().splitlines()
    close([json.loads(line)["score"] for line in lines], want)
    document = json.loads(stored.get_bytes(dense.json()["OutputLocation"]))
    close([entry["score"] for entry in document["predictions"]], want)


@pytest.mark.parametrize("model", ["1.0.2/multiclass.bin", "1.7.6/binary.bin"])
def test_batch_transforms_answer_in_the_same_shapes(tmp_path: Path, model: str) -> None:
    """``infermodes batch`` over a classifier: CSV, JSON and jsonlines outputs as the server
    writes them, each what the old XGBoost predicted."""
    want = expected(model)
    tarball = platform_tarball(tmp_path / "model.tar.gz", (FIXTURES / model).read_bytes())
    (tmp_path / "in").mkdir()
    (tmp_path / "in/rows.csv").write_bytes(to_csv(ROWS) + b"\n")
    outputs = {}
    for accept in ("text/csv", "application/json", JSONLINES):
        out = tmp_path / accept.replace("/", "-")
        done = run_batch(batch_command(tarball, str(tmp_path / "in"), str(out), "--accept", accept))
        assert done.returncode == 0, done.log
        outputs[accept] = (out / "rows.csv.out").read_text()
    csv_rows = [line.split(",") for line in outputs["text/csv"].splitlines()]
    close(csv_rows, want.reshape(len(ROWS), -1))
    close(
        [entry["score"] for entry in json.loads(outputs["application/json"])["predictions"]], want
    )
    close([json.loads(line)["score"] for line in outputs[JSONLINES].splitlines()], want)


def test_csv_saved_with_a_byte_order_mark_is_read_as_without_by_serve_and_batch(
    tmp_path: Path, abalone_model: AbaloneModel
) -> None:
    """Spreadsheets save "CSV UTF-8" with a byte order mark before the first row: the model
    server and a batch transform read it as the same rows without it (JSON's reader skips
    one already)."""
    body = to_csv(abalone_model.test_rows[:3])
    bom = b"\xef\xbb\xbf"
    log = tmp_path / "server.log"
    with running_server(["--model", f"file://{abalone_model.tarball}", "--workers", "1"],
                        log) as server:  # fmt: skip
        for sent in (bom + body, bom + body[: body.index(b"\n")]):
            answer = httpx.post(f"{server.url}/invocations", content=sent,
                                headers={"content-type": "text/csv"})  # fmt: skip
            plain = httpx.post(f"{server.url}/invocations", content=sent[3:],
                               headers={"content-type": "text/csv"})  # fmt: skip
            assert answer.status_code == 200, answer.text
            assert answer.text == plain.text
    (tmp_path / "in").mkdir()
    (tmp_path / "in/rows.csv").write_bytes(bom + body + b"\n")
    out = tmp_path / "out"
    done = run_batch(batch_command(abalone_model.tarball, str(tmp_path / "in"), str(out)))
    assert done.returncode == 0, done.log
    booster: Any = abalone_model.booster()
    close([float(v) for v in (out / "rows.csv.out").read_text().split()],
          booster.inplace_predict(abalone_model.test_rows[:3]))  # fmt: skip
