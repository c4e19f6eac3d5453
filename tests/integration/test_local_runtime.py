"""``infermodes up`` as a process, with the example manifests pointed at a trained model: each
mode's behaviour end to end, through the one port, and a restart that keeps accepted work."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import AbaloneModel
from tests.support.async_plane import to_csv
from tests.support.local import Up, manifest, running_up
from tests.support.processes import INFERMODES, free_port, wait_until
from tests.support.rabbitmq import Broker

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
        manifest("async", model, folder, maxConcurrentInvocationsPerInstance=2, maxReplicas=1,
                 targetBacklogPerInstance=5, scaleInCooldownSeconds=30),
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


def test_a_second_up_on_the_same_state_dir_is_refused(up: Up) -> None:
    """It would take the first one's children for orphans and kill them."""
    wait_until(lambda: up.status("abalone")["readyReplicas"] == 1, WAIT, "a ready replica")
    second = subprocess.run(
        [INFERMODES, "up", "--port", str(free_port()), "--state-dir", str(up.state_dir)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode != 0
    assert f"another infermodes up is running on {up.state_dir}" in second.stderr
    assert up.status("abalone")["readyReplicas"] == 1


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


def outputs(folder: Path) -> dict[str, np.ndarray]:
    """Result objects by inference id (a dot starts an interrupted write's temporary file)."""
    return {
        path.name.removesuffix(".out"): scores(path.read_text())
        for path in folder.glob("*.out")
        if not path.name.startswith(".")
    }


def test_async_requests_complete_once_with_a_worker_killed_mid_way(
    up: Up, abalone_model: AbaloneModel, big_input: Path
) -> None:
    """A large request by reference keeps the worker busy; it is SIGKILLed while it holds
    work. Every accepted request still ends with one output equal to the booster's and no
    error, and the killed worker shows as a restart."""
    output = up.state_dir.parent / "async" / "output"
    (output / "input").mkdir(parents=True, exist_ok=True)
    shutil.copy(big_input, output / "input" / "big.csv")
    url = f"{up.url}/endpoints/abalone-async/async-invocations"
    big = httpx.post(url, headers={"X-Amzn-SageMaker-InputLocation":
                                   f"file://{output}/input/big.csv"}, timeout=30)  # fmt: skip
    assert big.status_code == 202, big.text
    rows = abalone_model.test_rows
    small = {}
    for index in range(20):
        answer = up.invoke("abalone-async", to_csv(rows[index : index + 5]), "async-invocations")
        assert answer.status_code == 202, answer.text
        assert answer.json()["OutputLocation"].startswith(f"file://{output}/")
        small[answer.json()["InferenceId"]] = rows[index : index + 5]

    def busy() -> bool:
        status = up.status("abalone-async")
        return bool(up.running("abalone-async")) and (status["backlog"]["inFlight"] or 0) > 0

    wait_until(busy, WAIT, "a worker holding requests")
    os.killpg(up.running("abalone-async")[0]["pid"], signal.SIGKILL)
    wait_until(lambda: len(outputs(output)) == 21, WAIT * 3, "every async output")
    found = outputs(output)
    booster = abalone_model.booster()
    for inference_id, request_rows in small.items():
        expected = booster.inplace_predict(request_rows)  # type: ignore[attr-defined]
        np.testing.assert_allclose(found[inference_id], expected, rtol=1e-6)
    copies = len(big_input.read_bytes().splitlines()) // len(rows)
    expected_big = np.tile(booster.inplace_predict(rows), copies)  # type: ignore[attr-defined]
    np.testing.assert_allclose(found[big.json()["InferenceId"]], expected_big, rtol=1e-6)
    assert not list(output.glob("*.error"))
    wait_until(lambda: backlog_total(up, "abalone-async") == 0, WAIT, "no backlog")
    assert any("exited with -9" in event for event in up.status("abalone-async")["events"])
    tailed = cli(up.url, "notifications", "abalone-async.success")
    assert tailed.returncode == 0, tailed.stderr
    notified = {json.loads(line)["messageId"] for line in tailed.stdout.splitlines()}
    assert set(small) | {big.json()["InferenceId"]} <= notified


def backlog_total(up: Up, name: str) -> int | None:
    """The endpoint's queued + in-flight requests, None until up has read its queue."""
    backlog = up.status(name).get("backlog") or {}
    total: int | None = backlog.get("total")
    return total


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_accepted_async_requests_complete_once_after_a_restart_of_up(
    signum: int, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The model is not there on the first run, so workers cannot start and the 100 accepted
    requests stay queued; ``up`` is stopped, the model arrives, ``up`` starts again on the
    same state dir and every request ends with exactly one output."""
    model = tmp_path / "model" / "model.tar.gz"
    files = [manifest("async", model, tmp_path, maxConcurrentInvocationsPerInstance=4,
                      maxReplicas=2, targetBacklogPerInstance=50)]  # fmt: skip
    output = tmp_path / "async" / "output"
    rows = abalone_model.test_rows
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        accepted = {}
        for index in range(100):
            answer = up.invoke("abalone-async", to_csv(rows[index : index + 3]),
                               "async-invocations")  # fmt: skip
            assert answer.status_code == 202, answer.text
            accepted[answer.json()["InferenceId"]] = rows[index : index + 3]
        assert not outputs(output)
        up.stop(signum)
        model.parent.mkdir()
        shutil.copy(abalone_model.tarball, model)
        up.start()
        wait_until(lambda: len(outputs(output)) == 100, WAIT * 3, "every async output")
        wait_until(lambda: backlog_total(up, "abalone-async") == 0, WAIT,
                   "no backlog")  # fmt: skip
        found = outputs(output)
        assert set(found) == set(accepted)
        booster = abalone_model.booster()
        for inference_id, request_rows in accepted.items():
            expected = booster.inplace_predict(request_rows)  # type: ignore[attr-defined]
            np.testing.assert_allclose(found[inference_id], expected, rtol=1e-6)
        assert not list(output.glob("*.error"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_a_killed_up_removes_its_orphans_when_it_starts_again(
    abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """SIGKILL leaves ``up`` no time to stop its model server; the next ``up`` on the same
    state dir kills it (by the PID and start time it recorded) and serves again."""
    files = [manifest("realtime", abalone_model.tarball, tmp_path, minReplicas=1, maxReplicas=1)]
    with running_up(tmp_path / "state", files, tmp_path / "up.log") as up:
        wait_until(lambda: up.status("abalone")["readyReplicas"] == 1, WAIT, "a ready replica")
        orphan = up.running("abalone")[0]["pid"]
        up.stop(signal.SIGKILL)
        assert alive(orphan)
        up.start()
        wait_until(lambda: not alive(orphan), WAIT, "the orphan to be killed")
        assert "left running by a previous infermodes up" in up.log
        wait_until(lambda: up.status("abalone")["readyReplicas"] == 1, WAIT, "a ready replica")
        assert up.invoke("abalone", to_csv(abalone_model.test_rows[:2])).status_code == 200


def test_async_on_rabbitmq_with_broker_url(
    rabbitmq: Broker, abalone_model: AbaloneModel, tmp_path: Path
) -> None:
    """The same manifest with ``--broker-url``: requests go through RabbitMQ, workers start
    from zero on its backlog, outputs equal the booster's."""
    files = [manifest("async", abalone_model.tarball, tmp_path, maxReplicas=1)]
    args = ("--broker-url", rabbitmq.amqp_url, "--management-url", rabbitmq.management_url)
    rows = abalone_model.test_rows
    output = tmp_path / "async" / "output"
    with running_up(tmp_path / "state", files, tmp_path / "up.log", args) as up:
        accepted = {}
        for index in range(10):
            answer = up.invoke("abalone-async", to_csv(rows[index : index + 2]),
                               "async-invocations")  # fmt: skip
            assert answer.status_code == 202, answer.text
            accepted[answer.json()["InferenceId"]] = rows[index : index + 2]
        wait_until(lambda: len(outputs(output)) == 10, WAIT * 2, "every async output")
        found = outputs(output)
        booster = abalone_model.booster()
        for inference_id, request_rows in accepted.items():
            expected = booster.inplace_predict(request_rows)  # type: ignore[attr-defined]
            np.testing.assert_allclose(found[inference_id], expected, rtol=1e-6)
        assert not (tmp_path / "state" / "queue.db").exists()
        assert "RabbitMQ" in cli(up.url, "notifications").stderr
