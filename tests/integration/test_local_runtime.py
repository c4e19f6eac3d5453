"""``infermodes up`` as a process, with the example manifests pointed at a trained model: each
mode's behaviour end to end, through the one port, and a restart that keeps accepted work."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import AbaloneModel
from tests.support.async_plane import to_csv
from tests.support.local import Up, manifest, running_up
from tests.support.processes import INFERMODES, free_port, wait_until

WAIT = 60.0
IDLE_SECONDS = 10  # the spec's minimum idleTimeoutSeconds


def scores(text: str) -> np.ndarray:
    return np.array(text.split(), dtype=np.float32)


@pytest.fixture(scope="module")
def up(abalone_model: AbaloneModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    folder = tmp_path_factory.mktemp("up")
    model = abalone_model.tarball
    files = [
        manifest("realtime", model, folder, minReplicas=1, maxReplicas=1),
        manifest("serverless", model, folder, idleTimeoutSeconds=IDLE_SECONDS,
                 maxConcurrency=1, concurrencyPerReplica=1),
        manifest("batch", model, folder, instanceCount=2),
    ]  # fmt: skip
    inputs = folder / "batch" / "input"
    inputs.mkdir(parents=True)
    rows = abalone_model.test_rows
    for index in range(3):
        (inputs / f"part-{index}.csv").write_bytes(to_csv(rows[index * 50 : index * 50 + 50]))
    (inputs / "broken.csv").write_bytes(to_csv(rows[:2]) + b"\n1,2,not-a-number\n")
    with running_up(folder / "state", files, folder / "up.log") as process:
        yield process


def test_realtime_predictions_equal_the_boosters(up: Up, abalone_model: AbaloneModel) -> None:
    wait_until(lambda: up.status("abalone")["phase"] == "InService", WAIT, "realtime InService")
    rows = abalone_model.test_rows
    response = up.invoke("abalone", to_csv(rows))
    assert response.status_code == 200, response.text
    expected = abalone_model.booster().inplace_predict(rows)  # type: ignore[attr-defined]
    np.testing.assert_allclose(scores(response.text), expected, rtol=1e-6)
    assert up.status("abalone")["readyReplicas"] == 1


def test_serverless_cold_starts_from_zero_and_returns_to_zero(
    up: Up, abalone_model: AbaloneModel
) -> None:
    wait_until(lambda: not up.running("abalone-serverless"), WAIT, "serverless at zero")
    assert up.status("abalone-serverless")["desiredReplicas"] == 0
    rows = abalone_model.test_rows[:20]
    response = up.invoke("abalone-serverless", to_csv(rows))
    assert response.status_code == 200, response.text
    expected = abalone_model.booster().inplace_predict(rows)  # type: ignore[attr-defined]
    np.testing.assert_allclose(scores(response.text), expected, rtol=1e-6)
    assert len(up.running("abalone-serverless")) == 1
    wait_until(lambda: not up.running("abalone-serverless"), WAIT + IDLE_SECONDS,
               "serverless back to zero after its idle timeout")  # fmt: skip
    assert up.status("abalone-serverless")["desiredReplicas"] == 0


def test_serverless_beyond_max_concurrency_is_throttled(
    up: Up, abalone_model: AbaloneModel
) -> None:
    """maxConcurrency 1 at zero replicas: the first request is held for the cold start, the
    others arriving meanwhile get 429 at once."""
    wait_until(lambda: not up.running("abalone-serverless"), WAIT + IDLE_SECONDS,
               "serverless at zero")  # fmt: skip
    body = to_csv(abalone_model.test_rows[:5])
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: up.invoke("abalone-serverless", body), range(6)))
    codes = sorted(a.status_code for a in answers)
    assert set(codes) == {200, 429}, codes
    throttled = next(a for a in answers if a.status_code == 429)
    assert throttled.json()["error"] == "ThrottlingException"


def cli(up_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INFERMODES, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "INFERMODES_UP_URL": up_url})  # fmt: skip


def test_the_cli_lists_describes_invokes_and_applies(
    up: Up, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    wait_until(lambda: up.status("abalone")["phase"] == "InService", WAIT, "realtime InService")
    listed = cli(up.url, "get")
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split() == ["NAME", "MODE", "PHASE", "READY", "DESIRED", "BACKLOG",
                              "PROGRESS", "AGE"]  # fmt: skip
    assert lines[0].split()[:5] == ["abalone", "realtime", "InService", "1", "1"]
    described = cli(up.url, "describe", "abalone")
    assert f"{up.url}/endpoints/abalone/invocations" in described.stdout
    assert "abalone/server-" in described.stdout
    row = ",".join(repr(float(v)) for v in abalone_model.test_rows[0])
    invoked = cli(up.url, "invoke", "abalone", "--data", row)
    assert invoked.returncode == 0, invoked.stderr
    expected = abalone_model.booster().inplace_predict(abalone_model.test_rows[:1])  # type: ignore[attr-defined]
    np.testing.assert_allclose(scores(invoked.stdout), expected, rtol=1e-6)
    assert "abalone-server-0.log" in cli(up.url, "logs", "abalone").stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(manifest("realtime", abalone_model.tarball, tmp_path).read_text()
                   .replace("minReplicas: 1", "minReplicas: -1"))  # fmt: skip
    refused = cli(up.url, "apply", "-f", str(bad))
    assert refused.returncode != 0
    assert "bad.yaml" in refused.stderr and "spec.realtime.minReplicas" in refused.stderr
    assert cli(up.url, "delete", "nothing-here").returncode != 0


def test_the_cli_says_when_up_is_not_running() -> None:
    result = cli(f"http://127.0.0.1:{free_port()}", "get")
    assert result.returncode != 0
    assert "infermodes up is not running" in result.stderr


def test_batch_writes_every_output_and_reports_the_failing_object(
    up: Up, abalone_model: AbaloneModel
) -> None:
    wait_until(lambda: up.status("abalone-batch")["phase"] != "InProgress", WAIT * 3,
               "the batch endpoint to end")  # fmt: skip
    status = up.status("abalone-batch")
    assert status["phase"] == "Failed", status
    assert "broken.csv line" in status["message"]
    assert "expected 10 features" in status["message"]
    assert status["progress"]["objectsTotal"] == 4
    assert status["progress"]["objectsFailed"] == 1
    assert status["progress"]["objectsDone"] == 3
    output = up.state_dir.parent / "batch" / "output"
    booster = abalone_model.booster()
    rows = abalone_model.test_rows
    for index in range(3):
        got = scores((output / f"part-{index}.csv.out").read_text())
        expected = booster.inplace_predict(rows[index * 50 : index * 50 + 50])  # type: ignore[attr-defined]
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert not (output / "broken.csv.out").exists()
