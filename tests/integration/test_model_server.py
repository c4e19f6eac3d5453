"""The real ``infermodes serve`` process over real HTTP on loopback."""

from __future__ import annotations

import json
import pickle
import signal
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infermodes.errors import EXIT_MODEL_LOAD_FAILED
from tests.conftest import AbaloneModel
from tests.support.processes import ServerProcess, running_server, start_server, wait_until

CSV = {"content-type": "text/csv"}


@pytest.fixture(scope="module")
def server(
    abalone_model: AbaloneModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    args = [
        "--model",
        f"file://{abalone_model.tarball}",
        "--workers",
        "2",
        "--max-payload-bytes",
        "65536",
    ]
    with running_server(args, log) as process:
        yield process


def to_csv(rows: np.ndarray) -> bytes:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in rows).encode()


def test_csv_predictions_equal_the_booster_row_by_row(
    server: ServerProcess, abalone_model: AbaloneModel
) -> None:
    rows = abalone_model.test_rows
    expected = abalone_model.booster().inplace_predict(rows)
    response = httpx.post(f"{server.url}/invocations", content=to_csv(rows), headers=CSV)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    got = np.array([float(line) for line in response.text.splitlines()], dtype=np.float32)
    assert len(got) == len(rows)
    np.testing.assert_array_equal(got, expected)
    with httpx.Client(base_url=server.url) as client:
        for row, want in zip(rows[:25], expected[:25], strict=True):
            one = client.post("/invocations", content=to_csv(row[None, :]), headers=CSV)
            assert np.float32(float(one.text)) == want


def test_json_and_libsvm_inputs_and_json_output(
    server: ServerProcess, abalone_model: AbaloneModel
) -> None:
    rows = abalone_model.test_rows[:5]
    expected = abalone_model.booster().inplace_predict(rows)
    libsvm = "\n".join(" ".join(f"{i}:{float(v)!r}" for i, v in enumerate(row)) for row in rows)
    bodies = [
        ("application/json", json.dumps({"instances": rows.tolist()})),
        ("application/json", json.dumps(rows.tolist())),
        ("text/libsvm", libsvm),
    ]
    for content_type, body in bodies:
        response = httpx.post(
            f"{server.url}/invocations",
            content=body,
            headers={"content-type": content_type, "accept": "application/json"},
        )
        assert response.status_code == 200, response.text
        scores = [p["score"] for p in response.json()["predictions"]]
        np.testing.assert_array_equal(np.array(scores, dtype=np.float32), expected)


@pytest.mark.parametrize(
    ("headers", "body", "status", "message"),
    [
        ({"content-type": "image/png"}, b"1", 415, "unsupported content type 'image/png'"),
        (CSV, b"1,0,0,0.5,abc,0.1,0.5,0.2,0.1,0.1", 400, "row 1, column 5: cannot parse 'abc'"),
        (CSV, b"1,0,0,0.5,0.4,0.1,0.5,0.2,0.1,0.1\n1,2", 400, "row 2: expected 10 features, got 2"),
        (CSV, b"1,0,0,0.5,0.4,0.1,0.5,0.2,0.1", 400, "expected 10 features, got 9"),
        ({"content-type": "application/json"}, b'{"instances": [[1, 2,', 400, "malformed JSON"),
        (
            {"content-type": "application/json"},
            b'{"instances": [[1, "a"]]}',
            400,
            'row 1, column 2: expected a number, got "a"',
        ),
        ({"content-type": "application/json"}, b"[1, 2, 3]", 400, "expected 10 features, got 3"),
        ({"content-type": "text/libsvm"}, b"0:1 12:3", 400, "feature index 12 is out of range"),
        ({**CSV, "accept": "text/html"}, b"1,0,0,0.5,0.4,0.1,0.5,0.2,0.1,0.1", 406, "text/html"),
        (CSV, b"1," * 40000, 413, "exceeds the limit of 65536"),
        (CSV, b"", 400, "empty request body"),
    ],
)
def test_bad_input_gets_the_right_code_and_a_message(
    server: ServerProcess, headers: dict[str, str], body: bytes, status: int, message: str
) -> None:
    response = httpx.post(f"{server.url}/invocations", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert message in response.json()["message"]
    assert server.ready()  # and the server is still up


def test_metrics_count_requests_rows_and_latency(server: ServerProcess) -> None:
    row = b"1,0,0,0.5,0.4,0.1,0.5,0.2,0.1,0.15"

    def scrape() -> dict[str, float]:
        text = httpx.get(f"{server.url}/metrics").text
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = sample.name + json.dumps(sample.labels, sort_keys=True)
                samples[key] = sample.value
        return samples

    before = scrape()
    with httpx.Client(base_url=server.url) as client:
        for _ in range(20):  # spread over both workers
            assert client.post("/invocations", content=row, headers=CSV).status_code == 200
    after = scrape()
    ok = (
        "infermodes_http_request_duration_seconds_count"
        '{"route": "/invocations", "status_code": "200"}'
    )
    assert after[ok] - before.get(ok, 0) == 20
    rows = "infermodes_model_rows_predicted_total{}"
    assert after[rows] - before.get(rows, 0) == 20
    predict = "infermodes_model_predict_duration_seconds_count{}"
    assert after[predict] - before.get(predict, 0) == 20
    fast = (
        "infermodes_http_request_duration_seconds_bucket"
        '{"le": "0.005", "route": "/invocations", "status_code": "200"}'
    )
    assert fast in after  # sub-5 ms buckets exist
    assert after["infermodes_model_load_duration_seconds{}"] > 0
    assert "infermodes_http_requests_in_flight{}" in after
    assert any(k.startswith("infermodes_http_request_body_size_bytes_bucket") for k in after)


def test_model_from_s3(s3, abalone_model: AbaloneModel, tmp_path: Path) -> None:
    client = s3.client()
    client.create_bucket(Bucket="models")
    client.upload_file(str(abalone_model.tarball), "models", "abalone/model.tar.gz")
    args = ["--model", "s3://models/abalone/model.tar.gz", "--workers", "1"]
    with running_server(args, tmp_path / "s3.log", env=s3.env) as process:
        rows = abalone_model.test_rows[:3]
        response = httpx.post(f"{process.url}/invocations", content=to_csv(rows), headers=CSV)
        got = np.array(response.text.split(), dtype=np.float32)
        np.testing.assert_array_equal(got, abalone_model.booster().inplace_predict(rows))


def pickled_tarball(path: Path, obj: object) -> Path:
    import io

    payload = pickle.dumps(obj)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("xgboost-model")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return path


def test_a_pickle_other_than_a_booster_is_refused_at_start(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """Booster pickles load without running them (tests/unit/test_legacy_models.py); any other
    pickle is refused unless --allow-pickle says its source is trusted."""
    other = pickled_tarball(tmp_path / "other.tar.gz", {"weights": [1.0, 2.0]})
    server = start_server(["--model", str(other)], tmp_path / "pickle.log")
    assert server.proc.wait(60) == EXIT_MODEL_LOAD_FAILED
    assert "pickle" in server.log and "refused" in server.log
    # every way to opt in, not only this server's flag
    assert "spec.model.allowPickle: true" in server.log, server.log
    assert "the platform API's CreateModel has no such setting" in server.log, server.log
    booster = pickled_tarball(tmp_path / "booster.tar.gz", abalone_model.booster())
    with running_server(
        ["--model", str(booster), "--allow-pickle", "--workers", "1"], tmp_path / "allowed.log"
    ) as allowed:
        assert allowed.ready()


def test_missing_model_exits_with_the_reason(tmp_path: Path) -> None:
    server = start_server(["--model", f"file://{tmp_path}/absent.tar.gz"], tmp_path / "m.log")
    assert server.proc.wait(60) == EXIT_MODEL_LOAD_FAILED
    assert "no such object" in server.log


def test_bad_settings_are_usage_errors(tmp_path: Path) -> None:
    server = start_server(["--model", "x", "--workers", "0"], tmp_path / "w.log")
    assert server.proc.wait(30) == 2
    assert "workers" in server.log


def test_sigterm_stops_all_workers(abalone_model: AbaloneModel, tmp_path: Path) -> None:
    import psutil

    with running_server(
        ["--model", str(abalone_model.tarball), "--workers", "2"], tmp_path / "t.log"
    ) as process:
        children = psutil.Process(process.proc.pid).children()
        assert len(children) == 2
        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(30) == 0
        wait_until(
            lambda: not any(c.is_running() and c.status() != "zombie" for c in children),
            10,
            "workers to exit",
        )
