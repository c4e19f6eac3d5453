"""Old XGBoost artifacts through the real ``infermodes serve`` process, without --allow-pickle:
a legacy binary booster and a pickled one, packed as the platform's ``model.tar.gz``, predict
what the old XGBoost predicted; a malicious pickle stops the server and runs nothing."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import httpx
import numpy as np
import pytest

from infermodes.errors import EXIT_MODEL_LOAD_FAILED
from tests.support.processes import running_server, start_server, stop_process

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"


def platform_tarball(path: Path, payload: bytes) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("xgboost-model")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return path


def to_csv(rows: np.ndarray) -> bytes:
    """Missing values as empty fields, the way the platform's clients send them."""
    return "\n".join(
        ",".join("" if np.isnan(v) else repr(float(v)) for v in row) for row in rows
    ).encode()


@pytest.mark.parametrize(
    "fixture",
    [
        "0.90/regression.pkl",  # pickle.dump(booster) of the platform's 0.90 container
        "1.0.2/dart.pkl",  # its 1.0 container: "CONFIG-offset:" + legacy binary in the pickle
        "1.7.6/missing.bin",  # save_model of its 1.3-1 and later containers
    ],
)
def test_old_artifacts_predict_what_old_xgboost_predicted(tmp_path: Path, fixture: str) -> None:
    model = platform_tarball(tmp_path / "model.tar.gz", (FIXTURES / fixture).read_bytes())
    rows = np.load(FIXTURES / "rows.npy")
    expected = np.load(FIXTURES / fixture.replace(".pkl", ".npy").replace(".bin", ".npy"))
    args = ["--model", f"file://{model}", "--workers", "1"]
    with running_server(args, tmp_path / "server.log") as server:
        response = httpx.post(
            f"{server.url}/invocations", content=to_csv(rows), headers={"content-type": "text/csv"}
        )
    assert response.status_code == 200, response.text
    got = np.array(response.text.split(), dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


class RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (self.command,))


def test_a_malicious_pickle_stops_the_server_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    payload = pickle.dumps(RunsCommand(f"touch {marker}"))
    model = platform_tarball(tmp_path / "model.tar.gz", payload)
    server = start_server(["--model", str(model)], tmp_path / "server.log")
    try:
        assert server.proc.wait(60) == EXIT_MODEL_LOAD_FAILED
    finally:
        stop_process(server.proc)  # had it started, it must not outlive the test
    assert "posix.system" in server.log and "refused" in server.log
    assert not marker.exists()
